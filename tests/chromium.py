"""What the browser checks share: Debian's Chromium, its flags, the skip-or-fail rule and the screenshot folder."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("SEQCOMP_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def browser_missing() -> str:
    """Why the browser check cannot run here ('' when it can)."""
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is missing (pip install playwright; no `playwright install` needed)"
    if not Path(CHROMIUM).is_file():
        return f"{CHROMIUM} missing (apt-get install -y chromium)"
    return ""


def require_browser() -> None:
    """Skip without Playwright or Chromium, except in CI (SEQCOMP_REQUIRE_BROWSER=1), where a skip would hide a gap."""
    missing = browser_missing()
    if missing:
        if os.environ.get("SEQCOMP_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser check required but {missing}")
        pytest.skip(missing)


def screenshot_dir() -> Path:
    return Path(os.environ.get("SEQCOMP_SCREENSHOT_DIR", REPO / "runs" / "screenshots"))
