"""``recursionlab course DIR``: copy the lessons, exercises and docs into a folder and open JupyterLab there.

The wheel carries the course inside the package (``recursionlab/course_files/``, copied there at build time by
``setup.py``); a source checkout (``pip install -e .``) uses the repository's own folders. Either way a learner
needs neither git nor make::

    pip install recursionlab
    recursionlab course ./my-course            # copies, then opens JupyterLab on ./my-course
    recursionlab course ./my-course --no-lab   # only copies
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

COURSE_FOLDERS: tuple[str, ...] = ("notebooks", "exercises", "docs")
FIRST_LESSON = "notebooks/00_welcome.ipynb"
_PACKAGE = Path(__file__).resolve().parents[1]

LANDING = """# recursionlab course

Start with `notebooks/00_welcome.ipynb`. Each lesson in `notebooks/` has an exercise notebook with the same number
in `exercises/`; `docs/` holds the course design and, per paper, a map from the equations to the library.

Each notebook's first cell prints the profile in force (`laptop` without a GPU, `gpu` with one); set
`RECURSIONLAB_PROFILE=smoke` before starting JupyterLab for a quick run-through of every cell.
"""


def course_source() -> Path:
    """The folder holding ``notebooks/``, ``exercises/`` and ``docs/``: inside the installed wheel, else the checkout.

    Raises ``FileNotFoundError`` naming both places when neither holds the lessons.
    """
    for root in (_PACKAGE / "course_files", _PACKAGE.parent):
        if (root / FIRST_LESSON).is_file():
            return root
    raise FileNotFoundError(f"the course notebooks are in neither {_PACKAGE / 'course_files'} (an installed wheel) "
                            f"nor {_PACKAGE.parent} (a source checkout); reinstall recursionlab from a wheel")


def copy_course(dest: Path | str, force: bool = False) -> list[Path]:
    """Copy the lessons, exercises and docs into ``dest``; returns the folders written.

    Refuses (``FileExistsError``) an existing non-empty ``dest`` unless ``force``; with ``force`` files of the same
    name are replaced and other files are kept. Solutions are not copied.
    """
    dest = Path(dest).expanduser()
    if dest.exists() and not dest.is_dir():
        raise FileExistsError(f"{dest} exists and is not a folder; choose a new folder name")
    if dest.is_dir() and any(dest.iterdir()) and not force:
        raise FileExistsError(f"{dest} exists and is not empty; choose a new folder, or pass --force to copy over "
                              f"it (files of the same name are replaced, your other files are kept)")
    source = course_source()
    if dest.resolve() == source.resolve():
        raise FileExistsError(f"{dest} is where the course comes from; choose another folder")
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for name in COURSE_FOLDERS:
        if (source / name).is_dir():
            shutil.copytree(source / name, dest / name, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
            written.append(dest / name)
    readme = dest / "README.md"
    if force or not readme.exists():
        readme.write_text(LANDING, encoding="utf-8")
    return written


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``recursionlab course DIR [--no-lab] [--force]``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="recursionlab course", description="Copy the lessons, exercises and docs "
                                     "into a folder and open JupyterLab there.")
    parser.add_argument("dir", type=Path, help="folder to copy the course into (created if missing)")
    parser.add_argument("--no-lab", action="store_true", help="only copy; do not start JupyterLab")
    parser.add_argument("--force", action="store_true", help="copy into a non-empty folder, replacing same-named files")
    args = parser.parse_args(argv)
    try:
        written = copy_course(args.dir, force=args.force)
    except (FileExistsError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"copied {', '.join(p.name for p in written)} into {args.dir.resolve()}; start with {FIRST_LESSON}")
    if args.no_lab:
        return 0
    # The notebooks ask for the kernel `python3`, which is the Python running JupyterLab: the one holding recursionlab.
    root = args.dir.resolve()
    return subprocess.call([sys.executable, "-m", "jupyter", "lab", f"--ServerApp.root_dir={root}", FIRST_LESSON],
                           cwd=root)
