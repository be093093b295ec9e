"""Failure classes that match the cause: a full disk or an I/O error is transient (also while
extracting), a half-done extraction leaves nothing behind, SEVERE from casatools tools fails the
stage, the benign-SEVERE list matches whole messages, a CASA task returning False fails; and the
one atomic write."""

from __future__ import annotations

import errno
import os
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from casaflow import atomic, safetar
from casaflow.casarun import Casa, CasaTaskError, is_benign
from casaflow.errors import TransientError, classify, exit_code_for

from .test_adversarial import make_tar, snapshot


def _workspace_with_previous_run(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    (ws / "v.ms.flagversions" / "flags.old").mkdir(parents=True)
    (ws / "v.ms.flagversions" / "FLAG_VERSION_LIST").write_text("old\n")
    (ws / "v.ms.flagversions" / "flags.old" / "table.dat").write_bytes(b"old table")
    (ws / "cont.dat").write_text("previous\n")
    return ws


NEW = [("v.ms.flagversions", "dir", None), ("v.ms.flagversions/FLAG_VERSION_LIST", "file", b"new\n"),
       ("v.ms.flagversions/flags.statwt_1/table.dat", "file", b"t" * 4096),
       ("v.ms.flagversions/flags.statwt_1/table.f0", "file", b"f" * 300_000),
       ("cont.dat", "file", b"new\n"), ("z.txt", "file", b"z")]


def test_disk_full_during_extraction_is_transient_and_leaves_nothing(tmp_path, monkeypatch):
    archive = make_tar(tmp_path / "in" / "r.tgz", NEW, compress=True)
    ws = _workspace_with_previous_run(tmp_path)
    before = snapshot(tmp_path)
    real_copy = tarfile.copyfileobj

    def disk_fills(src, dst, length=None, exception=OSError, bufsize=None):
        if length and length > 100_000:      # the big member: half of it written, then ENOSPC
            dst.write(src.read(length // 2))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_copy(src, dst, length, exception, bufsize)

    monkeypatch.setattr(tarfile, "copyfileobj", disk_fills)
    with pytest.raises(TransientError, match=r"r\.tgz: extraction failed .*No space left") as err:
        safetar.extract(archive, ws)
    assert classify(err.value) == "transient" and exit_code_for("transient") == 4
    assert snapshot(tmp_path) == before


def test_eio_while_reading_the_archive_is_transient(tmp_path, monkeypatch):
    archive = make_tar(tmp_path / "in" / "r.tar", NEW)
    ws = _workspace_with_previous_run(tmp_path)
    before = snapshot(tmp_path)

    def broken_next(self):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(tarfile.TarFile, "next", broken_next)
    with pytest.raises(TransientError, match=r"r\.tar: reading failed .*Input/output error"):
        safetar.extract(archive, ws)
    assert snapshot(tmp_path) == before


def test_too_little_free_space_is_transient_before_extracting(tmp_path, monkeypatch):
    archive = make_tar(tmp_path / "in" / "r.tar", NEW)
    ws = _workspace_with_previous_run(tmp_path)
    before = snapshot(tmp_path)
    monkeypatch.setattr(safetar.shutil, "disk_usage", lambda p: SimpleNamespace(total=10**6, used=10**6 - 1000,
                                                                                  free=1000))
    with pytest.raises(TransientError, match=r"\d+ bytes to extract, only 1000 free"):
        safetar.extract(archive, ws)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("fail_at", [1, 3, 5])
def test_move_failing_half_way_is_rolled_back(tmp_path, monkeypatch, fail_at):
    """The k-th rename into place fails (EIO): every earlier one is undone, the replaced files
    come back, nothing of the archive stays."""
    archive = make_tar(tmp_path / "in" / "r.tar", NEW)
    ws = _workspace_with_previous_run(tmp_path)
    before = snapshot(tmp_path)
    real_replace, calls = os.replace, [0]

    def flaky(src, dst):
        calls[0] += 1
        if calls[0] == fail_at:
            raise OSError(errno.EIO, "Input/output error")
        return real_replace(src, dst)

    monkeypatch.setattr(safetar.os, "replace", flaky)
    with pytest.raises(TransientError, match="extraction failed"):
        safetar.extract(archive, ws)
    monkeypatch.undo()
    assert snapshot(tmp_path) == before


def test_extraction_merges_and_replaces_when_nothing_fails(tmp_path):
    archive = make_tar(tmp_path / "in" / "r.tar", NEW)
    ws = _workspace_with_previous_run(tmp_path)
    safetar.extract(archive, ws)
    fv = ws / "v.ms.flagversions"
    assert (fv / "FLAG_VERSION_LIST").read_text() == "new\n"
    assert (fv / "flags.old" / "table.dat").read_bytes() == b"old table"        # merged, not dropped
    assert (fv / "flags.statwt_1" / "table.f0").stat().st_size == 300_000
    assert (ws / "cont.dat").read_text() == "new\n"
    assert sorted(p.name for p in ws.iterdir()) == ["cont.dat", "v.ms.flagversions", "z.txt"]   # no leftovers


# -- CASA log checks, without CASA: a stand-in tool that logs like casatools does ---------------------
LEAP = ("2026-12-01 21:44:07\tSEVERE\tMeasTable::dUTC(Double) (file /source/casa6/casatools/casacore/measures/"
        "Measures/MeasTable.cc, line 4290){plus}\t{msg}\n")
BENIGN_LINES = [LEAP.format(plus="", msg="Leap second table TAI_UTC seems out-of-date."),
                LEAP.format(plus="+", msg="Until the table is updated (see the CASA documentation or your system admin),"),
                LEAP.format(plus="+", msg="times and coordinates derived from UTC could be wrong by 1s or more.")]


def _casa(tmp_path: Path, tasks=None) -> Casa:
    casa = Casa.__new__(Casa)        # the log machinery only; no CASA import
    casa.workspace, casa.stage = tmp_path, "test"
    casa.log_path = tmp_path / "logs" / "test.casa.log"
    casa.log_path.parent.mkdir(exist_ok=True)
    casa.log_path.write_text("")
    casa.commands_path = tmp_path / "casa_commands.log"
    casa.tasks, casa.calls = tasks, []
    casa.tools = SimpleNamespace()
    return casa


class FakeImageTool:
    def __init__(self, log: Path):
        self.log = log

    def _log(self, line):
        with open(self.log, "a") as fh:
            fh.write(line)

    def open(self, name):                       # benign leap-second lines only
        for line in BENIGN_LINES:
            self._log(line)
        return True

    def statistics(self):                       # fails without raising, as tools do
        self._log("2026-12-01 21:44:08\tSEVERE\timage::statistics (file src/tools/image/image_cmpt.cc, line 5995)"
                  "\tException Reported: Exception: No regions found.\n")
        return {}

    def fromimage(self, name):                  # raises: its own exception must come through
        raise RuntimeError(f"Exception: File {name} does not exist.")

    def summary(self):                          # SEVERE that mentions TAI_UTC, but is not the known one
        self._log("2026-12-01 21:44:09\tSEVERE\tMeasTable::dUTC(Double) (file x, line 1)\t"
                  "Leap second table TAI_UTC could not be read: imaging cannot continue.\n")
        return {}


def test_severe_from_a_tool_fails_benign_ones_pass(tmp_path):
    casa = _casa(tmp_path)
    casa.tools = SimpleNamespace(image=lambda: FakeImageTool(casa.log_path))
    ia = casa.tool("image")
    assert ia.open("x.im") is True
    with pytest.raises(CasaTaskError, match=r"CASA tool image.statistics logged SEVERE: .*No regions found"):
        ia.statistics()
    with pytest.raises(RuntimeError, match="does not exist"):
        ia.fromimage("y.im")
    with pytest.raises(CasaTaskError, match=r"image.summary logged SEVERE: .*could not be read"):
        ia.summary()


def test_benign_list_matches_whole_messages_not_substrings():
    assert all(is_benign(line) for line in BENIGN_LINES)
    assert not is_benign(LEAP.format(plus="", msg="Leap second table TAI_UTC seems out-of-date. tclean failed"))
    assert not is_benign("2026-12-01 00:00:00\tSEVERE\ttclean::run\tLeap second table TAI_UTC seems out-of-date.\n")
    assert not is_benign("2026-12-01 00:00:00\tSEVERE\ttclean::run\tout-of-date model image: giving up\n")


def test_casa_task_returning_false_fails(tmp_path):
    casa = _casa(tmp_path, tasks=SimpleNamespace(importfits=lambda **kw: False, flagdata=lambda **kw: {"ok": 1}))
    with pytest.raises(CasaTaskError, match="importfits returned False"):
        casa.task("importfits", fitsimage="a.fits", imagename="a.im")
    assert casa.task("flagdata", vis="a.ms") == {"ok": 1}
    assert "importfits(fitsimage='a.fits', imagename='a.im')" in casa.commands_path.read_text()


def test_a_severe_line_after_the_call_is_not_blamed_on_it(tmp_path):
    """The check reads only what the call itself logged."""
    casa = _casa(tmp_path)
    casa.tools = SimpleNamespace(image=lambda: FakeImageTool(casa.log_path))
    ia = casa.tool("image")
    with pytest.raises(CasaTaskError):
        ia.statistics()
    assert ia.open("x.im") is True


# -- the one atomic write --------------------------------------------------------------------------
def test_atomic_write_replaces_whole_or_not_at_all(tmp_path):
    dest = tmp_path / "delivery_manifest.xml"
    dest.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic.atomic_open(dest, "w", durable=True) as fh:
            fh.write("half of the new")
            raise RuntimeError("writer died")
    assert dest.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["delivery_manifest.xml"]
    atomic.write_text(dest, "new", durable=True)
    assert dest.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["delivery_manifest.xml"]


def test_two_writers_never_share_a_temporary_file(tmp_path):
    dest = tmp_path / "result.json"
    with atomic.atomic_open(dest) as a, atomic.atomic_open(dest) as b:
        assert a.name != b.name and Path(a.name).name.startswith(".result.json.")
        a.write(b"A" * 100)
        b.write(b"B" * 10)
    assert dest.read_bytes() in (b"A" * 100, b"B" * 10)



def test_a_killed_writers_temporary_is_removed_and_nothing_else(tmp_path):
    from casaflow import atomic

    dest = tmp_path / "chunk_001.tar"
    left = atomic.temp_name(dest)
    left.write_bytes(b"half")                          # what a SIGKILLed atomic write leaves
    keep = [tmp_path / ".hidden", tmp_path / ".chunk_001.tar.tmp", tmp_path / "chunk_001.tar"]
    for p in keep:
        p.write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    inner = atomic.temp_name(tmp_path / "sub" / "f")
    inner.write_bytes(b"x")
    assert atomic.remove_stale_temps(tmp_path) == [left]
    assert all(p.exists() for p in keep) and inner.exists() and not left.exists()
