"""Real-browser check: inspect_run.ipynb in JupyterLab, run in headless Chromium, widgets clicked and captured.

Needs the ``playwright`` Python package (no ``playwright install``: Debian's /usr/bin/chromium is used) and
takes ~a minute. Screenshots go to ``$SEQCOMP_SCREENSHOT_DIR`` or ``runs/screenshots/``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from chromium import CHROMIUM, CHROMIUM_ARGS, require_browser, screenshot_dir

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "notebooks" / "inspect_run.ipynb"
# no news/update toasts: they would cover the widgets and make JupyterLab reach for the network
LAB_SETTINGS = {"@jupyterlab/apputils-extension/notification.jupyterlab-settings":
                {"fetchNews": "false", "checkForUpdates": False, "doNotDisturbMode": True}}

pytestmark = pytest.mark.browser


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab_root(tmp_path_factory, tiny) -> Path:
    """A folder with a trained tiny run, a baseline beside it, and the notebook parameterised to the run."""
    import papermill

    from seqcomp.baselines import run_baseline
    from seqcomp.config import apply_overrides
    from seqcomp.presets import get_preset
    from seqcomp.trainer import train

    root = tmp_path_factory.mktemp("lab")
    cfg = apply_overrides(get_preset("tiny"), {"data.n_train": 16, "data.n_test": 8, "data.n_select": 4})
    train(cfg, root / "runs" / "tiny", lm=tiny, progress=False)
    run_baseline("text", cfg, root / "runs" / "baseline-text", lm=tiny, progress=False)
    # the random tiny model answers nothing right; mark two answers correct so the filter visibly acts
    preds_path = root / "runs" / "tiny" / "predictions.jsonl"
    preds = [json.loads(line) for line in preds_path.read_text().splitlines()]
    for p in preds[1:3]:
        p.update(prediction=p["golds"][0], em=1.0, f1=1.0)
    preds_path.write_text("".join(json.dumps(p) + "\n" for p in preds))
    papermill.execute_notebook(str(NOTEBOOK), str(root / "inspect_run.ipynb"), prepare_only=True,
                               parameters={"run_dir": str(root / "runs" / "tiny"), "model": "tiny", "max_rows": 20})
    return root


@contextlib.contextmanager
def jupyterlab(root: Path, scratch: Path, notebook: str = "inspect_run.ipynb"):
    """JupyterLab on 127.0.0.1 with a random token, its own settings and workspaces; yields the notebook's URL."""
    token, port = secrets.token_hex(16), free_port()
    settings = scratch / "lab-settings"
    for name, values in LAB_SETTINGS.items():
        (settings / name).parent.mkdir(parents=True, exist_ok=True)
        (settings / name).write_text(json.dumps(values))
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(settings),
           "JUPYTERLAB_WORKSPACES_DIR": str(scratch / "lab-workspaces")}
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--ServerApp.token={token}",
           "--ServerApp.ip=127.0.0.1", f"--port={port}", f"--ServerApp.root_dir={root}",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log_path = scratch / "jupyterlab.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                assert server.poll() is None, log_path.read_text()
                try:
                    with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as resp:
                        if resp.status == 200:
                            break
                except (urllib.error.URLError, ConnectionError):
                    assert time.monotonic() < deadline, "JupyterLab did not start within 60 s"
                    time.sleep(0.3)
            yield f"{base}/lab/tree/{notebook}?token={token}"
        finally:
            server.terminate()
            server.wait(timeout=30)


@pytest.fixture(scope="module")
def lab_url(lab_root, tmp_path_factory):
    with jupyterlab(lab_root, tmp_path_factory.mktemp("lab-scratch")) as url:
        yield url


def test_inspect_run_notebook_renders_and_filters_in_jupyterlab(lab_url):
    require_browser()
    from playwright.sync_api import expect, sync_playwright

    out = screenshot_dir()
    out.mkdir(parents=True, exist_ok=True)
    timings, start = {}, time.perf_counter()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        try:
            _drive(page, lab_url, out, timings, start, expect)
        finally:  # on failure too: the last screen says what went wrong
            page.screenshot(path=str(out / "last.png"))
            browser.close()
    timings["total_s"] = time.perf_counter() - start
    (out / "timings.json").write_text(json.dumps({k: round(v, 1) for k, v in timings.items()}, indent=2) + "\n")
    print(f"browser check timings: {timings}")


def _drive(page, url: str, out: Path, timings: dict, start: float, expect) -> None:
    """Open the notebook, run all cells, pick "wrong" in the inspector's correctness filter, capture views."""
    page.goto(url)
    page.get_by_text("Python 3 (ipykernel) | Idle").first.wait_for(timeout=90_000)
    timings["kernel_idle_s"] = time.perf_counter() - start

    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
    page.wait_for_function(
        """() => { const p = [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')];
                   return p.length > 0 && p.every(e => /\\[\\d+\\]/.test(e.textContent)); }""",
        timeout=180_000, polling=500)
    timings["run_all_s"] = time.perf_counter() - start
    assert page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']",
                        has_text="Traceback").count() == 0

    status = page.locator(".seqcomp-status").first
    expect(status).to_contain_text("8 matching questions", timeout=60_000)
    select = page.locator(".widget-dropdown", has_text="tiny is").locator("select").first
    select.scroll_into_view_if_needed()
    select.select_option("wrong")
    expect(status).to_contain_text("6 matching questions", timeout=30_000)
    expect(page.locator(".seqcomp-row").first).to_contain_text("wrong")
    timings["filter_s"] = time.perf_counter() - start
    page.screenshot(path=str(out / "inspector_wrong.png"))
    page.locator(".seqcomp-top5").first.scroll_into_view_if_needed()
    page.screenshot(path=str(out / "inspector_answers.png"))

    expect(page.locator(".js-plotly-plot").nth(12)).to_be_attached(timeout=60_000)  # 7 static + 6 live plots
    # the first visible one: the dashboard's pretraining panel is hidden (display: none) for a run without pretraining
    page.locator(".widget-box .js-plotly-plot:visible").first.scroll_into_view_if_needed()
    page.screenshot(path=str(out / "dashboard.png"))
    page.locator(".seqcomp-nearest").first.scroll_into_view_if_needed()
    page.screenshot(path=str(out / "explorer.png"))
