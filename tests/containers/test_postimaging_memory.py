"""Issue 17: a post-imaging stage on an image too large to hold three times in the memory it is
given succeeds in the worker container under an enforced memory limit (podman --memory, as a pod's
limits.memory), and the control, the same operation done by reading the whole cube (ia.getchunk()
of the full image, as the reference reads images), is killed by that limit (137) in the same
container.

The plane set is what vlass-makeimages leaves for one spw group (``<root>.iter3.image.tt0``,
``.residual.tt0``, ``.pb.tt0``: IQUV, one channel, a restoring beam), built with casatools inside
the container, one plane at a time: tclean at this size would take hours on two cores. The sky is
known: one Gaussian source with Stokes (I, Q, U, V) = SOURCE Jy/beam, seen through a Gaussian
primary beam; the residual is pb x RESIDUAL. The imaging target record is the one
vlass-editimlist-cube writes, reduced to the fields these stages read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from . import engine
from .helpers import in_pod, last_json

pytestmark = [pytest.mark.containers, pytest.mark.casa]

N = 4200                     # pixels a side: an IQUV plane set of N*N*4 float32 = 282 MB per image
CELL_ARCSEC = 1.0
LIMIT = 768 * 2 ** 20        # the worker container's memory limit
PB_SIGMA_ARCMIN = 20.0
SOURCE = (1.0, 0.1, -0.05, 0.02)        # Stokes I, Q, U, V of the source, Jy/beam (before the pb)
SOURCE_PIX = (N // 2 + 700, N // 2 - 500)
SOURCE_SIGMA_PIX = 2.5
RESIDUAL = 0.001
GROUP, SUFFIX = "2", "spw2"
IMAGENAME = "s13_0.VLASS_big.spw2"
ROOT = f"{IMAGENAME}.IQUV.iter3"

BUILD = """
import sys
import numpy as np
from casaflow.casaenv import import_casa

n, cell, pb_sigma, root = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
source, (sx, sy), ssig, resid = eval(sys.argv[5]), eval(sys.argv[6]), float(sys.argv[7]), float(sys.argv[8])
ct, _ = import_casa()
ia = ct.image()
x = np.arange(n, dtype=np.float32)[:, None]
y = np.arange(n, dtype=np.float32)[None, :]
pb = np.exp(-(((x - n // 2) ** 2 + (y - n // 2) ** 2) * (cell / 60.0) ** 2) / (2 * pb_sigma ** 2)).astype(np.float32)
src = np.exp(-((x - sx) ** 2 + (y - sy) ** 2) / (2 * ssig ** 2)).astype(np.float32)
for name, plane in (("pb", lambda s: pb), ("image", lambda s: pb * src * np.float32(source[s])),
                    ("residual", lambda s: pb * np.float32(resid))):
    ia.fromshape(f"{root}.{name}.tt0", shape=[n, n, 4, 1], overwrite=True)
    cs = ia.coordsys()
    cs.setincrement(value=f"-{cell}arcsec {cell}arcsec", type="direction")
    cs.setreferencepixel([n // 2, n // 2], "direction")
    cs.setreferencevalue([3.0e9], "spectral")
    ia.setcoordsys(cs.torecord())
    cs.done()
    ia.setrestoringbeam(major="5arcsec", minor="4arcsec", pa="10deg")
    ia.setbrightnessunit("Jy/beam")
    for s in range(4):                       # one Stokes plane at a time
        ia.putchunk(plane(s)[:, :, None, None], blc=[0, 0, s, 0])
    ia.close()
print("built")
"""

# The control: primary-beam correction done by reading the whole cubes into memory.
WHOLE_CUBE = """
import sys
from casaflow.casaenv import import_casa

ct, _ = import_casa()
root = sys.argv[1]
ia = ct.image()
ia.open(f"{root}.image.tt0")
image = ia.getchunk()
ia.close()
ia.open(f"{root}.pb.tt0")
pb = ia.getchunk()
ia.close()
image /= pb
ia.fromarray(f"{root}.image.pbcor.whole", pixels=image, overwrite=True)
ia.close()
print("survived")
"""


def _python(image, ws, script, *args, memory=None):
    extra = ["--entrypoint", "python", "-w", str(ws)]
    if memory:
        extra += ["--memory", str(memory), "--memory-swap", str(memory)]
    return in_pod(image, ws, "-c", script, *map(str, args), extra=extra)


@pytest.fixture(scope="module")
def big_plane(images, tmp_path_factory):
    base = tmp_path_factory.mktemp("bigplane")
    os.chmod(base, 0o755)
    ws = base / "ws"
    ws.mkdir()
    os.chown(ws, engine.WORKER_UID, engine.WORKER_UID)
    proc = _python(images["worker"], ws, BUILD, N, CELL_ARCSEC, PB_SIGMA_ARCMIN, ROOT, repr(SOURCE),
                   repr(SOURCE_PIX), SOURCE_SIGMA_PIX, RESIDUAL)
    assert proc.returncode == 0 and "built" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
    target = {"group": GROUP, "spw": GROUP, "suffix": SUFFIX, "imagename": IMAGENAME, "reffreq_ghz": 3.0,
              "reffreq": "3.0GHz", "field": "0", "phasecenter": "J2000 00h00m00.0s +00d00m00.0s",
              "imaging": {"stokes": "IQUV"}}
    (ws / "context").mkdir()
    (ws / "context" / "cube_targets.json").write_text(json.dumps({"targets": [target]}))
    for p in (ws / "context", ws / "context" / "cube_targets.json"):
        os.chown(p, engine.WORKER_UID, engine.WORKER_UID)
    return ws


def _image_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _box(path: Path, x: int, y: int):
    """Pixels (every Stokes) at x, y of an image, read on the host with the tests' casatools."""
    from casaflow.casaenv import import_casa

    ct, _ = import_casa()
    ia = ct.image()
    ia.open(str(path))
    try:
        return np.asarray(ia.getchunk(blc=[x, y, 0, 0], trc=[x, y, 3, 0])).reshape(4)
    finally:
        ia.close()


def test_pbcor_on_a_cube_larger_than_a_third_of_its_memory(images, big_plane):
    ws = big_plane
    pixels_bytes = N * N * 4 * 4                                 # IQUV float32
    assert 3 * pixels_bytes > LIMIT
    for name in ("image", "residual", "pb"):
        assert _image_bytes(ws / f"{ROOT}.{name}.tt0") >= pixels_bytes
    proc = in_pod(images["worker"], ws, "vlass-pbcor", "--workspace", str(ws), "--param", f"group={GROUP}",
                  extra=["--memory", str(LIMIT), "--memory-swap", str(LIMIT)])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = last_json(proc)
    assert result["status"] == "success"
    assert result["cost"]["peak_rss_bytes"] < LIMIT
    # The science: image / pb is the sky that was put in (the source's Stokes at its peak; the
    # residual's constant level at the edge, where the pb is lowest).
    sx, sy = SOURCE_PIX
    assert np.allclose(_box(ws / f"{ROOT}.image.pbcor.tt0", sx, sy), SOURCE, rtol=1e-5, atol=1e-7)
    assert np.allclose(_box(ws / f"{ROOT}.image.residual.pbcor.tt0", 3, N - 4), RESIDUAL, rtol=1e-4)
    assert np.allclose(_box(ws / f"{ROOT}.image.residual.pbcor.tt0", N // 2, N // 2), RESIDUAL, rtol=1e-5)


def test_the_whole_cube_read_is_killed_by_the_same_limit(images, big_plane):
    proc = _python(images["worker"], big_plane, WHOLE_CUBE, ROOT, memory=LIMIT)
    assert proc.returncode == 137, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert "survived" not in proc.stdout
    # and it is the limit that kills it: without one the same read succeeds
    free = _python(images["worker"], big_plane, WHOLE_CUBE, ROOT)
    assert free.returncode == 0 and "survived" in free.stdout, free.stderr[-3000:]
