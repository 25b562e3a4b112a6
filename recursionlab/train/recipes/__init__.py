"""Recipes: named, profile-aware training configurations, shared by the CLI, the lessons and the benchmarks.

A recipe is a function ``profile -> config dataclass`` registered under a name, plus a *builder*
``config -> Job`` that makes the model, loss and data. Every module in this package is imported on first use,
so adding a file with ``@register_recipe`` is all it takes to appear in ``python -m recursionlab list``.

>>> from recursionlab.train.recipes import get_config, run_recipe
>>> cfg = get_config("tiny-classifier", profile="smoke", overrides={"hidden": 16, "train.lr": 0.01})
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from recursionlab.profiles import PROFILES, UnknownProfileError, active_profile
from recursionlab.train.config import TrainConfig
from recursionlab.train.engine import Trainer
from recursionlab.train.history import History

EXTRA_PROFILES = ("paper",)  # recipes may also offer the paper's full-scale configuration


class UnknownRecipeError(KeyError):
    def __str__(self) -> str:  # KeyError would print the message with quotes
        return str(self.args[0])


class UnknownConfigKeyError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


@dataclass
class Job:
    """Everything the engine needs to run a recipe."""

    model: nn.Module
    loss_fn: Callable
    batch_fn: Callable[[int], Any]
    train: TrainConfig
    eval_fn: Callable[[nn.Module], dict] | None = None
    param_groups: Callable | None = None
    extra_optimizers: Callable | None = None


@dataclass
class RecipeResult:
    """What :func:`run_recipe` returns: the trained model (EMA weights if any), history and final metrics."""

    name: str
    config: Any
    model: nn.Module
    history: History
    metrics: dict[str, float]
    trainer: Trainer


@dataclass
class Recipe:
    name: str
    description: str
    config_fn: Callable[[str], Any]
    build_fn: Callable[[Any], Job] | None = None
    profiles: tuple[str, ...] = PROFILES

    def builder(self, fn: Callable[[Any], Job]) -> Callable[[Any], Job]:
        """Decorator that attaches the ``config -> Job`` builder."""
        self.build_fn = fn
        return fn

    def __call__(self, profile: str) -> Any:
        return self.config_fn(profile)


_REGISTRY: dict[str, Recipe] = {}
_LOADED = False


def register_recipe(name: str, description: str, profiles: tuple[str, ...] = PROFILES) -> Callable:
    """Register ``fn(profile) -> config`` as recipe ``name``; returns a :class:`Recipe` (use ``.builder``)."""

    def wrap(fn: Callable[[str], Any]) -> Recipe:
        if name in _REGISTRY and _REGISTRY[name].config_fn.__module__ != fn.__module__:
            raise ValueError(f"recipe {name!r} is registered twice ({_REGISTRY[name].config_fn.__module__})")
        recipe = Recipe(name, description, fn, profiles=tuple(profiles))
        _REGISTRY[name] = recipe
        return recipe

    return wrap


def _load_all() -> None:
    global _LOADED
    if _LOADED:
        return
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
    _LOADED = True


def list_recipes() -> dict[str, Recipe]:
    """All registered recipes by name."""
    _load_all()
    return dict(sorted(_REGISTRY.items()))


def get_recipe(name: str) -> Recipe:
    recipes = list_recipes()
    if name not in recipes:
        raise UnknownRecipeError(f"unknown recipe {name!r}; available recipes: {', '.join(recipes) or 'none'}")
    return recipes[name]


def _coerce(value: Any, target_type: Any, key: str) -> Any:
    """Turn a CLI string into the field's type (ints, floats, bools, None, tuples)."""
    if not isinstance(value, str):
        return value
    origin = typing.get_origin(target_type)
    args = typing.get_args(target_type)
    text = value.strip()
    if text.lower() in ("none", "null") and (type(None) in args or target_type is type(None)):
        return None
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(text, arg, key)
            except ValueError:
                continue
        raise ValueError(f"cannot read {value!r} for {key} (expected {target_type})")
    if target_type is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"cannot read {value!r} as a boolean for {key} (use true/false)")
    if target_type in (int, float):
        try:
            if target_type is float:
                return float(text)
            return int(float(text)) if "e" in text.lower() else int(text)
        except ValueError:
            raise ValueError(f"cannot read {value!r} for {key}: expected {target_type.__name__}") from None
    if origin is tuple or target_type is tuple:
        parts = [p for p in text.strip("()[]").split(",") if p.strip()]
        inner = args[0] if args else float
        return tuple(_coerce(p, inner, key) for p in parts)
    if target_type is str or target_type is Any:
        return text
    return text


def apply_overrides(config: Any, overrides: dict[str, Any] | None) -> Any:
    """Return a copy of the (nested dataclass) ``config`` with dotted ``key=value`` overrides applied.

    Unknown keys raise :class:`UnknownConfigKeyError` listing the valid ones.
    """
    if not overrides:
        return config
    config = dataclasses.replace(config)
    for key, value in overrides.items():
        target = config
        parts = key.split(".")
        for i, part in enumerate(parts):
            valid = [f.name for f in dataclasses.fields(target)]
            if part not in valid:
                where = ".".join(parts[:i]) or type(config).__name__
                raise UnknownConfigKeyError(
                    f"unknown config key {key!r}: {where} has no field {part!r}; valid keys: {', '.join(valid)}"
                )
            if i == len(parts) - 1:
                hints = typing.get_type_hints(type(target))
                setattr(target, part, _coerce(value, hints.get(part, Any), key))
            else:
                child = dataclasses.replace(getattr(target, part))
                setattr(target, part, child)
                target = child
    if isinstance(getattr(config, "train", None), TrainConfig):
        config.train.validate()
    unused = set(unused_fields(config))
    for key in overrides:
        if key.split(".")[0] in unused:
            raise UnknownConfigKeyError(
                f"config key {key!r} has no effect in this configuration ({unused_reason(config)}); "
                f"it is not used by this recipe"
            )
    return config


def unused_fields(config: Any) -> tuple[str, ...]:
    """Fields of a recipe config that this configuration ignores (e.g. HRM-only ones in a TRM recipe)."""
    fn = getattr(config, "unused_fields", None)
    return tuple(fn()) if callable(fn) else ()


def unused_reason(config: Any) -> str:
    model, task = getattr(config, "model", None), getattr(config, "task", None)
    return ", ".join(f"{k} {v!r}" for k, v in (("model", model), ("task", task)) if v is not None) or "recipe"


# Integer fields that are sizes: a recipe cannot run with them below 1 (every other int must be >= 0).
_POSITIVE_INT_FIELDS = ("hidden", "hidden_size", "dim", "width", "n_heads", "gru_hidden", "mlp_inner", "n_features")


def check_config_values(config: Any) -> None:
    """Reject impossible values before anything is built: batch sizes and widths below 1, negative counts.

    Raises ``ValueError`` naming the field, its value and what is allowed.
    """
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, TrainConfig):
            value.validate()
            continue
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_config_values(value)
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            continue
        if f.name == "batch_size" or f.name.endswith("_batch_size") or f.name in _POSITIVE_INT_FIELDS:
            if value < 1:
                raise ValueError(f"{f.name} must be >= 1, got {value}")
        elif value < 0:
            raise ValueError(f"{f.name} must be >= 0, got {value}")


def config_to_dict(config: Any) -> dict:
    if callable(getattr(config, "to_dict", None)):  # a config may add derived fields (e.g. its data source)
        return config.to_dict()
    return dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)


def get_config(name: str, profile: str | None = None, overrides: dict[str, Any] | None = None) -> Any:
    """The configuration of recipe ``name`` at ``profile`` (default: active), with overrides applied."""
    recipe = get_recipe(name)
    profile = active_profile() if profile is None else normalize_profile(profile)
    if profile not in recipe.profiles:
        raise ValueError(f"recipe {name!r} has no {profile!r} profile; it offers: {', '.join(recipe.profiles)}")
    config = apply_overrides(recipe.config_fn(profile), overrides)
    check_config_values(config)
    return config


def normalize_profile(profile: str) -> str:
    """``profile`` in lower case if it names a profile of any recipe (``paper`` included), else
    :class:`UnknownProfileError` listing every valid profile."""
    norm = str(profile).strip().lower()
    if norm in PROFILES or norm in EXTRA_PROFILES:
        return norm
    with_paper = [n for n, r in list_recipes().items() if "paper" in r.profiles]
    raise UnknownProfileError(
        f"unknown profile {profile!r}; allowed profiles are {', '.join(PROFILES + EXTRA_PROFILES)} "
        f"(paper only for {', '.join(with_paper)})"
    )


def shown_config(config: Any) -> dict:
    """The configuration as plain data without the fields it ignores (what ``show`` prints)."""
    d = config_to_dict(config)
    for name in unused_fields(config):
        d.pop(name, None)
    return d


def build_trainer(name: str, config: Any) -> Trainer:
    """Build the model, data and :class:`Trainer` for a recipe configuration."""
    recipe = get_recipe(name)
    if recipe.build_fn is None:
        raise ValueError(f"recipe {name!r} has no builder (decorate one with @{name}.builder)")
    job = recipe.build_fn(config)
    return Trainer(
        job.model,
        job.loss_fn,
        job.batch_fn,
        job.train,
        eval_fn=job.eval_fn,
        param_groups=job.param_groups,
        extra_optimizers=job.extra_optimizers,
        meta={"recipe": name, "config": config_to_dict(config)},
    )


def run_recipe(
    name: str,
    profile: str | None = None,
    overrides: dict[str, Any] | None = None,
    resume: str | None = None,
) -> RecipeResult:
    """Train recipe ``name`` (optionally resuming from a checkpoint) and return a :class:`RecipeResult`."""
    config = get_config(name, profile, overrides)
    trainer = build_trainer(name, config)
    if resume:
        trainer.load(resume)
    history = trainer.fit()
    return RecipeResult(name, config, trainer.eval_model(), history, dict(trainer.last_eval), trainer)
