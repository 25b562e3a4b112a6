"""A deliberately tiny recipe for the welcome lesson, the CLI tests and the engine benchmarks."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from recursionlab.profiles import by_profile
from recursionlab.train.config import TrainConfig
from recursionlab.train.engine import StepOutput
from recursionlab.train.recipes import Job, register_recipe


@dataclass
class TinyClassifierConfig:
    n_features: int = 16
    hidden: int = 64
    batch_size: int = 128
    noise: float = 0.1
    seed: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)


def two_spirals(n: int, n_features: int, noise: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Two interleaved spirals embedded in ``n_features`` dims: ``x (n, n_features)``, labels ``y (n,)`` in {0, 1}."""
    t = torch.rand(n, generator=generator) * 2 * torch.pi + 0.5
    y = torch.randint(0, 2, (n,), generator=generator)
    sign = 1 - 2 * y.float()
    xy = torch.stack([t * torch.cos(t) * sign, t * torch.sin(t) * sign], dim=1) / 5
    x = torch.zeros(n, n_features)
    x[:, :2] = xy
    x = x + noise * torch.randn(n, n_features, generator=generator)
    return x, y


class TinyMLP(nn.Module):
    """A two-hidden-layer MLP classifier: ``x (B, F) -> logits (B, 2)``."""

    def __init__(self, n_features: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(n_features, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, 2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@register_recipe("tiny-classifier", "an MLP on two spirals: the engine's smallest end-to-end run")
def tiny_classifier(profile: str) -> TinyClassifierConfig:
    return TinyClassifierConfig(
        hidden=by_profile(32, 64, 256, profile=profile),
        batch_size=by_profile(64, 128, 1024, profile=profile),
        train=TrainConfig(
            steps=by_profile(60, 600, 3000, profile=profile), lr=1e-2, warmup_steps=by_profile(5, 50, 100, profile),
            schedule="cosine", eval_every=by_profile(30, 200, 1000, profile=profile), log_every=10,
        ),
    )


@tiny_classifier.builder
def build_tiny_classifier(cfg: TinyClassifierConfig) -> Job:
    torch.manual_seed(cfg.seed)
    model = TinyMLP(cfg.n_features, cfg.hidden)
    x_val, y_val = two_spirals(2000, cfg.n_features, cfg.noise, torch.Generator().manual_seed(cfg.seed + 10**6))

    def batch_fn(step: int):
        return two_spirals(cfg.batch_size, cfg.n_features, cfg.noise, torch.Generator().manual_seed(cfg.seed + step))

    def loss_fn(model: nn.Module, batch) -> StepOutput:
        x, y = batch
        logits = model(x)
        return StepOutput(F.cross_entropy(logits.float(), y), {"acc": (logits.argmax(-1) == y).float().mean()})

    def eval_fn(model: nn.Module) -> dict:
        device = next(model.parameters()).device
        logits = model(x_val.to(device))
        return {"val_acc": float((logits.argmax(-1).cpu() == y_val).float().mean())}

    return Job(model, loss_fn, batch_fn, cfg.train, eval_fn=eval_fn)
