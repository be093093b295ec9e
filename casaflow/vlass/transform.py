"""The split both the SE-continuum run and the cube workflow make (hif_transformimagedata).

The ``statwt_1`` flag version of the continuum run is restored row by row onto the cube
workflow's split, so both must come from this one function: same selection, same row layout.
"""

from __future__ import annotations

from pathlib import Path


def split_name(vis: str) -> str:
    """``<root>_split.ms`` for ``<root>.ms``."""
    name = Path(vis).name
    return (name[:-3] if name.endswith(".ms") else name) + "_split.ms"


def split_for_imaging(casa, vis: str, outputvis: str, field: str = "") -> None:
    """mstransform of the DATA column (reindex=False keeps VLASS spw ids), then Nyquist weights."""
    casa.task("mstransform", vis=vis, outputvis=outputvis, field=field, spw="", datacolumn="data",
              reindex=False, chanbin=1, timebin="0s", keepflags=True)
    casa.task("initweights", vis=outputvis, wtmode="nyq")
