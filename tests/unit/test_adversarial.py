"""Adversarial battery: hostile archives, XML, parameter lists, stage parameters, DAG Params and
triggers naming paths outside the workspace, store and S3 keys, input manifests and catalog
records.

Every case asserts the specific error class and that the message names the culprit, and that
nothing was written or modified (the whole test directory, inputs included, is snapshotted
before and compared after; names aimed outside it are checked by name), and where the input
carries code, that it was not executed (its canary file never appears).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.server
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from casaflow import paths, registry, safetar, xmlsafe
from casaflow.errors import InputError
from casaflow.paths import PathEscapeError
from casaflow.safetar import ArchiveRefused

REPO = Path(__file__).resolve().parents[2]


# -- guards ------------------------------------------------------------------------------------
def snapshot(root: Path) -> dict:
    """Every entry below ``root``: type and content hash (files) or target (links)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir",)
            else:
                st = p.stat()
                out[rel] = ("file", st.st_mode, hashlib.sha256(p.read_bytes()).hexdigest())
    return out


@contextlib.contextmanager
def untouched(root: Path, *outside: Path):
    """Nothing below ``root`` created, changed or removed; none of ``outside`` created."""
    before = snapshot(root)
    yield
    assert snapshot(root) == before
    for p in outside:
        assert not os.path.lexists(p), f"{p} was written"


def canary(tmp_path: Path) -> Path:
    """A file that appears only if injected code runs. Outside the snapshotted tree's reach
    (its parent directory), unique per test."""
    return tmp_path.parent / f"pwned-{uuid.uuid4().hex}"


# -- archives ----------------------------------------------------------------------------------
def make_tar(path: Path, members, compress: bool = False) -> Path:
    """``members``: (name, kind, payload) with kind file|dir|sym|hard|chr|fifo."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            info.mode = 0o644
            if kind == "file":
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE,
                         "chr": tarfile.CHRTYPE, "fifo": tarfile.FIFOTYPE}[kind]
            if kind in ("sym", "hard"):
                info.linkname = payload
            if kind == "chr":
                info.devmajor, info.devminor = 1, 3     # /dev/null's numbers
            tar.addfile(info)
    data = buf.getvalue()
    path.write_bytes(gzip.compress(data, mtime=0) if compress else data)
    return path


ESCAPE = f"escape-{uuid.uuid4().hex}.txt"

HOSTILE_ARCHIVES = {
    "parent-path": ([(f"../../{ESCAPE}", "file", b"x")], f"../../{ESCAPE}"),
    "parent-inside-name": ([(f"a/../../../{ESCAPE}", "file", b"x")], f"a/../../../{ESCAPE}"),
    "absolute-name": ([(f"/tmp/{ESCAPE}", "file", b"x")], f"/tmp/{ESCAPE}"),
    "symlink-absolute": ([("link", "sym", "/etc/passwd")], "'link'"),
    "symlink-climbing": ([("link", "sym", "../../../etc")], "'link'"),
    "member-below-symlink": ([("sub", "dir", None), ("d", "sym", "sub"), ("d/x.txt", "file", b"x")], "'d/x.txt'"),
    "hardlink-absolute": ([("h", "hard", "/etc/passwd")], "'h'"),
    "hardlink-climbing": ([("h", "hard", f"../../{ESCAPE}")], "'h'"),
    "char-device": ([("null", "chr", None)], "'null'"),
    "fifo": ([("pipe", "fifo", None)], "'pipe'"),
    "duplicate-name": ([("ok.txt", "file", b"other")], "'ok.txt'"),
    "backslash-name": ([("..\\..\\x.txt", "file", b"x")], "x.txt"),
}


@pytest.mark.parametrize("members,culprit", HOSTILE_ARCHIVES.values(), ids=HOSTILE_ARCHIVES.keys())
def test_hostile_archive_refused_nothing_extracted(tmp_path, members, culprit):
    archive = make_tar(tmp_path / "in" / "r.tgz", [("ok.txt", "file", b"1"), *members], compress=True)
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "ok.txt").write_bytes(b"the previous run's file")
    with untouched(tmp_path, tmp_path.parent / ESCAPE, Path("/tmp") / ESCAPE):
        with pytest.raises(ArchiveRefused) as err:
            safetar.extract(archive, ws)
    assert culprit in str(err.value) and str(archive) in str(err.value)


def test_gzip_bomb_refused_from_its_headers(tmp_path):
    """64 MiB of zeros in a ~64 KiB .tgz: refused against the size limit before extraction."""
    archive = make_tar(tmp_path / "in" / "bomb.tgz", [("zeros.bin", "file", bytes(64 << 20))], compress=True)
    assert archive.stat().st_size < 1 << 20
    ws = tmp_path / "ws"
    ws.mkdir()
    with untouched(tmp_path):
        with pytest.raises(ArchiveRefused, match=r"member 'zeros.bin' .* over the limit") as err:
            safetar.extract(archive, ws, max_bytes=16 << 20)
    assert "bomb" in str(err.value)


def test_tar_bomb_declaring_petabytes_refused(tmp_path):
    """A header declaring 10 TiB (more than any input): refused on that header, before the reader
    would inflate (or seek through) the content."""
    info = tarfile.TarInfo("huge.ms/table.f1")
    info.size = 10 << 40
    raw = info.tobuf(tarfile.PAX_FORMAT) + bytes(512 * 8)
    archive = tmp_path / "in" / "huge.tgz"
    archive.parent.mkdir()
    archive.write_bytes(gzip.compress(raw, mtime=0))
    ws = tmp_path / "ws"
    ws.mkdir()
    with untouched(tmp_path):
        with pytest.raises(ArchiveRefused, match=r"member 'huge.ms/table.f1'.*bomb"):
            safetar.extract(archive, ws)


def test_member_count_bomb_refused(tmp_path):
    archive = make_tar(tmp_path / "in" / "many.tar", [(f"f{i:04d}", "file", b"") for i in range(60)])
    ws = tmp_path / "ws"
    ws.mkdir()
    with untouched(tmp_path):
        with pytest.raises(ArchiveRefused, match=r"more than 50 members"):
            safetar.extract(archive, ws, max_members=50)


def test_not_an_archive_refused(tmp_path):
    archive = tmp_path / "in" / "reimaging_resources.tgz"
    archive.parent.mkdir()
    archive.write_bytes(b"#!/bin/sh\necho not a tar\n" * 100)
    with untouched(tmp_path):
        with pytest.raises(ArchiveRefused, match="not a readable tar archive") as err:
            safetar.extract(archive, tmp_path)
    assert str(archive) in str(err.value)


# -- XML ---------------------------------------------------------------------------------------
class _Counter(http.server.BaseHTTPRequestHandler):
    hits: list = []

    def do_GET(self):      # noqa: N802 (http.server's name)
        type(self).hits.append(self.path)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b'<!ENTITY x "fetched">')

    def log_message(self, *args):
        pass


@pytest.fixture
def dtd_server():
    _Counter.hits = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Counter)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Counter.hits
    server.shutdown()


HOSTILE_XML = {
    "billion-laughs": (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
                       + b"".join(b'<!ENTITY lol%d "%s">' % (i, b"".join(b"&lol%s;" % (str(i - 1).encode() if i > 1
                                  else b"") for _ in range(10))) for i in range(1, 10))
                       + b"]><lolz>&lol9;</lolz>", "DOCTYPE|entity amplification"),
    "external-entity": (b'<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>', "DOCTYPE"),
    "parameter-entity": (b'<!DOCTYPE r [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]><r/>', "DOCTYPE"),
    "deep-nesting": (b"<a>" * 5000 + b"</a>" * 5000, "Excessive depth"),
    "huge-text-node": (b"<a>" + b"x" * 11_000_000 + b"</a>", "Text node too long"),
    "undeclared-entity": (b"<r>&x;</r>", "not well-formed"),
}


@pytest.mark.parametrize("data,why", HOSTILE_XML.values(), ids=HOSTILE_XML.keys())
def test_hostile_xml_refused(tmp_path, data, why):
    ppr = tmp_path / "PPR_uid___A001_X1_X1.xml"
    ppr.write_bytes(data)
    with untouched(tmp_path):
        with pytest.raises(InputError, match=why) as err:
            xmlsafe.parse_file(ppr, f"PPR {ppr.name}")
    assert ppr.name in str(err.value) and "root:" not in str(err.value)   # nothing of /etc/passwd


def test_external_dtd_never_fetched(tmp_path, dtd_server):
    url, hits = dtd_server
    doc = tmp_path / "x.pipeline_manifest.xml"
    doc.write_bytes(f'<!DOCTYPE r SYSTEM "{url}/evil.dtd"><r>&x;</r>'.encode())
    with untouched(tmp_path):
        with pytest.raises(InputError, match=doc.name):
            xmlsafe.parse_file(doc)
    assert hits == []


def test_oversized_xml_refused_before_reading(tmp_path):
    doc = tmp_path / "big.pipeline_manifest.xml"
    with open(doc, "wb") as fh:        # sparse: 65 MiB on paper, nothing on disk
        fh.truncate(xmlsafe.MAX_BYTES + (1 << 20))
    with untouched(tmp_path):
        with pytest.raises(InputError, match=r"big.pipeline_manifest.xml: \d+ bytes, over the"):
            xmlsafe.parse_file(doc)


# -- VLASS parameter lists -----------------------------------------------------------------------
def _paramlist_cases(pwned: Path) -> dict:
    return {
        "call-injection": (f"imsize = __import__('os').system('touch {pwned}')\n", "line 1", "'imsize'"),
        "fstring-injection": (f"imagename = f\"{{__import__('os').system('touch {pwned}')}}\"\n", "line 1",
                              "'imagename'"),
        "lambda": (f"niter = (lambda: open('{pwned}', 'w'))()\n", "line 1", "'niter'"),
        "attribute-key": ("os.system = 'x'\n", "line 1", "'os.system'"),
        "no-assignment": (f"imsize = [128]\n__import__('os').system('touch {pwned}')\n", "line 2", "expected 'key = value'"),
        "deep-nesting": ("cell = " + "[" * 300 + "]" * 300 + "\n", "line 1", "'cell'"),
        "giant-integer": ("niter = " + "9" * 100_000 + "\n", "line 1", "'niter'"),
    }


@pytest.mark.parametrize("case", ["call-injection", "fstring-injection", "lambda", "attribute-key", "no-assignment",
                                  "deep-nesting", "giant-integer"])
def test_hostile_parameter_list_refused_not_executed(tmp_path, case):
    from casaflow.vlass import paramlist

    pwned = canary(tmp_path)
    text, line, culprit = _paramlist_cases(pwned)[case]
    plist = tmp_path / "CCIP_parameter.list"
    plist.write_text(text)
    with untouched(tmp_path, pwned):
        with pytest.raises(InputError) as err:
            paramlist.parse(plist)
    msg = str(err.value)
    assert "CCIP_parameter.list" in msg and line in msg and culprit in msg, msg


@pytest.mark.parametrize("line,culprit", [
    ("mode='list' inpfile='/etc/passwd'", "inpfile"),
    ("mode='manual' antenna='ea01' outfile='../../x.txt'", "outfile"),
    ("mode='manual' vis='../../other.ms'", "vis"),
    ("mode='manual' reason='x\\' antenna='ea01", "No closing quotation"),
])
def test_hostile_flag_template_refused(tmp_path, line, culprit):
    from casaflow.vlass import flagtemplate

    template = tmp_path / "x.flagtargetstemplate.txt"
    template.write_text("# flags\nmode='manual' antenna='ea02'\n" + line + "\n")
    with untouched(tmp_path):
        with pytest.raises(InputError) as err:
            flagtemplate.commands(template)
    assert "x.flagtargetstemplate.txt line 3" in str(err.value) and culprit in str(err.value), str(err.value)


# -- stage parameters naming paths outside the workspace -------------------------------------------
STAGE_PARAMS = {
    "absolute-vis": ("inspect-ms", {"vis": "/etc"}, "parameter 'vis'", "absolute"),
    "climbing-vis": ("inspect-ms", {"vis": "input/../../other-run/x.ms"}, "parameter 'vis'", "'..'"),
    "summary-output-out": ("inspect-ms", {"vis": "x.ms", "output": "../../x.json"}, "parameter 'output'", "'..'"),
    "products-dir-out": ("alma-exportdata", {"working_dir": "w", "products_dir": "../products"},
                         "parameter 'products_dir'", "'..'"),
    "vis-list-item": ("alma-exportdata", {"working_dir": "w", "vis": ["a.ms", "../b.ms"]},
                      "parameter 'vis', item 1", "'..'"),
    "ppr-pattern-dir": ("alma-exportdata", {"working_dir": "w", "pprfile": "../../*/PPR_*.xml"},
                        "parameter 'pprfile'", "'..'"),
    "calimage-dir": ("alma-exportdata", {"working_dir": "w", "calimages": ["sub/x.fits"]},
                     "parameter 'calimages', item 0", "plain file name"),
    "packpath-absolute": ("qa2-package", {"origpath": "sb", "packpath": "/srv/packages/p"}, "parameter 'packpath'",
                          "absolute"),
    "tarsplit-outdir-dotdot": ("tarsplit", {"package": "p", "outdir": "..", "date": "2026-01-01"},
                               "parameter 'outdir'", "'..'"),
    "tarsplit-project-dir": ("tarsplit", {"package": "p", "date": "2026-01-01", "project": "../../evil"},
                             "parameter 'project'", "'..'"),
    "nul-byte": ("simulate-vlass", {"outdir": "input\x00/etc"}, "parameter 'outdir'", "NUL"),
    "flag-template-absolute": ("vlass-flagtargetsdata", {"filetemplate": "/etc/x.flagtargetstemplate.txt"},
                               "parameter 'filetemplate'", "absolute"),
    "restorepims-tarball": ("vlass-restorepims", {"reimaging_resources": "/data/other/reimaging_resources.tgz"},
                            "parameter 'reimaging_resources'", "absolute"),
}


@pytest.mark.parametrize("imagename,why", [("../../../tmp/evil", "'..'"), ("sub/x", "plain file name"),
                                           ("/abs/x", "absolute"), ("['x']", "quoted name")])
def test_parameter_list_image_name_leaving_workspace_refused(tmp_path, imagename, why):
    from casaflow.vlass import paramlist

    plist = tmp_path / "SEIP_parameter.list"
    value = imagename if imagename.startswith("[") else repr(imagename)
    plist.write_text(f"imagename = {value}\nphasecenter = 'J2000 0h0m0s 0d0m0s'\n")
    with untouched(tmp_path):
        with pytest.raises(InputError, match=why) as err:
            paramlist.require_name(paramlist.parse(plist), plist, "imagename")
    assert "SEIP_parameter.list: 'imagename'" in str(err.value)


@pytest.mark.parametrize("stage,params,culprit,why", STAGE_PARAMS.values(), ids=STAGE_PARAMS.keys())
def test_stage_parameter_outside_workspace_refused(stage, params, culprit, why):
    spec = registry.get(stage)
    with pytest.raises(PathEscapeError) as err:
        spec.bind(params)
    assert culprit in str(err.value) and why in str(err.value), str(err.value)


def test_worker_refuses_path_parameter_before_any_work(tmp_path):
    """The real casa-worker process: exit 2 (input), the result names the parameter, nothing
    written outside the workspace, CASA never started (no CASA log)."""
    ws = tmp_path / "ws"
    (tmp_path / "secret.ms").mkdir()
    with untouched(tmp_path / "secret.ms"):
        proc = subprocess.run([sys.executable, "-m", "casaflow.worker", "inspect-ms", "--workspace", str(ws),
                               "--param", "vis=../secret.ms", "--param", "output=../leak.json"],
                              capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert proc.returncode == 2, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["failure_class"] == "input" and "parameter 'vis'" in result["message"]
    assert not (tmp_path / "leak.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret.ms"]   # not even the workspace


# -- DAG Params, the trigger, inputs from outside the allowed roots -------------------------------------
def _context(dag_id: str = "alma_exportdata", run_id: str = "manual__adversarial"):
    return {"dag": SimpleNamespace(dag_id=dag_id), "run_id": run_id, "params": {}}


@pytest.mark.parametrize("name,location", [
    ("working_dir", "/etc"),
    ("pims", "/proc/self/environ"),
    ("input", "file:///root/.ssh/id_rsa"),
])
def test_input_outside_allowed_roots_fails_task_before_any_work(tmp_path, monkeypatch, name, location):
    from airflow.sdk.exceptions import AirflowFailException

    from operators.workflow import fetch_inputs, workspace

    monkeypatch.setenv("CASAFLOW_WORKSPACE_ROOT", str(tmp_path / "workspaces"))
    with untouched(tmp_path):
        with pytest.raises(AirflowFailException) as err:
            fetch_inputs(_context(), {name: location})
    msg = str(err.value)
    assert f"input {name!r}" in msg and location in msg and "CASAFLOW_ALLOWED_INPUTS" in msg
    assert not workspace(_context()).exists() or not any(workspace(_context()).rglob("*"))


def test_symlink_inside_allowed_root_to_outside_refused(tmp_path, monkeypatch):
    """A link planted in an allowed directory: resolved before checking, refused."""
    from hooks.inputs import InputNotAllowed, InputPolicy, fetch

    allowed = tmp_path / "archive"
    allowed.mkdir()
    (allowed / "environ.txt").symlink_to("/proc/self/environ")
    ms = allowed / "x.ms"
    ms.mkdir()
    (ms / "table.dat").write_bytes(b"t")
    (ms / "ANTENNA").symlink_to("/etc")
    policy = InputPolicy((str(allowed),))
    ws = tmp_path / "ws"
    with untouched(tmp_path):
        with pytest.raises(InputNotAllowed, match=r"environ\.txt.*not below an allowed local root"):
            fetch(str(allowed / "environ.txt"), ws, policy=policy)
        with pytest.raises(InputNotAllowed, match=r"holds the link .*x\.ms/ANTENNA -> /etc"):
            fetch(str(ms), ws, policy=policy)


@pytest.mark.parametrize("location,why", [
    ("s3://archive/vlass/../secrets/creds.json", "'..' segment"),
    ("s3://archive/vlass/x/..", "'..' segment"),
    ("s3://archive//vlass/x.ms.tar", "empty"),
    ("s3://other-bucket/vlass/x.ms.tar", "not in an allowed bucket"),
    ("s3://archive/vlassother/x.ms.tar", "not in an allowed bucket or prefix"),
])
def test_s3_input_key_refused_before_download(tmp_path, location, why):
    from hooks.inputs import InputNotAllowed, InputPolicy, fetch

    with untouched(tmp_path):
        with pytest.raises(InputNotAllowed, match=why) as err:
            fetch(location, tmp_path / "ws", policy=InputPolicy(("s3://archive/vlass",)))
    assert location in str(err.value)


def test_triggered_noop_run_naming_proc_environ_delivers_nothing(airflow_db, tmp_path, monkeypatch):
    """The issue's attack: casaflow_noop triggered with input=/proc/self/environ. The run's
    first task refuses it (allow-list); the stage and the push never run; nothing is delivered."""
    from airflow.dag_processing.dagbag import DagBag

    products = tmp_path / "products"
    monkeypatch.setenv("CASAFLOW_PRODUCTS_DESTINATION", str(products))
    bag = DagBag(dag_folder=str(REPO / "dags" / "casaflow_noop.py"))
    dag = bag.get_dag("casaflow_noop")
    dr = dag.test(run_conf={"input": "/proc/self/environ", "dataset_id": "stolen-env"})
    states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    assert dr.state == "failed"
    assert states["prepare_inputs"] == "failed"
    assert states["noop"] in ("upstream_failed", None) and states["push"] in ("upstream_failed", None)
    assert not products.exists() or not any(products.rglob("*"))
    from operators.command import workspace_for
    from operators.settings import settings

    ws = Path(workspace_for(settings().workspace_root, "casaflow_noop", dr.run_id))
    assert not (ws / "input").exists() or not any((ws / "input").iterdir())


def test_noop_and_test_dags_absent_unless_enabled():
    """A production DAG folder without CASAFLOW_ENABLE_TEST_DAGS has no casaflow_noop and no test
    DAGs; with it, they are there."""
    code = ("import json, sys; from airflow.dag_processing.dagbag import DagBag; bags = [DagBag(dag_folder=f) "
            "for f in sys.argv[1:]]; print(json.dumps([[sorted(b.dag_ids), sorted(b.import_errors)] for b in bags]))")
    found = {}
    for enabled in ("", "1"):
        env = {**os.environ, "PYTHONPATH": str(REPO), "CASAFLOW_ENABLE_TEST_DAGS": enabled}
        out = subprocess.run([sys.executable, "-c", code, str(REPO / "dags"), str(REPO / "tests" / "dags")],
                             capture_output=True, text=True, env=env, timeout=300, check=True).stdout
        for folder, (dags, errors) in zip(("dags", "tests/dags"), json.loads(out.strip().splitlines()[-1])):
            assert errors == []
            found[(enabled, folder)] = set(dags)
    assert "casaflow_noop" not in found[("", "dags")] and "vlass_se_cube" in found[("", "dags")]
    assert found[("", "tests/dags")] == set()
    assert "casaflow_noop" in found[("1", "dags")]
    assert {"casaflow_test_fanout", "casaflow_test_failure"} <= found[("1", "tests/dags")]


# -- product-store keys ------------------------------------------------------------------------------
@pytest.mark.parametrize("op,key", [
    ("put_bytes", "ds/../../outside.txt"), ("put_bytes", "/etc/cron.d/x"), ("read", "../outside.txt"),
    ("delete", "ds/../../outside.txt"), ("head", "link/outside.txt"), ("sha256_of", "link/outside.txt"),
    ("delete", "link/outside.txt"),
])
def test_local_store_key_escaping_root_refused(tmp_path, op, key):
    from hooks.stores import KeyEscapeError, LocalStore, StoreError

    root = tmp_path / "products"
    root.mkdir()
    (tmp_path / "outside.txt").write_text("not a product")
    (root / "link").symlink_to(tmp_path)
    store = LocalStore(root)
    args = (key, b"overwritten") if op == "put_bytes" else (key,)
    with untouched(tmp_path, Path("/etc/cron.d/x")):
        with pytest.raises(KeyEscapeError) as err:
            getattr(store, op)(*args)
    assert isinstance(err.value, StoreError) and isinstance(err.value, InputError)
    assert repr(key) in str(err.value)


# -- input manifests and logs -----------------------------------------------------------------------
def _pipeline_products(tmp_path: Path, name: str) -> Path:
    products = tmp_path / "products"
    products.mkdir()
    (products / "ok.tgz").write_bytes(b"x")
    (products / "uid.pipeline_manifest.xml").write_text(
        f'<pipeline><ous name="uid___A001_X1_X2"><finalflags name="ok.tgz"/><caltables name="{name}"/></ous></pipeline>')
    return products


@pytest.mark.parametrize("name,why", [("../../secret.txt", "'..'"), ("/etc/passwd", "absolute"),
                                      ("sub/x.tgz", "plain file name"), ("escape.tgz", "resolves to")])
def test_qa2_manifest_name_outside_products_refused(tmp_path, name, why):
    from casaflow.alma import qa2

    (tmp_path / "secret.txt").write_text("secret")
    products = _pipeline_products(tmp_path, name)
    (products / "escape.tgz").symlink_to(tmp_path / "secret.txt")
    with untouched(tmp_path):
        with pytest.raises(PathEscapeError) as err:
            qa2.plan_pipeline(products)
    msg = str(err.value)
    assert "uid.pipeline_manifest.xml" in msg and "<caltables> name" in msg and why in msg, msg


@pytest.mark.parametrize("line,culprit", [
    ("applycal(vis='a.ms', gaintable=['a.ms.bcal', 'x/..'])", "line 2: gaintable"),
    ("applycal(vis='..', gaintable=['a.ms.bcal'])", "line 2: vis"),
    ("applycal(vis=__import__('os').system('touch {pwned}'))", "line 2: applycal call not parseable"),
    ("applycal(vis='a.ms', gaintable=[open('{pwned}', 'w')])", "line 2: applycal call not parseable"),
])
def test_casa_commands_log_names_checked_never_evaluated(tmp_path, line, culprit):
    from casaflow.alma.context import parse_applycal_calls

    pwned = canary(tmp_path)
    log = tmp_path / "working" / "casa_commands.log"
    log.parent.mkdir()
    log.write_text("# hifa_applycal\n" + line.format(pwned=pwned) + "\n")
    with untouched(tmp_path, pwned):
        with pytest.raises(InputError) as err:
            parse_applycal_calls(log)
    assert f"casa_commands.log {culprit}" in str(err.value), str(err.value)


# -- catalog records ------------------------------------------------------------------------------------
@pytest.mark.parametrize("record,culprit", [
    ({"id": "../../etc", "workflow": "casaflow_noop", "observed": "2026-03-01T00:00:00Z",
      "inputs": {"input": "/data/x"}}, "field 'id'"),
    ({"id": "a", "workflow": "casaflow_noop", "observed": "2026-03-01T00:00:00Z",
      "inputs": {"input": "relative/../../x"}}, "field 'inputs.input'"),
    ({"id": "a", "workflow": "casaflow_noop", "observed": "2026-03-01T00:00:00Z",
      "inputs": {"input": "/data/x"}, "params": {"products_destination": "/etc"}}, "field 'params'"),
    ({"id": "a", "workflow": "alma_exportdata", "observed": "2026-03-01T00:00:00Z",
      "inputs": {"working_dir": "/data/w", "pims": "/proc/self/environ"}}, "field 'inputs.pims'"),
    ({"id": "a", "workflow": "casaflow_noop", "observed": "2026-03-01T00:00:00Z",
      "inputs": {"input": "/data/x"}, "command": "rm -rf /"}, "unknown field(s) ['command']"),
])
def test_hostile_catalog_record_refused(tmp_path, record, culprit):
    from casaflow_ops import catalog

    doc = tmp_path / "catalog.json"
    doc.write_text(json.dumps({"catalog_version": 1, "datasets": [record]}))
    with untouched(tmp_path):
        with pytest.raises(catalog.CatalogError) as err:
            catalog.parse(doc.read_bytes(), str(doc))
    assert "record 0" in str(err.value) and culprit in str(err.value), str(err.value)


def test_catalog_input_outside_allowed_roots_refused_at_read(tmp_path):
    """A catalog itself named outside the allowed roots is not read."""
    from hooks.inputs import InputNotAllowed, InputPolicy, read_bytes

    with pytest.raises(InputNotAllowed, match=r"'/proc/self/environ'.*CASAFLOW_ALLOWED_INPUTS allows "):
        read_bytes("/proc/self/environ", policy=InputPolicy((str(tmp_path),)))


# -- run ids and workspaces ---------------------------------------------------------------------------------
def test_hostile_run_ids_get_distinct_workspaces_inside_the_root(tmp_path):
    from operators.command import workspace_for

    ids = [".", "..", "../..", "a/b", "a_b", "a:b", "a b", "", "-", "x-0123456789abcdef", "x",
           "manual__2026-01-01T00:00:00+00:00", "manual__2026-01-01T00_00_00_00_00", "..\\x", "a" * 300, "a" * 301]
    spaces = [workspace_for(str(tmp_path), "dag", rid) for rid in ids]
    assert len(set(spaces)) == len(ids)
    for ws in spaces:
        rel = os.path.relpath(ws, tmp_path / "dag")
        assert "/" not in rel and rel not in (".", "..") and not rel.startswith(".")
        paths.inside(tmp_path / "dag", rel, "workspace", single=True)
