"""Small plotting helpers shared by the lessons (every figure gets a title and labelled axes)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
from matplotlib.patches import Patch


def new_figure(title: str, xlabel: str, ylabel: str, ncols: int = 1, figsize: tuple[float, float] | None = None):
    """A figure with ``ncols`` axes, the first titled and labelled; returns ``(fig, ax)`` or ``(fig, axes)``."""
    fig, axes = plt.subplots(1, ncols, figsize=figsize or (6.4 * ncols if ncols > 1 else 6.4, 3.8))
    first = axes if ncols == 1 else axes[0]
    first.set_title(title)
    first.set_xlabel(xlabel)
    first.set_ylabel(ylabel)
    return fig, axes


def plot_curves(
    curves: dict[str, tuple[Sequence[float], Sequence[float]]],
    title: str,
    xlabel: str,
    ylabel: str,
    logy: bool = False,
    ax=None,
):
    """Plot named ``(x, y)`` curves on one axis with a legend; returns the axis."""
    if ax is None:
        _, ax = new_figure(title, xlabel, ylabel)
    else:
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
    for name, (x, y) in curves.items():
        ax.plot(list(x), list(y), label=name, marker="o" if len(x) <= 20 else None)
    if logy:
        ax.set_yscale("log")
    ax.legend()
    return ax


def course_map(ax=None):
    """Draw the course's lessons as a path of boxes grouped by part; returns the axis."""
    lessons = [
        ("00", "Welcome", 0), ("01", "RNNs", 1), ("02", "BPTT", 1), ("03", "Tied depth\n& ACT", 2),
        ("04", "DEQ I:\nfixed points", 2), ("05", "DEQ II:\nimplicit grads", 2), ("06", "Reasoning\npuzzles", 3),
        ("07", "HRM", 3), ("08", "TRM", 3), ("09", "Recurrent\ndepth", 4), ("10", "Mixture of\nRecursions", 4),
        ("11", "Capstone", 5),
    ]
    colours = ["#bbbbbb", "#8ecae6", "#95d5b2", "#ffd166", "#f4a261", "#e76f51"]
    parts = ["start", "recursion in time", "recursion in depth", "recursion as reasoning",
             "recursion in language models", "synthesis"]
    if ax is None:
        _, ax = plt.subplots(figsize=(11, 3.5))
    for i, (num, name, part) in enumerate(lessons):
        x, y = (i % 6) * 1.8, -(i // 6) * 1.3
        ax.add_patch(plt.Rectangle((x, y), 1.5, 1.0, color=colours[part], ec="black"))
        ax.text(x + 0.75, y + 0.5, f"{num}\n{name}", ha="center", va="center", fontsize=8)
        if i + 1 < len(lessons) and (i + 1) % 6:
            ax.annotate("", xy=(x + 1.8, y + 0.5), xytext=(x + 1.5, y + 0.5), arrowprops={"arrowstyle": "->"})
    # The legend sits below the boxes in its own rows (three entries per row), so that no label runs into a box
    # or into the next label.
    handles = [Patch(facecolor=colour, edgecolor="black", label=name) for name, colour in zip(parts, colours)]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.02), ncol=3, frameon=False, fontsize=8,
              title="colour = part of the course", title_fontsize=8)
    ax.set_xlim(-0.2, 10.8)
    ax.set_ylim(-1.4, 1.1)
    ax.axis("off")
    ax.set_title("recursionlab: the course map (lesson number and topic)")
    return ax
