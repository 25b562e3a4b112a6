"""Execute course notebooks in place (outputs saved) and time them.

    RECURSIONLAB_PROFILE=laptop python -m recursionlab.course.notebooks run notebooks/*.ipynb solutions/*.ipynb
    python -m recursionlab.course.notebooks run --no-save notebooks/03_weight_tied_depth.ipynb

Lessons are committed executed at the laptop profile so that a reader sees real outputs on the web.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat


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
