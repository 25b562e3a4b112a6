"""Command line: ``python -m recursionlab list`` and ``python -m recursionlab train RECIPE ...``.

Examples::

    python -m recursionlab list
    python -m recursionlab train tiny-classifier --profile laptop --set train.lr=1e-3 --set hidden=128
    python -m recursionlab train trm-sudoku --profile gpu --resume runs/trm-sudoku-gpu/last.pt
    torchrun --nproc_per_node=4 -m recursionlab train trm-sudoku --profile paper
    python -m recursionlab plan trm-sudoku --profile paper --gpu h100
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from recursionlab.profiles import PROFILES, active_profile


def _parse_sets(items: list[str]) -> dict[str, str]:
    overrides: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        overrides[key.strip()] = value
    return overrides


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m recursionlab", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the recipes")
    show = sub.add_parser("show", help="print a recipe's configuration")
    show.add_argument("recipe")
    show.add_argument("--profile", default=None)
    show.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    train = sub.add_parser("train", help="train a recipe")
    train.add_argument("recipe")
    train.add_argument("--profile", default=None, help=f"one of {', '.join(PROFILES)} (or 'paper' where offered)")
    train.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config field, dotted for nested ones (e.g. train.lr=3e-4)")
    train.add_argument("--resume", default=None, help="checkpoint to resume from")
    train.add_argument("--out", default=None, help="checkpoint folder (default runs/RECIPE-PROFILE)")
    plan = sub.add_parser("plan", help="parameters, FLOPs, peak memory and run time of a recipe, before training")
    plan.add_argument("recipe")
    plan.add_argument("--profile", default=None)
    plan.add_argument("--gpu", default="h100", help="h100, h200, a100, l40s, 4090 or cpu (default h100)")
    plan.add_argument("--mfu", type=float, default=None, help="assumed model-FLOPs utilisation (default 0.3; cpu 0.2)")
    plan.add_argument("--precision", default=None, help="bf16 or fp32 (default: the recipe's; auto = bf16 on a GPU)")
    plan.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    from recursionlab.train.recipes import (
        UnknownConfigKeyError,
        UnknownRecipeError,
        build_trainer,
        config_to_dict,
        get_config,
        list_recipes,
    )

    args = build_parser().parse_args(argv)
    try:
        if args.command == "list":
            for name, recipe in list_recipes().items():
                print(f"{name:32s} {recipe.description}  [profiles: {', '.join(recipe.profiles)}]")
            return 0
        overrides = _parse_sets(args.sets)
        profile = args.profile or active_profile()
        if args.command == "plan":
            from recursionlab.train.plan import plan_recipe

            made = plan_recipe(args.recipe, profile, args.gpu, args.mfu, overrides, args.precision)
            print(json.dumps(made.to_dict(), indent=2) if args.json else made.render())
            return 0
        config = get_config(args.recipe, profile, overrides)
        if args.command == "show":
            print(json.dumps(config_to_dict(config), indent=2, default=str))
            return 0
        out = Path(args.out or f"runs/{args.recipe}-{profile}")
        if config.train.checkpoint_path is None:
            config.train.checkpoint_path = str(out / "last.pt")
            if not config.train.checkpoint_every:
                config.train.checkpoint_every = max(1, config.train.steps // 10)
        trainer = build_trainer(args.recipe, config)
        if args.resume:
            trainer.load(args.resume)
        if trainer.dist.is_main:
            print(f"training {args.recipe} at profile {profile} on {trainer.device} "
                  f"({sum(p.numel() for p in trainer.model.parameters()):,} parameters)", flush=True)
        trainer.fit()
        if trainer.dist.is_main:
            summary = {"step": trainer.step, "loss": trainer.history.last("loss"), **trainer.last_eval}
            print(json.dumps(summary, indent=2))
            print(f"checkpoint: {config.train.checkpoint_path}")
        return 0
    except (UnknownRecipeError, UnknownConfigKeyError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
