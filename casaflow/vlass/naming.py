"""VLASS product and resource names (reference-pipeline.md §3.2, §4.3, §6.5).

One place for every name the continuum run and the cube workflow must agree on.
"""

from __future__ import annotations

import re

# hifv_restorepims's resource keys, their fnmatch patterns and descriptions (§3.2).
RESOURCE_KEYS = ("flag_dir", "flag_version", "selfcal_table", "model_images", "tier1_mask", "tier2_mask")
RESOURCE_DESCRIPTIONS = {
    "flag_dir": "flag directory",
    "flag_version": "flag version",
    "selfcal_table": "selfcal table",
    "model_images": "model image(s)",
    "tier1_mask": "tier1 mask",
    "tier2_mask": "tier2 mask",
}
STATWT_FLAG_VERSION = "statwt_1"
INITIAL_FLAG_VERSION = "hifv_restorepims_initial"


def resource_patterns(vis: str, se_imagename: str) -> dict[str, str]:
    return {
        "flag_dir": f"{vis}.flagversions*",
        "flag_version": f"{vis}.flagversions/flags.{STATWT_FLAG_VERSION}",
        "selfcal_table": f"{vis}.*.phase-self-cal.tbl*",
        "model_images": f"s*_0.{se_imagename}.I.iter1.model*",
        "tier1_mask": f"s*_0.{se_imagename}.QLcatmask-tier1.mask*",
        "tier2_mask": f"s*_0.{se_imagename}.combined-tier2.mask*",
    }


def se_resource_names(vis: str, se_imagename: str, *, model_stage: int, selfcal_stage: int,
                      tier1_stage: int, tier2_stage: int) -> dict[str, str]:
    """The concrete names an SE-CONT run gives its resources (what the patterns above find)."""
    return {
        "model_root": f"s{model_stage}_0.{se_imagename}.I.iter1",
        "selfcal_table": f"{vis}.hifv_selfcal.s{selfcal_stage}_1.phase-self-cal.tbl",
        "tier1_mask": f"s{tier1_stage}_0.{se_imagename}.QLcatmask-tier1.mask",
        "tier2_mask": f"s{tier2_stage}_0.{se_imagename}.combined-tier2.mask",
        "flag_version": f"{vis}.flagversions/flags.{STATWT_FLAG_VERSION}",
    }


def group_suffix(group: str) -> str:
    """'2,3,4' -> 'spw2_3_4' (the reference also maps '~' to '-', cosmetic only)."""
    return "spw" + group.replace("~", "-").replace(",", "_")


def plane_root(stage_label: str, imagename: str, group: str) -> str:
    """``s<stage>.<imagename>.spw<g>``: the root of every product of one plane."""
    return f"s{stage_label}.{imagename}.{group_suffix(group)}"


def strip_stage_prefix(name: str) -> str:
    """Drop the first ``s<digits>_<digits>.`` (PIPE-1182) from a product name."""
    return re.sub(r"(^|/)s\d+_\d*\.", r"\1", name, count=1)
