"""Evaluating HRM/TRM-style models on puzzles: exact and cell accuracy per supervision step, halting statistics,
and ARC's de-augmentation + voting + pass@k.

Both papers evaluate with a fixed number of supervision steps (16) and no early halting; the Q head's halting
decision is still informative, so :func:`evaluate_puzzles` also reports *where* the model would have halted
and how accurate the answers are at that point.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from recursionlab.data import arc as arc_data
from recursionlab.data.puzzles import IGNORE_INDEX, PuzzleDataset


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@dataclass
class PuzzleEvalResult:
    """Accuracy of a recursive model on a puzzle set.

    exact_by_step, cell_by_step: (S,) accuracy after supervision step 1..S; halt_steps: (N,) the first step at
    which the Q head says "halt" (S if never); exact_at_halt: exact accuracy using each puzzle's answer at its
    halting step; q_halt_accuracy: how often (Q_halt logit >= 0) agrees with "answer exactly right" at step S.
    """

    n_puzzles: int
    exact_by_step: list[float]
    cell_by_step: list[float]
    halt_steps: np.ndarray
    exact_at_halt: float
    q_halt_accuracy: float
    solved: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, dtype=bool))

    @property
    def exact(self) -> float:
        """Exact-puzzle accuracy after the last step (the papers' headline metric)."""
        return self.exact_by_step[-1]

    @property
    def cell(self) -> float:
        """Cell (token) accuracy after the last step."""
        return self.cell_by_step[-1]

    @property
    def mean_halt_step(self) -> float:
        return float(self.halt_steps.mean()) if len(self.halt_steps) else float("nan")

    def metrics(self, prefix: str = "test_") -> dict[str, float]:
        """Flat metrics for logging: exact, cell, exact after step 1, exact at halt, mean halting step."""
        return {
            f"{prefix}exact": self.exact,
            f"{prefix}cell": self.cell,
            f"{prefix}exact_step1": self.exact_by_step[0],
            f"{prefix}exact_at_halt": self.exact_at_halt,
            f"{prefix}halt_step": self.mean_halt_step,
        }


@torch.no_grad()
def evaluate_puzzles(
    model: nn.Module,
    dataset: PuzzleDataset,
    n_steps: int | None = None,
    batch_size: int = 256,
    max_puzzles: int | None = None,
) -> PuzzleEvalResult:
    """Run ``model.solve`` (S = ``n_steps`` supervision steps, default the model's ``halt_max_steps``) on every
    puzzle of ``dataset`` (or its first ``max_puzzles``) and measure accuracy after each step.

    model: a :class:`~recursionlab.models.hrm.RecursiveReasoningModel`; dataset: a ``PuzzleDataset``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_puzzles is not None:
        if max_puzzles < 1:
            raise ValueError(f"max_puzzles must be None or >= 1, got {max_puzzles}")
        dataset = dataset.subset(np.arange(min(max_puzzles, len(dataset))))
    if len(dataset) == 0:
        raise ValueError(f"dataset {dataset.name!r} is empty")
    S = int(model.config.halt_max_steps if n_steps is None else n_steps)
    device = _device_of(model)
    was_training = model.training
    model.eval()
    right_cells = torch.zeros(S)
    right_puzzles = torch.zeros(S)
    n_cells = 0
    halt_steps, at_halt, q_agree, solved = [], [], [], []
    try:
        for batch in dataset.eval_batches(batch_size):
            x, y = batch["inputs"].to(device), batch["labels"].to(device)
            trace = model.solve(x, batch["puzzle_ids"].to(device), n_steps=S)
            mask = y != IGNORE_INDEX
            right = (trace.predictions == y) & mask  # (S, B, L)
            exact = (right | ~mask).all(-1)  # (S, B)
            right_cells += right.sum((1, 2)).float().cpu()
            right_puzzles += exact.sum(1).float().cpu()
            n_cells += int(mask.sum())
            wants_halt = model.halt_decision(trace.q_halt_logits, trace.q_continue_logits)  # (S, B)
            wants_halt[-1] = True
            first = wants_halt.float().argmax(0)  # first step with a halt decision (0-based)
            halt_steps.append((first + 1).cpu())
            at_halt.append(exact.gather(0, first[None]).squeeze(0).cpu())
            q_agree.append(((trace.q_halt_logits[-1] >= 0) == exact[-1]).cpu())
            solved.append(exact[-1].cpu())
    finally:
        model.train(was_training)
    N = len(dataset)
    return PuzzleEvalResult(
        n_puzzles=N,
        exact_by_step=(right_puzzles / N).tolist(),
        cell_by_step=(right_cells / max(n_cells, 1)).tolist(),
        halt_steps=torch.cat(halt_steps).numpy(),
        exact_at_halt=float(torch.cat(at_halt).float().mean()),
        q_halt_accuracy=float(torch.cat(q_agree).float().mean()),
        solved=torch.cat(solved).numpy(),
    )


# ----------------------------------------------------------------------------------------------------------
# ARC: augment each test input, solve every copy, undo the augmentation, vote, score pass@k
# ----------------------------------------------------------------------------------------------------------


@dataclass
class ArcEvalResult:
    """pass@1 / pass@2 over tasks (``mode`` "trm": fraction of a task's test inputs; "hrm": all-or-nothing),
    the per-test-input candidates and the number of augmented copies voted over."""

    pass_at_1: float
    pass_at_2: float
    n_tasks: int
    n_test_inputs: int
    n_augmentations: int
    candidates: dict[str, list[list[arc_data.Candidate]]] = field(repr=False, default_factory=dict)


@torch.no_grad()
def evaluate_arc(
    model: nn.Module,
    test: PuzzleDataset,
    n_augmentations: int = 8,
    n_steps: int | None = None,
    batch_size: int = 64,
    seed: int = 0,
    mode: str = "trm",
    max_inputs: int | None = None,
) -> ArcEvalResult:
    """ARC evaluation as in HRM/TRM, scaled down: each test input is solved in ``n_augmentations`` versions
    (the first the identity, the others random dihedral + colour permutations), predictions are decoded,
    mapped back by the inverse augmentation, grouped by exact grid and ranked by (votes, mean sigma(Q_halt));
    pass@k = the true output among the top k.

    test: an ``arc_dataset(...).test`` set (``meta["task_names"]`` maps puzzle ids to task ids). A test set built
    with the papers' offline versions (``arc_dataset(versions=K)``) already holds every augmented copy with its own
    puzzle id and inverse map: those rows are voted over instead (``n_augmentations`` is then unused and
    ``max_inputs`` counts original test inputs).
    """
    if "source_input" in test.meta:
        return _evaluate_arc_versions(model, test, n_steps, batch_size, mode, max_inputs)
    if n_augmentations < 1:
        raise ValueError(f"n_augmentations must be >= 1, got {n_augmentations}")
    names = test.meta.get("task_names")
    if names is None:
        raise ValueError(
            "test set has no meta['task_names']; build it with recursionlab.data.puzzles.arc_dataset"
        )
    canvas = int(round(np.sqrt(test.seq_len)))
    rng = np.random.default_rng(seed)
    device = _device_of(model)
    n = len(test) if max_inputs is None else min(len(test), int(max_inputs))
    # build every augmented copy up front: rows (input index, augmentation)
    rows_x, rows_ids, owners, augs = [], [], [], []
    targets: dict[str, list[np.ndarray]] = {}
    slot_of: list[tuple[str, int]] = []
    for i in range(n):
        x_grid = arc_data.decode_grid(test.inputs[i].numpy(), canvas)
        y_tok = test.labels[i].numpy()
        y_grid = arc_data.decode_grid(np.where(y_tok == IGNORE_INDEX, arc_data.PAD, y_tok), canvas)
        task = names[int(test.puzzle_ids[i])]
        targets.setdefault(task, []).append(y_grid)
        slot_of.append((task, len(targets[task]) - 1))
        for a in range(n_augmentations):
            aug = arc_data.IDENTITY if a == 0 else arc_data.random_augmentation(rng)
            rows_x.append(arc_data.encode_grid(aug.apply(x_grid), canvas))
            rows_ids.append(int(test.puzzle_ids[i]))
            owners.append(i)
            augs.append(aug)
    X = torch.as_tensor(np.stack(rows_x))
    ids = torch.as_tensor(rows_ids)
    grids, confs = [], []
    was_training = model.training
    model.eval()
    try:
        for s in range(0, len(X), batch_size):
            trace = model.solve(X[s : s + batch_size].to(device), ids[s : s + batch_size].to(device), n_steps)
            preds = trace.predictions[-1].cpu().numpy()
            conf = torch.sigmoid(trace.q_halt_logits[-1]).cpu().numpy()
            for p, c in zip(preds, conf):
                grids.append(arc_data.decode_grid(p, canvas))
                confs.append(float(c))
    finally:
        model.train(was_training)
    candidates: dict[str, list[list[arc_data.Candidate]]] = {t: [[] for _ in v] for t, v in targets.items()}
    for i in range(n):
        sel = [r for r, o in enumerate(owners) if o == i]
        preds = []
        for r in sel:
            try:
                preds.append((augs[r].invert(grids[r]), confs[r]))
            except (IndexError, ValueError):  # an empty/invalid decoded grid cannot be inverted: no vote
                continue
        task, j = slot_of[i]
        candidates[task][j] = arc_data.vote(preds)
    return ArcEvalResult(
        pass_at_1=arc_data.score_tasks(candidates, targets, k=1, mode=mode),
        pass_at_2=arc_data.score_tasks(candidates, targets, k=2, mode=mode),
        n_tasks=len(targets),
        n_test_inputs=n,
        n_augmentations=n_augmentations,
        candidates=candidates,
    )


@torch.no_grad()
def _evaluate_arc_versions(model, test, n_steps, batch_size, mode, max_inputs) -> ArcEvalResult:
    """Vote over the stored augmented versions of each test input (see :func:`evaluate_arc`)."""
    names = test.meta["task_names"]
    source = test.meta["source_input"]
    rows = np.flatnonzero(source < (source.max() + 1 if max_inputs is None else int(max_inputs)))
    canvas = int(round(np.sqrt(test.seq_len)))
    augs = [arc_data.ArcAugmentation(int(k), c) for k, c in zip(test.meta["aug_k"], test.meta["aug_colours"])]
    device = _device_of(model)
    grids, confs = {}, {}
    was_training = model.training
    model.eval()
    try:
        for s in range(0, len(rows), batch_size):
            sel = rows[s : s + batch_size]
            x = test.inputs[sel].to(device)
            trace = model.solve(x, test.puzzle_ids[sel].to(device), n_steps)
            preds = trace.predictions[-1].cpu().numpy()
            conf = torch.sigmoid(trace.q_halt_logits[-1]).cpu().numpy()
            for r, p, c in zip(sel, preds, conf):
                grids[int(r)], confs[int(r)] = arc_data.decode_grid(p, canvas), float(c)
    finally:
        model.train(was_training)
    targets: dict[str, list[np.ndarray]] = {}
    candidates: dict[str, list[list[arc_data.Candidate]]] = {}
    for j in np.unique(source[rows]):
        members = rows[source[rows] == j]
        first = int(members[0])
        task = names[int(test.puzzle_ids[first])]
        y_tok = test.labels[first].numpy()
        truth = augs[first].invert(arc_data.decode_grid(np.where(y_tok == IGNORE_INDEX, arc_data.PAD, y_tok), canvas))
        preds = []
        for r in members:
            try:
                preds.append((augs[int(r)].invert(grids[int(r)]), confs[int(r)]))
            except (IndexError, ValueError):
                continue
        targets.setdefault(task, []).append(truth)
        candidates.setdefault(task, []).append(arc_data.vote(preds))
    return ArcEvalResult(
        pass_at_1=arc_data.score_tasks(candidates, targets, k=1, mode=mode),
        pass_at_2=arc_data.score_tasks(candidates, targets, k=2, mode=mode),
        n_tasks=len(targets),
        n_test_inputs=len(np.unique(source[rows])),
        n_augmentations=int(np.bincount(source[rows]).max()) if len(rows) else 0,
        candidates=candidates,
    )
