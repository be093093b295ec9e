"""The stage registry: every ``casa-worker`` stage, its typed parameters and its resource class.

A stage is a function ``fn(ctx, **params)`` registered with :func:`stage`. Parameters are
declared with :class:`Param`; the worker validates and converts what it receives against these
declarations before any work starts, so a bad value fails as an *input* error that names the
parameter and what was expected.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable

from . import paths
from .errors import InputError

_TYPES = {"str": str, "int": int, "float": float, "bool": bool, "list": list, "dict": dict,
          "any": object, "path": str, "name": str, "names": list}


@dataclass(frozen=True)
class Param:
    name: str
    # One of _TYPES. Names of things in the workspace are checked by casaflow.paths before any
    # work: "path" is a relative path staying inside the workspace, "name" a plain file name (or
    # glob pattern) without directories, "names" a list of such names.
    type: str = "str"
    default: Any = None
    required: bool = False
    help: str = ""
    choices: tuple | None = None

    def convert(self, stage: str, value: Any) -> Any:
        where = f"stage {stage!r}, parameter {self.name!r}"
        if value is None:
            if self.required:
                raise InputError(f"{where}: required, expected {self.type}")
            return None
        want = _TYPES[self.type]
        if self.type == "float" and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if self.type == "bool" and isinstance(value, str):
            low = value.strip().lower()
            if low in ("true", "1", "yes"):
                value = True
            elif low in ("false", "0", "no"):
                value = False
        if self.type == "str" and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)   # `--param group=2` parses as JSON 2
        if self.type in ("int", "float") and isinstance(value, str):
            try:
                value = want(value)
            except ValueError:
                raise InputError(f"{where}: expected {self.type}, got {value!r}") from None
        if want is not object and (not isinstance(value, want) or (want is int and isinstance(value, bool))):
            raise InputError(f"{where}: expected {self.type}, got {type(value).__name__} {value!r}")
        if self.choices is not None and value not in self.choices:
            raise InputError(f"{where}: expected one of {list(self.choices)}, got {value!r}")
        if self.type == "path" and value != "":
            # Relative to the workspace and staying in it; "" keeps meaning "not given".
            value = paths.relative_name(value, where)
        elif self.type == "name" and value != "":
            value = paths.relative_name(value, where, single=True)
        elif self.type == "names":
            for i, item in enumerate(value):
                paths.relative_name(item, f"{where}, item {i}", single=True)
        return value


@dataclass(frozen=True)
class StageSpec:
    name: str
    fn: Callable
    params: tuple[Param, ...]
    help: str
    resource_class: str = "light"     # "light" | "medium" | "heavy": sizes the pod
    retry_science: bool = False       # may a science failure be retried? (stage policy)

    def bind(self, raw: dict) -> dict:
        known = {p.name: p for p in self.params}
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise InputError(f"stage {self.name!r}: unknown parameter(s) {unknown}; "
                             f"known: {sorted(known)}")
        out = {}
        for p in self.params:
            out[p.name] = p.convert(self.name, raw.get(p.name, p.default))
        return out

    def describe(self) -> dict:
        return {"name": self.name, "help": self.help, "resource_class": self.resource_class,
                "retry_science": self.retry_science,
                "params": [{"name": p.name, "type": p.type, "default": p.default,
                            "required": p.required, "help": p.help,
                            **({"choices": list(p.choices)} if p.choices else {})}
                           for p in self.params]}


_REGISTRY: dict[str, StageSpec] = {}


def stage(name: str, *, params: list[Param] | tuple = (), resource_class: str = "light",
          retry_science: bool = False):
    """Register ``fn(ctx, **params)`` as the worker stage ``name``."""

    def deco(fn):
        if name in _REGISTRY:
            raise RuntimeError(f"stage {name!r} registered twice")
        _REGISTRY[name] = StageSpec(name, fn, tuple(params), (fn.__doc__ or "").strip(),
                                    resource_class, retry_science)
        return fn

    return deco


def load_all() -> dict[str, StageSpec]:
    """Import every stage module (they register themselves) and return the registry."""
    from . import stages  # noqa: F401  (import side effect: registration)

    return dict(_REGISTRY)


def get(name: str) -> StageSpec:
    reg = load_all()
    if name not in reg:
        raise InputError(f"unknown stage {name!r}; known stages: {sorted(reg)}")
    return reg[name]


def parse_cli_value(text: str) -> Any:
    """``--param k=v``: v is JSON when it parses as JSON (numbers, lists, quoted strings),
    otherwise the plain string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


@dataclass
class StageContext:
    """What a stage function receives: where it works and how it reports."""

    workspace: Any          # pathlib.Path
    result: Any             # result.StageResult
    _casa_factory: Callable = field(repr=False, default=None)
    _casa: Any = field(repr=False, default=None)

    @property
    def casa(self):
        """The CASA runner (imports CASA on first use, so light stages stay light)."""
        if self._casa is None:
            self._casa = self._casa_factory()
        return self._casa

    def warn(self, message: str) -> None:
        import logging

        logging.getLogger("casaflow.stage").warning(message)
        self.result.warnings.append(message)

    def qa(self, score: float, message: str) -> None:
        """Record a QA score (the stage's representative score is the minimum)."""
        self.result.qa_score = score if self.result.qa_score is None else min(self.result.qa_score, score)
        self.result.qa_messages.append(message)
