"""Read a pickle without the classes it names, and without running anything it asks for.

A pipeline run pickles its context (``Context.save`` in the reference's
``pipeline/infrastructure/launcher.py``) and each stage's result (``ResultsProxy.write`` in
``pipeline/infrastructure/basetask.py``). Those pickles name the pipeline's classes, which are not
installed here, and a pickle may name *any* callable (``os.system``) for ``pickle.load`` to call.

:func:`load` never imports or calls what the pickle names. Its class lookup returns an
:class:`Inert` placeholder class for every global outside a short list of plain value types
(standard containers, ``datetime``, ``decimal.Decimal``, numpy arrays and scalars). Calling a
placeholder (``REDUCE``) or creating one (``NEWOBJ``) only records the arguments; setting its
state only stores it. Nothing the pickle names is ever executed.
"""

from __future__ import annotations

import builtins
import collections
import datetime
import decimal
import io
import pickle
from pathlib import Path

from ..errors import InputError

MAX_BYTES = 512 * 1024 * 1024        # a context of a large run is tens of MB


class Inert:
    """Stand-in for an object of a class that is not loaded. ``_module``/``_name`` say which
    class the pickle named; ``_args`` are the arguments it was made or called with; ``_state``
    is what ``__setstate__`` would have received (a dict, a tuple or a (dict, slots) pair);
    ``_items``/``_list`` collect dict and list contents of container subclasses."""

    _module = "?"
    _name = "?"

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        object.__setattr__(obj, "_args", args)
        object.__setattr__(obj, "_state", None)
        object.__setattr__(obj, "_items", {})
        object.__setattr__(obj, "_list", [])
        return obj

    def __init__(self, *args, **kwargs):          # REDUCE: Placeholder(*args) records, runs nothing
        pass

    def __setstate__(self, state):
        object.__setattr__(self, "_state", state)

    def __setitem__(self, key, value):
        self._items[key] = value

    def append(self, value):
        self._list.append(value)

    def extend(self, values):
        self._list.extend(values)

    def __getattr__(self, name):                   # only reached for names not set above
        raise AttributeError(f"{self._module}.{self._name} object (not loaded) has no attribute {name!r}")

    def __repr__(self):
        return f"<inert {self._module}.{self._name}>"

    # -- reading ---------------------------------------------------------------------------
    @property
    def qualname(self) -> str:
        return f"{self._module}.{self._name}"

    def attrs(self) -> dict:
        """The instance's attributes, from its pickled state (``__dict__`` and slots)."""
        state = self._state
        if isinstance(state, dict):
            return state
        if isinstance(state, tuple) and len(state) == 2 and all(isinstance(s, (dict, type(None))) for s in state):
            return {**(state[0] or {}), **(state[1] or {})}
        return {}


_classes: dict[tuple[str, str], type] = {}


def placeholder(module: str, name: str) -> type:
    key = (module, name)
    if key not in _classes:
        _classes[key] = type(name.rsplit(".", 1)[-1], (Inert,),
                             {"_module": module, "_name": name, "__module__": "casaflow.alma.picklesafe.inert"})
    return _classes[key]


def _reconstructor(cls, base, state):
    """``copyreg._reconstructor`` (protocol 0/1 pickles), without calling ``base``."""
    if isinstance(cls, type) and issubclass(cls, Inert):
        return cls()
    raise pickle.UnpicklingError(f"copyreg._reconstructor of {cls!r} not allowed")


def _numpy_globals() -> dict:
    """numpy's array and scalar reconstructors, under the module names numpy 1 and 2 pickle them."""
    import importlib

    import numpy as np

    out = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for mod in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            real = importlib.import_module("numpy._core.multiarray")
        except ImportError:                   # numpy 1
            real = importlib.import_module("numpy.core.multiarray")
        out[(mod, "_reconstruct")] = real._reconstruct
        out[(mod, "scalar")] = real.scalar
        out[(mod, "dtype")] = np.dtype
    try:
        numeric = importlib.import_module("numpy._core.numeric")
    except ImportError:                       # numpy 1
        numeric = importlib.import_module("numpy.core.numeric")
    for mod in ("numpy._core.numeric", "numpy.core.numeric"):   # protocol-5 arrays: bytes to an array
        out[(mod, "_frombuffer")] = numeric._frombuffer
    return out


# Plain value types a pickle may construct for real. Each makes a value from values; none runs code
# named by the data.
ALLOWED = {("builtins", n): getattr(builtins, n)
           for n in ("list", "dict", "set", "frozenset", "tuple", "bytearray", "bytes", "complex", "int", "float",
                     "str", "bool", "slice", "range")}
ALLOWED.update({
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("collections", "defaultdict"): collections.defaultdict,
    ("collections", "deque"): collections.deque,
    ("datetime", "datetime"): datetime.datetime, ("datetime", "date"): datetime.date,
    ("datetime", "time"): datetime.time, ("datetime", "timedelta"): datetime.timedelta,
    ("datetime", "timezone"): datetime.timezone,
    ("decimal", "Decimal"): decimal.Decimal,
    ("copyreg", "_reconstructor"): _reconstructor,
})


def _encode(text, encoding="latin1"):
    """``_codecs.encode`` as protocol-2 pickles use it for bytes: str to bytes only."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8"):
        raise pickle.UnpicklingError("_codecs.encode: only str to bytes allowed")
    return text.encode(encoding)


ALLOWED[("_codecs", "encode")] = _encode


class _Unpickler(pickle.Unpickler):
    def __init__(self, f):
        super().__init__(f)
        self._numpy = None

    def find_class(self, module, name):
        if (module, name) in ALLOWED:
            return ALLOWED[(module, name)]
        if module.startswith("numpy"):
            if self._numpy is None:
                self._numpy = _numpy_globals()
            if (module, name) in self._numpy:
                return self._numpy[(module, name)]
        return placeholder(module, name)

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent ids are not supported")


def loads(data: bytes, what: str):
    try:
        return _Unpickler(io.BytesIO(data)).load()
    except Exception as exc:         # any malformed or refused pickle
        raise InputError(f"{what}: not a readable pickle ({type(exc).__name__}: {exc})") from None


def load(path: Path, what: str | None = None):
    """Read ``path`` inertly; a missing, oversized or unreadable file is an input error naming it."""
    path = Path(path)
    what = what or str(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InputError(f"{what}: cannot be read ({exc.strerror})") from None
    if size > MAX_BYTES:
        raise InputError(f"{what}: {size} bytes, larger than the {MAX_BYTES} bytes a context may have")
    return loads(path.read_bytes(), what)

