"""``hif_editimlist`` for VLASS: the SE-CONT target (stage 2) and the cube targets (stage 6).

Reference §4. Field selection: TARGET fields with VLASS-style names whose phase centres lie
within a box around the phase centre. Cube mode adds, per spw group: the reffreq (mean of the
spws' mean frequencies), the group's flag fraction in the 1800" box, the two skip rules, and
explicit errors where the reference crashes late.
"""

from __future__ import annotations

import fnmatch
import math
from pathlib import Path

import numpy as np

from ..errors import InputError
from . import heuristics as H
from . import naming, paramlist


def _direction_rad(casa, phasecenter: str) -> tuple[float, float]:
    parts = phasecenter.split()
    if len(parts) != 3:
        raise InputError(f"phasecenter {phasecenter!r}: expected 'J2000 hh:mm:ss.s +dd.mm.ss.s'")
    me = casa.tools.measures()
    try:
        d = me.direction(parts[0], parts[1], parts[2])
        return float(d["m0"]["value"]), float(d["m1"]["value"])
    except Exception as exc:
        raise InputError(f"phasecenter {phasecenter!r} not understood by CASA: {exc}") from None


def _offsets_arcsec(ra, dec, ra0, dec0) -> tuple[float, float]:
    """Gnomonic (tangent-plane) offsets of (ra, dec) from (ra0, dec0), in arcsec."""
    cosc = math.sin(dec0) * math.sin(dec) + math.cos(dec0) * math.cos(dec) * math.cos(ra - ra0)
    x = math.cos(dec) * math.sin(ra - ra0) / cosc
    y = (math.cos(dec0) * math.sin(dec) - math.sin(dec0) * math.cos(dec) * math.cos(ra - ra0)) / cosc
    return math.degrees(x) * 3600.0, math.degrees(y) * 3600.0


def select_fields(casa, vis: Path, phasecenter: str, half_width_arcsec: float) -> list[dict]:
    """TARGET fields named like VLASS fields, within the box; [{id, name}] in id order."""
    ra0, dec0 = _direction_rad(casa, phasecenter)
    msmd = casa.tool("msmetadata")
    msmd.open(str(vis))
    try:
        out = []
        for fid, name in enumerate(msmd.fieldnames()):
            if not any(fnmatch.fnmatch(name.lstrip('"'), p) for p in H.FIELD_NAME_PATTERNS):
                continue
            if not any("TARGET" in i for i in msmd.intentsforfield(fid)):
                continue
            pc = msmd.phasecenter(fid)
            dx, dy = _offsets_arcsec(pc["m0"]["value"], pc["m1"]["value"], ra0, dec0)
            if abs(dx) < half_width_arcsec and abs(dy) < half_width_arcsec:
                out.append({"id": fid, "name": name})
        return out
    finally:
        msmd.close()


def seip_target(casa, vis: Path, plist_path: Path) -> dict:
    """Stage 2: the SE-CONT imaging target restorepims and transformimagedata need."""
    plist = paramlist.parse(plist_path)
    paramlist.require(plist, plist_path, "imagename", "phasecenter")
    paramlist.require_name(plist, plist_path, "imagename")
    mode = plist.get("imaging_mode", "VLASS-QL")
    if not str(mode).startswith("VLASS-SE-CONT"):
        raise InputError(f"parameter list {Path(plist_path).name}: imaging_mode {mode!r}, expected a "
                         f"VLASS-SE-CONT mode (this list recreates the continuum run's target)")
    half = H.FLAGSTAT_HALF_WIDTH_ARCSEC + float(plist.get("search_radius_arcsec", H.SE_SEARCH_BUFFER_ARCSEC))
    fields = select_fields(casa, vis, plist["phasecenter"], half)
    if not fields:
        raise InputError(f"No fields to image: no TARGET field of {Path(vis).name} lies within "
                         f"{half:.0f} arcsec of phasecenter {plist['phasecenter']}")
    return {"se_imagename": plist["imagename"], "imagename": "sSTAGENUMBER." + plist["imagename"],
            "phasecenter": plist["phasecenter"], "imaging_mode": mode,
            "field": ",".join(str(f["id"]) for f in fields), "field_names": [f["name"] for f in fields],
            "parameter_file": Path(plist_path).name}


def _flag_summary(casa, vis: Path) -> dict:
    return casa.task("flagdata", vis=str(vis), mode="summary", fieldcnt=True)


def cube_targets(casa, vis: Path, plist_path: Path, masks: list[str], reject_cfg: dict) -> tuple[list[dict], list[str], dict]:
    """Stage 6: one target per spw group. Returns (targets, warnings, statistics)."""
    plist = paramlist.parse(plist_path)
    paramlist.require(plist, plist_path, "imagename", "phasecenter")
    paramlist.require_name(plist, plist_path, "imagename")
    if plist.get("imaging_mode") != H.IMAGING_MODE:
        raise InputError(f"parameter list {Path(plist_path).name}: imaging_mode "
                         f"{plist.get('imaging_mode')!r}, expected {H.IMAGING_MODE!r}")
    groups = paramlist.validate_spw_groups(plist.get("spw", H.DEFAULT_SPW), plist_path)
    imaging = H.imaging_params(plist)
    warnings: list[str] = []

    msmd = casa.tool("msmetadata")
    msmd.open(str(vis))
    try:
        nspw_all = int(msmd.nspw())
        data_spws = sorted({int(s) for s in msmd.spwsforintent("*TARGET*")})
        meanfreq = {s: float(msmd.meanfreq(s)) for s in data_spws}
        bandwidth = {s: float(msmd.bandwidths(s)) for s in data_spws}
    finally:
        msmd.close()
    for g in groups:
        unknown = [s for s in g.split(",") if int(s) >= nspw_all]
        if unknown:
            raise InputError(f"parameter list {Path(plist_path).name}: spw group {g!r} names unknown spw(s) "
                             f"{unknown}: {Path(vis).name} has spws 0-{nspw_all - 1}")
        empty = [s for s in g.split(",") if int(s) not in data_spws]
        if empty:
            raise InputError(f"parameter list {Path(plist_path).name}: spw group {g!r} selects no data: spw(s) "
                             f"{empty} hold no TARGET data in {Path(vis).name}; spws with data: {data_spws}")

    half = H.FLAGSTAT_HALF_WIDTH_ARCSEC + float(plist.get("search_radius_arcsec", H.SE_SEARCH_BUFFER_ARCSEC))
    fields = select_fields(casa, vis, plist["phasecenter"], half)
    if not fields:
        raise InputError(f"No fields to image within {half:.0f} arcsec of {plist['phasecenter']}")
    stat_fields = select_fields(casa, vis, plist["phasecenter"], H.FLAGSTAT_HALF_WIDTH_ARCSEC)
    summary = _flag_summary(casa, vis)
    # With fieldcnt=True the summary is keyed by field name.
    per_field = {k: v for k, v in summary.items() if isinstance(v, dict) and "spw" in v}

    flagpct_group, nfield_above, field_pct = {}, {}, {}
    for g in groups:
        spws = g.split(",")
        tot_f = tot_t = 0.0
        above = 0
        field_pct[g] = {}
        for f in stat_fields:
            spwstat = per_field.get(f["name"], {}).get("spw", {})
            flagged = sum(spwstat.get(s, {}).get("flagged", 0.0) for s in spws)
            total = sum(spwstat.get(s, {}).get("total", 0.0) for s in spws)
            frac = flagged / total if total else 1.0
            field_pct[g][f["name"]] = frac
            above += frac > reject_cfg["flagpct_thresh"]
            tot_f += flagged
            tot_t += total
        if tot_t == 0:
            raise InputError(f"spw group {g!r} selects no data in the {H.FLAGSTAT_HALF_WIDTH_ARCSEC:.0f}\" box "
                             f"around {plist['phasecenter']} of {Path(vis).name}")
        flagpct_group[g] = tot_f / tot_t
        nfield_above[g] = above

    exclude = set(str(reject_cfg.get("exclude_spw", "")).replace(" ", "").split(",")) - {""}
    targets, rejected = [], []
    for g in groups:
        pct = flagpct_group[g]
        if pct >= 1.0:
            warnings.append(f"VLASS Data for spw={g} is {pct * 100:.1f}% flagged, and we will skip it as an "
                            f"imaging target.")
            continue
        if reject_cfg["apply"] and nfield_above[g] >= reject_cfg["nfield_thresh"] and not (set(g.split(",")) & exclude):
            rejected.append(g)
            continue
        spws = [int(s) for s in g.split(",")]
        reffreq_ghz = float(np.mean([meanfreq[s] for s in spws])) / 1e9
        targets.append({
            "group": g, "spw": g, "suffix": naming.group_suffix(g),
            "imagename": naming.plane_root(H.MAKEIMAGES_LABEL, plist["imagename"], g),
            "reffreq": str(reffreq_ghz) + "GHz", "reffreq_ghz": reffreq_ghz,
            "nominal_bandwidth_hz": sum(bandwidth[s] for s in spws),
            "flagpct": pct, "mask": list(masks) + ["pb"], "field": ",".join(str(f["id"]) for f in fields),
            "phasecenter": plist["phasecenter"], "imaging": imaging,
        })
    if rejected:
        warnings.append(f"VLASS Data for spw={rejected} meets the plane rejection criteria: "
                        f"nfield>={reject_cfg['nfield_thresh']} with flagpct>={reject_cfg['flagpct_thresh'] * 100:.0f}%.")
    if not targets:
        raise InputError(f"every spw group of {Path(plist_path).name} was skipped ({'; '.join(warnings)}): "
                         f"nothing to image")
    stats = {"spwgroup_list": groups, "flagpct_spwgroup": flagpct_group, "nfield_above_flagpct": nfield_above,
             "flagpct_field_spwgroup": field_pct, "flagpct_thresh": reject_cfg["flagpct_thresh"],
             "nfield_thresh": reject_cfg["nfield_thresh"], "spwgroup_reject": rejected,
             "parameter_file": Path(plist_path).name, "imagename": plist["imagename"]}
    return targets, warnings, stats
