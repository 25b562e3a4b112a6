"""The course as a package: the wheel carries the lessons, `recursionlab course` copies them, the first cell installs.

The slow tests build a wheel offline, make a fresh virtual environment that lacks recursionlab (it reuses the test
environment's other packages through a filtered overlay, so nothing is downloaded) and check, as a learner would
meet them, that
* the bootstrap cell (the first cell of every notebook) installs the package and prints what it did, and
* ``recursionlab course DIR --no-lab`` copies the course and lesson 00 runs there at the smoke profile.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from recursionlab.course import bootstrap
from recursionlab.course.files import COURSE_FOLDERS, copy_course

ROOT = Path(__file__).resolve().parents[1]


def test_repo_url_is_set_in_one_place():
    # pyproject.toml's [project.urls] (a regex: tomllib needs Python 3.11, the package supports 3.10)
    urls = re.search(r"^\[project\.urls\]\n(.*?)\n\[", (ROOT / "pyproject.toml").read_text(), re.M | re.S).group(1)
    assert re.search(r'^Repository = "(.+)"$', urls, re.M).group(1) == bootstrap.REPO_URL
    assert f"git+{bootstrap.REPO_URL}" in bootstrap.BOOTSTRAP_CELL


def test_no_tracked_file_points_outside_the_repository():
    # the design documents and fact sheets live in docs/; a path into the authors' workspace helps no reader
    needles = ["shared/" + name for name in ("COURSE", "reference", "conformance")]
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    bad = []
    for name in listed.stdout.splitlines():
        path = ROOT / name
        if name.endswith(".ipynb") or not path.is_file() or path.suffix in (".pt", ".png", ".npz"):
            continue
        text = path.read_bytes().decode("utf-8", errors="ignore")
        bad += [f"{name}: {needle}" for needle in needles if needle in text]
    assert not bad, "references outside the repository:\n" + "\n".join(bad)


def test_stamp_prepends_the_install_block_once_and_keeps_the_cell():
    original = "import torch\n\nfrom recursionlab.course import setup_notebook\n\nenv = setup_notebook(seed=3)\nx = 1"
    once = bootstrap.stamp_source(original)
    assert once.startswith(bootstrap.INSTALL_BLOCK) and once.endswith(original)
    assert bootstrap.stamp_source(once) == once  # stamping again changes nothing
    older = once.replace("--quiet", "-q")  # an older block is replaced, not stacked
    assert bootstrap.stamp_source(older) == once
    compile(once, "<cell>", "exec")


def test_stamp_dry_run_writes_nothing(tmp_path, capsys):
    cell = {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
            "source": ["from recursionlab.course import setup_notebook\n", "\n", "env = setup_notebook()"]}
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps({"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    before = path.read_text()
    assert bootstrap.main(["stamp", str(path)]) == 0
    assert path.read_text() == before and "would become" in capsys.readouterr().out
    assert bootstrap.main(["stamp", "--write", str(path)]) == 0
    stamped = json.loads(path.read_text())["cells"][0]["source"]
    assert "".join(stamped).startswith(bootstrap.MARKER)
    assert bootstrap.main(["stamp", str(tmp_path / "missing.ipynb")]) == 2


def test_course_copy_refuses_a_non_empty_folder(tmp_path):
    written = copy_course(tmp_path / "course")
    assert [p.name for p in written] == list(COURSE_FOLDERS)
    assert (tmp_path / "course" / "notebooks" / "00_welcome.ipynb").is_file()
    assert not (tmp_path / "course" / "solutions").exists()
    with pytest.raises(FileExistsError, match="--force"):
        copy_course(tmp_path / "course")
    copy_course(tmp_path / "course", force=True)


# ---------------------------------------------------------------------------------------------- fresh environment
@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel of this checkout, built offline (no build isolation: setuptools comes from the test environment)."""
    out = tmp_path_factory.mktemp("dist")
    src = tmp_path_factory.mktemp("src") / "recursionlab"
    # build from a copy: setuptools writes build/ and *.egg-info next to the sources
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True)
    if listed.returncode == 0:
        for name in listed.stdout.splitlines():
            if (ROOT / name).is_file():
                (src / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, src / name)
    else:  # not a git checkout (e.g. an unpacked sdist): everything but environments, caches and build output
        shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", "build", "dist", "runs", "*.egg-info",
                                                                 "__pycache__", ".*_cache", ".ipynb_checkpoints"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "-w", str(out), str(src)], check=True, env=_offline_env())
    (found,) = out.glob("recursionlab-*.whl")
    return found


@pytest.fixture(scope="module")
def fresh_python(tmp_path_factory) -> Path:
    """A new venv without recursionlab that sees the test environment's other packages (torch, jupyter, ...)."""
    venv = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    fresh_site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                     capture_output=True, text=True, check=True).stdout.strip())
    overlay = venv / "overlay"
    overlay.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        # leave out this package (the editable install and its metadata) and the .pth hooks of the test env
        if entry.name.startswith(("recursionlab", "__editable__")) or entry.suffix == ".pth":
            continue
        (overlay / entry.name).symlink_to(entry)
    (fresh_site / "test-env-packages.pth").write_text(str(overlay) + "\n")
    return python


def _offline_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", RECURSIONLAB_PROFILE="smoke",
               RECURSIONLAB_PROGRESS="0", **extra)
    return env


@pytest.mark.slow
def test_bootstrap_cell_installs_the_package_in_a_fresh_environment(wheel, fresh_python, tmp_path):
    env = _offline_env(RECURSIONLAB_INSTALL_FROM=str(wheel))
    absent = subprocess.run([str(fresh_python), "-c", "import recursionlab"], cwd=tmp_path, env=env,
                            capture_output=True, text=True)
    assert absent.returncode != 0, "the fresh environment must start without recursionlab"
    run = subprocess.run([str(fresh_python), "-c", bootstrap.BOOTSTRAP_CELL], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    assert lines[0] == f"installed recursionlab from {wheel}", run.stdout
    assert any(line.startswith("device: ") and "torch thread" in line for line in lines), run.stdout
    where = subprocess.run([str(fresh_python), "-c", "import recursionlab; print(recursionlab.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout
    assert str(fresh_python.parents[1]) in where, where  # imported from the fresh venv, not from the checkout


@pytest.mark.slow
def test_wheel_course_command_copies_the_course_and_lesson_00_runs(wheel, fresh_python, tmp_path):
    env = _offline_env()
    subprocess.run([str(fresh_python), "-m", "pip", "install", "--quiet", str(wheel)], env=env, check=True)
    course = tmp_path / "my-course"
    command = fresh_python.parent / "recursionlab"
    copied = subprocess.run([str(command), "course", str(course), "--no-lab"], cwd=tmp_path, env=env,
                            capture_output=True, text=True)
    assert copied.returncode == 0, copied.stderr
    for name in COURSE_FOLDERS:
        assert any((course / name).iterdir()), f"{name}/ was not copied"
    again = subprocess.run([str(command), "course", str(course), "--no-lab"], cwd=tmp_path, env=env,
                           capture_output=True, text=True)
    assert again.returncode == 2 and "--force" in again.stderr
    # lesson 00, executed by a kernel of the fresh environment (nbclient starts `python3` = this interpreter)
    script = ("import nbformat, nbclient, sys; nb = nbformat.read(sys.argv[1], as_version=4); "
              "nb.cells.append(nbformat.v4.new_code_cell('import recursionlab; print(recursionlab.__file__)')); "
              "nbclient.NotebookClient(nb, timeout=120, kernel_name='python3', "
              "resources={'metadata': {'path': sys.argv[2]}}).execute(); print(nb.cells[-1].outputs[0]['text'])")
    lesson = course / "notebooks" / "00_welcome.ipynb"
    ran = subprocess.run([str(fresh_python), "-c", script, str(lesson), str(lesson.parent)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert str(fresh_python.parents[1]) in ran.stdout, ran.stdout  # the kernel used the installed wheel


def test_docs_name_modules_and_files_that_exist():
    # a paper-to-code map is only useful while its names are real: every dotted recursionlab name and every
    # repository path written in docs/ must resolve
    import importlib

    bad = []
    for page in sorted((ROOT / "docs").rglob("*.md")):
        text = page.read_text(encoding="utf-8")
        for path in set(re.findall(r"`((?:recursionlab|tests|notebooks|solutions|exercises)/[\w./-]+)`", text)):
            if "NN_" not in path and not (ROOT / path).exists():  # NN_name.ipynb is a pattern
                bad.append(f"{page.name}: no file {path}")
        for dotted in set(re.findall(r"`(recursionlab(?:\.\w+)+)", text)):
            parts, obj = dotted.split("."), None
            for cut in range(len(parts), 0, -1):  # the longest importable prefix, then attributes
                try:
                    obj = importlib.import_module(".".join(parts[:cut]))
                except ImportError:
                    continue
                try:
                    for attr in parts[cut:]:
                        obj = getattr(obj, attr)
                except AttributeError:
                    obj = None
                break
            if obj is None:
                bad.append(f"{page.name}: no {dotted}")
    assert not bad, "\n".join(sorted(bad))


def test_environment_yml_installs_what_pyproject_lists():
    """conda users get the same packages: every runtime dependency is in environment.yml (conda or pip part), and
    pip installs the checkout with its dev extra, so the test and website tools come from pyproject.toml."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    root = Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    env = (root / "environment.yml").read_text()
    listed = {re.split(r"[<>=! ]", line.strip().lstrip("- ").strip('"'))[0].lower()
              for line in env.splitlines() if line.strip().startswith("- ")}
    conda_names = {"torch": "pytorch"}
    for requirement in project["dependencies"]:
        name = re.split(r"[<>=! \[]", requirement)[0].lower()
        assert conda_names.get(name, name) in listed, f"{name} (pyproject dependencies) is missing from environment.yml"
    assert '-e ".[dev]"' in env, "environment.yml must pip-install the checkout with its dev extra"
