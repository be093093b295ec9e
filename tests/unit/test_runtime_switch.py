"""Switching the embedded runtime to S3 (``--s3``) while it is up is refused, with what to do: its
running components keep the environment they started with, so the push would stay local while the
demo printed an s3:// destination."""

from __future__ import annotations

import subprocess
import sys

import pytest

from casaflow_ops import cli, runtime


def test_switch_to_s3_refused_while_the_runtime_is_up_and_done_once_it_is_down(tmp_path, monkeypatch, capsys):
    home = tmp_path / "runtime"
    rt = runtime.create(home, port=runtime.free_port())
    assert rt.products == str(tmp_path / "products") and not rt.s3_port
    stand_in = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])    # "the scheduler"
    try:
        rt.pid_file("scheduler").parent.mkdir(parents=True)
        rt.pid_file("scheduler").write_text(str(stand_in.pid))
        with pytest.raises(runtime.RuntimeInUse, match=r"up with products in .*products.*runtime down"):
            runtime.create(home, with_s3=True)
        assert runtime.Runtime.load(home).products == str(tmp_path / "products")     # nothing changed
        monkeypatch.setenv("CASAFLOW_RUNTIME_DIR", str(home))
        assert cli.main(["runtime", "up", "--s3"]) == 2
        assert "casaflow runtime down" in capsys.readouterr().err
    finally:
        stand_in.kill()
        stand_in.wait()
    switched = runtime.create(home, with_s3=True)       # down: the switch is made, and kept
    assert switched.products.startswith("s3://") and switched.s3_port
    assert runtime.Runtime.load(home).products == switched.products
