"""Importers for the papers' files (tiny files written here in the same formats), the recipes' data_path, and
test splits that never contain a training puzzle or a symmetry of one (Sudoku, maze, ARC)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recursionlab.data import arc as A
from recursionlab.data import maze as M
from recursionlab.data import paper_files as F
from recursionlab.data import sudoku as S
from recursionlab.data import sudoku_rating as R
from recursionlab.data.puzzles import (
    arc_dataset,
    maze_dataset,
    maze_files_dataset,
    maze_symmetry_key,
    sudoku_dataset,
    sudoku_files_dataset,
)

HEADER = "source,question,answer,rating\n"


def _sudoku_line(puzzle, solution, source="gen", rating=3) -> str:
    q = "".join("." if v == 0 else str(v) for v in np.asarray(puzzle).ravel())
    a = "".join(str(v) for v in np.asarray(solution).ravel())
    return f"{source},{q},{a},{rating}\n"


class _Nine:
    """Six random 9x9 grids with half their cells blanked (the importer checks format, not uniqueness)."""

    def __init__(self, seed: int = 5):
        rng = np.random.default_rng(seed)
        self.solutions = np.stack([S.random_full_grid(9, rng) for _ in range(6)])
        self.puzzles = np.where(rng.random(self.solutions.shape) < 0.5, 0, self.solutions)


@pytest.fixture(scope="module")
def nine():
    return _Nine()


@pytest.fixture()
def sudoku_folder(tmp_path, nine):
    train = [_sudoku_line(p, s, rating=i) for i, (p, s) in enumerate(zip(nine.puzzles[:4], nine.solutions[:4]))]
    t = S.random_transform(9, np.random.default_rng(0))
    test = [_sudoku_line(p, s) for p, s in zip(nine.puzzles[4:], nine.solutions[4:])]
    # a symmetry of a training puzzle hidden in the test file: it must be dropped
    test.append(_sudoku_line(t.apply(nine.puzzles[0]), t.apply(nine.solutions[0]), source="copy"))
    (tmp_path / "train.csv").write_text(HEADER + "".join(train))
    (tmp_path / "test.csv").write_text(HEADER + "".join(test))
    return tmp_path


def test_sudoku_extreme_csv_import_subsample_and_symmetric_test_dropped(sudoku_folder, nine):
    train, test = sudoku_files_dataset(sudoku_folder, n_train=3, seed=1)
    again, _ = sudoku_files_dataset(sudoku_folder, n_train=3, seed=1)
    subsets = {sudoku_files_dataset(sudoku_folder, n_train=3, seed=k)[0].inputs.numpy().tobytes() for k in range(6)}
    assert len(train) == 3 and len(test) == 2  # the symmetric copy is gone
    assert np.array_equal(train.inputs.numpy(), again.inputs.numpy())  # a fixed seed gives a fixed subset
    assert len(subsets) > 1  # ... and other seeds other subsets
    assert (train.seq_len, train.vocab_size) == (81, 11)
    for x, y in zip(train.inputs.numpy(), train.labels.numpy()):
        p, s = S.decode_tokens(x), S.decode_tokens(y)
        assert S.is_solution(p, s)
        assert any(np.array_equal(p, q) for q in nine.puzzles[:4])
    assert set(train.meta["ratings"].tolist()) <= {0.0, 1.0, 2.0, 3.0}
    full, _ = sudoku_files_dataset(sudoku_folder, n_train=None)
    assert len(full) == 4


@pytest.mark.parametrize(
    "line, message",
    [
        ("src,q,a\n", "line 2: 3 columns, expected 4"),
        ("src," + "." * 80 + "," + "1" * 81 + ",1\n", "line 2: question has 80 characters, a sudoku needs 81"),
        ("src," + "x" + "." * 80 + "," + "1" * 81 + ",1\n", "line 2: bad character 'x' at position 0 of the question"),
        ("src," + "." * 81 + "," + "1" * 80 + ".,1\n", "line 2: bad character '.' at position 80 of the answer"),
        ("src," + "2" + "." * 80 + "," + "1" * 81 + ",1\n", "line 2: the answer changes the given at position 0"),
        ("src," + "." * 81 + "," + "1" * 81 + ",hard\n", "line 2: rating 'hard' is not a number"),
    ],
)
def test_malformed_sudoku_csv_lines_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "train.csv"
    path.write_text(HEADER + line)
    with pytest.raises(ValueError, match=message) as err:
        F.read_puzzle_csv(path, "sudoku")
    assert str(path) in str(err.value)


def test_malformed_headers_and_missing_files(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("question,answer\n")
    with pytest.raises(ValueError, match="line 1: header must be source,question,answer,rating"):
        F.read_puzzle_csv(path, "sudoku")
    path.write_text(HEADER)
    with pytest.raises(ValueError, match="no data rows"):
        F.read_puzzle_csv(path, "sudoku")
    with pytest.raises(FileNotFoundError, match="not a folder"):
        F.load_sudoku_extreme(tmp_path / "nowhere")


def _maze_line(x, y) -> str:
    q = "".join(M.CHARSET[v - 1] for v in x)
    a = "".join(M.CHARSET[v - 1] for v in y)
    return f"maze,{q},{a},0\n"


def test_maze_hard_csv_import_and_rotated_test_maze_dropped(tmp_path):
    mazes = M.generate_mazes(5, 8, seed=1)
    rot = lambda t: A.dihedral(t.reshape(8, 8), 1).ravel()  # noqa: E731
    train_lines = [_maze_line(x, y) for x, y in zip(mazes.inputs[:3], mazes.labels[:3])]
    (tmp_path / "train.csv").write_text(HEADER + "".join(train_lines))
    test_lines = [_maze_line(x, y) for x, y in zip(mazes.inputs[3:], mazes.labels[3:])]
    test_lines.append(_maze_line(rot(mazes.inputs[0]), rot(mazes.labels[0])))
    (tmp_path / "test.csv").write_text(HEADER + "".join(test_lines))
    train, test = maze_files_dataset(tmp_path, n_train=None, size=8)
    assert len(train) == 3 and len(test) == 2
    assert np.array_equal(train.meta["path_lengths"], mazes.path_lengths[:3])
    for x, y in zip(test.inputs.numpy(), test.labels.numpy()):
        assert M.check_maze_answer(x, y)
    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + _maze_line(mazes.inputs[0], mazes.labels[0]).replace("#", "X", 1))
    with pytest.raises(ValueError, match=r"bad\.csv, line 2: bad character 'X'"):
        F.read_puzzle_csv(bad, "maze", 64)
    with pytest.raises(ValueError, match="line 2: question has 64 characters, a maze needs 900"):
        F.read_puzzle_csv(tmp_path / "train.csv", "maze")


def _write_task(path, pairs_train, pairs_test):
    path.parent.mkdir(parents=True, exist_ok=True)

    def enc(pairs):
        return [{"input": np.asarray(a).tolist(), "output": np.asarray(b).tolist()} for a, b in pairs]

    path.write_text(json.dumps({"train": enc(pairs_train), "test": enc(pairs_test)}))


def test_arc_folder_import_concept_tasks_join_training(tmp_path):
    rng = np.random.default_rng(0)
    grid = lambda: rng.integers(0, 10, (3, 4))  # noqa: E731
    for name in ("AboveBelow1", "Count2"):
        _write_task(tmp_path / "corpus" / name[:-1] / f"{name}.json", [(grid(), grid())] * 2, [(grid(), grid())])
    tasks = F.load_arc_folder(tmp_path)
    assert [t.task_id for t in tasks] == ["AboveBelow1", "Count2"] and {t.split for t in tasks} == {"concept"}
    train, test = arc_dataset(canvas=5, max_tasks=2, tasks_path=str(tmp_path))
    names = train.meta["task_names"]
    assert "AboveBelow1" in names and "Count2" in names
    concept_ids = {names.index("AboveBelow1"), names.index("Count2")}
    assert (np.isin(train.puzzle_ids.numpy(), list(concept_ids))).sum() == 6  # every pair, test pairs included
    assert not np.isin(test.puzzle_ids.numpy(), list(concept_ids)).any()
    (tmp_path / "corpus" / "Broken" / "b.json").parent.mkdir()
    broken = tmp_path / "corpus" / "Broken" / "b.json"
    broken.write_text('{"train": [{"input": [[1]], "output": [[12]]}], "test": []}')
    with pytest.raises(ValueError, match=r"b\.json, train pair 0 output: colours must be 0..9"):
        F.load_arc_folder(tmp_path)
    (tmp_path / "corpus" / "Broken" / "b.json").write_text('{"train": [\n oops')
    with pytest.raises(ValueError, match=r"b\.json, line 2: not valid JSON"):
        F.load_arc_folder(tmp_path)


# ---------------------------------------------------------------- no test puzzle is (a symmetry of) a training one
def test_generated_splits_share_no_puzzle_up_to_symmetry():
    train, test = sudoku_dataset(4, n_train=60, n_test=40, difficulty="medium", seed=0, cache=False,
                                 disjoint="symmetry")
    train_keys = {R.canonical_key(S.decode_tokens(x)) for x in train.inputs.numpy()}
    assert len(test) < 40  # 4x4 has few classes: the builder did drop symmetric copies
    assert not any(R.canonical_key(S.decode_tokens(x)) in train_keys for x in test.inputs.numpy())
    _, exact = sudoku_dataset(4, n_train=60, n_test=40, difficulty="medium", seed=0, cache=False)
    assert len(exact) > len(test)  # 4x4 defaults to dropping exact copies only (see sudoku_dataset)
    mtrain, mtest = maze_dataset(40, 40, size=6, hard=False, seed=0)
    keys = {maze_symmetry_key(x, 6) for x in mtrain.inputs.numpy()}
    assert len(mtest) < 40 and not any(maze_symmetry_key(x, 6) in keys for x in mtest.inputs.numpy())


def test_arc_test_pairs_are_no_symmetry_of_a_training_pair():
    train, test = arc_dataset(canvas=30)
    train_keys = set()
    for x, y in zip(train.inputs.numpy(), train.labels.numpy()):
        train_keys.add(A.pair_symmetry_key(A.decode_grid(x), A.decode_grid(np.where(y < 0, 0, y))))
    for x, y in zip(test.inputs.numpy(), test.labels.numpy()):
        assert A.pair_symmetry_key(A.decode_grid(x), A.decode_grid(np.where(y < 0, 0, y))) not in train_keys
    assert len(test.meta["dropped_test_pairs"]) == 9 and len(test) == 419 - 9  # ARC-AGI-1 has 419 test pairs


# ---------------------------------------------------------------- recipes take a data path
def test_paper_recipes_train_on_the_files_given(sudoku_folder, tmp_path, capsys):
    from recursionlab.train.cli import main
    from recursionlab.train.recipes import get_config, run_recipe
    from recursionlab.train.recipes.reasoning import load_puzzles

    assert main(["show", "trm-mlp-sudoku", "--profile", "paper", "--set", f"data_path={sudoku_folder}"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert "Sudoku-Extreme CSV files" in shown["data_source"] and shown["data_path"] == str(sudoku_folder)
    assert main(["show", "trm-maze", "--profile", "paper"]) == 0
    assert "course generator" in json.loads(capsys.readouterr().out)["data_source"]
    cfg = get_config("trm-mlp-sudoku", "smoke", {"data_path": str(sudoku_folder), "sudoku_size": 9, "n_train": 4})
    train, test = load_puzzles(cfg)
    assert train.name == "sudoku-extreme-train" and len(train) == 4
    result = run_recipe(
        "trm-mlp-sudoku",
        profile="smoke",
        overrides={"data_path": str(sudoku_folder), "sudoku_size": 9, "n_train": 4, "train.steps": 2,
                   "train.progress": False},
    )
    assert "test_exact" in result.metrics
    with pytest.raises(ValueError, match="sudoku_size=9"):
        load_puzzles(get_config("trm-sudoku", "smoke", {"data_path": str(sudoku_folder)}))


def test_maze_and_arc_recipes_load_the_files_given(tmp_path):
    from recursionlab.train.recipes import get_config
    from recursionlab.train.recipes.reasoning import load_puzzles

    mazes = M.generate_mazes(3, 8, seed=2)
    for name in ("train.csv", "test.csv"):
        (tmp_path / name).write_text(HEADER + "".join(_maze_line(x, y) for x, y in zip(mazes.inputs, mazes.labels)))
    cfg = get_config("trm-maze", "paper", {"data_path": str(tmp_path), "maze_size": 8})
    assert "Maze-Hard CSV files" in cfg.describe_data()
    train, test = load_puzzles(cfg)
    assert train.name == "maze-hard-files-train" and len(train) == 3 and len(test) == 0  # test = train: all dropped
    rng = np.random.default_rng(1)
    demo, test_pair = (rng.integers(0, 10, (2, 2)),) * 2, (np.eye(2, dtype=int),) * 2
    _write_task(tmp_path / "concept" / "Copy" / "Copy1.json", [demo], [test_pair])
    cfg = get_config("trm-arc", "smoke", {"data_path": str(tmp_path / "concept"), "arc_max_tasks": 1})
    train, _ = load_puzzles(cfg)
    assert "Copy1" in train.meta["task_names"] and "task JSON files" in cfg.describe_data()


def test_generation_workers_use_the_cores_for_large_sets_only(monkeypatch):
    from recursionlab.train.recipes.reasoning import generation_workers

    monkeypatch.setattr("os.cpu_count", lambda: 16)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert generation_workers(100) == 1  # a pool costs more than it saves on a small set
    assert generation_workers(2000) == 16
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun: four processes share the machine's cores
    assert generation_workers(2000) == 4
    monkeypatch.setattr("os.cpu_count", lambda: 64)
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert generation_workers(2000) == 16  # capped
