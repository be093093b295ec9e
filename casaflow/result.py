"""The small JSON a stage leaves behind: the only thing that crosses into the orchestrator."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

from . import atomic

RESULT_SCHEMA = 1


@dataclass
class Product:
    path: str          # relative to the workspace
    size: int          # bytes (for a directory: sum of its files)
    kind: str          # "file" or "dir"
    role: str = ""     # e.g. "image", "fits", "manifest", "weblog"
    group: str = ""    # spw group or session it belongs to, if any


def path_size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    return path.stat().st_size


def software_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for dist in ("casaflow", "casatools", "casatasks", "casadata"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return versions


@dataclass
class StageResult:
    stage: str
    workspace: str
    status: str = "running"              # "success" | "failed"
    failure_class: str | None = None     # errors.FAILURE_CLASSES
    message: str = ""
    products: list[Product] = field(default_factory=list)
    qa_score: float | None = None
    qa_messages: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    outputs: dict = field(default_factory=dict)   # small, stage-specific, JSON-able
    cost: dict = field(default_factory=dict)      # casaflow.cost.Meter.stop(): wall, CPU, peak RSS
    params: dict = field(default_factory=dict)
    log: str = ""
    started: float = field(default_factory=time.time)
    finished: float | None = None
    versions: dict = field(default_factory=software_versions)

    def add_product(self, path: Path, role: str = "", group: str = "") -> None:
        ws = Path(self.workspace)
        path = Path(path)
        rel = path.relative_to(ws) if path.is_absolute() else path
        full = ws / rel
        if not full.exists():
            raise FileNotFoundError(f"stage {self.stage} declared product {rel} but it does not exist")
        self.products = [p for p in self.products if p.path != str(rel)]
        self.products.append(Product(str(rel), path_size(full), "dir" if full.is_dir() else "file",
                                     role, group))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["schema"] = RESULT_SCHEMA
        d["timings"] = {"started": self.started, "finished": self.finished,
                        "seconds": None if self.finished is None else round(self.finished - self.started, 3)}
        del d["started"], d["finished"]
        return d

    def write(self, path: Path) -> None:
        """Atomic write: a reader sees the previous result or the complete new one."""
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_text(path, json.dumps(self.to_dict(), sort_keys=True), durable=True)
