"""Execute course notebooks in place (outputs saved) and time them.

    RECURSIONLAB_PROFILE=laptop python -m recursionlab.course.notebooks run notebooks/*.ipynb solutions/*.ipynb
    python -m recursionlab.course.notebooks run --no-save notebooks/03_weight_tied_depth.ipynb

Lessons are committed executed at the laptop profile so that a reader sees real outputs on the web.
"""

from __future__ import annotations

import argparse
import html
import os
import re
import sys
import time
from pathlib import Path

import nbformat

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def progress_bars_show_their_end(nb: dict) -> int:
    """Give every saved progress-bar widget the text of its final state; returns how many were changed.

    A tqdm bar in a notebook is a widget (a label, a progress bar, a label) whose plain-text stand-in, what GitHub
    or any viewer without the widget library shows, is recorded when the bar is created: ``0/800 [00:00<?]``.
    The saved widget state holds where the bar ended, so the stand-in is rewritten from it (``training: 100% |
    800/800 [00:07<00:00, ...]``). Other widgets keep their text. ``nb`` is a notebook dict (nbformat 4).
    """
    state = nb.get("metadata", {}).get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})

    def text(model_id: str) -> str:
        value = str(state.get(model_id.removeprefix("IPY_MODEL_"), {}).get("state", {}).get("value", ""))
        return html.unescape(re.sub(r"<[^>]*>", "", value)).replace("\u2007", " ").strip()

    changed = 0
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            view = output.get("data", {}).get(WIDGET_VIEW)
            model = state.get(view["model_id"]) if view else None
            if not model or model.get("model_name") != "HBoxModel":
                continue
            children = [c.removeprefix("IPY_MODEL_") for c in model["state"].get("children", [])]
            names = [state.get(c, {}).get("model_name") for c in children]
            if names != ["HTMLModel", "FloatProgressModel", "HTMLModel"]:  # not a progress bar
                continue
            bar = state[children[1]]["state"]
            filled = round(10 * float(bar.get("value", 0)) / float(bar.get("max") or 1))
            bar_text = "#" * filled + " " * (10 - filled)
            output["data"]["text/plain"] = f"{text(children[0])}|{bar_text}| {text(children[2])}"
            changed += 1
    return changed


def execute_notebook(path: str | Path, save: bool = True, timeout: int = 900) -> float:
    """Run every cell of ``path`` in a fresh kernel (cwd = its folder); returns the wall time in seconds.

    Raises ``nbclient.exceptions.CellExecutionError`` on the first failing cell (nothing is saved then).
    """
    from nbclient import NotebookClient

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    start = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - start
    if save:
        progress_bars_show_their_end(nb)
        nb.metadata.setdefault("recursionlab", {})["executed_profile"] = os.environ.get("RECURSIONLAB_PROFILE", "auto")
        nbformat.write(nb, path)
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute notebooks (in place unless --no-save)")
    run.add_argument("paths", nargs="+")
    run.add_argument("--no-save", action="store_true")
    run.add_argument("--timeout", type=int, default=900, help="per-cell timeout in seconds")
    args = parser.parse_args(argv)
    # One intra-op thread per kernel unless told otherwise: the tiny models of the course gain nothing from more,
    # and several notebooks running side by side on 2 cores would otherwise oversubscribe them (10x slower).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    profile = os.environ.get("RECURSIONLAB_PROFILE", "(auto)")
    failed = 0
    for p in args.paths:
        try:
            seconds = execute_notebook(p, save=not args.no_save, timeout=args.timeout)
            print(f"{seconds:7.1f} s  {p}  [profile {profile}]", flush=True)
        except Exception as err:  # report and continue with the next notebook
            failed += 1
            print(f"FAILED   {p}: {type(err).__name__}: {str(err)[-2000:]}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
