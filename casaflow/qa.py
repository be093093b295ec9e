"""A run's QA score and the summary a reviewer decides on, from what the stages left in the
workspace (``results/*.json`` and ``context/planes.json``). Pure: the review step (operators/
qa_review.py) and the weblog both use it.

The run's score is the lowest of

* every stage's QA score (a stage's score is already the minimum of its own QA checks; the VLASS
  ``vlass-planes`` stage scores each failed spw group 0.34 and the rejected planes as the kept
  fraction, as the reference's hif_makeimages QA does), and
* ``FAILED_STAGE_SCORE`` for every stage that failed (a failed spw group's imaging chain leaves a
  failed result even when the run goes on with the other groups).

No stage score and no failure: the score is ``None`` (nothing was judged).
"""

from __future__ import annotations

import json
from pathlib import Path

REVIEW_STAGE = "qa-review"          # the review decision's record: results/qa-review.json
NOT_JUDGED = ("vlass-weblog", "run-weblog", REVIEW_STAGE)
FAILED_STAGE_SCORE = 0.34           # the reference's score for a failed imaging plane
# The reference weblog's colour bands (pipeline/infrastructure/renderer/rendererutils.py): below
# 0.66 is a warning, below 0.33 an error. A run below the warning band waits for a person.
DEFAULT_THRESHOLD = 0.66


def _load(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def stage_results(workspace: Path) -> list[dict]:
    """Every stage result of the run except the weblog's and the review's own, with its file name
    (``_name``: stage and tag)."""
    out = []
    for path in sorted((Path(workspace) / "results").glob("*.json")):
        r = _load(path)
        if r and r.get("stage") not in NOT_JUDGED:
            out.append({**r, "_name": path.stem})
    return out


def run_score(results: list[dict]) -> tuple[float | None, list[str]]:
    """The run's score and the reasons it is below 1 (one line per stage that lowered it)."""
    score, reasons = None, []
    for r in results:
        parts = []
        if r.get("status") == "failed":
            parts.append((FAILED_STAGE_SCORE, f"failed ({r.get('failure_class') or 'unknown'}): "
                                              f"{(r.get('message') or '').splitlines()[0] if r.get('message') else ''}"))
        if r.get("qa_score") is not None:
            parts.append((float(r["qa_score"]), "; ".join(r.get("qa_messages") or [])))
        for s, why in parts:
            score = s if score is None else min(score, s)
            if s < 1:
                reasons.append(f"{r['_name']}: {s:.2f} {why}".rstrip())
    return score, reasons


def summary(workspace: Path) -> dict:
    """What a reviewer needs: the score and why, the failed stages, the failed and rejected planes
    (VLASS), and where the weblog is."""
    ws = Path(workspace)
    results = stage_results(ws)
    score, reasons = run_score(results)
    planes = _load(ws / "context" / "planes.json") or {}
    weblog = ws / "weblog" / "index.html"
    return {"score": score, "reasons": reasons,
            "failed_stages": [r["_name"] for r in results if r.get("status") == "failed"],
            "failed_planes": [f["group"] for f in planes.get("failed", [])],
            "rejected_planes": [p["group"] for p in planes.get("planes", []) if not p.get("keep", True)],
            "weblog": str(weblog) if weblog.is_file() else ""}


def needs_review(mode: str, score: float | None, threshold: float) -> bool:
    """``required``: always; ``never``: never; ``auto``: when the score is below the threshold (a run
    nothing judged, score None, is delivered)."""
    if mode not in ("auto", "required", "never"):
        raise ValueError(f"qa_review: expected auto, required or never, got {mode!r}")
    if mode == "required":
        return True
    if mode == "never":
        return False
    return score is not None and score < threshold
