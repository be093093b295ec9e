"""The one way casaflow parses XML: no DTDs, no entities, no network.

PPR files and manifests come from outside; an entity declaration (billion laughs, external
entities) is refused outright rather than expanded or silently dropped. Size is bounded too: a
file over :data:`MAX_BYTES` is refused before it is read, and libxml2's own limits (no
``huge_tree``: 256 levels of nesting, 10 MB per text node) refuse the rest as not well-formed.
"""

from __future__ import annotations

from pathlib import Path

from lxml import etree

from .errors import InputError

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, dtd_validation=False,
                          load_dtd=False, huge_tree=False, remove_blank_text=True)


def parse_bytes(data: bytes, what: str) -> etree._Element:
    try:
        tree = etree.fromstring(data, _PARSER).getroottree()
    except etree.XMLSyntaxError as exc:
        raise InputError(f"{what}: not well-formed XML ({exc})") from None
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
        raise InputError(f"{what}: XML with a DOCTYPE/entity declarations is refused")
    return tree.getroot()


# PPRs and manifests are kilobytes to a few megabytes.
MAX_BYTES = 64 << 20


def parse_file(path: Path, what: str | None = None) -> etree._Element:
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise InputError(f"{what or path}: {size} bytes, over the {MAX_BYTES}-byte limit for an XML document")
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{what or path}: no such file") from None
    return parse_bytes(data, what or str(path))


def to_bytes(root: etree._Element) -> bytes:
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def to_reference_bytes(root: etree._Element) -> bytes:
    """XML as the reference pipeline writes its manifest and AQUA report: ElementTree's bytes
    pretty-printed by ``xml.dom.minidom`` ``toprettyxml(indent='  ')`` (declaration
    ``<?xml version="1.0" ?>``), UTF-8. Only casaflow's own trees are re-parsed here."""
    from xml.dom import minidom

    return minidom.parseString(etree.tostring(root, encoding="UTF-8")).toprettyxml(indent="  ").encode("utf-8")
