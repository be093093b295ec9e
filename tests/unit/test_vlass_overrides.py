"""group_overrides: what may be overridden, how each iteration's call changes, what is refused."""

from __future__ import annotations

import pytest

from casaflow.errors import InputError
from casaflow.vlass import overrides
from casaflow.vlass.makeimages import iteration_calls

TARGET = {"field": "0,1", "spw": "3,4", "reffreq": "3.0GHz", "phasecenter": "J2000 0h 0d",
          "imaging": {"datacolumn": "corrected", "gridder": "mosaic", "pblimit": 0.02, "imsize": [128, 128],
                      "cell": "2arcsec", "stokes": "IQUV", "deconvolver": "mtmfs", "nterms": 1,
                      "weighting": "briggs", "robust": 1.0, "uvrange": "<12km", "uvtaper": "", "cyclefactor": 3,
                      "psfcutoff": 0.5, "rotatepastep": 5.0, "smallscalebias": 0.4, "pointingoffsetsigdev": [],
                      "niter": 20000, "nmajor": 220, "scales": [0], "threshold": "0.0mJy", "nsigma": 3.0,
                      "nsigma_iter0": 2.0, "nsigma_final": 4.5, "cycleniter": 100,
                      "cycleniter_final_image_nomask": 500, "pbmask": 0.4}}


def test_documented_example_overrides_every_iteration_once():
    given = overrides.validate({"3,4": {"niter": 500, "nsigma": 1.5, "cycleniter": 50}})["3,4"]
    calls = [overrides.apply(c, given, n) for n, c in enumerate(iteration_calls("x.ms", TARGET))]
    assert [c["niter"] for c in calls] == [0, 500, 500, 500]       # iter0 stays the dirty image
    assert {c["nsigma"] for c in calls} == {1.5}
    assert {c["cycleniter"] for c in calls} == {50}
    heuristic = iteration_calls("x.ms", TARGET)
    assert [c["nsigma"] for c in heuristic] == [2.0, 3.0, 3.0, 4.5]   # unchanged without overrides
    assert heuristic[3]["cycleniter"] == 500 and heuristic[1]["niter"] == 20000


@pytest.mark.parametrize("bad,named", [
    ({"3,4": {"vis": "/elsewhere.ms"}}, "vis"),
    ({"3,4": {"field": "9", "spw": "7"}}, "field, spw"),
    ({"3,4": {"imagename": "x", "datacolumn": "data"}}, "datacolumn, imagename"),
    ({"3,4": {"savemodel": "modelcolumn"}}, "savemodel"),
    ({"3,4": {"mask": "/etc/passwd"}}, "mask must be a region expression"),
    ({"3:0~4": {"niter": 1}}, "group '3:0~4' is not a spw group"),
    ({"3,4": ["niter", 1]}, "expected an object of tclean parameters"),
])
def test_refused_before_any_work(bad, named):
    with pytest.raises(InputError) as err:
        overrides.validate(bad)
    assert named in str(err.value) and "group_overrides" in str(err.value)


def test_unknown_group_and_parameter_named():
    with pytest.raises(InputError, match=r"group '9' is not one of the run's spw groups \(2, 3,4\)"):
        overrides.validate({"9": {"niter": 1}}, groups=["2", "3,4"])
    with pytest.raises(InputError, match="nitre is not a tclean parameter"):
        overrides.validate({"2": {"nitre": 1}}, known={"niter"})


def test_region_mask_allowed():
    given = overrides.validate({"2": {"mask": "circle[[10h00m00s, +02d00m00s], 30arcsec]"}})
    assert given["2"]["mask"].startswith("circle")
