"""Pictures of the three puzzle families of lesson 06: a Sudoku grid, a maze with its path, an ARC task.

Every function draws on a given matplotlib axis (or a new figure), puts a title on it and returns the axis or
the figure. Inputs are plain grids or the token sequences of :mod:`recursionlab.data`.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap

from recursionlab.data import arc as arc_data
from recursionlab.data import maze as maze_data
from recursionlab.data import sudoku as sudoku_data

__all__ = ["draw_arc_grid", "draw_arc_task", "draw_maze", "draw_sudoku"]

# Maze colours by token: PAD, wall, open, start, goal, path.
_MAZE_COLOURS = ("#ffffff", "#2b2b2b", "#f4f1e8", "#2ca02c", "#d62728", "#f2b134")
_ARC_CMAP = ListedColormap(list(arc_data.ARC_PALETTE))


def _axis(ax, figsize=(4.0, 4.0)):
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def draw_sudoku(
    puzzle,
    solution=None,
    title: str = "Sudoku",
    ax=None,
    wrong: np.ndarray | None = None,
):
    """Draw a Sudoku: givens in black bold, filled-in digits (from ``solution``) in blue, box lines thick.

    puzzle: (n, n) int (0 = blank) or its tokens (n*n,); solution: (n, n) or tokens, or None to leave blanks
    empty; wrong: optional (n, n) bool marking filled cells to show in red (e.g. a model's mistakes).
    Returns the axis.
    """
    p = np.asarray(puzzle)
    if p.ndim == 1:
        p = sudoku_data.decode_tokens(p)
    s = None
    if solution is not None:
        s = np.asarray(solution)
        if s.ndim == 1:
            s = sudoku_data.decode_tokens(s)
        if s.shape != p.shape:
            raise ValueError(f"solution shape {s.shape} differs from puzzle shape {p.shape}")
    n = p.shape[0]
    br, bc = sudoku_data.BOX_SHAPES[n]
    ax = _axis(ax, (0.42 * n + 0.6, 0.42 * n + 0.6))
    ax.set_xlim(0, n)
    ax.set_ylim(n, 0)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    for k in range(n + 1):
        ax.axhline(k, color="black", lw=2.2 if k % br == 0 else 0.6)
        ax.axvline(k, color="black", lw=2.2 if k % bc == 0 else 0.6)
    size = 15 if n <= 6 else 12
    for r in range(n):
        for c in range(n):
            if p[r, c]:
                ax.text(c + 0.5, r + 0.5, str(p[r, c]), ha="center", va="center", fontsize=size, weight="bold")
            elif s is not None and s[r, c]:
                bad = wrong is not None and bool(wrong[r, c])
                colour = "#d62728" if bad else "#1f77b4"
                ax.text(c + 0.5, r + 0.5, str(s[r, c]), ha="center", va="center", fontsize=size, color=colour)
    ax.set_title(title)
    return ax


def draw_maze(tokens, title: str = "Maze", ax=None, legend: bool = True):
    """Draw a maze from its tokens (n*n,) or (n, n): walls dark, start green, goal red, path cells amber.

    Pass the label tokens to see the shortest path, the input tokens to see the bare maze. Returns the axis.
    """
    t = np.asarray(tokens)
    if t.ndim == 1:
        n = int(round(np.sqrt(t.size)))
        t = t.reshape(n, n)
    if t.min() < 0 or t.max() >= maze_data.VOCAB_SIZE:
        raise ValueError(f"maze tokens must lie in 0..{maze_data.VOCAB_SIZE - 1}")
    ax = _axis(ax)
    ax.imshow(t, cmap=ListedColormap(list(_MAZE_COLOURS)), vmin=0, vmax=len(_MAZE_COLOURS) - 1,
              interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    n_path = int((t == maze_data.PATH).sum())
    ax.set_title(f"{title}\n({t.shape[0]}x{t.shape[1]}, {n_path + 1} moves)" if n_path else title)
    if legend:
        from matplotlib.patches import Patch

        names = ("wall", "start", "goal", "path")
        colours = (_MAZE_COLOURS[1], _MAZE_COLOURS[3], _MAZE_COLOURS[4], _MAZE_COLOURS[5])
        ax.legend(handles=[Patch(color=c, label=nm) for c, nm in zip(colours, names)], loc="upper left",
                  bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return ax


def draw_arc_grid(grid, title: str = "", ax=None):
    """Draw one ARC grid (h, w) with colours 0..9 in the standard ARC palette, with thin cell borders."""
    g = np.asarray(grid)
    ax = _axis(ax, (2.2, 2.2))
    ax.imshow(g, cmap=_ARC_CMAP, vmin=0, vmax=9, interpolation="nearest")
    h, w = g.shape
    ax.set_xticks(np.arange(-0.5, w, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, h, 1), minor=True)
    ax.grid(which="minor", color="#555555", lw=0.4)
    ax.tick_params(which="both", length=0, labelbottom=False, labelleft=False)
    ax.set_title(title or f"{h}x{w}", fontsize=9)
    return ax


def draw_arc_task(task: arc_data.ArcTask, max_pairs: int = 4, show_test_output: bool = True):
    """Draw an ARC task: one column per demonstration pair (input above output), then the test pair(s).

    Returns the figure (titled with the task id and split).
    """
    pairs = [("demo", i, p) for i, p in enumerate(task.train[:max_pairs])]
    pairs += [("test", i, p) for i, p in enumerate(task.test[:1])]
    fig, axes = plt.subplots(2, len(pairs), figsize=(2.1 * len(pairs), 4.4), squeeze=False)
    for col, (kind, i, (inp, out)) in enumerate(pairs):
        draw_arc_grid(inp, f"{kind} {i + 1} input {inp.shape[0]}x{inp.shape[1]}", axes[0, col])
        if kind == "test" and not show_test_output:
            axes[1, col].axis("off")
            axes[1, col].set_title("test output: ?", fontsize=9)
        else:
            draw_arc_grid(out, f"{kind} {i + 1} output {out.shape[0]}x{out.shape[1]}", axes[1, col])
    fig.suptitle(f"ARC task {task.task_id} ({task.split}): {len(task.train)} demonstrations, {len(task.test)} test")
    fig.tight_layout()
    return fig
