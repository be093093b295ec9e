"""Benchmark: peak memory of the post-imaging work that vlass_scaling found above 3 planes (issue 17).

    PYTHONPATH=$PWD .venv/bin/python bench/postimaging_memory.py [--sizes 2048 4096] [--work ...] \
        [--workdir /tmp/casaflow-bench-postimaging] [--out bench/results/postimaging_memory.json]

bench/vlass_scaling.py measured vlass-makermsimages at 9.8 planes and vlass-exportvlassdata at 12-15
planes of their input. Its images are real tclean products, but its cut-outs stay at 826^2 pixels
(the 1 deg + 2' box at 4.5" cells) and its planes at or below 4096^2: sizes at which CASA's
statistics still load a plane whole (below ~128 MB of data they do; above it they stream), so
fixed costs and growth mix. Here, on IQUV images made for the purpose (float32, 0.6" cells, a
beam, Jy/beam) at sizes up to a production cut-out (6200^2), each piece of work runs in a fresh
process, after a warm-up on a 256^2 image, and reports how far its peak RSS (ru_maxrss) rose:

* ``rms_image``: casaflow's vlass-makermsimages (imdev one Stokes at a time, joined), and
  ``imdev_whole_cube``: the same imdev over the IQUV image at once (the reference's call, and
  casaflow's until 2026-12-02);
* ``com_images``: the ``.com`` smoothing and regridding of vlass-exportvlassdata (one Stokes at a
  time), and ``convolve2d_whole_cube``: ia.convolve2d over the IQUV image at once (as before);
* ``export_plane``: the per-plane FITS export (split into IQU/V, statistics, exportfits, headers).

A plane is one Stokes of the image: size^2 x 4 bytes. The JSON has, per size and piece of work,
the rise in MB and in planes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

WORK = ("rms_image", "imdev_whole_cube", "export_plane", "com_images", "convolve2d_whole_cube")
OBS = {"start_mjd": 59790.40, "end_mjd": 59790.45, "mid_mjd": 59790.425, "telescope": "VLA",
       "lon_deg": -107.6184, "lat_deg": 34.0784}
TARGET_BEAM = {"major": {"value": 3.2, "unit": "arcsec"}, "minor": {"value": 2.9, "unit": "arcsec"},
               "positionangle": {"value": 20.0, "unit": "deg"}}


def root(n: int) -> str:
    return f"s13_0.VLASS2.2.se.T23t09.J232327+502432.{n}.v1.spw2.IQUV"


def make(casa, n: int) -> None:
    """The pb-corrected cut-out and its rms cut-out of one plane, IQUV [n, n, 4, 1], written in strips."""
    import numpy as np

    rng = np.random.default_rng(n)
    for suffix, sigma in ((".iter3.image.pbcor.tt0.subim", 1e-3), (".iter3.image.pbcor.tt0.rms.subim", 1e-4)):
        name = root(n) + suffix
        if Path(name).exists():
            continue
        cs = casa.tools.coordsys().newcoordsys(direction=True, stokes=["I", "Q", "U", "V"], spectral=True)
        cs.setunits(type="direction", value="rad rad")
        cs.setincrement(value=["-0.6arcsec", "0.6arcsec"], type="direction")
        cs.setreferencepixel([n // 2, n // 2, 0, 0])
        cs.setreferencevalue(value=["350.8deg", "50.4deg"], type="direction")
        cs.setreferencevalue(value="3.0GHz", type="spectral")
        ia = casa.tool("image")
        ia.fromshape(name, [n, n, 4, 1], csys=cs.torecord(), overwrite=True)
        step = max(1, (1 << 24) // n)
        for k in range(4):
            for j in range(0, n, step):
                rows = min(step, n - j)
                ia.putchunk(rng.normal(0.0, sigma * (1 + k), (n, rows)).astype("float32").reshape(n, rows, 1, 1),
                            blc=[0, j, k, 0])
        ia.setbrightnessunit("Jy/beam")
        ia.setrestoringbeam(major="2.9arcsec", minor="2.4arcsec", pa="30deg")
        ia.close()


def work(casa, what: str, n: int) -> None:
    from casaflow.vlass import export, images, naming, postimaging

    cube = root(n) + ".iter3.image.pbcor.tt0.subim"
    products = Path(f"products-{n}")
    products.mkdir(exist_ok=True)
    export.common_beam = lambda casa, cubes: TARGET_BEAM       # one plane: a target beam above its own
    if what == "rms_image":
        # rms_image reads <base>.image.pbcor.tt0; the cut-out stands in for it here
        link = Path(f"rms{n}.image.pbcor.tt0")
        if not link.exists():
            link.symlink_to(cube)
        postimaging.rms_image(casa, f"rms{n}.image.tt0")
    elif what == "imdev_whole_cube":
        images.remove(f"whole{n}.rms")
        casa.task("imdev", imagename=cube, outfile=f"whole{n}.rms", **postimaging.IMDEV)
    elif what == "export_plane":
        export.export_plane(casa, root(n), products, OBS)
    elif what == "com_images":      # on export_plane's FITS (WORK runs it first; made here if missing)
        iqu = root(n)[: -len("IQUV")] + "IQU.iter3.image.pbcor.tt0.subim"
        fits_name = naming.strip_stage_prefix(iqu) + ".fits"
        if not (products / fits_name).exists():
            export.export_plane(casa, root(n), products, OBS)
        outs = [{"image": iqu, "kind": "pbcor", "stokes": "IQU", "fits": fits_name, "peak_jy": 1.0,
                 "rms_median_jy": 1e-4}]
        made, warnings = export.com_images(casa, outs, products, OBS)
        if warnings or len(made) != 2:
            raise RuntimeError(f"com_images: {made} {warnings}")
    elif what == "convolve2d_whole_cube":
        ia = casa.tool("image")
        ia.open(cube)
        images.remove(f"conv{n}.im")
        ia.convolve2d(outfile=f"conv{n}.im", major="3.2arcsec", minor="2.9arcsec", pa="20deg", targetres=True,
                      overwrite=True).done()
        ia.close()


def probe(ws: Path, what: str, n: int) -> dict:
    from casaflow.casarun import Casa

    os.chdir(ws)
    casa = Casa(ws, "bench", ws / "casa.log")
    work(casa, what, 256)                                   # warm-up: libraries loaded, caches made
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.time()
    work(casa, what, n)
    wall = time.time() - t0
    rise = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    return {"rise_mb": round(rise / 2**20, 1), "planes": round(rise / (n * n * 4), 2), "wall_s": round(wall, 1)}


def _child(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    if proc.returncode:
        raise RuntimeError(f"{args}: {proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    if sys.argv[1:2] == ["--child"]:
        cmd, ws, *rest = sys.argv[2:]
        ws = Path(ws)
        if cmd == "make":
            from casaflow.casarun import Casa

            os.chdir(ws)
            casa = Casa(ws, "bench-make", ws / "make.casa.log")
            for n in rest:
                make(casa, int(n))
            print(json.dumps({"made": rest}))
        else:
            print(json.dumps(probe(ws, cmd, int(rest[0]))))
        return 0
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096])
    ap.add_argument("--work", nargs="+", choices=WORK, default=list(WORK))
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/casaflow-bench-postimaging"))
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "postimaging_memory.json")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    result = {"benchmark": "postimaging_memory", "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "machine": {"host": platform.node(), "cpus": os.cpu_count(), "platform": platform.platform(),
                          "loadavg_at_start": list(os.getloadavg())},
              "plane": "one Stokes of the image: size^2 x 4 bytes (float32)", "points": {}}
    _child(["--child", "make", str(args.workdir), "256", *map(str, args.sizes)])
    for n in args.sizes:
        result["points"][str(n)] = {}
        for what in args.work:
            result["points"][str(n)][what] = _child(["--child", what, str(args.workdir), str(n)])
            print(n, what, result["points"][str(n)][what], flush=True)
            args.out.write_text(json.dumps(result, indent=1) + "\n")
    result["machine"]["loadavg_at_end"] = list(os.getloadavg())
    result["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
