"""A metrics history that lessons can print and plot."""

from __future__ import annotations

import math


class History:
    """Named series of ``(step, value)`` pairs, e.g. ``loss``, ``lr``, ``grad_norm``, ``val_acc``."""

    def __init__(self, data: dict[str, tuple[list[int], list[float]]] | None = None) -> None:
        self._data: dict[str, tuple[list[int], list[float]]] = {}
        for name, (steps, values) in (data or {}).items():
            self._data[name] = (list(steps), list(values))

    def log(self, step: int, **metrics: float) -> None:
        for name, value in metrics.items():
            steps, values = self._data.setdefault(name, ([], []))
            steps.append(int(step))
            values.append(float(value))

    def names(self) -> list[str]:
        return list(self._data)

    def __contains__(self, name: str) -> bool:
        return name in self._data

    def series(self, name: str) -> tuple[list[int], list[float]]:
        """``(steps, values)`` of one metric; a clear ``KeyError`` lists the recorded names."""
        if name not in self._data:
            raise KeyError(f"no metric {name!r} in this history; recorded: {', '.join(self._data) or 'none'}")
        steps, values = self._data[name]
        return list(steps), list(values)

    def last(self, name: str) -> float:
        """The most recent value of ``name``."""
        return self.series(name)[1][-1]

    def best(self, name: str, mode: str = "max") -> float:
        values = [v for v in self.series(name)[1] if not math.isnan(v)]
        return max(values) if mode == "max" else min(values)

    def to_dict(self) -> dict[str, tuple[list[int], list[float]]]:
        return {k: (list(s), list(v)) for k, (s, v) in self._data.items()}

    def plot(self, names: list[str] | str | None = None, ax=None, title: str = "Training history", logy: bool = False):
        """Plot the given metrics against the training step on one axis; returns the axis."""
        import matplotlib.pyplot as plt

        names = [names] if isinstance(names, str) else (names or [n for n in self._data if n != "lr"])
        if ax is None:
            _, ax = plt.subplots(figsize=(6, 3.5))
        for name in names:
            steps, values = self.series(name)
            ax.plot(steps, values, label=name, marker="." if len(steps) < 30 else None)
        ax.set_xlabel("training step")
        ax.set_ylabel("value")
        ax.set_title(title)
        if logy:
            ax.set_yscale("log")
        ax.legend()
        ax.grid(alpha=0.3)
        return ax

    def __repr__(self) -> str:
        parts = [f"{n}={self._data[n][1][-1]:.4g}" for n in self._data if self._data[n][1]]
        return f"History({', '.join(parts)})"
