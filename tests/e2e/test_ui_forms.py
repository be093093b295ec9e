"""The trigger forms, as a person uses them: a real browser (Debian's Chromium through Playwright)
against the embedded runtime's UI. Log in, open each DAG's trigger form, check that only the real
inputs are required (the Trigger button is disabled until they are filled), fill just those,
trigger, and see the run start (the UI opens the run; the REST API has it, with the form's conf).
Invalid input is refused in the form with the field named, and no run is created. And a QA review
(tests/dags/casaflow_test_review, qa_review=required) answered where a reviewer answers it: the
Required Actions page lists the waiting review, its page shows the request (score, weblog), the
reviewer types a reason and clicks Approve, and the run goes on to deliver.

A screenshot of each form (each section opened in turn), and of the review's list and page before
and after the answer, is saved under $CASAFLOW_TEST_ARTIFACTS/ui_forms,
by default .casaflow/test-artifacts/ui_forms in the repository (replaced by each run).

Needs: `apt-get install -y chromium` (or $CASAFLOW_CHROMIUM pointing at a Chromium binary) and the
`playwright` pip package (in the test extra); `playwright install` is never run. Without either the
test is skipped with that reason.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import urllib.parse
from pathlib import Path

import pytest

from ..conftest import REPO
from .conftest import embedded_runtime
from .runtime_helpers import TEST_DAGS, task_states, trigger, wait_for_review, wait_run_done

pytestmark = [pytest.mark.e2e, pytest.mark.runtime, pytest.mark.browser]

CHROMIUM = os.environ.get("CASAFLOW_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:                                       # pragma: no cover - depends on the machine
    pytest.skip("browser test skipped: the 'playwright' package is missing "
                "(pip install -c constraints.txt playwright; no browser download needed)", allow_module_level=True)
if not CHROMIUM:                                          # pragma: no cover - depends on the machine
    pytest.skip("browser test skipped: no Chromium found (apt-get install -y chromium, or set CASAFLOW_CHROMIUM)",
                allow_module_level=True)

WORKFLOWS = ["casaflow_noop", "vlass_se_cube", "alma_exportdata", "alma_qa2_package", "reprocess_catalog"]
DEFAULT_SECTION = "Run Parameters"        # the form's section for Params without section=, open
TIMEOUT_MS = 90_000          # the UI on a loaded 2-core machine (the api-server waits for SQLite)


def required_inputs(work: Path) -> dict[str, dict[str, str]]:
    """What a person types into each form's required fields. The noop input exists (its run can
    succeed); the others are garbage paths: those runs only need to start."""
    (work / "noop-input.txt").write_text("delivered by a run triggered from the browser\n")
    return {
        "casaflow_noop": {"input": str(work / "noop-input.txt")},
        "vlass_se_cube": {"pims": "/nonexistent/X_split.ms", "reimaging_resources": "/nonexistent/r.tgz",
                          "seip_parameter_list": "/nonexistent/SEIP_parameter.list",
                          "ccip_parameter_list": "/nonexistent/CCIP_parameter.list"},
        "alma_exportdata": {"working_dir": "/nonexistent/MOUS/working"},
        "alma_qa2_package": {"origpath": "/nonexistent/SB1", "project_code": "2019.1.01234.S"},
        "reprocess_catalog": {},                          # scheduled: nothing required
    }


@pytest.fixture(scope="module")
def artifacts(request) -> Path:
    base = Path(os.environ.get("CASAFLOW_TEST_ARTIFACTS") or REPO / ".casaflow" / "test-artifacts")
    out = base / "ui_forms"
    if out.exists():                                      # this run's screenshots only
        shutil.rmtree(out)
    out.mkdir(parents=True)
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter:
        reporter.write_line(f"\nbrowser test: form screenshots in {out}")
    return out


@pytest.fixture(scope="module")
def rt(tmp_path_factory):
    """The embedded runtime with an empty deployment catalog (so reprocess_catalog's runs, manual
    and scheduled, succeed with nothing to do), and the tests' DAGs (the review test's). DAGs stay
    paused: the form unpauses on trigger."""
    work = tmp_path_factory.mktemp("ui")
    catalog = work / "catalog.json"
    catalog.write_text(json.dumps({"catalog_version": 1, "datasets": []}))
    saved = os.environ.get("CASAFLOW_CATALOG")
    os.environ["CASAFLOW_CATALOG"] = str(catalog)           # read by runtime.env() at start-up
    try:
        with embedded_runtime(work / "runtime", WORKFLOWS, unpause=False, extra_dags=TEST_DAGS) as (r, api):
            yield r, api, work
    finally:
        if saved is None:
            os.environ.pop("CASAFLOW_CATALOG", None)
        else:
            os.environ["CASAFLOW_CATALOG"] = saved


@pytest.fixture(scope="module")
def page(rt):
    """A logged-in browser page (through the UI's login form with the runtime's generated login)."""
    r, _, _ = rt
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            pg = browser.new_page(viewport={"width": 1400, "height": 2600})
            pg.set_default_timeout(TIMEOUT_MS)
            pg.goto(f"{r.url}/")
            pg.wait_for_url("**/auth/login**")
            pg.fill("input[name=username]", r.user)
            pg.fill("input[name=password]", r.password)
            pg.click("button[type=submit]")
            pg.wait_for_url(f"{r.url}/")
            yield pg
        finally:
            browser.close()


def open_form(page, url: str, dag_id: str):
    page.goto(f"{url}/dags/{dag_id}")
    page.get_by_role("button", name="Trigger").first.click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_text(f"Trigger Dag - {dag_id}")).to_be_visible()
    expect(dialog.get_by_text("Run Parameters")).to_be_visible()
    return dialog


def show_sections(dialog, dag_id: str, params: dict, artifacts: Path) -> list[str]:
    """Open each section of the form in turn (the form's accordion shows one at a time), check
    that its Params are there, and keep a screenshot of it. Returns the sections' titles in the
    form's order."""
    by_section: dict[str, list[str]] = {}
    for name, p in params.items():
        by_section.setdefault(p["schema"].get("section") or DEFAULT_SECTION, []).append(name)
    headers = dialog.locator("button[data-part=item-trigger]")
    titles = [t.strip() for t in headers.all_inner_texts()]
    for k, (title, names) in enumerate(by_section.items()):
        header = headers.filter(has_text=title)
        if header.get_attribute("aria-expanded") != "true":
            header.click()
        expect(header).to_have_attribute("aria-expanded", "true")
        for name in names:                                # its label (title, * if required), shown
            title_re = re.compile(rf"^\s*{re.escape(params[name]['schema']['title'])}\s*\*?\s*$")
            expect(dialog.get_by_text(title_re).filter(visible=True).first).to_be_visible()
            expect(dialog.get_by_text(params[name]["description"], exact=True).filter(visible=True).first).to_be_visible()
        slug = "".join(c if c.isalnum() else "_" for c in title.split(" (")[0]).strip("_").lower()
        dialog.screenshot(path=str(artifacts / f"{dag_id}.{k}-{slug}.png"))
    return titles


def dag_params(api, dag_id: str) -> dict:
    status, body = api.get(f"/api/v2/dags/{dag_id}/details")
    assert status == 200, body
    return body["params"]


def runs(api, dag_id: str) -> list[dict]:
    status, body = api.get(f"/api/v2/dags/{dag_id}/dagRuns?limit=100")
    assert status == 200, body
    return body["dag_runs"]


def wait_for_state(api, dag_id: str, run_id: str, states: set[str], timeout: float = 300.0) -> dict:
    path = f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}"
    deadline = time.monotonic() + timeout
    while True:
        status, run = api.get(path)
        assert status == 200, run
        if run["state"] in states or time.monotonic() > deadline:
            return run
        time.sleep(2)


@pytest.mark.parametrize("dag_id", WORKFLOWS)
def test_form_triggers_with_only_the_required_inputs(rt, page, artifacts, dag_id):
    r, api, work = rt
    filled = required_inputs(work)[dag_id]
    params = dag_params(api, dag_id)
    required = {k for k, p in params.items()
                if p["value"] is None and "null" not in (p["schema"]["type"] if isinstance(p["schema"]["type"], list)
                                                         else [p["schema"]["type"]])}
    assert required == set(filled), f"{dag_id}: the form requires {sorted(required)}"

    dialog = open_form(page, r.url, dag_id)
    trigger = dialog.get_by_role("button", name="Trigger")
    for name in filled:                                   # empty, flagged, the button disabled
        field = dialog.locator(f"#element_{name}")
        expect(field).to_have_value("")
        expect(field.locator("xpath=ancestor::*[@data-part='root'][1]")).to_contain_text("This field is required")
    if filled:
        expect(trigger).to_be_disabled()
    for name, value in filled.items():
        dialog.locator(f"#element_{name}").fill(value)
    expect(trigger).to_be_enabled()
    titles = show_sections(dialog, dag_id, params, artifacts)
    wanted = {p["schema"].get("section") or DEFAULT_SECTION for p in params.values()}
    assert titles[0] == DEFAULT_SECTION and wanted <= set(titles), titles
    dialog.locator("button[data-part=item-trigger]").filter(has_text=DEFAULT_SECTION).click()
    for name, value in filled.items():                    # still filled after moving between sections
        expect(dialog.locator(f"#element_{name}")).to_have_value(value)
    expect(trigger).to_be_enabled()

    before = {x["dag_run_id"] for x in runs(api, dag_id)}
    trigger.click()
    page.wait_for_url(f"**/dags/{dag_id}/runs/**")      # the UI opens the new run
    run_id = urllib.parse.unquote(page.url.rsplit("/runs/", 1)[1].split("/")[0].split("?")[0])
    assert run_id not in before
    started = wait_for_state(api, dag_id, run_id, {"running", "success", "failed"})
    assert started["state"] in {"running", "success", "failed"}, started
    assert started["run_type"] == "manual"
    conf = started["conf"]
    assert {k: conf[k] for k in filled} == filled
    for name, p in params.items():                        # the untouched fields: default or null
        if name not in filled:
            assert conf.get(name) == p["value"], (name, conf.get(name), p["value"])

    if dag_id in ("casaflow_noop", "reprocess_catalog"):   # these can finish: they do
        done = wait_for_state(api, dag_id, run_id, {"success", "failed"})
        assert done["state"] == "success", done
    if dag_id == "casaflow_noop":
        manifest = Path(r.products) / "noop-input.txt" / "delivery_manifest.xml"
        assert manifest.is_file(), sorted(Path(r.products).rglob("*"))
        from hooks.delivery import parse_manifest

        head, _ = parse_manifest(manifest.read_bytes())
        # Every Param of the run is recorded: those given, the defaults, and the optional ones left
        # empty as null (the run's full provenance, issue 19).
        assert head["parameters"]["input"] == filled["input"]
        assert head["parameters"]["execution_mode"] == "default"
        assert set(head["parameters"]) == set(params)
        for name in ("dataset_id", "products_destination", "fail_with", "request_fingerprint"):
            assert head["parameters"][name] is None, (name, head["parameters"][name])


def test_invalid_input_is_refused_in_the_form(rt, page, artifacts):
    r, api, _ = rt
    dialog = open_form(page, r.url, "casaflow_noop")
    before = len(runs(api, "casaflow_noop"))
    dialog.locator("#element_input").fill("relative/path.txt")
    dialog.get_by_role("button", name="Trigger").click()
    error = dialog.get_by_text("Invalid input for param input")
    expect(error).to_be_visible()
    expect(dialog).to_contain_text("'relative/path.txt' does not match")
    dialog.screenshot(path=str(artifacts / "casaflow_noop-invalid.png"))
    assert page.url.endswith("/dags/casaflow_noop")        # still on the form: nothing was triggered
    assert len(runs(api, "casaflow_noop")) == before

    dialog.locator("#element_input").fill("")              # emptied again: the field's own error
    field_root = dialog.locator("#element_input").locator("xpath=ancestor::*[@data-part='root'][1]")
    expect(field_root).to_contain_text("This field is required")
    expect(dialog.get_by_role("button", name="Trigger")).to_be_disabled()


REVIEW_DAG, REVIEW_RUN = "casaflow_test_review", "ui-review"


def test_review_approved_on_the_required_actions_page(rt, page, artifacts):
    r, api, _ = rt
    api.wait_for_dag(REVIEW_DAG, timeout=180)
    assert api.patch(f"/api/v2/dags/{REVIEW_DAG}", {"is_paused": False})[0] == 200
    trigger(api, REVIEW_DAG, REVIEW_RUN, {"qa_review": "required", "qa_score": 0.5, "dataset_id": REVIEW_RUN})
    detail = wait_for_review(api, REVIEW_DAG, REVIEW_RUN, timeout=300)
    assert detail["subject"] == f"QA review: {REVIEW_DAG} {REVIEW_RUN}: score 0.50"

    # The Required Actions page (Browse menu) lists the pending review by its subject.
    page.goto(f"{r.url}/required_actions")
    link = page.get_by_role("link", name=detail["subject"])
    expect(link).to_be_visible(timeout=TIMEOUT_MS)
    page.screenshot(path=str(artifacts / "required_actions.0-list.png"))
    link.click()
    page.wait_for_url(f"**/dags/{REVIEW_DAG}/runs/{REVIEW_RUN}/tasks/qa_review/required_actions")

    # The request as the reviewer sees it: the body's Markdown rendered, the reason field, the options.
    expect(page.get_by_text("Run QA score:")).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.get_by_text("0.50", exact=True).first).to_be_visible()
    weblog = str(Path(r.home) / "workspaces" / REVIEW_DAG / REVIEW_RUN / "weblog" / "index.html")
    expect(page.get_by_text(weblog).first).to_be_visible()
    approve, reject = page.get_by_test_id("hitl-option-Approve"), page.get_by_test_id("hitl-option-Reject")
    expect(approve).to_be_enabled()
    expect(reject).to_be_enabled()
    assert task_states(api, REVIEW_DAG, REVIEW_RUN)["push"] is None       # nothing delivered yet
    reason = page.locator("#element_reason")
    reason.fill("looked at it in the browser")
    page.screenshot(path=str(artifacts / "required_actions.1-review.png"))
    approve.click()

    # The page shows the response; the run goes on and delivers.
    expect(page.get_by_text("Response received at")).to_contain_text(f"from {r.user}", timeout=TIMEOUT_MS)
    page.screenshot(path=str(artifacts / "required_actions.2-answered.png"))
    assert wait_run_done(api, REVIEW_DAG, REVIEW_RUN, timeout=300) == "success"
    page.reload()                                   # the task's page once the run has gone on
    expect(page.get_by_text("Response received at")).to_be_visible(timeout=TIMEOUT_MS)
    page.screenshot(path=str(artifacts / "required_actions.3-delivered.png"))
    assert task_states(api, REVIEW_DAG, REVIEW_RUN)["push"] == "success"
    status, answered = api.get(f"/api/v2/dags/{REVIEW_DAG}/dagRuns/{REVIEW_RUN}/taskInstances/qa_review/-1/hitlDetails")
    assert status == 200, answered
    assert answered["chosen_options"] == ["Approve"] and answered["responded_by_user"]["name"] == r.user
    assert answered["params_input"]["reason"] == "looked at it in the browser"
    rec = json.loads((Path(r.home) / "workspaces" / REVIEW_DAG / REVIEW_RUN / "results" / "qa-review.json").read_text())
    assert rec["outputs"]["decision"] == "approved" and rec["outputs"]["reviewer"] == r.user
    assert rec["outputs"]["reason"] == "looked at it in the browser"
    assert (Path(r.products) / REVIEW_RUN / "delivery_manifest.xml").is_file()
