"""Command line: ``python -m recursionlab list`` and ``python -m recursionlab train RECIPE ...``.

Examples::

    python -m recursionlab list
    python -m recursionlab train tiny-classifier --profile laptop --set train.lr=1e-3 --set hidden=128
    python -m recursionlab train trm-sudoku --profile gpu --resume runs/trm-sudoku-gpu/last.pt
    torchrun --nproc_per_node=4 -m recursionlab train trm-sudoku --profile paper
    python -m recursionlab convert official.pt --to hrm.pt --config all_config.yaml
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
    conv = sub.add_parser("convert", help="convert an official HRM/TRM checkpoint to the library (or back)")
    conv.add_argument("path", help="official checkpoint (or, with --export-official, a library model file)")
    conv.add_argument("--to", required=True, help="output file")
    conv.add_argument("--model", choices=("hrm", "trm"), default=None, help="model kind (default: detected)")
    conv.add_argument("--config", default=None, help="the official run's all_config.yaml")
    conv.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                      help="an official arch field the weights do not store (e.g. num_heads=8, H_cycles=2)")
    conv.add_argument("--export-official", action="store_true", help="library model -> official state dict")
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
    if args.command == "convert":
        return _convert(args)
    try:
        if args.command == "list":
            for name, recipe in list_recipes().items():
                print(f"{name:32s} {recipe.description}  [profiles: {', '.join(recipe.profiles)}]")
            return 0
        overrides = _parse_sets(args.sets)
        profile = args.profile or active_profile()
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


def _convert(args: argparse.Namespace) -> int:
    import yaml

    from recursionlab.models.convert import ConversionError, convert_file, read_official_config

    try:
        config = read_official_config(args.config) if args.config else {}
        config.update({k: yaml.safe_load(v) for k, v in _parse_sets(args.sets).items()})
        print(convert_file(args.path, args.to, args.model, config, export=args.export_official))
        return 0
    except (ConversionError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
