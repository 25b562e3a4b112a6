"""`make lab` serves the course: start JupyterLab headless at the repository root (as `make lab` does), check that
the lessons, exercises and docs are all reachable from its file browser, stop it. Then the learner's path in headless
chromium (tests/_browser.py): JupyterLab on a copy of the course, lesson 00 and its exercise opened from the file
browser and run with Run All at the smoke profile, without a traceback."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_jupyterlab_serves_the_course_notebooks(tmp_path):
    port, token = _free_port(), "recursionlab-test"
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path / "rt"), JUPYTER_CONFIG_DIR=str(tmp_path / "cfg"),
               JUPYTER_DATA_DIR=str(tmp_path / "data"))
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={ROOT}", "--allow-root"]
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        listing, deadline = None, time.time() + 90
        while time.time() < deadline and listing is None:
            try:
                url = f"http://127.0.0.1:{port}/api/contents/notebooks?token={token}"
                with urllib.request.urlopen(url, timeout=5) as response:
                    listing = json.load(response)
            except OSError:
                assert server.poll() is None, server.stderr.read().decode()[-2000:]
                time.sleep(0.5)
        assert listing is not None, "JupyterLab did not answer within 90 s"
        names = {item["name"] for item in listing["content"]}
        assert "00_welcome.ipynb" in names
        assert names == {p.name for p in (ROOT / "notebooks").iterdir() if not p.name.startswith(".")}
        for folder in ("exercises", "docs"):  # where lesson 00 and the README send the learner
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/contents/{folder}?token={token}") as response:
                assert json.load(response)["content"], f"{folder}/ is empty or unreachable"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/lab?token={token}", timeout=10) as response:
            assert response.status == 200
    finally:
        server.terminate()
        server.wait(timeout=30)


# ---------------------------------------------------------------------------------------------------------------
# The learner's path in a real browser: the file browser, lesson 00 and an (unsolved) exercise, Run All, no errors.

LAB_TIMEOUT_S = 240  # per notebook; each runs in well under a minute at smoke


def _start_lab(root: Path, tmp_path: Path, token: str) -> tuple[subprocess.Popen, int]:
    port = _free_port()
    # every cell in the DOM (no windowing), so the test reads every output; otherwise JupyterLab as a learner has it
    settings = tmp_path / "cfg" / "lab" / "user-settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    (settings / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path / "rt"), JUPYTER_CONFIG_DIR=str(tmp_path / "cfg"),
               JUPYTER_DATA_DIR=str(tmp_path / "data"), RECURSIONLAB_PROFILE="smoke", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--allow-root",
           "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=5):
                return server, port
        except OSError:
            if server.poll() is not None:
                raise AssertionError(server.stderr.read().decode()[-2000:]) from None
            time.sleep(0.5)
    server.terminate()
    raise AssertionError("JupyterLab did not answer within 90 s")


def _open_and_run_all(page, folder: str, name: str) -> dict:
    """From the file browser: into ``folder``, open ``name``, Run All, wait for an idle kernel; the outputs."""
    import re as _re

    listing = page.locator(".jp-DirListing-content")
    crumbs = "() => document.querySelector('.jp-BreadCrumbs').textContent.replace(/\\s/g, '')"

    def open_item(label: str, crumbs_after: str) -> None:  # double-click, retried: the listing re-renders
        for _ in range(5):
            listing.locator(".jp-DirListing-itemText", has_text=_re.compile(f"^{_re.escape(label)}$")).dblclick()
            try:
                page.wait_for_function(f"() => ({crumbs})() === {json.dumps(crumbs_after)}", timeout=5000)
                return
            except Exception:  # a stale row swallowed the double-click: try again
                continue
        raise AssertionError(f"could not open {label!r} from the file browser")

    page.locator(".jp-BreadCrumbs-home").click()  # the server root, as `make lab` shows it
    page.wait_for_function(f"() => ({crumbs})() === '/'")
    open_item(folder, f"/{folder}/")
    listing.locator(".jp-DirListing-itemText", has_text=_re.compile(f"^{_re.escape(name)}$")).dblclick()
    page.wait_for_function("path => { const tab = document.querySelector('.lm-DockPanel-tabBar .lm-mod-current');"
                           " return tab && (tab.getAttribute('title') || '').includes('Path: ' + path); }",
                           arg=f"{folder}/{name}")
    page.wait_for_selector(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator[data-status='idle']",
                           timeout=60_000)
    # the committed outputs carry execution counts: clear them, so a numbered prompt means "ran in this test"
    page.locator(".lm-MenuBar-itemLabel", has_text=_re.compile("^Edit$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=_re.compile("^Clear Outputs of All Cells$")).click()
    page.wait_for_function("() => !document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea')"
                           " || !document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output')")
    started = """() => {
        const panel = Array.from(document.querySelectorAll('.jp-NotebookPanel')).find(p => p.offsetParent !== null);
        return panel && Array.from(panel.querySelectorAll('.jp-CodeCell .jp-InputPrompt'))
            .some(p => /^\\[(\\*|\\d+)\\]:$/.test(p.textContent.trim()));
    }"""
    for attempt in range(3):  # a kernel still connecting can ignore the first Run All: retry until a cell starts
        page.locator(".lm-MenuBar-itemLabel", has_text=_re.compile("^Run$")).click()
        page.locator(".lm-Menu-itemLabel", has_text=_re.compile("^Run All Cells$")).click()
        try:
            page.wait_for_function(started, timeout=15_000)
            break
        except Exception:
            if attempt == 2:
                raise
    done = """() => {
        const panel = Array.from(document.querySelectorAll('.jp-NotebookPanel')).find(p => p.offsetParent !== null);
        if (!panel) return false;
        const prompts = Array.from(panel.querySelectorAll('.jp-CodeCell .jp-InputPrompt'));
        const indicator = panel.querySelector('.jp-Notebook-ExecutionIndicator');
        // finished: nothing queued or running ([*]) and the kernel idle; an error stops Run All early
        return prompts.some(p => /^\\[\\d+\\]:$/.test(p.textContent.trim()))
            && !prompts.some(p => p.textContent.includes('*'))
            && indicator && indicator.getAttribute('data-status') === 'idle';
    }"""
    page.wait_for_function(done, timeout=LAB_TIMEOUT_S * 1000, polling=500)
    return page.evaluate("""() => {
        const panel = Array.from(document.querySelectorAll('.jp-NotebookPanel')).find(p => p.offsetParent !== null);
        const out = sel => Array.from(panel.querySelectorAll(sel)).map(e => e.textContent);
        const prompts = Array.from(panel.querySelectorAll('.jp-CodeCell .jp-InputPrompt'));
        return {cells: prompts.length, ran: prompts.filter(p => /^\\[\\d+\\]:$/.test(p.textContent.trim())).length,
                stderr: out('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'),
                stdout: out('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stdout"]'),
                plain: out('.jp-OutputArea-output[data-mime-type="text/plain"]'),
                images: panel.querySelectorAll('.jp-OutputArea-output img').length};
    }""")


def test_a_learner_runs_lesson_00_and_an_exercise_in_jupyterlab(tmp_path):
    from recursionlab.course.files import copy_course
    from tests._browser import browser_page, require_browser

    require_browser()
    course = tmp_path / "course"
    copy_course(course)  # what `recursionlab course DIR --no-lab` does; the test never writes into the repository
    wanted = {json.loads((course / folder / name).read_text())["metadata"]["kernelspec"]["name"]
              for folder, name in (("notebooks", "00_welcome.ipynb"), ("exercises", "00_welcome.ipynb"))}
    token = "recursionlab-" + os.urandom(8).hex()
    server, port = _start_lab(course, tmp_path, token)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/kernelspecs?token={token}") as response:
            kernels = set(json.load(response)["kernelspecs"])
        assert wanted <= kernels, f"the notebooks ask for kernel(s) {wanted}; this environment has {kernels}"
        base = f"http://127.0.0.1:{port}/"
        with browser_page(base, timeout_ms=60_000) as (page, _blocked):
            page.goto(f"{base}lab?token={token}")
            page.wait_for_selector(".jp-DirListing-content")
            names = page.locator(".jp-DirListing-itemText").all_inner_texts()
            assert {"notebooks", "exercises", "docs"} <= set(names), names
            for folder in ("notebooks", "exercises"):  # lesson 00, then its exercise (unsolved: must not crash)
                result = _open_and_run_all(page, folder, "00_welcome.ipynb")
                tracebacks = [text for text in result["stderr"] if "Traceback" in text or "Error" in text]
                assert not tracebacks, f"{folder}/00_welcome.ipynb: " + "\n".join(tracebacks)[-3000:]
                assert result["cells"] > 3 and result["ran"] == result["cells"] and result["stdout"], result
                stray = [text for text in result["plain"] if text.strip() in ("True", "False")]
                assert not stray, f"{folder}/00_welcome.ipynb: a cell shows a stray {stray[0].strip()} (check cells)"
                if folder == "notebooks":
                    assert result["images"] >= 2, result  # the course map and the training curves
                    assert any("recursionlab profile: smoke" in text for text in result["stdout"]), result["stdout"][:3]
                else:
                    assert any("not implemented yet" in text for text in result["stdout"]), result["stdout"][-3:]
    finally:
        server.terminate()
        server.wait(timeout=30)
