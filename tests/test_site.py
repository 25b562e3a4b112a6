"""The course website: build it as `make book` does (Sphinx warnings are errors), serve it on localhost and open it
in headless chromium. The index renders with its navigation, lesson 00 shows every figure and its widget's saved
state, math is typeset by the site's own MathJax, internal links and anchors resolve, and no page needs the network."""

from __future__ import annotations

import functools
import importlib.util
import re
import threading
import time
import urllib.request
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urldefrag

import pytest

from tests._browser import browser_page, require_browser

ROOT = Path(__file__).resolve().parents[1]


def _load_builder():
    spec = importlib.util.spec_from_file_location("book_build", ROOT / "book" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # one line per request would drown pytest's output
        pass


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:  # the browser leaving a page mid-download: no news
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The built site served over HTTP; yields its base URL (ending in /)."""
    require_browser()  # before the 30-second build: a machine without the browser skips at once
    builder = _load_builder()
    start = time.perf_counter()
    html = builder.build_book(ROOT)  # the function `make book` runs; raises on any Sphinx warning
    print(f"book built in {time.perf_counter() - start:.1f} s")
    server = _Server(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(html)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_the_book_takes_the_repository_url_from_pyproject(tmp_path):
    builder = _load_builder()
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n[project.urls]\nRepository = "https://example.org/a/b"\n')
    assert builder.repository_url(tmp_path) == "https://example.org/a/b"
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    with pytest.raises(ValueError, match="Repository"):
        builder.repository_url(tmp_path)
    src = builder.stage(ROOT, tmp_path / "src")
    assert f'  url: "{builder.repository_url(ROOT)}"' in (src / "_config.yml").read_text()


def test_saved_widget_state_becomes_a_static_rendering_with_its_figure():
    builder = _load_builder()
    state = {
        "box": {"model_name": "VBoxModel", "state": {"children": ["IPY_MODEL_slider", "IPY_MODEL_out"]}},
        "slider": {"model_name": "IntSliderModel", "state": {"description": "warmup_steps", "value": 100}},
        "out": {"model_name": "OutputModel", "state": {"outputs": [
            {"output_type": "display_data", "metadata": {}, "data": {"image/png": "iVBORw0K"}}]}},
    }
    widget = {"output_type": "display_data", "metadata": {},
              "data": {builder.WIDGET_VIEW: {"model_id": "box"}, "text/plain": "interactive(...)"}}
    rendered = builder.static_widget_outputs(widget, state)
    assert builder.WIDGET_VIEW not in rendered[0]["data"]
    assert "warmup_steps" in rendered[0]["data"]["text/html"] and "<code>100</code>" in rendered[0]["data"]["text/html"]
    assert builder.STATIC_NOTE.split(",")[0] in rendered[0]["data"]["text/html"]
    assert rendered[1]["data"]["image/png"] == "iVBORw0K"  # the figure the widget showed, as an ordinary output
    # without saved state the plain-text representation stays, and nothing claims to be a rendering
    assert builder.static_widget_outputs(widget, {}) == [dict(widget, data={"text/plain": "interactive(...)"})]


def _images(page) -> list[dict]:
    page.wait_for_function("Array.from(document.images).every(i => i.complete)")
    return page.eval_on_selector_all(
        "img", "els => els.map(e => ({src: e.currentSrc || e.src, width: e.naturalWidth}))")


def test_site_in_a_browser(site):
    with browser_page(site) as (page, blocked):
        # the index: title and navigation to every part
        page.goto(site)  # index.html forwards to the landing page
        page.wait_for_url("**/intro.html")
        assert "recursionlab" in page.title()
        assert page.locator("h1").first.inner_text().startswith("recursionlab")
        nav = page.eval_on_selector_all("nav.bd-links a", "els => els.map(e => e.getAttribute('href'))")
        lessons = sorted((ROOT / "notebooks").glob("*.ipynb"))
        for lesson in lessons:
            assert any(href.endswith(f"notebooks/{lesson.stem}.html") for href in nav), f"{lesson.stem} not in nav"
        assert any("exercises/00_welcome.html" in href for href in nav)
        assert any("docs/design.html" in href for href in nav)
        assert any("api/models.html" in href for href in nav)
        assert not any("solutions/" in href for href in nav)

        # lesson 00: every figure loads; the interactive cell shows its saved state, the note and its figure
        page.goto(site + "notebooks/00_welcome.html")
        images = _images(page)
        assert len(images) >= 3, images
        assert all(image["width"] > 0 for image in images), [i["src"] for i in images if i["width"] == 0]
        widget_cell = page.locator("div.cell", has=page.locator(".rl-widget-note"))
        assert widget_cell.count() == 1
        assert "warmup_steps" in widget_cell.inner_text() and "JupyterLab" in widget_cell.inner_text()
        assert widget_cell.locator("img").evaluate("e => e.naturalWidth") > 0
        assert page.locator(r"text=/training:\s*100%/").count() >= 1  # a progress bar's final state, as text
        assert page.locator(".rl-widget-note").is_visible()
        # launch buttons point at this notebook in the repository set in pyproject.toml
        launch = page.eval_on_selector_all("a[href*='colab'], a[href*='mybinder']", "els => els.map(e => e.href)")
        assert any(href.endswith("/blob/main/notebooks/00_welcome.ipynb") for href in launch), launch
        assert any("mybinder.org" in href and "urlpath=lab" in href for href in launch), launch

        # math is typeset by the MathJax the site carries
        page.goto(site + "notebooks/04_deq_fixed_points.html")
        page.wait_for_selector("mjx-container", timeout=30_000)

        # internal links: every same-site link of the index and of the pages it links resolves, anchors included
        pages, checked, bodies = {site + "intro.html"}, {}, {}

        def body(url: str) -> str:
            if url not in bodies:
                try:
                    with urllib.request.urlopen(url, timeout=10) as response:
                        bodies[url] = response.read().decode("utf-8", errors="replace")
                except OSError as err:
                    bodies[url] = f"<<{err}>>"
            return bodies[url]

        page.goto(site + "intro.html")
        first = page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)")
        pages |= {urldefrag(u)[0] for u in first if u.startswith(site) and urldefrag(u)[0].endswith(".html")}
        broken = []
        # the crawl reads each page's links from its DOM; images, styles and scripts were checked above
        page.route("**/*", lambda route: route.continue_() if route.request.resource_type == "document"
                   else route.abort())
        for url in sorted(pages):
            page.goto(url, wait_until="domcontentloaded")
            for link in page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)"):
                if not link.startswith(site) or link in checked:
                    continue
                target, anchor = urldefrag(link)
                text = body(target)
                ok = not text.startswith("<<") and (not anchor or re.search(rf'id="{re.escape(anchor)}"', text))
                checked[link] = bool(ok)
                if not ok:
                    broken.append(f"{url} -> {link}")
        assert len(pages) > 40 and len(checked) > 200, (len(pages), len(checked))
        assert not broken, "broken internal links:\n" + "\n".join(broken[:30])
        assert not blocked, f"pages asked for the network: {sorted(set(blocked))[:10]}"
