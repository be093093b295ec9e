"""Check an XML document casaflow wrote against the conformance table read from the reference's
writer code (tests/fixtures/alma_reference_xml.json): the declaration, every element's tag under
its parent, its attribute names and their order, the values an attribute can only take, and the
order of each parent's children. An element is checked against the rule of its full path, else of
the longest ``*/`` suffix of it; a ``*/`` rule with ``parent_tags`` applies under those parents
only. A container the reference never writes therefore fails: it is not among its parent's
children, or it lacks the attributes of the element of that name, and its children have no rule."""

from __future__ import annotations

import json
import re
from pathlib import Path

from lxml import etree

TABLE = json.loads((Path(__file__).parent / "fixtures" / "alma_reference_xml.json").read_text())


RULE_KEYS = {"path", "attributes", "children", "source", "text", "values", "parent_tags"}


def _rule(rules: dict, path: str) -> dict | None:
    """The table entry for an element path: the exact path, else the longest '*/' suffix whose
    ``parent_tags`` (if any) name the element's parent."""
    if path in rules:
        return rules[path]
    parts = path.split("/")
    for k in range(1, len(parts)):
        key = "*/" + "/".join(parts[k:])
        rule = rules.get(key)
        if rule is not None and ("parent_tags" not in rule or (len(parts) > 1 and parts[-2] in rule["parent_tags"])):
            return rule
    return None


def _attributes_ok(rule: dict, names: list[str]) -> str | None:
    """Attributes in the table's order; optional ones may be absent, a 'group' is all or none."""
    spec = rule["attributes"]
    expected = []
    groups: dict[str, list[str]] = {}
    for a in spec:
        if isinstance(a, str):
            expected.append(("name", a, False))
        elif "pattern" in a:
            expected.append(("pattern", a["pattern"], a.get("optional", False)))
        else:
            expected.append(("name", a["name"], a.get("optional", False) or "group" in a))
            if "group" in a:
                groups.setdefault(a["group"], []).append(a["name"])
    i = 0
    for n in names:
        while i < len(expected):
            kind, value, optional = expected[i]
            if (kind == "name" and value == n) or (kind == "pattern" and re.fullmatch(value, n)):
                if kind == "name":
                    i += 1
                break
            if not optional and not (kind == "pattern"):
                return f"attribute {n!r} where {value!r} is expected"
            i += 1
        else:
            return f"attribute {n!r} not in the reference's list (or out of order)"
    missing = [v for kind, v, opt in expected[i:] if kind == "name" and not opt]
    if missing:
        return f"attributes missing: {missing}"
    for group, members in groups.items():
        present = [m for m in members if m in names]
        if present and len(present) != len(members):
            return f"attribute group {group}: {sorted(set(members) - set(present))} missing"
    return None


def check(data: bytes, document: str) -> list[str]:
    """Every difference between ``data`` and the table's ``document`` ('pipeline_manifest' or
    'pipeline_aquareport'); an empty list when it conforms."""
    table = TABLE[document]
    problems = []
    first_line = data.split(b"\n", 1)[0].decode()
    if first_line != table["declaration"]:
        problems.append(f"declaration {first_line!r}, the reference writes {table['declaration']!r}")
    rules = {r["path"]: r for r in table["elements"]}
    for r in table["elements"]:
        unknown = set(r) - RULE_KEYS
        if unknown:      # a rule the checker would silently not apply
            raise ValueError(f"conformance table {document} {r['path']}: unknown keys {sorted(unknown)}")
    root = etree.fromstring(data)

    def walk(el, path):
        rule = _rule(rules, path)
        if rule is None:
            problems.append(f"{path}: element not written by the reference")
            return
        why = _attributes_ok(rule, list(el.attrib))
        if why:
            problems.append(f"{path}: {why}")
        for name, allowed in rule.get("values", {}).items():
            if name in el.attrib and el.get(name) not in allowed:
                problems.append(f"{path}: {name}={el.get(name)!r}, the reference writes only {allowed}")
        children = [c for c in el if isinstance(c.tag, str)]
        order = rule.get("children", [])
        j = 0
        for c in children:
            while j < len(order) and order[j] != c.tag:
                j += 1
            if j == len(order):
                problems.append(f"{path}: child {c.tag!r} not expected here or out of order "
                                f"(reference order {order})")
                break
        for c in children:
            walk(c, f"{path}/{c.tag}")

    walk(root, root.tag)
    return problems
