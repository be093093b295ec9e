"""Input validation of the VLASS stages that needs no CASA: parameter lists, spw groups, archives."""

from __future__ import annotations

import io
import tarfile

import pytest

from casaflow import safetar
from casaflow.errors import InputError
from casaflow.vlass import naming, paramlist
from casaflow.vlass.restorepims import HEADER, RULE, missing_message


def write(tmp_path, text, name="CCIP_parameter.list"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_parameter_list_parses_literals_and_comments(tmp_path):
    p = write(tmp_path, "# header\nimagename='X.v1'\nspw=['2','3,4']  # groups\nniter = 500\ncutout_imsize=[10,10]\n")
    assert paramlist.parse(p) == {"imagename": "X.v1", "spw": ["2", "3,4"], "niter": 500, "cutout_imsize": [10, 10]}


def test_parameter_list_errors_name_file_and_line(tmp_path):
    with pytest.raises(InputError, match=r"CCIP_parameter.list, line 2: value of 'imagename' is not a Python literal"):
        paramlist.parse(write(tmp_path, "niter=1\nimagename=VLASS2.2.se\n"))
    with pytest.raises(InputError, match=r"line 1: expected 'key = value', got 'just words'"):
        paramlist.parse(write(tmp_path, "just words\n"))
    with pytest.raises(InputError, match="no such file"):
        paramlist.parse(tmp_path / "missing.list")
    with pytest.raises(InputError, match=r"missing required parameter\(s\) \['phasecenter'\]"):
        p = write(tmp_path, "imagename='x'\n")
        paramlist.require(paramlist.parse(p), p, "imagename", "phasecenter")


@pytest.mark.parametrize("spw,message", [
    (["2", "2:0~15"], r"spw element '2:0~15' has a channel selection"),
    (["1~4", "5"], r"spw element '1~4' uses range syntax"),
    ("2,3,4", r"spw must be a list of spw groups"),
    (["2", "a"], r"spw element 'a' is not a spw id"),
    (["2", "2"], r"spw group\(s\) \['2'\] listed twice"),
    ([], r"non-empty list"),
])
def test_spw_groups_rejected_naming_the_element(tmp_path, spw, message):
    with pytest.raises(InputError, match=message):
        paramlist.validate_spw_groups(spw, tmp_path / "CCIP_parameter.list")


def test_spw_groups_accepted():
    assert paramlist.validate_spw_groups(["2", "3, 4", 5], "x") == ["2", "3,4", "5"]


def test_names():
    assert naming.group_suffix("2,3,4") == "spw2_3_4"
    assert naming.plane_root("7_0", "VLASS2.2.se.T1t1.J0+0.v1", "3,4") == "s7_0.VLASS2.2.se.T1t1.J0+0.v1.spw3_4"
    assert naming.strip_stage_prefix("s7_0.X.spw2.IQU.fits") == "X.spw2.IQU.fits"
    pats = naming.resource_patterns("A_split_split.ms", "SE")
    assert pats["flag_version"] == "A_split_split.ms.flagversions/flags.statwt_1"
    assert pats["model_images"] == "s*_0.SE.I.iter1.model*"


def test_missing_resources_message_lists_every_resource():
    res = {"reimaging_resources": ("r.tgz", True), "flag_dir": (["v.flagversions"], True),
           "selfcal_table": ("v.*.phase-self-cal.tbl*", False)}
    text = missing_message(res)
    lines = text.splitlines()
    assert lines[0] == RULE == lines[-1] and len(RULE) == 120 and lines[1] == HEADER
    assert lines[4] == "selfcal_table       : ('v.*.phase-self-cal.tbl*', False)"


def _tar(tmp_path, members: dict[str, bytes], name="r.tgz", symlink=None):
    path = tmp_path / name
    with tarfile.open(path, "w:gz") as tar:
        for n, data in members.items():
            info = tarfile.TarInfo(n)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if symlink:
            info = tarfile.TarInfo(symlink[0])
            info.type = tarfile.SYMTYPE
            info.linkname = symlink[1]
            tar.addfile(info)
    return path


def test_safe_extract_selects_by_pattern(tmp_path):
    tgz = _tar(tmp_path, {"v.ms.flagversions/flags.statwt_1/table.dat": b"x", "other.txt": b"y"})
    dest = tmp_path / "ws"
    dest.mkdir()
    got = safetar.extract(tgz, dest, ["v.ms.flagversions*"])
    assert got == ["v.ms.flagversions/flags.statwt_1/table.dat"]
    assert (dest / "v.ms.flagversions/flags.statwt_1/table.dat").read_bytes() == b"x"
    assert not (dest / "other.txt").exists()


@pytest.mark.parametrize("members,symlink", [
    ({"../escape.txt": b"x"}, None),
    ({"/abs/escape.txt": b"x"}, None),
    ({"ok.txt": b"x"}, ("link", "../../etc/passwd")),
])
def test_hostile_archive_rejected_nothing_extracted(tmp_path, members, symlink):
    tgz = _tar(tmp_path, {"first.txt": b"1", **members}, symlink=symlink)
    dest = tmp_path / "ws"
    dest.mkdir()
    with pytest.raises(InputError, match="refused"):
        safetar.extract(tgz, dest)
    assert list(dest.iterdir()) == []
    assert not (tmp_path / "escape.txt").exists()


def test_corrupt_archive_rejected(tmp_path):
    bad = tmp_path / "r.tgz"
    good = _tar(tmp_path, {"a.txt": b"x" * 10000}, name="good.tgz").read_bytes()
    bad.write_bytes(good[: len(good) // 2])
    dest = tmp_path / "ws"
    dest.mkdir()
    with pytest.raises(InputError, match="not a readable tar archive"):
        safetar.extract(bad, dest)
    assert list(dest.iterdir()) == []
