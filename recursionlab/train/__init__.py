"""The training layer: one loop (:class:`Trainer` / :func:`fit`), optimisers, losses, checkpoints, recipes, CLI."""

from recursionlab.train.checkpoint import CheckpointMismatch, load_checkpoint, save_checkpoint
from recursionlab.train.config import TrainConfig
from recursionlab.train.engine import StepOutput, Trainer, TrainingDiverged, TrainingInterrupted, fit
from recursionlab.train.history import History

__all__ = [
    "CheckpointMismatch",
    "History",
    "StepOutput",
    "TrainConfig",
    "Trainer",
    "TrainingDiverged",
    "TrainingInterrupted",
    "fit",
    "load_checkpoint",
    "save_checkpoint",
]
