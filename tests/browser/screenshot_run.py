"""Screenshots of ``inspect_run.ipynb`` on any run folder, in JupyterLab driven by headless Chromium.

The browser check's driver pointed at a real run (its sibling run folders are compared beside it):

    .venv/bin/python tests/browser/screenshot_run.py runs/tier1 --out runs/screenshots-real --search Genghis

Writes inspector_wrong.png (the "wrong" filter applied), inspector_search.png, dashboard.png, explorer.png
and the executed notebook's state in last.png; prints the timings.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

from chromium import CHROMIUM, CHROMIUM_ARGS, browser_missing  # noqa: E402
from test_jupyterlab import NOTEBOOK, jupyterlab  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--out", required=True)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--search", default="", help="text typed into the inspector's search box")
    parser.add_argument("--max-rows", type=int, default=20)
    args = parser.parse_args()
    missing = browser_missing()
    if missing:
        print(f"screenshot_run: {missing}", file=sys.stderr)
        return 2
    import papermill
    from playwright.sync_api import expect, sync_playwright

    from seqcomp.runs import load_run

    run = load_run(Path(args.run_dir).resolve())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        papermill.execute_notebook(str(NOTEBOOK), str(root / "inspect_run.ipynb"), prepare_only=True,
                                   parameters={"run_dir": str(run.path), "model": args.model,
                                               "max_rows": args.max_rows})
        start = time.perf_counter()
        with jupyterlab(root, root) as url, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            try:
                page.goto(url)
                page.get_by_text("Python 3 (ipykernel) | Idle").first.wait_for(timeout=90_000)
                page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
                page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
                page.wait_for_function(
                    """() => { const p = [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')];
                               return p.length > 0 && p.every(e => /\\[\\d+\\]/.test(e.textContent)); }""",
                    timeout=600_000, polling=1000)
                status = page.locator(".seqcomp-status").first
                expect(status).to_contain_text("matching questions", timeout=60_000)
                select = page.locator(".widget-dropdown", has_text=f"{run.name[:14]} is").locator("select").first
                select.scroll_into_view_if_needed()
                n = len(run.predictions)
                everything = f"{n} matching questions (of {n})"  # the status line while no filter applies
                expect(status).to_contain_text(everything, timeout=30_000)
                select.select_option("wrong")
                expect(status).not_to_contain_text(everything, timeout=30_000)
                expect(page.locator(".seqcomp-row").first).to_contain_text("wrong", timeout=30_000)
                print("after 'wrong' filter:", status.inner_text())
                page.screenshot(path=str(out / "inspector_wrong.png"))
                if args.search:
                    select.select_option("all")
                    expect(status).to_contain_text(everything, timeout=30_000)
                    box = page.locator(".widget-text", has_text="search").locator("input").first
                    box.fill(args.search)
                    box.press("Enter")
                    expect(status).not_to_contain_text(everything, timeout=30_000)
                    print(f"after search {args.search!r}:", status.inner_text())
                    page.screenshot(path=str(out / "inspector_search.png"))
                if run.history:
                    page.locator(".widget-box .js-plotly-plot").first.scroll_into_view_if_needed()
                    page.screenshot(path=str(out / "dashboard.png"))
                if page.locator(".seqcomp-nearest").count():
                    page.locator(".seqcomp-nearest").first.scroll_into_view_if_needed()
                    page.screenshot(path=str(out / "explorer.png"))
            finally:
                page.screenshot(path=str(out / "last.png"))
                browser.close()
        print(f"screenshots in {out} after {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
