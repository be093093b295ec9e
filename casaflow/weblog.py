"""The per-run weblog: one HTML page built from what the stages left in the workspace.

It reads only ``results/*.json`` and ``context/*.json`` (plus images for thumbnails), so it
renders whatever happened: a failed stage shows as failed with its message, a missing resource
shows the restorepims table, a failed spw group shows in the QA column and the error banner.
"""

from __future__ import annotations

import html
import json
import os
import time
from pathlib import Path

from . import cost as costs
from .archive import write_tgz

STYLE = """
body{font-family:sans-serif;margin:1.5em;color:#222} table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #bbb;padding:.25em .5em;font-size:90%;vertical-align:top} th{background:#eef}
.success{background:#e6f4e6} .failed{background:#fbe3e3} .banner{background:#fbe3e3;border:1px solid #c00;
padding:.5em 1em;margin-bottom:1em} .warn{background:#fff6d6} img.thumb{width:150px} pre{white-space:pre-wrap}
"""


WEBLOG_STAGES = ("vlass-weblog", "run-weblog")   # not listed in the page they render
REVIEW_START, REVIEW_END = "<!--qa-review-->", "<!--/qa-review-->"


def _load(path: Path):
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _e(x) -> str:
    return html.escape(str(x))


def _table(headers: list[str], rows) -> str:
    """An HTML table; cells are HTML already (escape values with _e)."""
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _stage_rows(results: list[dict]) -> str:
    rows = []
    for r in results:
        qa = "" if r.get("qa_score") is None else f"{r['qa_score']:.2f}"
        msgs = "<br>".join(_e(m) for m in r.get("qa_messages", []))
        warn = "<br>".join(_e(w) for w in r.get("warnings", []))
        detail = f"<pre>{_e(r.get('message', ''))}</pre>" if r.get("status") != "success" else ""
        secs = (r.get("timings") or {}).get("seconds")
        c = r.get("cost") or {}
        cpu = "" if c.get("cpu_seconds") is None else f"{c['cpu_seconds']:.1f}"
        rows.append(f"<tr class='{_e(r.get('status'))}'><td>{_e(r.get('_name'))}</td><td>{_e(r.get('status'))}"
                    f"{' (' + _e(r.get('failure_class')) + ')' if r.get('failure_class') else ''}</td>"
                    f"<td>{qa}</td><td>{msgs}{detail}</td><td class='{'warn' if warn else ''}'>{warn}</td>"
                    f"<td>{'' if secs is None else f'{secs:.1f}'}</td><td>{cpu}</td>"
                    f"<td>{_e(costs.human_bytes(c.get('peak_rss_bytes')))}</td></tr>")
    return ("<table><tr><th>stage</th><th>status</th><th>QA</th><th>QA messages / error</th><th>warnings</th>"
            "<th>wall s</th><th>CPU s</th><th>peak RSS</th></tr>" + "".join(rows) + "</table>")


def _cost_section(results: list[dict]) -> str:
    """The run's totals: core-hours, wall time, peak memory per stage class."""
    t = costs.run_totals(results)
    rows = [["CPU (core-hours)", f"{t['core_hours']:.4f}"],
            ["elapsed, first stage start to last stage end (s)", f"{t['elapsed_seconds']:.1f}"],
            ["sum of stage wall times (s)", f"{t['stage_wall_seconds']:.1f}"]]
    rows += [[f"peak RSS, {_e(cls)} stages", _e(costs.human_bytes(v))]
             for cls, v in sorted(t["peak_rss_by_class"].items())]
    if t["unmeasured"]:
        rows.append(["stages without a cost record", str(t["unmeasured"])])
    return ("<h2>Cost</h2>" + _table(["", "total"], rows) +
            "<p>CPU is the worker process's and its children's user + system time; peak RSS is the larger of "
            "the worker's own peak and the largest single child's (children's peaks are not summed). "
            "Stages still running (this weblog, the delivery) are not included.</p>")


def _thumbnails(casa, workspace: Path, targets: list[dict], outdir: Path) -> str:
    """A grid: one row per spw group, one column per Stokes plane of the pb-corrected cut-out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from .vlass import images

    outdir.mkdir(parents=True, exist_ok=True)
    head = "<tr><th>spw group</th><th>reffreq</th>" + "".join(f"<th>{s}</th>" for s in "IQUV") + "</tr>"
    rows = []
    for t in targets:
        name = workspace / f"{t['imagename']}.{t['imaging']['stokes']}.iter3.image.pbcor.tt0.subim"
        cells = []
        if casa is not None and name.exists():
            for k, stokes in enumerate("IQUV"):
                # strided read: a thumbnail costs the same memory at 128^2 and at 12500^2
                plane = images.thumbnail(casa, str(name), stokes=k, max_pixels=300).T
                png = outdir / f"{t['suffix']}.{stokes}.png"
                fig, ax = plt.subplots(figsize=(2, 2))
                lim = np.nanmax(np.abs(plane)) or 1.0
                ax.imshow(plane, origin="lower", cmap="gray" if stokes == "I" else "RdBu_r",
                          vmin=-lim if stokes != "I" else np.nanmin(plane), vmax=lim)
                ax.set_axis_off()
                fig.savefig(png, dpi=75, bbox_inches="tight")
                plt.close(fig)
                cells.append(f"<td><img class='thumb' src='thumbs/{png.name}' alt='{stokes}'></td>")
        else:
            cells = ["<td>not imaged</td>"] * 4
        rows.append(f"<tr><td>{_e(t['group'])}</td><td>{_e(t['reffreq'])}</td>{''.join(cells)}</tr>")
    return "<table>" + head + "".join(rows) + "</table>"


def render(workspace: Path, title: str, casa=None) -> Path:
    workspace = Path(workspace)
    out = workspace / "weblog"
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for path in sorted((workspace / "results").glob("*.json"), key=lambda p: p.stat().st_mtime):
        r = _load(path)
        if r and r.get("stage") not in WEBLOG_STAGES:
            r["_name"] = path.stem
            results.append(r)
    failed = [r for r in results if r.get("status") != "success"]
    ctx = {p.stem: _load(p) for p in sorted((workspace / "context").glob("*.json"))}
    parts = [f"<html><head><meta charset='utf-8'><title>{_e(title)}</title><style>{STYLE}</style></head><body>",
             f"<h1>{_e(title)}</h1><p>rendered {time.strftime('%Y-%m-%d %H:%M:%SZ', time.gmtime())}</p>"]
    if failed:
        parts.append("<div class='banner'><b>Failures:</b><ul>" + "".join(
            f"<li>{_e(r['_name'])}: {_e(r.get('message', '')).splitlines()[0] if r.get('message') else ''}</li>"
            for r in failed) + "</ul></div>")
    parts.append(REVIEW_START + _review_section(workspace) + REVIEW_END)
    parts.append("<h2>Stages</h2>" + _stage_rows(results))
    parts.append(_cost_section(results))
    cube = ctx.get("cube_targets")
    if cube:
        parts.append("<h2>Imaging targets</h2>" + _table(
            ["imagename", "mask", "spw", "reffreq", "flagged"],
            ([_e(t["imagename"]), "<br>".join(_e(m) for m in t["mask"]), _e(t["spw"]), _e(t["reffreq"]),
              f"{t['flagpct'] * 100:.1f}%"] for t in cube["targets"])))
        for w in cube.get("warnings", []):
            parts.append(f"<p class='warn'>{_e(w)}</p>")
        parts.append("<h2>Planes (pb-corrected cut-outs)</h2>" +
                     _thumbnails(casa, workspace, cube["targets"], out / "thumbs"))
    planes = ctx.get("planes")
    if planes:
        parts.append("<h2>Plane rejection</h2>" + _table(
            ["group", "reffreq (GHz)", "beam (\")", "beam deviation", "flagged", "kept"],
            ([_e(p["group"]), f"{p['reffreq_ghz']:.4f}", f"{p['beam']['bmaj']:.2f} x {p['beam']['bmin']:.2f}",
              f"{p['beam_dev']:.3f}", f"{p['flagpct'] * 100:.1f}%", "yes" if p["keep"] else "REJECTED"]
             for p in planes["planes"])))
        for f in planes.get("failed", []):
            parts.append(f"<p class='banner'>spw group {_e(f['group'])} failed: {_e(f['failure'])}</p>")
    stokes = ctx.get("stokes")
    if stokes:
        parts.append("<h2>Stokes analysis</h2>" + "".join(
            f"<img src='stokes/{_e(p)}' alt='{_e(p)}'>" for p in stokes.get("plots", [])))
        for roi, fit in (stokes.get("fits") or {}).items():
            parts.append(f"<p>{_e(roi)}: I(3 GHz) = {fit['i_3ghz_jy'] * 1e3:.3f} mJy, alpha = {fit['alpha']:.3f}</p>")
    export = ctx.get("export")
    if export:
        parts.append("<h2>Products</h2><ul>" + "".join(f"<li>{_e(o['fits'])}</li>" for o in export["fits"]) + "</ul>")
    else:
        made = [(r["_name"], p) for r in results for p in r.get("products", [])]
        if made:
            parts.append("<h2>Products</h2>" + _table(
                ["stage", "product", "role", "size"],
                ([_e(n), _e(p["path"]), _e(p.get("role", "")), f"{p['size'] / 1e6:.2f} MB"] for n, p in made)))
    aquas = sorted(workspace.glob("*/*.pipeline_aquareport.xml"))
    if aquas:
        parts.append(_aqua_section(aquas[0], out))
    restore = ctx.get("restorepims")
    if restore:
        parts.append("<h2>restorepims resources</h2>" + _table(
            ["resource", "found", "paths or pattern"],
            ([_e(k), "&#10003;" if v[1] else "&#10007;", _e(v[0])] for k, v in restore["resources"].items())))
    parts.append("</body></html>")
    index = out / "index.html"
    index.write_text("\n".join(parts))
    return index


def _review_section(workspace: Path) -> str:
    """The QA review's decision (results/qa-review.json, written by the review step), or ''."""
    from .qa import REVIEW_STAGE

    r = _load(Path(workspace) / "results" / f"{REVIEW_STAGE}.json")
    if not r:
        return ""
    o = r.get("outputs") or {}
    score = "none" if o.get("score") is None else f"{o['score']:.2f}"
    rows = [["decision", _e(o.get("decision", ""))], ["reviewer", _e(o.get("reviewer") or "")],
            ["reason", _e(o.get("reason") or "")], ["QA score (threshold)", f"{score} ({_e(o.get('threshold'))})"],
            ["mode", _e(o.get("mode", ""))], ["decided", _e(o.get("decided_at", ""))]]
    cls = "banner" if r.get("status") != "success" else ""
    return (f"<div class='{cls}'><h2>QA review: {_e(o.get('decision', ''))}</h2>" + _table(["", ""], rows) +
            ("<p>Not delivered.</p>" if r.get("status") != "success" else "") + "</div>")


def add_review(workspace: Path) -> Path | None:
    """Put the review's decision into an already rendered weblog (its section between the markers)
    and re-pack the weblog tarballs the weblog stage made, so the page people open and the delivered
    tarball both show it. None when the run has no weblog."""
    from .qa import REVIEW_STAGE

    ws = Path(workspace)
    index = ws / "weblog" / "index.html"
    if not index.is_file():
        return None
    page = index.read_text()
    start, end = page.find(REVIEW_START), page.find(REVIEW_END)
    if start < 0 or end < start:
        raise ValueError(f"{index}: no QA review markers (rendered by an older casaflow); re-run the weblog stage")
    page = page[:start + len(REVIEW_START)] + _review_section(ws) + page[end:]
    tmp = index.with_name(f".{index.name}.{os.getpid()}.tmp")
    tmp.write_text(page)
    os.replace(tmp, index)
    for res in sorted((ws / "results").glob("*.json")):
        r = _load(res)
        if not r or r.get("stage") not in WEBLOG_STAGES or r.get("stage") == REVIEW_STAGE:
            continue
        for p in r.get("products", []):
            if p.get("role") == "weblog" and p["path"].endswith(".tgz"):
                tarball(ws, ws / p["path"])
    return index


def _aqua_section(path: Path, out: Path) -> str:
    """The AQUA report's per-stage representative scores as a chart and a table, and its flux
    measurements."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import xmlsafe

    root = xmlsafe.parse_file(path, f"AQUA report {path.name}")
    stages = []
    for st in root.iterfind("QaPerStage/Stage"):
        rep = st.find("RepresentativeScore")
        score = rep.get("Score") if rep is not None else "None"
        stages.append((st.get("Number"), st.get("Name"), score, rep.get("Reason", "") if rep is not None else ""))
    numeric = [(f"{n} {name}", float(sc)) for n, name, sc, _ in stages if sc not in ("None", "Undefined")]
    html_parts = [f"<h2>QA (AQUA report {_e(path.name)})</h2>"]
    if numeric:
        fig, ax = plt.subplots(figsize=(7, 0.25 * len(numeric) + 1))
        colours = ["#c33" if v < 0.34 else "#e90" if v < 0.67 else "#393" for _, v in numeric]
        ax.barh([k for k, _ in numeric][::-1], [v for _, v in numeric][::-1], color=colours[::-1])
        ax.set_xlim(0, 1)
        ax.set_xlabel("representative QA score")
        fig.tight_layout()
        fig.savefig(out / "aqua_scores.png", dpi=80)
        plt.close(fig)
        html_parts.append("<img src='aqua_scores.png' alt='QA scores per stage'>")
    html_parts.append(_table(["stage", "task", "score", "reason"],
                             ([_e(n), _e(name), _e(sc), _e(reason)] for n, name, sc, reason in stages)))
    flux = root.findall(".//FluxMeasurement")
    if flux:
        html_parts.append("<h3>Flux measurements</h3>" + _table(
            ["origin", "asdm", "field", "spw", "GHz", "Jy"],
            ([_e(f.getparent().get("Origin")), _e(f.get("Asdm")), _e(f.get("Field")), _e(f.get("MsSpwId")),
              _e(f.get("FrequencyGHz")), _e(f.get("FluxJy"))] for f in flux)))
    return "".join(html_parts)


def tarball(workspace: Path, dest: Path, arcname: str = "weblog") -> Path:
    """``weblog.tgz`` of the weblog directory (as ``arcname`` inside), written atomically."""
    return write_tgz(dest, [(Path(workspace) / "weblog", arcname)])
