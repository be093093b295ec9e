"""Benchmark: what one VLASS-SE-CUBE plane costs as the image and the data grow (issue 17, item 6).

    PYTHONPATH=$PWD .venv/bin/python bench/vlass_scaling.py \
        [--sizes 256 512 1024 2048] [--dumps 2 8] [--niter N] [--out bench/results/vlass_scaling.json]

For each visibility count (the tiny preset's ``dumps``, integrations per pointing) the simulator
builds one dataset, the stages up to the cube editimlist run once, and then for each image size
(the CCIP parameter list's imsize, same 4.5" cell: the sky grows with the image) one spw group
goes through vlass-makeimages, vlass-pbcor, vlass-makermsimages, vlass-makecutoutimages and the
weblog. Every stage is its own casa-worker process; its wall time, CPU time (user + system of the
process and its children) and peak RSS come from ``os.wait4``.

The fit, per stage and metric, is ``y = a * pixels^b * visibilities^c`` (least squares in logs;
with two sizes and two counts it is exactly determined up to one residual degree of freedom), and
for peak RSS also ``y = r0 + k * pixels`` at the largest visibility count (the plane-bounded stages
should be that: a fixed overhead plus a few planes). The extrapolation is to a production plane:
12500^2 pixels and the visibility count of a VLASS PIMS (``PRODUCTION`` below says where it comes
from); a cube is 16 such planes (one per spw), run as parallel mapped tasks.

Run the small sizes for a smoke check (``--sizes 256 512``): the fit from two sizes is noisy and
the extrapolation from it is not a resource setting.
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

# A VLASS PIMS, derived (not measured) from the survey's published design (Lacy et al. 2020, PASP
# 132, 035001, "The Karl G. Jansky Very Large Array Sky Survey (VLASS)"): 5520 h over three epochs
# of 33,885 deg^2, i.e. ~196 s of on-sky time per deg^2 per epoch; 0.45 s integrations; 27
# antennas (351 baselines); 16 spws x 64 channels; 4 correlations. A 12500 x 0.6" SE image is
# 2.08 deg on a side (4.3 deg^2), so its PIMS holds ~850 s of data: ~1900 integrations x 351
# baselines = 6.7e5 rows per spw, x 64 channels x 4 correlations = 1.7e8 visibilities per spw.
PRODUCTION = {"pixels": 12500 ** 2, "spws": 16, "rows_per_spw": 6.7e5, "channels": 64, "correlations": 4,
              "source": "derived from Lacy et al. 2020 (PASP 132, 035001): survey time per deg^2, "
                        "0.45 s integrations, 351 baselines, 16x64 channels; SE image 12500 x 0.6\""}
PRODUCTION["visibilities"] = PRODUCTION["rows_per_spw"] * PRODUCTION["channels"] * PRODUCTION["correlations"]


def run_measured(args: list[str], env: dict) -> dict:
    """One worker process: wall, CPU and peak RSS from wait4, and its result status."""
    t0 = time.time()
    proc = subprocess.Popen([WORKER, *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
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


def prepare(sim: Path, ws: Path, env: dict) -> str:
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
        run_measured([*args, *w], env)
    return json.loads((ws / "context" / "imaging_ms.json").read_text())["vis"]


def run_size(sim: Path, ws: Path, size: int, env: dict, niter: int | None) -> dict:
    ccip = (sim / "CCIP_parameter.list").read_text()
    drop = ("imsize=", "spw=") + (("niter=",) if niter is not None else ())
    lines = [ln for ln in ccip.splitlines() if not ln.startswith(drop)]
    lines += [f"imsize=[{size},{size}]", f"spw=['{GROUP}']"] + ([f"niter={niter}"] if niter is not None else [])
    (ws / "CCIP_parameter.list").write_text("\n".join(lines) + "\n")
    w = ["--workspace", str(ws)]
    run_measured(["vlass-editimlist-cube", "--param", "parameter_list=CCIP_parameter.list", *w], env)
    out = {}
    for st in STAGES:
        args = [st, *w] if st == "vlass-weblog" else [st, *w, "--param", f"group={json.dumps(GROUP)}", "--tag", "b"]
        out[st] = run_measured(args, env)
    return out


def fit(points: list[dict]) -> dict:
    """Per stage and metric: the power-law fit in pixels and visibilities, and for RSS the linear
    fit in pixels at the largest visibility count."""
    fits = {}
    for st in STAGES:
        fits[st] = {}
        for metric in ("wall_s", "cpu_s", "peak_rss_mb"):
            px = np.array([p["pixels"] for p in points], float)
            nv = np.array([p["visibilities"] for p in points], float)
            y = np.array([max(p["stages"][st][metric], 1e-3) for p in points], float)
            cols = [np.ones_like(px), np.log(px)] + ([np.log(nv)] if len(set(nv)) > 1 else [])
            coef, *_ = np.linalg.lstsq(np.vstack(cols).T, np.log(y), rcond=None)
            rec = {"a": float(np.exp(coef[0])), "b_pixels": float(coef[1]),
                   "c_visibilities": float(coef[2]) if len(coef) > 2 else None}
            c = rec["c_visibilities"] or 0.0
            rec["production_per_plane"] = float(rec["a"] * PRODUCTION["pixels"] ** rec["b_pixels"]
                                                * PRODUCTION["visibilities"] ** c)
            if metric == "peak_rss_mb":
                top = [p for p in points if p["visibilities"] == nv.max()]
                if len({p["pixels"] for p in top}) > 1:
                    k, r0 = np.polyfit([p["pixels"] for p in top], [p["stages"][st][metric] for p in top], 1)
                    rec["linear_mb"] = {"r0": float(r0), "mb_per_megapixel": float(k * 1e6),
                                        "production_per_plane": float(r0 + k * PRODUCTION["pixels"])}
            fits[st][metric] = rec
    return fits


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048])
    ap.add_argument("--dumps", type=int, nargs="+", default=[2, 8])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/casaflow-bench-vlass-scaling"))
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "vlass_scaling.json")
    ap.add_argument("--label", default="", help="e.g. 'partial': written into the result")
    ap.add_argument("--niter", type=int, default=None,
                    help="clean iterations per call (default: the preset's 300); 0 measures gridding, FFTs "
                         "and the post-imaging stages only (iter1-3 then only restore)")
    args = ap.parse_args(argv)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    points = []
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for dumps in args.dumps:
        sim = build(args.workdir, dumps, env)
        ws = args.workdir / f"ws-dumps{dumps}"
        vis = prepare(sim, ws, env)
        nvis = visibilities(ws, vis, env)
        for size in args.sizes:
            stages = run_size(sim, ws, size, env, args.niter)
            points.append({"dumps": dumps, "visibilities": nvis, "imsize": size, "pixels": size * size,
                           "stages": stages})
            print(json.dumps(points[-1]), flush=True)
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    result = {"benchmark": "vlass_scaling", "label": args.label, "started": started,
              "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "machine": {"host": platform.node(), "cpus": os.cpu_count(), "platform": platform.platform(),
                          "loadavg_at_end": load},
              "sizes": args.sizes, "dumps": args.dumps, "group": GROUP, "cell_arcsec": 4.5, "niter": args.niter,
              "points": points, "fit": fit(points), "production": PRODUCTION}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
