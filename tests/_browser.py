"""Headless chromium for the browser tests (tests/test_site.py, tests/test_lab.py): Debian's package driven by
Playwright, never a browser that Playwright downloads itself.

`make test` installs chromium when it is missing (apt, as root). Without it these tests skip with a hint on a
developer machine and fail in CI (the environment variable CI is set), where a missing browser is a set-up bug.
Every request that leaves 127.0.0.1 is aborted and recorded, so a page that needs the network is caught."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("RECURSIONLAB_CHROMIUM", "/usr/bin/chromium"))
# The closed network makes chromium hang on its background fetches (updates, sync, QUIC probes) without these.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
INSTALL_HINT = ("install Debian's chromium (`sudo apt-get install -y --no-install-recommends chromium`, or `make test` "
                "as root does it) and the `dev` extra (playwright); set RECURSIONLAB_CHROMIUM for another binary")


def require_browser() -> None:
    """Skip (developer machine) or fail (CI) when chromium or Playwright is missing."""
    problem = None
    if not CHROMIUM.is_file():
        problem = f"no chromium at {CHROMIUM}"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            problem = "the playwright package is not installed"
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"{problem}: CI must provide the browser ({INSTALL_HINT})")
        pytest.skip(f"{problem}; {INSTALL_HINT}")


@contextmanager
def browser_page(base_url: str, *, timeout_ms: int = 30_000) -> Iterator[tuple[object, list[str]]]:
    """A fresh chromium page that may only reach ``base_url``'s host; yields (page, blocked_request_urls)."""
    require_browser()
    from playwright.sync_api import sync_playwright

    host = base_url.split("/")[2]
    blocked: list[str] = []

    def only_local(route) -> None:
        url = route.request.url
        if url.split("/")[2] == host or url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            blocked.append(url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            context.set_default_timeout(timeout_ms)
            context.route("**/*", only_local)
            yield context.new_page(), blocked
        finally:
            browser.close()
