"""Stages that make simulated observations (issue: simulated data)."""

from __future__ import annotations

from pathlib import Path

from ..registry import Param, stage


@stage("simulate-vlass", resource_class="medium", params=[
    Param("outdir", "path", default="input", help="directory (relative to the workspace) to build into"),
    Param("preset", "str", default="tiny", choices=("tiny", "small", "large", "paths"), help="size preset"),
    Param("seed", "int", default=1, help="random seed: same seed, same data"),
    Param("groups", "list", default=None, help="spw groups, e.g. ['2','3,4']; default: the preset's"),
    Param("flagged_group", "str", default="default",
          help="group flagged completely by the continuum run; 'none' for no such group"),
])
def simulate_vlass(ctx, outdir, preset, seed, groups, flagged_group):
    """Build a VLASS-like PIMS with its SE-continuum resources (reimaging_resources.tgz, parameter lists)."""
    from ..simulate import vlass

    out = ctx.workspace / outdir
    truth = vlass.build(out, ctx.casa, preset, seed, groups, None if flagged_group == "none" else flagged_group)
    for name, role in ((truth["pims"], "ms"), ("reimaging_resources.tgz", "resources"),
                       ("SEIP_parameter.list", "parameter_list"), ("CCIP_parameter.list", "parameter_list"),
                       ("truth.json", "truth")):
        ctx.result.add_product(Path(outdir) / name, role=role)
    return {"outdir": outdir, "pims": f"{outdir}/{truth['pims']}", "groups": truth["groups"],
            "flagged_groups": truth["flagged_groups"], "build_seconds": truth["build_seconds"]}


@stage("simulate-alma", resource_class="medium", params=[
    Param("outdir", "path", default="input", help="directory (relative to the workspace) to build into"),
    Param("preset", "str", default="tiny", choices=("tiny", "small"), help="size preset"),
    Param("seed", "int", default=1, help="random seed: same seed, same data"),
])
def simulate_alma(ctx, outdir, preset, seed):
    """Build an ALMA pipeline working directory for one MOUS (two EBs, calibrated and imaged by CASA)."""
    from ..simulate import alma

    out = ctx.workspace / outdir
    truth = alma.build(out, ctx.casa, preset, seed)
    ctx.result.add_product(Path(outdir) / truth["working"], role="working_dir")
    ctx.result.add_product(Path(outdir) / "truth.json", role="truth")
    return {"outdir": outdir, "working": f"{outdir}/{truth['working']}", "vis": truth["vis"],
            "build_seconds": truth["build_seconds"]}


@stage("simulate-manual-tree", resource_class="medium", params=[
    Param("outdir", "path", default="input", help="directory (relative to the workspace) to build into"),
    Param("shape", "str", default="multi", choices=("multi", "single"),
          help="'multi': SB with several executions and Combined/; 'single': one execution"),
    Param("preset", "str", default="tiny", choices=("tiny", "small"), help="size preset"),
    Param("seed", "int", default=1, help="random seed: same seed, same data"),
])
def simulate_manual_tree(ctx, outdir, shape, preset, seed):
    """Build a manual-reduction (QA2) tree as the QA2 packaging guide describes it."""
    from ..simulate import manual_tree

    truth = manual_tree.build(ctx.workspace / outdir, ctx.casa, shape, preset, seed)
    ctx.result.add_product(Path(outdir) / truth["origpath"], role="origpath")
    return {"origpath": f"{outdir}/{truth['origpath']}", "build_seconds": truth["build_seconds"]}
