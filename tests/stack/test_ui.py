"""The UIs in a real browser (Debian's Chromium, headless, driven by Playwright): a person starts a
deletion batch from the Prefect UI's Custom run form and finds the new champion in the MLflow UI.

Screenshots go to UNLEARN_SCREENSHOTS (docs/img to refresh README's) or to the test's temp folder.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from pathlib import Path

import pytest
from mlflow import MlflowClient

pytestmark = pytest.mark.stack

CHROMIUM = "/usr/bin/chromium"
MODEL = "digits-team"
RUN_TIMEOUT_MS = 420_000  # a deletion batch on 2 busy cores, most of it the flow-run process's imports


try:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
except ImportError:  # the dependency is pinned; the fixture below says what is missing
    PlaywrightTimeout = TimeoutError


@pytest.fixture()
def browser():
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).is_file(), f"{CHROMIUM} is missing: `apt-get install -y chromium` (`make setup` as root)"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield b
        b.close()


def test_a_custom_run_from_the_prefect_ui_shows_up_as_champion_in_the_mlflow_ui(stack, team_workspace, browser,
                                                                                 tmp_path):
    shots = Path(os.environ.get("UNLEARN_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    before = MlflowClient(stack.mlflow).get_model_version_by_alias(MODEL, "champion").version
    request = {"request_id": "ui-class-2", "model": MODEL, "kind": "class", "class_label": 2,
               "reason": "licence for the class's images was withdrawn"}
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(60_000)

    # Prefect: Deployments → deletion_batch/scheduled → Run → Custom run → requests → Submit
    page.goto(f"{stack.cfg.prefect_ui}/deployments")
    page.get_by_placeholder("Search deployments").fill("deletion_batch")
    page.get_by_role("link", name="scheduled", exact=True).click()
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_text("Custom run").click()
    page.get_by_text("requests (Optional)").wait_for()
    run_name = f"ui-deletion-{uuid.uuid4().hex[:6]}"
    page.locator(".flow-run-name-input input").fill(run_name)
    page.get_by_role("button", name="Add item").click()  # one form per request: kind, model, target field
    form = page.locator(".schema-form-property-array-item").first

    def field(label: str):  # the innermost property of that label (the list's own property holds them all)
        title = page.locator(".schema-form-property__label", has_text=re.compile(rf"^{label}( \(Optional\))?$"))
        return form.locator(".schema-form-property").filter(has=title).last

    field("Kind").locator(".p-select-button__control").click()
    page.keyboard.press("ArrowDown")
    page.get_by_role("option", name="class", exact=True).click()
    field("Model").locator("textarea").fill(MODEL)
    field("Class Label").locator("input[type=number]").fill(str(request["class_label"]))  # `int` is preselected
    field("Request Id").locator("textarea").fill(request["request_id"])
    field("Reason").locator("textarea").fill(request["reason"])
    page.get_by_text("requests (Optional)").scroll_into_view_if_needed()
    page.mouse.wheel(0, -200)
    page.screenshot(path=str(shots / "prefect-custom-run.png"))
    page.get_by_role("button", name="Submit").click()
    page.get_by_role("link", name=run_name, exact=True).first.click()  # in the deployment's list of runs
    page.wait_for_url(re.compile(r".*/runs/flow-run/[0-9a-f-]+$"))
    run_id = page.url.rsplit("/", 1)[-1]
    page.locator(".page-heading-flow-run .state-badge.state--completed").wait_for(timeout=RUN_TIMEOUT_MS)
    page.screenshot(path=str(shots / "prefect-run.png"))
    (posted,) = stack.flow_run(run_id)["parameters"]["requests"]
    assert {k: v for k, v in posted.items() if v != ""} == request  # untouched fields are left out or empty

    # MLflow: Model training → Model registry → the model → the new version, alias `champion`
    page.goto(stack.mlflow)
    page.get_by_text("Model training", exact=True).click()  # it opens in GenAI mode: the registry is here
    with contextlib.suppress(PlaywrightTimeout):  # MLflow 3.17 opens its assistant panel over the page
        page.locator('[data-component-id="mlflow.assistant.chat_panel.close"]').click(timeout=5_000)
    page.get_by_role("link", name="Model registry").click()
    with contextlib.suppress(PlaywrightTimeout):  # a first visit greets with a "new Model Registry UI" modal
        page.get_by_role("dialog").get_by_role("button", name="Try it now").click(timeout=5_000)
    page.get_by_role("link", name=MODEL, exact=True).click()
    after = str(int(before) + 1)
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name=f"Version {after}", exact=True))
    row.wait_for()
    assert "champion" in row.inner_text()
    page.screenshot(path=str(shots / "mlflow-model.png"))
    champion = MlflowClient(stack.mlflow).get_model_version_by_alias(MODEL, "champion")
    assert champion.version == after and champion.tags["request_ids"] == "ui-class-2"
