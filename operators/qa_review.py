"""QA review before delivery: after the weblog, before the push.

``QAReviewOperator`` is Airflow's own human-in-the-loop operator (providers-standard
``HITLOperator``, options Approve / Reject): while it waits the task is parked (``awaiting_input``
in Airflow 3.3, deferred before), holding no worker slot. Whether it waits depends on the mode
(DAG Param ``qa_review``, else the deployment setting ``CASAFLOW_QA_REVIEW``):

* ``never``: deliver without asking (the default deployment setting: today's behaviour);
* ``auto``: deliver when the run's QA score (casaflow/qa.py) is at or above the threshold (Param
  ``qa_threshold``, else ``CASAFLOW_QA_THRESHOLD``, 0.66); otherwise wait for a person;
* ``required``: always wait.

The request's body (Markdown) has the score and why, the failed stages, the failed and rejected
planes and the weblog's location; it is assigned to ``CASAFLOW_QA_REVIEWERS`` (Airflow user ids,
comma-separated; empty: anyone who may act on the DAG). Without a response within the timeout
(Param ``qa_review_timeout_minutes``, else ``CASAFLOW_QA_REVIEW_TIMEOUT_MINUTES``, 72 h) the
stated default outcome applies (``CASAFLOW_QA_REVIEW_TIMEOUT_OUTCOME``: ``reject``, or
``approve``).

Approve: the task succeeds and the push runs. Reject (with the reviewer's reason): the task fails
(no retry), the push does not run, and the decision is recorded in ``results/qa-review.json``:
the reprocessing report and ``casaflow status`` read it as the run's failure (class
``rejected``), and the weblog shows it (casaflow/weblog.py ``add_review``).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from pathlib import Path

from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import Param



from casaflow import qa
from casaflow.result import StageResult

from .params import choice, optional
from .settings import settings

log = logging.getLogger("casaflow.qa_review")

APPROVE, REJECT = "Approve", "Reject"
SECTION = "QA review"
MODES = {None: "Deployment default (CASAFLOW_QA_REVIEW)",
         "auto": "Auto: deliver if the QA score reaches the threshold, else wait for a reviewer",
         "required": "Required: always wait for a reviewer",
         "never": "Never: deliver without review"}


def qa_review_params() -> dict:
    """The DAG Params of the review (optional: empty follows the deployment's settings)."""
    return {
        "qa_review": choice("QA review", "Whether a person approves the delivery after the weblog. Empty: the "
                                         "deployment's setting CASAFLOW_QA_REVIEW.", MODES, default=None,
                            section=SECTION),
        "qa_threshold": optional("QA score threshold", "With 'auto': runs scoring below this wait for a reviewer "
                                                       "(0..1). Empty: CASAFLOW_QA_THRESHOLD (0.66, the "
                                                       "reference's warning band).",
                                 type="number", minimum=0, maximum=1, section=SECTION),
        "qa_review_timeout_minutes": optional("QA review timeout (minutes)",
                                              "How long a review waits for a response before the default outcome "
                                              "(CASAFLOW_QA_REVIEW_TIMEOUT_OUTCOME, 'reject' unless set) applies. "
                                              "Empty: CASAFLOW_QA_REVIEW_TIMEOUT_MINUTES (72 h). At most 30 days.",
                                              type="number", minimum=0.05, maximum=43200, section=SECTION),
    }


def _markdown(context, s: dict, threshold: float, outcome: str, timeout_min: float) -> str:
    score = "none recorded" if s["score"] is None else f"**{s['score']:.2f}**"
    lines = [f"### {context['dag'].dag_id} `{context['run_id']}`", "",
             f"Run QA score: {score} (threshold {threshold:.2f}).", ""]
    if s["reasons"]:
        lines += ["**Why the score is below 1:**", ""] + [f"- {r}" for r in s["reasons"]] + [""]
    for label, items in (("Failed stages", s["failed_stages"]), ("Failed spw groups (planes)", s["failed_planes"]),
                         ("Rejected planes", s["rejected_planes"])):
        # a list item each: Markdown joins plain consecutive lines into one paragraph
        lines.append(f"- **{label}:** {', '.join(f'`{i}`' for i in items) if items else 'none'}")
    lines += ["", f"**Weblog:** `{s['weblog'] or 'none rendered'}`", "",
              f"Approve to deliver; Reject (with a reason) to stop the delivery. Without a response within "
              f"{timeout_min:g} minutes the outcome is **{outcome}**."]
    return "\n".join(lines)


class QAReviewOperator(HITLOperator):
    """Approve or reject the delivery of a run, or let the QA score decide (see the module doc)."""

    def __init__(self, *, task_id: str = "qa_review", params=None, **kwargs):
        from airflow.sdk.definitions.param import ParamsDict

        cfg = settings()
        # ``params`` arrives merged with the DAG's (Airflow's operator metaclass); the response form
        # shows only the task's own: the reviewer's reason.
        params = params if isinstance(params, ParamsDict) else ParamsDict(params or {})
        params.update({"reason": Param(None, type=["null", "string"], title="Reason", source="task",
                                       description="Why (for a rejection: it goes into the run's report, "
                                                   "casaflow status and the weblog).")})
        super().__init__(
            task_id=task_id, subject="QA review", options=[APPROVE, REJECT], multiple=False,
            defaults=[APPROVE if cfg.qa_review_timeout_outcome == "approve" else REJECT],
            params=params, retries=0, **kwargs)

    # -- deciding ----------------------------------------------------------------------------
    def execute(self, context):
        from .workflow import workspace

        cfg = settings()
        params = context.get("params") or {}
        mode = params.get("qa_review") or cfg.qa_review
        threshold = params.get("qa_threshold")
        threshold = cfg.qa_threshold if threshold is None else float(threshold)
        timeout_min = params.get("qa_review_timeout_minutes") or cfg.qa_review_timeout_minutes
        ws = workspace(context)
        s = qa.summary(ws)
        self._review = {"mode": mode, "threshold": threshold, "score": s["score"], "summary": s}
        if not qa.needs_review(mode, s["score"], threshold):
            why = ("review disabled (never)" if mode == "never" else
                   "no QA score recorded" if s["score"] is None else f"score {s['score']:.2f} >= {threshold:.2f}")
            self._record(ws, "delivered without review", None, why, timed_out=False)
            log.info("QA review not needed (%s): %s", mode, why)
            return {"decision": "not reviewed", "mode": mode, "score": s["score"]}
        outcome = "reject" if self.defaults == [REJECT] else "approve"
        self.subject = (f"QA review: {context['dag'].dag_id} {context['run_id']}: score "
                        f"{'none' if s['score'] is None else format(s['score'], '.2f')}")
        self.body = _markdown(context, s, threshold, outcome, timeout_min)
        self.response_timeout = dt.timedelta(minutes=float(timeout_min))
        self.assigned_users = [{"id": u, "name": u} for u in cfg.qa_reviewers] or None
        log.info("waiting for a QA review (%s, score %s, threshold %.2f, timeout %g min, default %s)",
                 mode, s["score"], threshold, timeout_min, outcome)
        return super().execute(context)

    def execute_complete(self, context, event):
        from airflow.sdk.exceptions import AirflowFailException

        from .workflow import workspace

        ret = super().execute_complete(context, event)
        ws = workspace(context)
        cfg = settings()
        params = context.get("params") or {}
        threshold = params.get("qa_threshold")
        self._review = {"mode": params.get("qa_review") or cfg.qa_review,
                        "threshold": cfg.qa_threshold if threshold is None else float(threshold),
                        "score": qa.summary(ws)["score"]}
        chosen = ret["chosen_options"][0]
        user = ret.get("responded_by_user") or {}
        reviewer = user.get("name") or user.get("id") or ""
        timed_out = bool(event.get("timedout"))
        reason = ((ret.get("params_input") or {}).get("reason") or "").strip()
        if timed_out:
            reason = f"no response within the review timeout: default outcome {chosen.lower()}" + \
                     (f" ({reason})" if reason else "")
        if chosen == APPROVE:
            self._record(ws, "approved", reviewer, reason, timed_out)
            log.info("QA review approved by %s", reviewer or "the timeout default")
            return {"decision": "approved", "reviewer": reviewer, "reason": reason}
        reason = reason or "no reason given"
        self._record(ws, "rejected", reviewer, reason, timed_out)
        raise AirflowFailException(f"QA review rejected the delivery{' (' + reviewer + ')' if reviewer else ''}: "
                                   f"{reason}")

    # -- recording ---------------------------------------------------------------------------
    def _record(self, ws: Path, decision: str, reviewer: str | None, reason: str, timed_out: bool) -> None:
        """results/qa-review.json (the run's record of the decision; a rejection is a failed result
        of class 'rejected'), then the weblog's review section."""
        from casaflow import weblog

        r = self._review
        res = StageResult(stage=qa.REVIEW_STAGE, workspace=str(ws))
        res.status = "failed" if decision == "rejected" else "success"
        res.failure_class = "rejected" if decision == "rejected" else None
        res.message = (f"rejected{' by ' + reviewer if reviewer else ''}: {reason}" if decision == "rejected"
                       else f"{decision}{' by ' + reviewer if reviewer else ''}{': ' + reason if reason else ''}")
        res.qa_score = r["score"]
        res.outputs = {"decision": decision, "reviewer": reviewer, "reason": reason, "mode": r["mode"],
                       "threshold": r["threshold"], "score": r["score"], "timed_out": timed_out,
                       "decided_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
        res.finished = time.time()
        res.write(ws / "results" / f"{qa.REVIEW_STAGE}.json")
        weblog.add_review(ws)
