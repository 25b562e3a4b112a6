"""Deep-equilibrium recipes (lessons 04 and 05).

* ``deq-digits`` -- :class:`~recursionlab.models.deq.DEQClassifier` on the scikit-learn digits, with an
  optional Jacobian-regularisation weight (``--set jac_weight=4``); logs NFE and residual as metrics.
* ``deq-prefix-sums`` -- :class:`~recursionlab.models.deq.DEQSequenceModel` on prefix sums mod 2, evaluated on
  the training length and on sequences ``test_factor`` times longer.

DEQ solves need precision (a bf16 residual cannot fall below ~4e-3): they train in fp32 everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from recursionlab.data.algorithmic import prefix_sums_batch, prefix_sums_dataset
from recursionlab.data.digits import N_CLASSES, N_FEATURES, digits_batch, load_digits_split
from recursionlab.models.deq import DEQClassifier, DEQSequenceModel
from recursionlab.profiles import by_profile
from recursionlab.solvers.jacobian import spectral_radius
from recursionlab.train.config import TrainConfig
from recursionlab.train.engine import StepOutput
from recursionlab.train.recipes import Job, register_recipe


@dataclass
class DEQDigitsConfig:
    hidden: int = 64
    batch_size: int = 64
    solver: str = "anderson"
    grad: str = "ift"  # "ift" | "jfb" | "phantom" | "unrolled"
    max_iter: int = 40
    tol: float = 1e-3
    jac_weight: float = 0.0  # > 0 adds jac_weight * ||J||_F^2 / numel (Hutchinson) to the loss
    init_scale: float = 0.5
    test_fraction: float = 0.25
    spectral_probe_iters: int = 20  # power iterations for val_rho at each evaluation (0: skip)
    seed: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)


@register_recipe(
    "deq-digits", "DEQ classifier (tanh equilibrium layer) on the scikit-learn digits (lessons 04-05)"
)
def deq_digits(profile: str) -> DEQDigitsConfig:
    return DEQDigitsConfig(
        hidden=by_profile(32, 64, 256, profile=profile),
        batch_size=by_profile(64, 64, 256, profile=profile),
        train=TrainConfig(
            steps=by_profile(12, 400, 3000, profile=profile),
            lr=3e-3,
            optimizer="adam",
            schedule="cosine",
            warmup_steps=by_profile(0, 20, 100, profile=profile),
            precision="fp32",
            log_every=by_profile(3, 20, 50, profile=profile),
            eval_every=by_profile(6, 100, 500, profile=profile),
            progress=False,
        ),
    )


@deq_digits.builder
def build_deq_digits(cfg: DEQDigitsConfig) -> Job:
    if cfg.jac_weight < 0:
        raise ValueError(f"jac_weight must be >= 0, got {cfg.jac_weight!r}")
    torch.manual_seed(cfg.seed)
    split = load_digits_split(cfg.test_fraction, seed=cfg.seed)
    model = DEQClassifier(
        N_FEATURES,
        N_CLASSES,
        cfg.hidden,
        solver=cfg.solver,
        grad=cfg.grad,
        max_iter=cfg.max_iter,
        tol=cfg.tol,
        jac_reg=cfg.jac_weight > 0,
        init_scale=cfg.init_scale,
    )

    def batch_fn(step: int):
        return digits_batch(split, cfg.batch_size, torch.Generator().manual_seed(cfg.seed * 1_000_003 + step))

    def loss_fn(model: nn.Module, batch) -> StepOutput:
        x, y = batch
        logits, info = model(x, return_info=True)
        loss = F.cross_entropy(logits.float(), y)
        metrics = {"acc": (logits.argmax(-1) == y).float().mean(), "nfe": info.nfe, "residual": info.residual}
        if info.jac_loss is not None:
            loss = loss + cfg.jac_weight * info.jac_loss
            metrics["jac_loss"] = info.jac_loss.detach()
        return StepOutput(loss, metrics)

    def eval_fn(model: nn.Module) -> dict:
        device = next(model.parameters()).device
        x, y = split.x_test.to(device), split.y_test.to(device)
        logits, info = model(x, return_info=True)
        out = {
            "val_acc": float((logits.argmax(-1) == y).float().mean()),
            "val_nfe": float(info.nfe),
            "val_residual": info.residual,
        }
        if cfg.spectral_probe_iters:
            inner = getattr(model, "module", model)  # unwrap DDP / compile wrappers if any
            u = inner.inject_norm(inner.inject(x))
            rho = spectral_radius(
                lambda z: inner.layer(z, u),
                info.forward.solution,
                n_iter=cfg.spectral_probe_iters,
                generator=torch.Generator().manual_seed(0),
            )
            out["val_rho"] = float(rho.mean())
        return out

    return Job(model, loss_fn, batch_fn, cfg.train, eval_fn=eval_fn)


@dataclass
class DEQPrefixSumsConfig:
    length: int = 12
    test_factor: int = 4
    dim: int = 32
    hidden: int = 64
    window: int = 1
    batch_size: int = 64
    solver: str = "fixed_point_iter"
    grad: str = "ift"
    tol: float = 1e-4
    n_test: int = 500
    seed: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)


@register_recipe(
    "deq-prefix-sums", "causal DEQ sequence model on prefix sums mod 2, tested on longer strings"
)
def deq_prefix_sums(profile: str) -> DEQPrefixSumsConfig:
    return DEQPrefixSumsConfig(
        length=by_profile(8, 12, 24, profile=profile),
        dim=by_profile(16, 32, 64, profile=profile),
        hidden=by_profile(32, 64, 256, profile=profile),
        batch_size=by_profile(32, 64, 256, profile=profile),
        train=TrainConfig(
            steps=by_profile(40, 200, 2000, profile=profile),
            lr=3e-3,
            optimizer="adam",
            precision="fp32",
            log_every=10,
            eval_every=by_profile(20, 100, 500, profile=profile),
            progress=False,
        ),
    )


@deq_prefix_sums.builder
def build_deq_prefix_sums(cfg: DEQPrefixSumsConfig) -> Job:
    torch.manual_seed(cfg.seed)
    model = DEQSequenceModel(
        2, 2, cfg.dim, cfg.hidden, cfg.window, solver=cfg.solver, grad=cfg.grad, tol=cfg.tol
    )
    test_short = prefix_sums_dataset(cfg.n_test, cfg.length, seed=10**6 + cfg.seed)
    test_long = prefix_sums_dataset(cfg.n_test, cfg.length * cfg.test_factor, seed=2 * 10**6 + cfg.seed)

    def batch_fn(step: int):
        return prefix_sums_batch(
            cfg.batch_size, cfg.length, torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        )

    def loss_fn(model: nn.Module, batch) -> StepOutput:
        bits, targets = batch
        logits, info = model(bits, return_info=True)
        loss = F.cross_entropy(logits.float().reshape(-1, 2), targets.reshape(-1))
        acc = (logits.argmax(-1) == targets).float().mean()
        return StepOutput(loss, {"acc": acc, "nfe": info.nfe, "residual": info.residual})

    def eval_fn(model: nn.Module) -> dict:
        device = next(model.parameters()).device
        out = {}
        for tag, (bits, targets) in (("val", test_short), ("long", test_long)):
            logits, info = model(bits.to(device), return_info=True)
            correct = logits.argmax(-1) == targets.to(device)
            out[f"{tag}_acc"] = float(correct.float().mean())
            out[f"{tag}_seq_acc"] = float(correct.all(dim=1).float().mean())
            out[f"{tag}_nfe"] = float(info.nfe)
        return out

    return Job(model, loss_fn, batch_fn, cfg.train, eval_fn=eval_fn)
