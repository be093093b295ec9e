"""The pipeline's own product manifest (``pipeline_manifest.xml``), reference §7.6.

Elements and attributes keep the reference's names and insertion order; the output is UTF-8 with
2-space indentation, written atomically.
"""

from __future__ import annotations

from pathlib import Path

from lxml import etree

from . import atomic, xmlsafe


class PipelineManifest:
    def __init__(self, oussid: str = "unknown"):
        self.root = etree.Element("piperesults", name=oussid)
        self.ous = etree.SubElement(self.root, "ous", name=oussid)

    def add(self, tag: str, parent=None, **attrs) -> etree._Element:
        # Attribute order is the keyword order given (Python keeps it).
        return etree.SubElement(self.ous if parent is None else parent, tag,
                                {k: str(v) for k, v in attrs.items()})

    def to_bytes(self) -> bytes:
        return xmlsafe.to_reference_bytes(self.root)      # as manifest.PipelineManifest.write does

    def write(self, path: Path) -> Path:
        path = Path(path)
        return atomic.write_bytes(path, self.to_bytes())


def read(path: Path) -> etree._Element:
    return xmlsafe.parse_file(path, f"pipeline manifest {path}")
