"""The project's own CASA configuration, and the one way casaflow imports CASA.

casatools reads its configuration at import time from a site config and from the *user's*
``~/.casa/config.py``; with the defaults it then tries to download measures data, which fails
offline.  casaflow never reads or writes ``~/.casa``: every CASA process it starts imports CASA
through :func:`import_casa`, which points casaconfig at the project's config file (written by
:func:`write_config`, ``python -m casaflow.casaenv --write``) and switches off both the site and
the user config.  The config uses the measures data shipped in the ``casadata`` wheel and turns
every auto-update off.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

from . import atomic

CONFIG_ENV = "CASAFLOW_CASA_CONFIG"
LOGFILE_ENV = "CASAFLOW_CASA_LOGFILE"

_CONFIG_TEMPLATE = '''\
# CASA configuration owned by casaflow (written by `python -m casaflow.casaenv --write`).
# Selected explicitly for every CASA process casaflow starts; ~/.casa is never consulted.
import os as _os, tempfile as _tempfile
measurespath = {measurespath!r}
datapath = [measurespath]
measures_auto_update = False
data_auto_update = False
# Where CASA caches things; writable scratch even on a read-only root filesystem.
cachedir = _os.environ.get("CASAFLOW_CASA_CACHEDIR",
                           _os.path.join(_tempfile.gettempdir(), "casaflow-casa-cache"))
# The worker selects the log file per stage (in the workspace); this is only the fallback,
# so that importing casatasks never drops a casa-*.log into the current directory.
logfile = _os.environ.get("{logfile_env}",
                          _os.path.join(_tempfile.gettempdir(), "casaflow-casa-%d.log" % _os.getpid()))
nologfile = False
log2term = False
nologger = True
nogui = True
agg = True
user_site = False
'''


def casadata_measurespath() -> Path:
    """The measures/observatory data directory inside the installed casadata wheel."""
    spec = importlib.util.find_spec("casadata")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("casadata is not installed: it carries CASA's measures data for offline use")
    path = Path(list(spec.submodule_search_locations)[0]) / "__data__"
    if not (path / "geodetic").is_dir():
        raise RuntimeError(f"casadata at {path} has no geodetic/ directory: measures data missing")
    return path


def config_path() -> Path:
    """Where the project's CASA config lives: $CASAFLOW_CASA_CONFIG, else inside the environment."""
    explicit = os.environ.get(CONFIG_ENV)
    if explicit:
        return Path(explicit)
    return Path(sys.prefix) / "etc" / "casaflow" / "casa_config.py"


def write_config(path: Path | None = None) -> Path:
    """Write the config atomically (several processes may start at once). Returns its path."""
    path = path or config_path()
    text = _CONFIG_TEMPLATE.format(measurespath=str(casadata_measurespath()), logfile_env=LOGFILE_ENV)
    if path.is_file() and path.read_text() == text:
        return path   # the usual case, also on a read-only root filesystem (the worker image)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, text)
    return path


_casa = None


def import_casa():
    """Import casatools and casatasks under the project's configuration.

    casaconfig parses ``sys.argv`` for ``--configfile``/``--nositeconfig`` at import time (that
    is its documented switch); the worker's own argv is put back straight afterwards.
    Returns ``(casatools, casatasks)``.
    """
    global _casa
    if _casa is not None:
        return _casa
    cfg = write_config()
    saved = sys.argv
    sys.argv = [saved[0] if saved else "casaflow", "--configfile", str(cfg), "--nositeconfig"]
    try:
        import casatools
        import casatasks
    finally:
        sys.argv = saved
    _casa = (casatools, casatasks)
    return _casa


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="write the config file and print its path")
    args = parser.parse_args(argv)
    print(write_config() if args.write else config_path())
    return 0


if __name__ == "__main__":
    sys.exit(main())
