"""Benchmark: what one VLASS-SE-CUBE plane costs as the image and the data grow (issue 17, item 6).

    PYTHONPATH=$PWD .venv/bin/python bench/vlass_scaling.py \
        [--sizes 256 512 1024 2048] [--dumps 2 8] [--niter N] [--no-tclean-alone] \
        [--add-to PREVIOUS.json] [--out bench/results/vlass_scaling.json]
    PYTHONPATH=$PWD .venv/bin/python bench/vlass_scaling.py --refit [--out ...]   # fit again only

For each visibility count (the tiny preset's ``dumps``, integrations per pointing) the simulator
builds one dataset (cached in --workdir) and the stages up to flagtargetsdata run once (measured
too: ``before_imaging``); then for each image size (the CCIP parameter list's imsize, same 4.5"
cell: the sky grows with the image) one spw group goes through vlass-makeimages, vlass-pbcor,
vlass-makermsimages, vlass-makecutoutimages, vlass-planes, vlass-analyzestokescubes,
vlass-exportvlassdata and vlass-weblog, and two references run in fresh processes:
``tclean-alone`` (the same four tclean calls as vlass-makeimages, same arguments and masks, and
nothing else of casaflow's) and ``casa-baseline`` (CASA imported, the image opened: the fixed cost
of any CASA stage). Every one is its own process; wall time, CPU time (user + system of the process
and its children) and peak RSS come from ``os.wait4``; the peak the worker itself wrote into
results/<stage>.json is kept beside it (``result_json_peak_rss_mb``). One OpenMP thread per process.

The fit, per stage and metric (``fit``): a power law ``a * pixels^b * visibilities^c`` (describes
the growth) and the extrapolated model ``y0 + p * pixels + v * visibilities`` (non-negative least
squares; no visibility term for the stages that read images only). The stages reading the
cut-outs (analyzestokescubes, exportvlassdata, weblog) are fitted on the cut-out's pixels. The
extrapolation (``production_per_plane``) is to a production plane, ``PRODUCTION`` below (where
its figures come from is written there); a cube is 16 such planes, parallel mapped tasks.
``targets`` checks the issue's two memory targets, ``defaults`` the memory per stage class that
operators/settings.py and the chart's values take (headroom: REQUEST_HEADROOM, LIMIT_HEADROOM).

Results are written after every point (a partial run keeps what it measured).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
WORKER = str(Path(sys.executable).with_name("casa-worker"))
STAGES = ("vlass-makeimages", "vlass-pbcor", "vlass-makermsimages", "vlass-makecutoutimages", "vlass-weblog")
GROUP = "2"
CUTOUT_DEG = 1.0 + 2.0 / 60.0    # hif_makecutoutimages: the central 1 deg + 2'

# The visibilities one production plane (one spw) grids, derived (not measured: no VLASS data here).
# * Time on the sky: 5520 h for three epochs of the 33,885 deg^2 above dec -40 (Lacy et al. 2020,
#   PASP 132, 035001, "The Karl G. Jansky Very Large Array Sky Survey (VLASS)"), i.e. 1840 h per
#   epoch, 195.5 s per deg^2 if every hour were on source (an upper bound: calibrators and slews
#   are in the 5520 h).
# * Area: the reference selects the fields a SE image grids in a box of +-(1800" + 1000") around
#   the phase centre (pipeline/hif/tasks/editimlist/editimlist.py: mosaic_side_arcsec 3600 / 2 +
#   buffer_radius() 1000 of imageparams_vlass_single_epoch_continuum.py; select_fields in
#   imageparams_base.py compares |dra| and |ddec|): 5600" = 1.556 deg a side, 2.42 deg^2, so ~473 s.
# * VLASS's correlator set-up (Lacy et al. 2020): 0.45 s integrations, 16 spws x 64 channels of
#   2 MHz, full polarisation (4 correlations); 27 antennas, 351 baselines.
# => 473 s / 0.45 s = 1051 integrations x 351 = 3.69e5 rows per spw, x 64 x 4 = 9.4e7 visibilities
# per spw (one plane); 1.5e9 for the 16 spws of the PIMS. The image: 12500^2 pixels of 0.6"
# (imageparams_vlass_single_epoch_continuum.py: SeContMosaic.imsize, inherited by SeCube).
_ON_SKY_S_PER_DEG2 = 5520 * 3600 / 3 / 33885
_FIELD_BOX_DEG = 2 * (1800 + 1000) / 3600
_ROWS = _ON_SKY_S_PER_DEG2 * _FIELD_BOX_DEG ** 2 / 0.45 * 351
PRODUCTION = {"pixels": 12500 ** 2, "imsize": 12500, "cell_arcsec": 0.6, "stokes": 4, "spws": 16,
              "rows_per_spw": round(_ROWS, -3), "channels": 64, "correlations": 4,
              "source": "derived: Lacy et al. 2020 (PASP 132, 035001) for 5520 h / 3 epochs / 33,885 deg^2, "
                        "0.45 s integrations, 351 baselines, 16 spws x 64 channels x 4 correlations; the "
                        "reference's field box for a SE image (editimlist.py: 1800\" + buffer_radius 1000\", "
                        "|dra|,|ddec| < 2800\": 2.42 deg^2); imsize 12500 of 0.6\" (SeContMosaic.imsize). "
                        "An upper bound: all of the survey's hours counted as on-source."}
PRODUCTION["cutout_imsize"] = round(3600 * CUTOUT_DEG / PRODUCTION["cell_arcsec"])   # 6200
PRODUCTION["cutout_pixels"] = PRODUCTION["cutout_imsize"] ** 2
PRODUCTION["visibilities"] = PRODUCTION["rows_per_spw"] * PRODUCTION["channels"] * PRODUCTION["correlations"]


def run_measured(args: list[str], env: dict, argv0: list[str] | None = None) -> dict:
    """One worker process (or ``argv0 + args``): wall, CPU and peak RSS from wait4."""
    t0 = time.time()
    proc = subprocess.Popen([*(argv0 or [WORKER]), *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env=env, text=True)
    out = proc.stdout.read()
    _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.time() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{args[0]} failed ({proc.returncode}): {out[-1500:]}")
    return {"wall_s": round(wall, 2), "cpu_s": round(ru.ru_utime + ru.ru_stime, 2),
            "peak_rss_mb": round(ru.ru_maxrss / 1024, 1)}


def build(workdir: Path, dumps: int, env: dict) -> Path:
    """Simulated PIMS + SE resources for this visibility count (cached in workdir)."""
    out = workdir / f"sim-dumps{dumps}"
    if (out / "truth.json").exists():
        return out
    code = ("import sys; from pathlib import Path; from casaflow.casarun import Casa; "
            "from casaflow.simulate import vlass; ws = Path(sys.argv[1]); ws.mkdir(parents=True, exist_ok=True); "
            "vlass.build(ws, Casa(ws, 'bench-sim', ws / 'sim.casa.log'), 'tiny', changes={'dumps': int(sys.argv[2])})")
    subprocess.run([sys.executable, "-c", code, str(out), str(dumps)], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    return out


def visibilities(ws: Path, vis: str, env: dict) -> int:
    """Unflagged-or-not visibilities of the imaged group in the split MS (rows x chans x corrs)."""
    code = ("import sys; from casaflow.casaenv import import_casa; ct, _ = import_casa(); ms = ct.ms(); "
            "ms.open(sys.argv[1]); ms.msselect({'spw': sys.argv[2]}); d = ms.getdata(['flag'])['flag']; "
            "print(d.size); ms.close()")
    out = subprocess.run([sys.executable, "-c", code, str(ws / vis), GROUP], check=True, env=env,
                         capture_output=True, text=True).stdout
    return int(out.strip().splitlines()[-1])


def prepare(sim: Path, ws: Path, env: dict, measured: dict | None = None) -> str:
    if ws.exists():
        shutil.rmtree(ws)
    ws.mkdir(parents=True)
    truth = json.loads((sim / "truth.json").read_text())
    for name in ("SEIP_parameter.list", "reimaging_resources.tgz"):
        shutil.copyfile(sim / name, ws / name)
    (ws / truth["pims"]).symlink_to(sim / truth["pims"])
    w = ["--workspace", str(ws)]
    for args in (["vlass-importdata", "--param", f"vis={truth['pims']}"],
                 ["vlass-editimlist-seip", "--param", "parameter_list=SEIP_parameter.list"],
                 ["vlass-transformimagedata"], ["vlass-restorepims"], ["vlass-flagtargetsdata"]):
        m = run_measured([*args, *w], env)
        if measured is not None:
            measured[args[0]] = m
    return json.loads((ws / "context" / "imaging_ms.json").read_text())["vis"]


ANALYSIS = ("vlass-planes", "vlass-analyzestokescubes", "vlass-exportvlassdata")
POST = ("vlass-pbcor", "vlass-makermsimages", "vlass-makecutoutimages", "vlass-weblog")
MEASURED = STAGES + ANALYSIS + ("tclean-alone", "casa-baseline")
# These read images only, never the MS: their fits have no visibility term (a difference between
# the two visibility counts is the machine's noise for them, not work).
IMAGES_ONLY = ("vlass-pbcor", "vlass-makermsimages", "vlass-makecutoutimages", "vlass-analyzestokescubes",
               "vlass-weblog", "casa-baseline")
# These read the cut-outs (the .subim images), not the full plane: their size is the cut-out's.
ON_CUTOUT = ("vlass-analyzestokescubes", "vlass-exportvlassdata", "vlass-weblog")

PLANE_BYTES_PER_PIXEL = 4        # one x/y plane of one Stokes, float32


def _tclean_alone(ws: Path, group: str) -> None:
    """In a fresh process: the same four tclean calls as vlass-makeimages (the heuristics of
    ``makeimages.iteration_calls``, the same cleanmasks, the products moved on between calls as
    there), and nothing else of casaflow's: no keywords, no beam fix, no Casa wrapper."""
    from casaflow.casaenv import import_casa
    from casaflow.vlass import context, makeimages as mk

    os.chdir(ws)
    _, tasks = import_casa()
    (ws / "logs").mkdir(exist_ok=True)
    tasks.casalog.setlogfile(str(ws / "logs" / "tclean-alone.casa.log"))
    target = next(t for t in context.read(ws, "cube_targets", "bench")["targets"] if t["group"] == group)
    vis = context.read(ws, "imaging_ms", "bench")["vis"]
    out = ws / "alone"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    root = mk.root_of(target)
    it = None
    for n, call in enumerate(mk.iteration_calls(vis, target)):
        prev, it = it, f"alone/{root}.iter{n}"
        if n in (1, 2):
            # the cleanmask vlass-makeimages prepared for this iteration (it keeps them)
            shutil.copytree(f"{root}.iter{n}.cleanmask", f"{it}.cleanmask")
            call["mask"] = f"{it}.cleanmask"
        if prev is not None:
            mk._advance(prev, it)
        tasks.tclean(**call, imagename=it)


def _casa_baseline(ws: Path, image: str) -> None:
    """In a fresh process: CASA imported as a stage imports it, the image opened, its shape and
    beam read, closed. The fixed overhead every CASA stage pays before touching a pixel."""
    from casaflow.casarun import Casa
    from casaflow.vlass import images

    os.chdir(ws)
    casa = Casa(ws, "casa-baseline", ws / "logs" / "casa-baseline.casa.log")
    images.shape(casa, image)
    images.beam_of(casa, image)


def _result_peak_mb(ws: Path, stage: str, tag: str | None) -> float | None:
    """The peak RSS the worker itself wrote into results/<stage>[.<tag>].json (cost.peak_rss_bytes)."""
    path = ws / "results" / (f"{stage}.{tag}.json" if tag else f"{stage}.json")
    try:
        return round(json.loads(path.read_text())["cost"]["peak_rss_bytes"] / 2 ** 20, 1)
    except (OSError, KeyError, TypeError, ValueError):
        return None


def run_size(sim: Path, ws: Path, size: int, env: dict, niter: int | None, tclean_alone: bool = True) -> dict:
    ccip = (sim / "CCIP_parameter.list").read_text()
    drop = ("imsize=", "spw=") + (("niter=",) if niter is not None else ())
    lines = [ln for ln in ccip.splitlines() if not ln.startswith(drop)]
    lines += [f"imsize=[{size},{size}]", f"spw=['{GROUP}']"] + ([f"niter={niter}"] if niter is not None else [])
    (ws / "CCIP_parameter.list").write_text("\n".join(lines) + "\n")
    w = ["--workspace", str(ws)]
    for stale in ("results", "weblog", "products", "alone"):
        shutil.rmtree(ws / stale, ignore_errors=True)
    run_measured(["vlass-editimlist-cube", "--param", "parameter_list=CCIP_parameter.list", *w], env)
    targets = json.loads((ws / "context" / "cube_targets.json").read_text())["targets"]
    target = next(t for t in targets if t["group"] == GROUP)
    tag = target["suffix"]            # as the DAG tags the group's stages (vlass-planes reads them so)
    out = {}
    # The per-group chain, then the analysis over all planes (one plane here) and the weblog last.
    for st in ("vlass-makeimages", "vlass-pbcor", "vlass-makermsimages", "vlass-makecutoutimages",
               *ANALYSIS, "vlass-weblog"):
        per_group = st in STAGES and st != "vlass-weblog"
        args = [st, *w, "--param", f"group={json.dumps(GROUP)}", "--tag", tag] if per_group else [st, *w]
        out[st] = run_measured(args, env)
        out[st]["result_json_peak_rss_mb"] = _result_peak_mb(ws, st, tag if per_group else None)
    box = json.loads((ws / "context" / f"cutout.{tag}.json").read_text()).get("box")
    if box:
        x0, y0, x1, y1 = (float(v) for v in box.split(","))
        out["_cutout_imsize"] = [int(round(x1 - x0 + 1)), int(round(y1 - y0 + 1))]
    else:
        out["_cutout_imsize"] = [size, size]
    me = [sys.executable, str(Path(__file__).resolve())]
    if tclean_alone:
        out["tclean-alone"] = run_measured(["--tclean-alone", str(ws), GROUP], env, me)
    image = f"{target['imagename']}.{target['imaging']['stokes']}.iter3.image.pbcor.tt0"
    out["casa-baseline"] = run_measured(["--casa-baseline", str(ws), image], env, me)
    shutil.rmtree(ws / "alone", ignore_errors=True)
    return out


def _cutout_pixels(p: dict, cell_arcsec: float = 4.5) -> int:
    """The cut-out's pixels of a point: measured (its box), else by the rule (older results)."""
    if "cutout_pixels" in p:
        return p["cutout_pixels"]
    size = p["imsize"]
    return size * size if size * cell_arcsec / 3600 <= CUTOUT_DEG else round(3600 * CUTOUT_DEG / cell_arcsec) ** 2


def pixels_of(p: dict, stage: str) -> int:
    """The pixels a stage works on: the plane's, or for the stages reading cut-outs the cut-out's."""
    return _cutout_pixels(p) if stage in ON_CUTOUT else p["pixels"]


def _lstsq_nonneg(cols: list[np.ndarray], y: np.ndarray) -> np.ndarray:
    """Least squares with every coefficient >= 0 (a cost cannot fall as the work grows): the
    unconstrained solution, dropping negative terms one at a time."""
    active = list(range(len(cols)))
    while True:
        A = np.vstack([cols[i] for i in active]).T
        coef, *_ = np.linalg.lstsq(A, y, rcond=None)
        if (coef >= 0).all() or len(active) == 1:
            full = np.zeros(len(cols))
            full[active] = np.maximum(coef, 0)
            return full
        active.pop(int(np.argmin(coef)))


def fit(points: list[dict]) -> dict:
    """Per stage and metric:

    * ``power``: ``y = a * pixels^b * visibilities^c`` (least squares in logs), as a description
      of the growth over the measured range;
    * ``linear``: ``y = y0 + p * pixels + v * visibilities`` (non-negative least squares), the
      model that is extrapolated: memory is a fixed overhead plus image-sized buffers (pixels)
      plus visibility buffers; time is a fixed start-up plus per-pixel (FFT, per-plane statistics)
      plus per-visibility (gridding) work. ``production_per_plane`` is its value for a production
      plane; ``rms_residual`` says how well it fits the measured points.
    """
    fits = {}
    for st in MEASURED:
        pts = [p for p in points if st in p["stages"]]
        if len(pts) < 2:
            continue
        nv = np.array([p["visibilities"] for p in pts], float)
        px = np.array([pixels_of(p, st) for p in pts], float)
        prod_px = PRODUCTION["cutout_pixels"] if st in ON_CUTOUT else PRODUCTION["pixels"]
        fits[st] = {"pixels": "cut-out" if st in ON_CUTOUT else "plane"}
        for metric in ("wall_s", "cpu_s", "peak_rss_mb"):
            y = np.array([p["stages"][st][metric] for p in pts], float)
            ylog = np.log(np.maximum(y, 1e-3))
            cols = [np.ones_like(px), np.log(px)] + ([np.log(nv)] if len(set(nv)) > 1 and st not in IMAGES_ONLY else [])
            if len(set(px)) < 2:
                continue
            coef, *_ = np.linalg.lstsq(np.vstack(cols).T, ylog, rcond=None)
            power = {"a": float(np.exp(coef[0])), "b_pixels": float(coef[1]),
                     "c_visibilities": float(coef[2]) if len(coef) > 2 else None}
            with_vis = len(set(nv)) > 1 and st not in IMAGES_ONLY
            lin_cols = [np.ones_like(px), px] + ([nv] if with_vis else [])
            lc = _lstsq_nonneg(lin_cols, y)
            pred = np.vstack(lin_cols).T @ lc
            v_coef = float(lc[2]) if len(lc) > 2 else 0.0
            linear = {"y0": float(lc[0]), "per_megapixel": float(lc[1] * 1e6),
                      "per_million_visibilities": v_coef * 1e6,
                      "rms_residual": float(np.sqrt(np.mean((pred - y) ** 2))),
                      "production_per_plane": float(lc[0] + lc[1] * prod_px
                                                    + v_coef * PRODUCTION["visibilities"])}
            if metric == "peak_rss_mb":
                linear["bytes_per_pixel"] = float(lc[1] * 2 ** 20)
            fits[st][metric] = {"power": power, "linear": linear}
    return fits


def targets(points: list[dict]) -> dict:
    """The issue's two memory targets.

    * vlass-makeimages' peak RSS <= 1.25 x the peak of tclean alone (same data, same args, a fresh
      process), at every measured point.
    * Every post-imaging stage peaks at <= 3 planes plus a fixed overhead: per visibility count,
      the stage's peak RSS against pixels is fitted as ``r0 + k * pixels``; ``r0`` is the stage's
      fixed overhead (measured: the intercept; for comparison ``casa-baseline`` is a fresh process
      that only imports CASA and opens the image) and ``k`` must be <= 3 planes' bytes per pixel
      (3 x 4 B: one plane is imsize^2 float32, one Stokes). Per point, the peak above the stage's
      own overhead is also given in planes.
    """
    rows = []
    for p in points:
        s = p["stages"]
        if "tclean-alone" not in s:
            continue
        rows.append({"dumps": p["dumps"], "imsize": p["imsize"],
                     "plane_mb": round(p["pixels"] * PLANE_BYTES_PER_PIXEL / 2 ** 20, 2),
                     "tclean_alone_mb": s["tclean-alone"]["peak_rss_mb"],
                     "makeimages_mb": s["vlass-makeimages"]["peak_rss_mb"],
                     "makeimages_over_tclean": round(s["vlass-makeimages"]["peak_rss_mb"]
                                                     / s["tclean-alone"]["peak_rss_mb"], 3),
                     "casa_baseline_mb": s["casa-baseline"]["peak_rss_mb"]})
    post = {}
    for st in POST + ANALYSIS:
        per_dumps = {}
        for dumps in sorted({p["dumps"] for p in points}):
            pts = [p for p in points if p["dumps"] == dumps and st in p["stages"]]
            x = np.array([pixels_of(p, st) for p in pts], float)
            if len(set(x)) < 2:
                continue
            y = np.array([p["stages"][st]["peak_rss_mb"] for p in pts], float) * 2 ** 20
            k, r0 = np.polyfit(x, y, 1)
            per_dumps[str(dumps)] = {
                "overhead_mb": round(r0 / 2 ** 20, 1), "bytes_per_pixel": round(float(k), 2),
                "planes": round(float(k) / PLANE_BYTES_PER_PIXEL, 2), "met": bool(k <= 3 * PLANE_BYTES_PER_PIXEL),
                "above_overhead_planes": {str(p["imsize"]): round((yy - r0) / (xx * PLANE_BYTES_PER_PIXEL), 2)
                                          for p, xx, yy in zip(pts, x, y)}}
        if per_dumps:
            post[st] = {"post_imaging": st in POST, "pixels": "cut-out" if st in ON_CUTOUT else "plane",
                        "per_dumps": per_dumps,
                        "met": all(v["met"] for v in per_dumps.values())}
    return {"points": rows,
            "makeimages_le_1.25_tclean_alone": all(r["makeimages_over_tclean"] <= 1.25 for r in rows) if rows else None,
            "max_makeimages_over_tclean": max((r["makeimages_over_tclean"] for r in rows), default=None),
            "plane_bounded": post,
            "post_imaging_le_3_planes": all(v["met"] for v in post.values() if v["post_imaging"]) if post else None}


# Headroom over the extrapolated production peak of the class's largest measured stage: requests
# x1.25 (the scheduler reserves what the pod will use, with a margin for the fit's error), limits
# x1.5 (the OOM line; the extrapolation is ~37x beyond the largest measured plane). Whole GiB, up.
REQUEST_HEADROOM, LIMIT_HEADROOM = 1.25, 1.5


def cleaning_extra(points0: list[dict], points_n: list[dict]) -> dict | None:
    """What cleaning (a run with niter > 0) adds to vlass-makeimages over niter 0 at the same image
    size and visibility count: peak RSS ``e + k * pixels`` (with one size: all of it per pixel, the
    pessimistic reading), and the CPU ratio."""
    pairs = []
    for q in points_n:
        p = next((p for p in points0 if p["dumps"] == q["dumps"] and p["imsize"] == q["imsize"]), None)
        if p is None:
            continue
        a, b = p["stages"]["vlass-makeimages"], q["stages"]["vlass-makeimages"]
        pairs.append({"dumps": q["dumps"], "imsize": q["imsize"], "pixels": q["pixels"],
                      "extra_rss_mb": round(b["peak_rss_mb"] - a["peak_rss_mb"], 1),
                      "cpu_ratio": round(b["cpu_s"] / a["cpu_s"], 2)})
    if not pairs:
        return None
    x = np.array([r["pixels"] for r in pairs], float)
    y = np.array([r["extra_rss_mb"] for r in pairs], float)
    if len(set(x)) > 1:
        k, e = np.polyfit(x, y, 1)
        if k < 0:
            k, e = 0.0, float(y.max())
    else:
        k, e = float(y[0] / x[0]), 0.0
    return {"pairs": pairs, "fixed_mb": round(float(e), 1), "bytes_per_pixel": round(float(k) * 2 ** 20, 1),
            "production_extra_mib": round(float(e + k * PRODUCTION["pixels"])),
            "note": "added to vlass-makeimages' niter-0 extrapolation in 'defaults'"}


def defaults(fits: dict, cleaning: dict | None = None) -> dict:
    """Memory requests and limits per stage class from the fit (classes from the stage registry);
    vlass-makeimages' peak includes what cleaning adds (``cleaning_extra``) when it was measured."""
    import math

    from casaflow import registry

    specs = registry.load_all()
    out = {"request_headroom": REQUEST_HEADROOM, "limit_headroom": LIMIT_HEADROOM,
           "cleaning_included": bool(cleaning)}
    for cls in ("light", "medium", "heavy"):
        peaks = {st: round(f["peak_rss_mb"]["linear"]["production_per_plane"]
                           + (cleaning["production_extra_mib"] if cleaning and st == "vlass-makeimages" else 0))
                 for st, f in fits.items() if st in specs and specs[st].resource_class == cls and "peak_rss_mb" in f}
        if not peaks:
            continue
        top = max(peaks, key=peaks.get)
        out[cls] = {"production_peak_mib": peaks, "sized_by": top,
                    "requests_memory": f"{math.ceil(peaks[top] * REQUEST_HEADROOM / 1024)}Gi",
                    "limits_memory": f"{math.ceil(peaks[top] * LIMIT_HEADROOM / 1024)}Gi",
                    "production_cpu_s_per_plane": {st: round(fits[st]["cpu_s"]["linear"]["production_per_plane"])
                                                   for st in peaks},
                    "not_measured": sorted(n for n, sp in specs.items() if sp.resource_class == cls and n not in peaks)}
    return out


def _load() -> list:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def _write(out: Path, result: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    os.replace(tmp, out)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--tclean-alone"]:
        _tclean_alone(Path(argv[1]), argv[2])
        return 0
    if argv[:1] == ["--casa-baseline"]:
        _casa_baseline(Path(argv[1]), argv[2])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048])
    ap.add_argument("--dumps", type=int, nargs="+", default=[2, 8])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/casaflow-bench-vlass-scaling"))
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "vlass_scaling.json")
    ap.add_argument("--label", default="", help="e.g. 'partial': written into the result")
    ap.add_argument("--niter", type=int, default=None,
                    help="clean iterations per call (default: the preset's 300); 0 measures gridding, FFTs "
                         "and the post-imaging stages only (iter1-3 then only restore)")
    ap.add_argument("--add-to", type=Path, default=None,
                    help="a previous result of this script: its points are kept and fitted with the new ones")
    ap.add_argument("--no-tclean-alone", action="store_true",
                    help="skip the tclean-alone reference run (it costs as much as vlass-makeimages)")
    ap.add_argument("--cleaning", type=Path, default=None,
                    help="a result of this script with niter > 0 at some of the same points: what cleaning "
                         "adds to vlass-makeimages goes into the defaults")
    ap.add_argument("--refit", action="store_true",
                    help="only recompute the fit and the targets of --out from its points")
    args = ap.parse_args(argv)
    if args.refit:
        result = json.loads(args.out.read_text())
        result["production"] = PRODUCTION
        result["fit"], result["targets"] = fit(result["points"]), targets(result["points"])
        if args.cleaning:
            result["cleaning"] = cleaning_extra(result["points"], json.loads(args.cleaning.read_text())["points"])
        result["defaults"] = defaults(result["fit"], result.get("cleaning"))
        _write(args.out, result)
        print(f"refitted {args.out}")
        return 0
    # One OpenMP thread per CASA process, as local mode runs them (settings.omp_threads): CPU and
    # wall time then describe one core's work, whatever else shares the machine.
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    previous = json.loads(args.add_to.read_text()) if args.add_to else None
    points = list(previous["points"]) if previous else []
    result = {"benchmark": "vlass_scaling", "label": args.label,
              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "machine": {"host": platform.node(), "cpus": os.cpu_count(), "platform": platform.platform(),
                          "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30, 1),
                          "loadavg_at_start": _load()},
              "omp_num_threads": env["OMP_NUM_THREADS"],
              "sizes": args.sizes, "dumps": args.dumps, "group": GROUP, "cell_arcsec": 4.5, "niter": args.niter,
              "production": PRODUCTION, "points": points}
    if previous:
        result["previous_runs"] = previous.get("previous_runs", []) + [
            {k: previous.get(k) for k in ("started", "finished", "machine", "sizes", "dumps", "niter", "prepare_s")}]
    for dumps in args.dumps:
        t0 = time.time()
        sim = build(args.workdir, dumps, env)
        ws = args.workdir / f"ws-dumps{dumps}"
        before_imaging = {}
        vis = prepare(sim, ws, env, before_imaging)
        nvis = visibilities(ws, vis, env)
        result.setdefault("prepare_s", {})[str(dumps)] = round(time.time() - t0, 1)
        # the stages before imaging depend on the visibilities only (not on the image size)
        result.setdefault("before_imaging", {})[str(dumps)] = {"visibilities": nvis, "stages": before_imaging}
        for size in args.sizes:
            stages = run_size(sim, ws, size, env, args.niter, not args.no_tclean_alone)
            cut = stages.pop("_cutout_imsize")
            points.append({"dumps": dumps, "visibilities": nvis, "imsize": size, "pixels": size * size,
                           "cutout_imsize": cut, "cutout_pixels": cut[0] * cut[1],
                           "loadavg_after": _load(), "stages": stages})
            print(json.dumps(points[-1]), flush=True)
            result["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            _write(args.out, result)           # a partial run keeps what it measured
    result["machine"]["loadavg_at_end"] = _load()
    result["fit"] = fit(points)
    result["targets"] = targets(points)
    if args.cleaning:
        result["cleaning"] = cleaning_extra(points, json.loads(args.cleaning.read_text())["points"])
    result["defaults"] = defaults(result["fit"], result.get("cleaning"))
    result["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    _write(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
