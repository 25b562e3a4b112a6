"""The course layer: notebook setup, plots, widgets, exercise checks and the exercise generator."""

from recursionlab.course.env import NotebookEnv, setup_notebook

__all__ = ["NotebookEnv", "setup_notebook"]
