"""casaflow_ops.pgserver.pid reads the server's postmaster.pid as PostgreSQL writes it, also while
the server starts (bench/reprocess_scale's sampler died on a half-written file once)."""

import os
import subprocess
import sys

from casaflow_ops import pgserver


def _write(tmp_path, text):
    (tmp_path / "postmaster.pid").write_text(text)
    return tmp_path


def test_a_running_server_is_found(tmp_path):
    full = f"{os.getpid()}\n{tmp_path}\n1796227677\n5432\n/tmp\n\n  2147473         3\nready   \n"
    assert pgserver.pid(_write(tmp_path, full)) == os.getpid()


def test_starting_or_gone_servers_are_not_running(tmp_path):
    assert pgserver.pid(tmp_path) is None                                       # no file
    assert pgserver.pid(_write(tmp_path, "")) is None                           # just created
    assert pgserver.pid(_write(tmp_path, f"-{os.getpid()}\n{tmp_path}\n")) is None  # bootstrap backend
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert pgserver.pid(_write(tmp_path, f"{gone}\n{tmp_path}\n")) is None       # exited (pid not reused yet)
