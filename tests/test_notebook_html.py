"""Browser check of the pipeline's rendered HTML: every plotly figure draws, offline, in headless Chromium.

Opens the HTML of 01, 02 and 03 from the tiny pipeline run (shared with ``test_notebooks.py``) as file:// pages
with every other request blocked, counts the figures, requires each to contain drawn traces, and saves a
full-page screenshot per notebook plus one per figure to ``$SEQCOMP_SCREENSHOT_DIR`` or ``runs/screenshots/``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from chromium import CHROMIUM, CHROMIUM_ARGS, require_browser, screenshot_dir
from test_notebooks import FIGURES, tiny_pipeline

REPO = Path(__file__).resolve().parents[1]
# per plotly figure: SVG trace groups, and drawn marks (bar, line, point paths with a real outline) inside them;
# a figure without data has no trace group, and a bar of height 0 is still drawn
FIGURE_STATS = """() => [...document.querySelectorAll('.js-plotly-plot')].map(p => ({
    traces: p.querySelectorAll('svg.main-svg g.trace').length,
    marks: [...p.querySelectorAll('g.trace path')].filter(e => (e.getAttribute('d') || 'M0,0Z') !== 'M0,0Z').length}))"""

pytestmark = pytest.mark.browser


def _drawn_figures(page, expected: int, timeout_s: float = 30.0) -> list[dict]:
    """Figure stats once ``expected`` figures are drawn (plotly draws asynchronously), or at the timeout."""
    deadline = time.monotonic() + timeout_s
    stats = page.evaluate(FIGURE_STATS)
    while (len(stats) < expected or not all(f["traces"] and f["marks"] for f in stats)) and time.monotonic() < deadline:
        page.wait_for_timeout(250)
        stats = page.evaluate(FIGURE_STATS)
    return stats


def test_rendered_notebooks_draw_every_figure_offline(tmp_path_factory):
    require_browser()
    from playwright.sync_api import sync_playwright

    pipeline = tiny_pipeline(tmp_path_factory)
    out = screenshot_dir()
    out.mkdir(parents=True, exist_ok=True)
    blocked, errors, found = [], [], {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            for stem, expected in FIGURES.items():
                page = browser.new_page(viewport={"width": 1300, "height": 900})
                page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:")
                           else (blocked.append(route.request.url), route.abort()))
                page.on("pageerror", lambda err, stem=stem: errors.append(f"{stem}: {err}"))
                page.goto((pipeline / f"{stem}.html").as_uri(), wait_until="load")
                stats = _drawn_figures(page, expected)
                page.screenshot(path=str(out / f"{stem}.png"), full_page=True)
                for i in range(len(stats)):
                    page.locator(".js-plotly-plot").nth(i).screenshot(path=str(out / f"{stem}_figure{i}.png"))
                found[stem] = stats
                page.close()
        finally:
            browser.close()
    (out / "html_figures.json").write_text(json.dumps({"figures": found, "blocked": sorted(set(blocked))}, indent=2))
    assert not errors, errors
    assert not [u for u in blocked if "plot.ly" in u or "plotly" in u], "plotly must not come from the network"
    for stem, expected in FIGURES.items():
        assert len(found[stem]) >= expected, f"{stem}: {len(found[stem])} figures drawn, expected {expected}"
        empty = [i for i, f in enumerate(found[stem]) if f["traces"] == 0 or f["marks"] == 0]
        assert not empty, f"{stem}: figure(s) {empty} rendered empty"
