"""Post-imaging memory is bounded by a plane, not by the cube (issue 17, item 1).

Each helper runs in a fresh process on IQUV images made here (1024^2 and 2048^2, random pixels),
after a warm-up on a small image, and reports how far its peak RSS (``ru_maxrss``) rose. A plane
is what ``getchunk`` returns for one Stokes of one channel (float64: 8 bytes a pixel). The cube
(four planes) read whole, as the helpers did before, would exceed every bound asserted here.

Run as a script (``python test_vlass_memory.py make|probe ...``) it is the probe itself.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.casa]

MB = 1024 * 1024
FIXED_OVERHEAD = 48 * MB     # generous allowance for CASA's own buffers (tile cache, statistics)


def _casa(ws: Path):
    from casaflow.casarun import Casa

    return Casa(ws, "memprobe", ws / "casa.log")


def make(ws: Path, n: int) -> None:
    """it<n>.{image,pb,residual}.tt0 as IQUV [n, n, 4, 1] images, written one plane at a time, and
    it<n>.image.pbcor.tt0 with VLASS's 4.5" cells, a beam and units (what vlass-makermsimages reads)."""
    casa = _casa(ws)
    rng = np.random.default_rng(n)
    yy, xx = np.mgrid[0:n, 0:n]
    pb = np.exp(-((xx - n / 2) ** 2 + (yy - n / 2) ** 2) / (2 * (n / 4) ** 2))
    for kind in ("image", "pb", "residual", "image.pbcor"):
        ia = casa.tool("image")
        cs = casa.tools.coordsys().newcoordsys(direction=True, stokes=["I", "Q", "U", "V"], spectral=True)
        cs.setincrement(value=["-4.5arcsec", "4.5arcsec"], type="direction")
        cs.setreferencepixel([n // 2, n // 2, 0, 0])
        ia.fromshape(str(ws / f"it{n}.{kind}.tt0"), [n, n, 4, 1], csys=cs.torecord(), overwrite=True)
        for k in range(4):
            plane = pb if kind == "pb" else rng.normal(0.0, 1.0 + k, (n, n))
            ia.putchunk(plane.reshape(n, n, 1, 1), blc=[0, 0, k, 0])
        if kind == "image.pbcor":
            ia.setbrightnessunit("Jy/beam")
            ia.setrestoringbeam(major="5.5arcsec", minor="4.5arcsec", pa="30deg")
            ia.setmiscinfo({"VLASSTN": "T23t09"})
        ia.close()


def whole_cube_imdev(ws: Path, n: int) -> None:
    """The reference's call: imdev over the whole IQUV image at once (8-10 planes of memory)."""
    from casaflow.vlass import postimaging

    _casa(ws).task("imdev", imagename=str(ws / f"it{n}.image.pbcor.tt0"), outfile=str(ws / f"whole{n}.rms"),
                   **postimaging.IMDEV)


def probe(ws: Path, what: str, n: int) -> dict:
    from casaflow import weblog  # noqa: F401  (imports matplotlib as the weblog does)
    from casaflow.vlass import images, makeimages, postimaging

    casa = _casa(ws)
    target = {"imaging": {"stokes": "IQUV", "robust": 1.0, "weighting": "briggs"}, "nominal_bandwidth_hz": 1.0,
              "reffreq_ghz": 3.0, "spw": "2", "field": "0"}
    run = {"keywords": lambda s: makeimages._keywords(casa, str(ws / f"it{s}"), target, 3, 1, 0.1),
           "rms_statistics": lambda s: postimaging.rms_statistics(casa, str(ws / f"it{s}.residual.tt0")),
           "thumbnail": lambda s: [images.thumbnail(casa, str(ws / f"it{s}.image.tt0"), stokes=k, max_pixels=300)
                                   for k in range(4)],
           "rms_image": lambda s: postimaging.rms_image(casa, str(ws / f"it{s}.image.tt0"))}[what]
    out = run(64)                       # warm-up: libraries loaded, caches made
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out = run(n)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if what == "rms_statistics":
        result = out
    elif what == "rms_image":
        result = out
    elif what == "keywords":
        result = {k: out[k] for k in ("datamin", "datamax", "datarms")}
    else:
        result = [list(t.shape) for t in out]
    return {"delta": after - before, "result": result}


def _run(ws: Path, *args) -> dict:
    proc = subprocess.run([sys.executable, __file__, *args, str(ws)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def images_dir(tmp_path_factory):
    ws = tmp_path_factory.mktemp("vlass-mem")
    _run(ws, "make", "64", "1024", "2048")
    return ws


def _plane_bytes(n: int) -> int:
    return n * n * 8


def test_keywords_hold_at_most_three_planes(images_dir):
    small, big = (_run(images_dir, "probe", "keywords", str(n)) for n in (1024, 2048))
    # The whole-cube reads (image, pb and residual cubes: 12 planes) would break this.
    assert big["delta"] <= 3 * _plane_bytes(2048) + FIXED_OVERHEAD, (small["delta"] / MB, big["delta"] / MB)
    # Four times the pixels: the rise is at most three of the extra planes, not four cubes' worth.
    assert big["delta"] - small["delta"] <= 3 * (_plane_bytes(2048) - _plane_bytes(1024)) + FIXED_OVERHEAD
    # and the values are those of the Stokes-I planes (computed here independently, with numpy)
    rng = np.random.default_rng(2048)
    n = 2048
    yy, xx = np.mgrid[0:n, 0:n]
    pb = np.exp(-((xx - n / 2) ** 2 + (yy - n / 2) ** 2) / (2 * (n / 4) ** 2))
    image_i = rng.normal(0.0, 1.0, (n, n))
    for k in range(1, 4):
        rng.normal(0.0, 1.0 + k, (n, n))
    residual_i = rng.normal(0.0, 1.0, (n, n))
    good = pb > 0.1
    corr = image_i[good] / pb[good]
    res = residual_i[good]
    mad = np.median(np.abs(res - np.median(res))) * 1.4826
    assert big["result"]["datamin"] == pytest.approx(corr.min(), rel=1e-5)
    assert big["result"]["datamax"] == pytest.approx(corr.max(), rel=1e-5)
    assert big["result"]["datarms"] == pytest.approx(mad, rel=1e-4)


def test_rms_statistics_stream_through_casa(images_dir):
    small, big = (_run(images_dir, "probe", "rms_statistics", str(n)) for n in (1024, 2048))
    # Reading the cube whole (four planes) plus a copy of a plane, as before, would break this.
    assert big["delta"] <= 1.5 * _plane_bytes(2048) + FIXED_OVERHEAD, (small["delta"] / MB, big["delta"] / MB)
    stats = big["result"]
    assert list(stats) == ["I", "Q", "U", "V"]
    for k, label in enumerate("IQUV"):   # the residual's Stokes k has sigma 1 + k
        assert stats[label]["madrms"] == pytest.approx(1.0 + k, rel=0.01)
        assert stats[label]["median"] == pytest.approx(0.0, abs=0.01 * (1 + k))
        assert stats[label]["max"] > 4 * (1 + k) and stats[label]["min"] < -4 * (1 + k)


def _image(path: str) -> dict:
    from casaflow.casaenv import import_casa

    ia = import_casa()[0].image()
    ia.open(path)
    try:
        cs = ia.coordsys()
        return {"pixels": ia.getchunk(), "mask": ia.getchunk(getmask=True), "unit": ia.brightnessunit(),
                "beam": ia.restoringbeam(), "miscinfo": ia.miscinfo(), "shape": list(ia.shape()),
                "coords": str(cs.torecord())}
    finally:
        ia.close()


def test_rms_image_holds_at_most_three_planes_and_equals_imdev_of_the_cube(images_dir):
    n = 2048
    got = _run(images_dir, "probe", "rms_image", str(n))
    image_plane = n * n * 4            # float32, one Stokes
    assert got["delta"] <= 3 * image_plane + FIXED_OVERHEAD, got["delta"] / MB
    _run(images_dir, "whole", str(n))
    ours, reference = _image(got["result"]), _image(str(images_dir / f"whole{n}.rms"))
    assert ours["shape"] == reference["shape"] == [n, n, 4, 1]
    np.testing.assert_array_equal(ours["pixels"], reference["pixels"])
    np.testing.assert_array_equal(ours["mask"], reference["mask"])
    for key in ("unit", "beam", "miscinfo", "coords"):
        assert ours[key] == reference[key], key
    # and it is an rms: Stokes k of the input has sigma 1 + k
    for k in range(4):
        assert float(np.median(ours["pixels"][:, :, k, 0])) == pytest.approx(1.0 + k, rel=0.05)
    assert not list(images_dir.glob(f"it{n}.image.pbcor.tt0.rms.scratch*"))


def test_thumbnails_do_not_grow_with_the_image(images_dir):
    small, big = (_run(images_dir, "probe", "thumbnail", str(n)) for n in (1024, 2048))
    assert big["result"] == [[293, 293]] * 4 and small["result"] == [[256, 256]] * 4
    # a plane of the small image is 8 MB: the strided read stays well under it at both sizes
    assert big["delta"] <= FIXED_OVERHEAD and small["delta"] <= FIXED_OVERHEAD, (small["delta"] / MB,
                                                                                   big["delta"] / MB)
    assert big["delta"] - small["delta"] <= 0.5 * _plane_bytes(1024)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    cmd, *rest = sys.argv[1:]
    ws = Path(rest[-1])
    if cmd == "make":
        for size in rest[:-1]:
            make(ws, int(size))
        print(json.dumps({"made": rest[:-1]}))
    elif cmd == "whole":
        whole_cube_imdev(ws, int(rest[0]))
        print(json.dumps({"made": f"whole{rest[0]}.rms"}))
    else:
        print(json.dumps(probe(ws, rest[0], int(rest[1]))))
