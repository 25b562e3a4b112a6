"""Precompute lesson 11's multi-seed table: every family x seeds x budgets (x learning-rate scales), as JSON.

The lesson cannot train 9 families x 3 seeds x several budgets within its 5-minute laptop budget, so this command
does it once and the lesson loads the file (``recursionlab/assets/capstone_seeds.json``; provenance in
``recursionlab/assets/README.md``). Each run is written as soon as it ends, so an interrupted sweep keeps its
finished runs, and a rerun with the same ``--out`` skips them::

    python -m recursionlab.train.capstone_table --profile laptop --seeds 0 1 2 --budgets 0.25 0.5 1 \\
        --out runs/capstone_main.json
    python -m recursionlab.train.capstone_table --profile laptop --seeds 0 --lr-scales 0.5 2 --out runs/sweep.json
    python -m recursionlab.train.capstone_table merge runs/capstone_main.json runs/sweep.json \\
        --out recursionlab/assets/capstone_seeds.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from recursionlab.train.recipes.capstone import FAMILIES, baseline_scores, capstone_config, run_record


def _key(r: dict[str, Any]) -> tuple:
    return (r["family"], r["seed"], float(r["budget"]), float(r["lr_scale"]), json.dumps(r["options"], sort_keys=True))


def _meta(profile: str) -> dict[str, Any]:
    cfg = capstone_config(profile)
    return {"profile": profile, "config": {k: v for k, v in vars(cfg).items() if k not in ("train", "family")},
            "torch": torch.__version__, "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
            "baselines": baseline_scores(cfg)}


def sweep(profile: str, seeds: list[int], budgets: list[float], lr_scales: list[float], families: list[str],
          out: Path, options: dict[str, Any]) -> dict[str, Any]:
    """Run every (budget, seed, family, lr scale) not yet in ``out`` and save after each; returns the data."""
    data = json.loads(out.read_text()) if out.exists() else {"meta": _meta(profile), "records": []}
    done = {_key(r) for r in data["records"]}
    base = capstone_config(profile)
    for budget_scale in budgets:
        for seed in seeds:
            for family in families:
                opts = options if family == "one_pass" else {}
                for lr_scale in lr_scales:
                    cfg = replace(base, seed=seed, budget_flops=base.budget_flops * budget_scale)
                    key = (family, seed, float(cfg.budget_flops), float(lr_scale), json.dumps(opts, sort_keys=True))
                    if key in done:
                        continue
                    start = time.perf_counter()
                    record = run_record(family, cfg, lr_scale, **opts)
                    record["command_wall_s"] = time.perf_counter() - start
                    data["records"].append(record)
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_text(json.dumps(data, indent=1))
                    print(f"{family:16s} seed {seed} budget {cfg.budget_flops:.2e} lr x{lr_scale}: "
                          f"in {record['acc_in']:.3f} long {record['acc_long']:.3f} "
                          f"extrap {record['acc_extrap']:.3f} ({record['command_wall_s']:.0f} s)", flush=True)
    return data


def merge(paths: list[Path], out: Path) -> dict[str, Any]:
    """Concatenate the records of several sweep files (same profile), dropping duplicates."""
    files = [json.loads(p.read_text()) for p in paths]
    profiles = {f["meta"]["profile"] for f in files}
    if len(profiles) != 1:
        raise ValueError(f"cannot merge sweeps of different profiles: {sorted(profiles)}")
    seen, records = set(), []
    for f in files:
        for r in f["records"]:
            if _key(r) not in seen:
                seen.add(_key(r))
                records.append(r)
    meta = dict(files[0]["meta"])
    meta["baselines"] = baseline_scores(capstone_config(meta["profile"]))  # recomputed with the current definitions
    data = {"meta": meta, "records": records}
    out.write_text(json.dumps(data, indent=1))
    return data


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="*", help="'merge' followed by sweep files to merge")
    parser.add_argument("--profile", default="laptop")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budgets", type=float, nargs="+", default=[1.0], help="multiples of the profile budget")
    parser.add_argument("--lr-scales", type=float, nargs="+", default=[1.0])
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument("--one-pass-norm", choices=("post", "pre"), default=None)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.paths:
        if args.paths[0] != "merge" or len(args.paths) < 2:
            parser.error(f"positional arguments must be 'merge FILE...', got {args.paths}")
        merge([Path(p) for p in args.paths[1:]], args.out)
        return
    options = {} if args.one_pass_norm is None else {"norm": args.one_pass_norm}
    sweep(args.profile, args.seeds, args.budgets, args.lr_scales, args.families, args.out, options)


if __name__ == "__main__":
    main()
