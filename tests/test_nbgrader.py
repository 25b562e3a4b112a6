"""nbgrader's real pipeline on the masters: ``generate_assignment`` releases what ``make exercises`` writes, and
``autograde`` gives 0 points to an unsolved notebook, partial (or 0) to a known-wrong solution and full points to the
master. Also shows that the autograder's kernel sees ``NBGRADER_EXECUTION`` (so failed checks raise there)."""

import os
import re
import shutil
import sys
from pathlib import Path

import nbformat
import pytest

from recursionlab.course.exercises import CHECK_LINE, ROOT, make_exercise, normalise_for_comparison, tag_master

pytestmark = pytest.mark.filterwarnings("ignore::Warning:nbgrader.*", "ignore::Warning:sqlalchemy.*")
nbgrader_api = pytest.importorskip("nbgrader.apps", reason="nbgrader is a dev dependency: pip install -e '.[dev]'")

# A known-wrong answer per master: (grade_id of the solution cell, the cell's new source).
WRONG = {
    "00_welcome": ("l00-answer-warmup_cosine", '''def warmup_cosine(step, total_steps, warmup_steps, min_ratio):
    # no clamp: past the end the cosine climbs back up
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))'''),
    "07_hrm": ("l07-answer-continue_target", '''def continue_target(next_q_halt, next_q_continue, is_last):
    # forgets that the last segment has no "continue": always bootstraps from the larger Q
    return torch.sigmoid(torch.maximum(next_q_halt, next_q_continue))'''),
}


def master(name: str) -> nbformat.NotebookNode:
    """The tagged master. A master not yet converted to graded '# CHECK' cells (the contract) gets its check cells
    marked here, 1 point each, so that the pipeline is still exercised on it."""
    nb = nbformat.read(ROOT / "solutions" / f"{name}.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    if not any(CHECK_LINE.match(c.source.split("\n", 1)[0].strip()) for c in code):
        for cell in code:
            if "BEGIN SOLUTION" not in cell.source and re.search(r"^check\(", cell.source, re.MULTILINE):
                cell.source = "# CHECK (1 points)\n" + cell.source
    return tag_master(nb, f"{name}.ipynb")


def wrong_version(nb: nbformat.NotebookNode, grade_id: str, source: str) -> nbformat.NotebookNode:
    nb = nbformat.from_dict(nb)
    cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id]
    assert cells, f"no solution cell {grade_id!r} any more: update WRONG in {__file__}"
    cells[0].source = source
    return nb


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    root = tmp_path_factory.mktemp("course")
    old_path = os.environ.get("PATH", "")
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + old_path  # nbgrader runs `alembic`
    # grade as an instructor would, with progress bars on (nbgrader scores a cell that writes to stderr 0)
    old_progress = os.environ.pop("RECURSIONLAB_PROGRESS", None)
    try:
        from traitlets.config import Config

        config = Config()
        config.CourseDirectory.root = str(root)
        config.CourseDirectory.course_id = "recursionlab"
        config.Execute.timeout = 300  # a loaded CI machine
        api = nbgrader_api.NbGraderAPI(config=config)
        result = {}
        for name, (grade_id, wrong_source) in WRONG.items():
            assignment = f"a{name[:2]}"
            source = master(name)
            (root / "source" / assignment).mkdir(parents=True)
            nbformat.write(source, root / "source" / assignment / f"{name}.ipynb")
            out = api.generate_assignment(assignment)
            assert out["success"], out["log"]
            release = nbformat.read(root / "release" / assignment / f"{name}.ipynb", as_version=4)
            submissions = {"unsolved": release, "wrong": wrong_version(source, grade_id, wrong_source),
                           "master": source}
            for student, nb in submissions.items():
                folder = root / "submitted" / student / assignment
                folder.mkdir(parents=True)
                nbformat.write(nb, folder / f"{name}.ipynb")
                out = api.autograde(assignment, student)
                assert out["success"], out["log"]
            result[name] = {"source": source, "release": release, "assignment": assignment}
        from nbgrader.api import Gradebook

        with Gradebook(f"sqlite:///{root / 'gradebook.db'}", "recursionlab") as gb:
            for info in result.values():
                for student in ("unsolved", "wrong", "master"):
                    sub = gb.find_submission(info["assignment"], student)
                    info[student] = (sub.score, sub.max_score)
                print(info["assignment"], {s: info[s] for s in ("unsolved", "wrong", "master")})
        result["root"] = root
        yield result
    finally:
        os.environ["PATH"] = old_path
        if old_progress is not None:
            os.environ["RECURSIONLAB_PROGRESS"] = old_progress
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("name", list(WRONG))
def test_autograde_scores(course, name):
    info = course[name]
    score, max_score = info["master"]
    assert max_score > 0 and score == max_score, f"{name}: the master got {score} of {max_score}"
    assert info["unsolved"][0] == 0, f"{name}: the unsolved notebook got {info['unsolved'][0]} of {max_score}"
    assert info["wrong"][0] < max_score, f"{name}: a known-wrong solution got full marks ({info['wrong'][0]})"


@pytest.mark.parametrize("name", list(WRONG))
def test_release_equals_make_exercises(course, name):
    info = course[name]
    ours = make_exercise(info["source"], f"{name}.ipynb")
    assert normalise_for_comparison(info["release"]) == normalise_for_comparison(ours)
    committed = ROOT / "exercises" / f"{name}.ipynb"
    if info["source"].cells == tag_master(nbformat.read(ROOT / "solutions" / f"{name}.ipynb", as_version=4),
                                          f"{name}.ipynb").cells:  # the master needed no on-the-fly marking
        assert normalise_for_comparison(nbformat.read(committed, as_version=4)) == \
            normalise_for_comparison(info["release"]), f"exercises/{name}.ipynb differs from generate_assignment's"


def test_autograder_kernel_is_in_grading_mode(course):
    # nbgrader's autograde sets NBGRADER_EXECUTION=autograde for the kernel, so checks raise CheckFailed there
    graded = Path(course["root"]) / "autograded" / "unsolved" / "a00" / "00_welcome.ipynb"
    nb = nbformat.read(graded, as_version=4)
    errors = [o.get("ename") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert errors and set(errors) == {"CheckFailed"}, errors
