"""How casaflow's DAG Params are declared, so every trigger form works the same way.

Airflow 3's trigger form (the UI) treats a Param as *required* unless its JSON-schema type
includes ``"null"``, and it turns a field left empty into ``null``. So:

- ``required(...)``: a real input the run cannot do without (a path, a project code). No default:
  the form starts empty, the Trigger button stays disabled until it is filled, and a REST or
  ``dag.test()`` conf without it is refused ("No value passed and Param has no default value").
  Only for DAGs without a schedule (a scheduled DAG's defaults must validate).
- ``optional(...)``: ``None`` by default, and ``None`` (the empty field) always validates. The code
  reading it treats ``None`` as "not given" (``params.get(k) or fallback``); a stage parameter
  rendered as ``None`` is left out of the worker call, so the stage's own default applies
  (operators/command.py).
- ``choice(...)``: an enum shown as a drop-down with ``values_display`` labels; with
  ``default=None`` it is optional and ``None`` is one of the choices.
- ``setting(...)``: a value with a real, meaningful default (a boolean, a chunk size).

Every Param has a title and a description; ``section=`` groups related Params: the form shows
the Params without a section under "Run Parameters" (open) and each section as a collapsed
accordion item. ``INTERNAL`` is the section of Params only other DAGs set (the request
fingerprint). ``examples=`` (strings only) are offered as suggestions where a format is not
obvious.
"""

from __future__ import annotations

from airflow.sdk import Param

# Sections, in the order a form usually lists them (each DAG may add its own).
DELIVERY = "Delivery"
EXECUTION = "Execution"
INTERNAL = "Internal (set by reprocess_catalog: leave empty)"


def _schema(title: str, section: str | None, examples: list | None, schema: dict) -> dict:
    out = {"title": title, **schema}
    if section:
        out["section"] = section
    if examples:
        out["examples"] = examples
    return out


def required(title: str, description: str, *, type: str = "string", examples: list | None = None,
             section: str | None = None, **schema) -> Param:
    """A real input: no default, the form refuses to trigger without it."""
    return Param(description=description, **_schema(title, section, examples, {"type": type, **schema}))


def optional(title: str, description: str, *, type: str = "string", examples: list | None = None,
             section: str | None = None, **schema) -> Param:
    """Empty (``None``) unless given; ``schema`` (pattern, items, ...) constrains a given value."""
    return Param(None, description=description,
                 **_schema(title, section, examples, {"type": ["null", type], **schema}))


def choice(title: str, description: str, values_display: dict, *, default, section: str | None = None) -> Param:
    """One of ``values_display``'s keys (a drop-down showing its labels). ``default=None``: optional,
    with ``None`` (shown under the label of key ``None``) as one of the choices."""
    values = list(values_display)
    if default is None:
        kinds = ["null", "string"]
    else:
        if default not in values:
            raise ValueError(f"choice {title!r}: default {default!r} is not one of {values}")
        kinds = "string"
    display = {("null" if k is None else str(k)): label for k, label in values_display.items()}
    return Param(default, description=description,
                 **_schema(title, section, None, {"type": kinds, "enum": values, "values_display": display}))


def setting(default, title: str, description: str, *, type: str, section: str | None = None, **schema) -> Param:
    """A Param with a real default (booleans, sizes, limits)."""
    return Param(default, description=description, **_schema(title, section, None, {"type": type, **schema}))
