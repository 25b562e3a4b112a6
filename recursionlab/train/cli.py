"""Command line: ``python -m recursionlab list`` and ``python -m recursionlab train RECIPE ...``.

Examples::

    python -m recursionlab list
    python -m recursionlab train tiny-classifier --profile laptop --set train.lr=1e-3 --set hidden=128
    python -m recursionlab train trm-sudoku --profile gpu --resume runs/trm-sudoku-gpu/last.pt
    torchrun --nproc_per_node=4 -m recursionlab train trm-sudoku --profile paper
    python -m recursionlab convert official.pt --to hrm.pt --config all_config.yaml
    python -m recursionlab plan trm-sudoku --profile paper --gpu h100

``--resume`` continues a run as it was configured (steps, optimiser, schedule, cadences from the checkpoint);
``--set train.X=...`` changes a setting from there on (printed as "changed on resume"; see
``recursionlab.train.engine`` for what a resume may change and what it refuses). ``train`` refuses to replace an
existing run's checkpoint unless told (``--resume`` it, ``--overwrite`` it, or
choose another ``--out``). Errors a user can fix print one line ``error: ...`` and exit non-zero (2: bad input or a
refused resume/overwrite, 3: training diverged, 4: the checkpoint folder cannot be written); SIGTERM/SIGINT
write a checkpoint at the next step, print how to resume and exit with 128 + the signal number. Anything else is
a bug and keeps its traceback (``RECURSIONLAB_TRACEBACK=1`` shows tracebacks for every error).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from recursionlab.profiles import ENV_VAR, PROFILES, UnknownProfileError, active_profile


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
    # handled by recursionlab.__main__ before this parser (the course layer sits above train); listed for --help
    sub.add_parser("course", help="copy the lessons, exercises and docs into a folder and open JupyterLab there "
                   "(recursionlab course DIR [--no-lab] [--force])")
    show = sub.add_parser("show", help="print a recipe's configuration")
    show.add_argument("recipe")
    show.add_argument("--profile", default=None)
    show.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    show.add_argument("--out", default=None, help="checkpoint folder (as for train)")
    train = sub.add_parser("train", help="train a recipe")
    train.add_argument("recipe")
    train.add_argument("--profile", default=None, help=f"one of {', '.join(PROFILES)} (or 'paper' where offered)")
    train.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config field, dotted for nested ones (e.g. train.lr=3e-4)")
    train.add_argument("--resume", default=None, help="checkpoint to resume from")
    train.add_argument("--out", default=None, help="checkpoint folder (default runs/RECIPE-PROFILE, or the folder "
                       "of --resume)")
    train.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint in the folder")
    conv = sub.add_parser("convert", help="convert an official HRM/TRM checkpoint to the library (or back)")
    conv.add_argument("path", help="official checkpoint (or, with --export-official, a library model file)")
    conv.add_argument("--to", required=True, help="output file")
    conv.add_argument("--model", choices=("hrm", "trm"), default=None, help="model kind (default: detected)")
    conv.add_argument("--config", default=None, help="the official run's all_config.yaml")
    conv.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                      help="an official arch field the weights do not store (e.g. num_heads=8, H_cycles=2)")
    conv.add_argument("--export-official", action="store_true", help="library model -> official state dict")
    plan = sub.add_parser("plan", help="parameters, FLOPs, peak memory and run time of a recipe, before training")
    plan.add_argument("recipe")
    plan.add_argument("--profile", default=None)
    plan.add_argument("--gpu", default="h100", help="h100, h200, a100, l40s, 4090 or cpu (default h100)")
    plan.add_argument("--mfu", type=float, default=None, help="assumed model-FLOPs utilisation (default 0.3; cpu 0.2)")
    plan.add_argument("--precision", default=None, help="bf16 or fp32 (default: the recipe's; auto = bf16 on a GPU)")
    plan.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")
    return parser


class RunExistsError(ValueError):
    """``train`` would replace an existing run's checkpoint; the message says how to continue or replace it."""


def _with_checkpoint_defaults(config, args, profile: str):
    """Where ``train`` writes checkpoints and how often (also what ``show`` prints)."""
    if config.train.checkpoint_path is None:
        resume = getattr(args, "resume", None)
        if args.out is None and resume:
            out = Path(resume).parent
        else:
            out = Path(args.out or f"runs/{args.recipe}-{profile}")
        config.train.checkpoint_path = str(out / "last.pt")
        if not config.train.checkpoint_every:
            config.train.checkpoint_every = max(1, config.train.steps // 10)
    return config


# What defines a run: on --resume these continue from the checkpoint unless --set changes them. The machine and
# output settings (device, precision, compile, progress, checkpoint_path, checkpoint_every) come from this command.
RUN_SETTINGS = ("steps", "lr", "optimizer", "weight_decay", "betas", "momentum", "warmup_steps", "schedule",
                "min_lr_ratio", "grad_clip", "ema_decay", "log_every", "eval_every", "seed")


def _continue_run_settings(config, resume: str, overrides: dict[str, str]):
    """The run's own training settings from the checkpoint, except those given now with ``--set train.X``."""
    from recursionlab.train.checkpoint import checkpoint_train_config

    saved = checkpoint_train_config(resume)
    explicit = {key.split(".", 1)[1] for key in overrides if key.startswith("train.")}
    for name in RUN_SETTINGS:
        if name in saved and name not in explicit:
            setattr(config.train, name, tuple(saved[name]) if name == "betas" else saved[name])
    config.train.validate()
    return config


def _refuse_overwrite(path: Path, args) -> None:
    from recursionlab.train.checkpoint import checkpoint_step

    if not path.exists() or args.overwrite:
        return
    if args.resume and Path(args.resume).resolve() == path.resolve():
        return
    step = checkpoint_step(path)
    what = f"a run at step {step}" if step is not None else "a file"
    raise RunExistsError(
        f"{path} already holds {what}; pass --resume {path} to continue it, --overwrite to replace it, "
        "or --out NEW_FOLDER to start a separate run"
    )


def _resume_command(argv: list[str], checkpoint: str, world_size: int) -> str:
    """The command line that continues this run from ``checkpoint``."""
    args, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item in ("--resume", "--overwrite") or item.startswith("--resume="):
            skip = item == "--resume"
        else:
            args.append(item)
    launcher = f"torchrun --nproc_per_node={world_size} -m recursionlab" if world_size > 1 else \
        "python -m recursionlab"
    return f"{launcher} {shlex.join(args + ['--resume', checkpoint])}"


def main(argv: list[str] | None = None) -> int:
    from recursionlab.train.checkpoint import CheckpointMismatch, CheckpointNotFound, CheckpointWriteError
    from recursionlab.train.engine import TrainingDiverged, TrainingInterrupted
    from recursionlab.train.recipes import UnknownConfigKeyError, UnknownRecipeError

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    state = {"training": False, "world_size": 1, "rank": 0}
    try:
        return _run(args, argv, state)
    except TrainingInterrupted as err:
        if state["rank"] == 0:
            how = f"; resume with: {_resume_command(argv, err.checkpoint, state['world_size'])}" if err.checkpoint \
                else ""
            print(f"{err}{how}", file=sys.stderr, flush=True)
        return 128 + int(err.signum)
    except BrokenPipeError:  # e.g. `show ... | head`: the reader left, not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("aborted (second interrupt): nothing saved since the last checkpoint", file=sys.stderr)
        return 130
    except (TrainingDiverged, CheckpointWriteError, CheckpointNotFound, CheckpointMismatch, UnknownRecipeError,
            UnknownConfigKeyError, UnknownProfileError, ValueError) as err:
        project = (TrainingDiverged, CheckpointWriteError, CheckpointNotFound, CheckpointMismatch)
        if os.environ.get("RECURSIONLAB_TRACEBACK") or (state["training"] and not isinstance(err, project)):
            raise  # during training, anything but the project's own errors is a bug: keep its traceback
        code = 3 if isinstance(err, TrainingDiverged) else 4 if isinstance(err, CheckpointWriteError) else 2
        if state["rank"] == 0 or not isinstance(err, (TrainingDiverged, CheckpointWriteError)):
            prefix = f"error (process {state['rank']}): " if state["rank"] else "error: "
            print(prefix + str(err), file=sys.stderr, flush=True)
        return code


def _run(args, argv: list[str], state: dict) -> int:
    from recursionlab.train.recipes import build_trainer, get_config, list_recipes, normalize_profile, shown_config

    if args.command == "convert":
        return _convert(args)
    if args.command == "list":
        for name, recipe in list_recipes().items():
            print(f"{name:32s} {recipe.description}  [profiles: {', '.join(recipe.profiles)}]")
        return 0
    overrides = _parse_sets(args.sets)
    requested = args.profile or os.environ.get(ENV_VAR, "").strip()  # 'paper' is valid here, not in lessons
    profile = normalize_profile(requested) if requested else active_profile()
    if args.command == "plan":
        from recursionlab.train.plan import plan_recipe

        made = plan_recipe(args.recipe, profile, args.gpu, args.mfu, overrides, args.precision)
        print(json.dumps(made.to_dict(), indent=2) if args.json else made.render())
        return 0
    config = get_config(args.recipe, profile, overrides)
    if getattr(args, "resume", None):
        from recursionlab.train.checkpoint import require_checkpoint_file

        require_checkpoint_file(args.resume)  # a missing or folder --resume fails here, before any building
        config = _continue_run_settings(config, args.resume, overrides)
    config = _with_checkpoint_defaults(config, args, profile)
    if args.command == "show":
        print(json.dumps(shown_config(config), indent=2, default=str))
        return 0
    _refuse_overwrite(Path(config.train.checkpoint_path), args)
    trainer = build_trainer(args.recipe, config)
    state.update(world_size=trainer.dist.world_size, rank=trainer.dist.rank)
    if args.resume:
        trainer.load(args.resume)
        if trainer.step >= config.train.steps:
            if trainer.dist.is_main:
                print(f"nothing to do: {args.resume} is already at step {trainer.step} and train.steps is "
                      f"{config.train.steps}; raise it to train longer (e.g. --set train.steps="
                      f"{2 * config.train.steps})")
            return 0
    if trainer.dist.is_main:
        print(f"training {args.recipe} at profile {profile} on {trainer.device} "
              f"({sum(p.numel() for p in trainer.model.parameters()):,} parameters), checkpoints to "
              f"{config.train.checkpoint_path} every {config.train.checkpoint_every} steps", flush=True)
    state["training"] = True
    trainer.fit()
    if trainer.dist.is_main:
        summary = {"step": trainer.step, **({"loss": trainer.history.last("loss")} if "loss" in trainer.history
                                            else {}), **trainer.last_eval}
        print(json.dumps(summary, indent=2))
        print(f"checkpoint: {config.train.checkpoint_path}")
    return 0


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
