"""One prepared GPU acceptance run (``make gpu-check``): everything the GPU path promises, in under 10 minutes.

    python -m benchmarks.gpu_check              # on one H100/H200-class GPU; appends to benchmarks/RESULTS.md
    python -m benchmarks.gpu_check --dry-run    # CPU, tiny shapes, seconds; writes a temporary file instead

Phases (each has its own time cap; a phase that fails or runs out of time is reported and the next one runs):

1. ``gpu-tests``   -- the ``gpu``-marked tests (``pytest -m gpu``) in a subprocess;
2. ``throughput``  -- HRM and TRM at their paper configurations (recipes ``hrm-sudoku`` / ``trm-sudoku`` at
   profile ``paper``: 27M / 7M parameters, 9x9 Sudoku shapes, batch 768) in bf16 eager, bf16 compiled and fp32
   eager: steps/s, tokens/s, peak memory, TFLOP/s and MFU (FLOPs counted by the library's counter, peaks from
   :data:`recursionlab.train.plan.GPU_SPECS`), next to the cost planner's predicted peak memory;
3. ``sudoku``      -- TRM-MLP (recipe ``trm-mlp-sudoku`` at profile ``gpu``) trained on 9x9 hard Sudoku for a
   fixed number of seconds, then exact accuracy on held-out puzzles (EMA weights, as TRM evaluates);
4. ``notebooks``   -- every lesson executed at the ``gpu`` profile, all side by side (one kernel each, one GPU),
   each until it finishes or the phase's cap: which lessons complete, in how long, and the first error of any
   that fails. Times are under contention (all lessons share the GPU and the cores), so they are upper bounds.

Everything (device, date, command, figures, failures) is appended to ``benchmarks/RESULTS.md`` as one dated
section. ``--dry-run`` runs the same code on the CPU with tiny shapes and the ``aot_eager`` compile backend
(inductor would spend minutes compiling C++ on a CPU), so the suite checks every path in seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as dt
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"


class PhaseTimeout(Exception):
    """A phase ran past its time cap."""


@dataclass
class Phase:
    """The outcome of one phase: status "ok" / "failed" / "timed out", seconds, markdown lines, error text."""

    name: str
    cap_s: float
    status: str = "not run"
    seconds: float = 0.0
    lines: list[str] = field(default_factory=list)
    error: str = ""
    started: float = 0.0

    @property
    def deadline(self) -> float:
        return self.started + self.cap_s


@dataclass
class Settings:
    """Sizes and time caps of a run (:func:`settings` gives the GPU and the dry-run ones)."""

    dry_run: bool
    device: str
    profile_models: str  # the recipe profile the throughput models come from
    batch: int | None  # None: the recipe's batch
    model_overrides: dict
    compile_backend: str
    compiled_models: tuple[str, ...]  # which models also get the bf16 compiled row
    warmup_steps: int
    timed_s: float
    caps: dict[str, float]
    run_cap_s: dict[str, float]  # per throughput run: eager / compiled
    sudoku_profile: str
    sudoku_overrides: dict
    train_s: float
    gpu_test_paths: list[str]
    notebook_profile: str = "gpu"
    notebook_paths: list[str] = field(default_factory=list)


def _overrides_for(recipe: str, overrides: dict) -> dict:
    """The tiny-shape overrides a recipe accepts: TRM has a single network, so no ``H_layers`` (setting an unused
    field is an error)."""
    return {k: v for k, v in overrides.items() if not (k == "H_layers" and recipe.startswith("trm"))}


def settings(dry_run: bool) -> Settings:
    if dry_run:
        tiny = {"hidden": 32, "n_heads": 2, "H_layers": 1, "L_layers": 1, "H_cycles": 1, "L_cycles": 1,
                "ffn_multiple_of": 16, "halt_max_steps": 2, "puzzle_emb_len": 1}
        return Settings(
            dry_run=True, device="cpu", profile_models="smoke", batch=4, model_overrides=tiny,
            compile_backend="aot_eager", compiled_models=("hrm-sudoku", "trm-sudoku"), warmup_steps=2, timed_s=0.0,
            # generous: on a shared 2-core CI machine the caps must not make the dry run flaky
            caps={"gpu-tests": 180, "throughput": 300, "sudoku": 120, "notebooks": 120},
            run_cap_s={"eager": 60, "compiled": 120},
            sudoku_profile="smoke", sudoku_overrides={"n_train": 16, "n_test": 8, "batch_size": 8},
            train_s=1.0, gpu_test_paths=["tests/test_gpu.py"],
            notebook_profile="smoke", notebook_paths=["notebooks/00_welcome.ipynb"],
        )
    return Settings(
        dry_run=False, device="cuda", profile_models="paper", batch=None, model_overrides={},
        compile_backend="inductor", compiled_models=("hrm-sudoku", "trm-sudoku"), warmup_steps=3, timed_s=5.0,
        # 50 + 240 + 130 + 130 = 550 s of phases (planning included), plus start-up and the report: under 10 minutes.
        # Inductor compiles each paper-size model in 66-70 s on an H200 machine with 16 cores (RESULTS.md).
        caps={"gpu-tests": 50, "throughput": 240, "sudoku": 130, "notebooks": 130},
        run_cap_s={"eager": 25, "compiled": 120},
        sudoku_profile="gpu", sudoku_overrides={"n_test": 500, "eval_batch_size": 500},
        # only tests/test_gpu.py holds gpu-marked tests; collecting all of tests/ would import the notebook tools
        train_s=90.0, gpu_test_paths=["tests/test_gpu.py"],
        notebook_profile="gpu",
        notebook_paths=sorted(str(p.relative_to(ROOT)) for p in (ROOT / "notebooks").glob("[0-9]*.ipynb")),
    )


# ----------------------------------------------------------------------------------------------------------
# Running phases with caps
# ----------------------------------------------------------------------------------------------------------


def _alarm(signum, frame):  # noqa: ARG001 - signal handler signature
    raise PhaseTimeout()


def run_phase(phase: Phase, body: Callable[[Phase], None]) -> Phase:
    """Run ``body(phase)`` under ``phase.cap_s`` (SIGALRM on the main thread); record status and errors."""
    start = phase.started = time.perf_counter()
    use_alarm = hasattr(signal, "SIGALRM") and os.name == "posix"
    old = signal.signal(signal.SIGALRM, _alarm) if use_alarm else None
    if use_alarm:
        signal.setitimer(signal.ITIMER_REAL, max(phase.cap_s, 1e-3))
    try:
        body(phase)
        phase.status = "ok"
    except PhaseTimeout:
        phase.status = "timed out"
        phase.error = f"ran past its cap of {phase.cap_s:.0f} s"
    except Exception as err:  # keep going: the next phase must still run
        phase.status = "failed"
        phase.error = f"{type(err).__name__}: {err}\n" + "".join(traceback.format_exc(limit=-4))[-1500:]
    finally:
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
        phase.seconds = time.perf_counter() - start
    print(f"[gpu-check] {phase.name}: {phase.status} in {phase.seconds:.1f} s", flush=True)
    return phase


# ----------------------------------------------------------------------------------------------------------
# Phase 1: the gpu-marked tests
# ----------------------------------------------------------------------------------------------------------


def phase_gpu_tests(phase: Phase, s: Settings) -> None:
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "-p", "no:nbval", "-p",
           "no:xdist", *s.gpu_test_paths]
    env = dict(os.environ, RECURSIONLAB_PROGRESS="0")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=max(phase.cap_s - 5, 5))
    tail = [line for line in proc.stdout.strip().splitlines() if line.strip()][-1:] or ["(no output)"]
    phase.lines += [f"`{shlex.join(cmd[1:])}` -> exit {proc.returncode}: {tail[0]}"]
    # exit 5 = nothing selected/run; on a CPU every gpu test is skipped, which is a pass of the dry run
    if proc.returncode not in (0, 5):
        raise RuntimeError(f"gpu tests failed (exit {proc.returncode}):\n{proc.stdout[-1500:]}{proc.stderr[-500:]}")


# ----------------------------------------------------------------------------------------------------------
# Phase 2: throughput of HRM and TRM at their paper configurations
# ----------------------------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory(device: torch.device) -> int | None:
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


def _puzzle_shape(cfg) -> types.SimpleNamespace:
    # what build_model reads from a dataset: 9x9 Sudoku has 81 cells and 11 tokens (pad, blank, 1..9)
    n = cfg.sudoku_size
    return types.SimpleNamespace(vocab_size=n + 2, seq_len=n * n, num_puzzle_ids=1)


def _random_batch(shape, batch: int, device: torch.device) -> dict:
    g = torch.Generator().manual_seed(0)
    inputs = torch.randint(1, shape.vocab_size, (batch, shape.seq_len), generator=g)
    labels = torch.randint(2, shape.vocab_size, (batch, shape.seq_len), generator=g)
    return {"inputs": inputs.to(device), "labels": labels.to(device),
            "puzzle_ids": torch.zeros(batch, dtype=torch.long, device=device)}


def measure_throughput(recipe: str, s: Settings, precision: str, compiled: bool, cap_s: float) -> dict:
    """Steps/s, tokens/s, peak memory, FLOPs and MFU of the library's training step (model segment + ACT loss
    + backward + AdamATan2) for ``recipe`` at ``s.profile_models``."""
    from recursionlab.train.device import autocast
    from recursionlab.train.flops import training_step_flops
    from recursionlab.train.optim import build_optimizer
    from recursionlab.train.plan import device_peak_flops
    from recursionlab.train.recipes import get_config
    from recursionlab.train.recipes.reasoning import build_model, reasoning_loss_fn

    deadline = time.perf_counter() + cap_s
    device = torch.device(s.device)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    cfg = get_config(recipe, s.profile_models, _overrides_for(recipe, s.model_overrides))
    shape = _puzzle_shape(cfg)
    batch_size = s.batch or cfg.batch_size
    model = build_model(cfg, shape).to(device)
    loss_fn = reasoning_loss_fn(cfg.q_loss_weight)
    optimizer = build_optimizer(model.parameters(), cfg.train)
    batch = _random_batch(shape, batch_size, device)
    forward = torch.compile(model, backend=s.compile_backend) if compiled else model
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)

    def step() -> None:
        with autocast(device, dtype):
            out = loss_fn(forward, batch)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()

    t0 = time.perf_counter()
    for _ in range(max(1, s.warmup_steps)):  # includes compilation (twice: without and with a carry)
        step()
    _sync(device)
    warmup_s = time.perf_counter() - t0
    steps, start = 0, time.perf_counter()
    while True:
        step()
        steps += 1
        _sync(device)
        elapsed = time.perf_counter() - start
        if elapsed >= s.timed_s or time.perf_counter() > deadline - 2 * elapsed / steps:
            break
    peak_mem = _peak_memory(device)
    with autocast(device, dtype):
        flops = training_step_flops(model, loss_fn, batch)  # eager, the same step
    peak, peak_name = device_peak_flops(device, dtype)
    per_s = flops * steps / elapsed
    return {
        "model": recipe, "precision": precision, "compiled": compiled, "batch": batch_size,
        "params": sum(p.numel() for p in model.parameters()), "warmup_s": warmup_s,
        "steps/s": steps / elapsed, "tokens/s": steps * batch_size * shape.seq_len / elapsed,
        "peak_mem": peak_mem, "TFLOP/s": per_s / 1e12, "MFU": per_s / peak if peak else None, "peak_name": peak_name,
    }


def planned_peak(recipe: str, s: Settings, precision: str) -> int:
    """The cost planner's peak memory for the same model and batch (fake tensors, on the CPU)."""
    from recursionlab.train.plan import measure_step
    from recursionlab.train.recipes import get_config
    from recursionlab.train.recipes.reasoning import build_model, reasoning_loss_fn

    cfg = get_config(recipe, s.profile_models, _overrides_for(recipe, s.model_overrides))
    shape = _puzzle_shape(cfg)
    model = build_model(cfg, shape)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    adam_moments = 2 * 4 * sum(p.numel() for p in model.parameters())
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    cost = measure_step(copy.deepcopy(model), reasoning_loss_fn(cfg.q_loss_weight),
                        _random_batch(shape, s.batch or cfg.batch_size, torch.device("cpu")), dtype)
    return params + adam_moments + cost.activation_bytes


def run_capped(phase: Phase, cap_s: float, fn: Callable[[], object]) -> object:
    """``fn()`` under its own cap (at most the time left in ``phase``); raises :class:`RunTimeout` when that cap
    is hit and :class:`PhaseTimeout` when the phase's is. The phase's alarm is re-armed afterwards."""
    if not hasattr(signal, "SIGALRM"):
        return fn()
    own_deadline = min(time.perf_counter() + cap_s, phase.deadline)
    signal.setitimer(signal.ITIMER_REAL, max(own_deadline - time.perf_counter(), 1e-3))
    try:
        return fn()
    except PhaseTimeout:
        if time.perf_counter() >= phase.deadline - 0.05:
            raise
        raise RunTimeout(f"ran past its cap of {cap_s:.0f} s") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, max(phase.deadline - time.perf_counter(), 1e-3))


class RunTimeout(Exception):
    """One measurement inside a phase ran past its own cap (the phase goes on)."""


def phase_throughput(phase: Phase, s: Settings) -> None:
    from recursionlab.train.plan import format_bytes

    phase.lines += [
        "| model | params | precision | compiled | batch | steps/s | tokens/s | peak memory | planned peak | "
        "TFLOP/s | MFU | warm-up s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    failures = []
    peak_name = "none"
    # eager rows first: a slow compilation must not starve them
    runs = [(m, p, False) for m in ("hrm-sudoku", "trm-sudoku") for p in ("bf16", "fp32")]
    runs += [(m, "bf16", True) for m in s.compiled_models]
    plans: dict[tuple[str, str], str] = {}
    for recipe, precision, compiled in runs:
        cap = s.run_cap_s["compiled" if compiled else "eager"]
        try:
            r = run_capped(phase, cap, partial(measure_throughput, recipe, s, precision, compiled, cap))
        except PhaseTimeout:
            raise
        except Exception as err:
            failures.append(f"{recipe} {precision} compiled={compiled}: {type(err).__name__}: {err}")
            phase.lines.append(f"| {recipe} | | {precision} | {compiled} | FAILED: {type(err).__name__}: "
                               f"{str(err)[:80]} | | | | | | | |")
            continue
        if (recipe, precision) not in plans:
            try:
                plans[recipe, precision] = format_bytes(
                    run_capped(phase, 60, partial(planned_peak, recipe, s, precision)))
            except PhaseTimeout:
                raise
            except Exception as err:
                plans[recipe, precision] = f"n/a ({type(err).__name__})"
        peak_name = r["peak_name"]
        mem = format_bytes(r["peak_mem"]) if r["peak_mem"] is not None else "n/a (CPU)"
        mfu = f"{100 * r['MFU']:.1f}%" if r["MFU"] is not None else "n/a"
        phase.lines.append(
            f"| {recipe} | {r['params']:,} | {precision} | {compiled} | {r['batch']} | {r['steps/s']:.2f} | "
            f"{r['tokens/s']:,.0f} | {mem} | {plans[recipe, precision]} | {r['TFLOP/s']:.2f} | {mfu} | "
            f"{r['warmup_s']:.1f} |"
        )
        print("[gpu-check]", phase.lines[-1], flush=True)
        if s.device == "cuda":
            torch.cuda.empty_cache()
    phase.lines.append("")
    phase.lines.append(f"MFU against the dense peak of the row's precision ({peak_name}); "
                       "FLOPs = matmul-class ops of one eager step, counted by `recursionlab.train.flops`; "
                       "planned peak = parameters + Adam moments + the planner's fake-tensor step (CPU).")
    if failures:
        raise RuntimeError("; ".join(failures))


# ----------------------------------------------------------------------------------------------------------
# Phase 3: TRM-MLP on 9x9 hard Sudoku for a fixed time
# ----------------------------------------------------------------------------------------------------------


def phase_sudoku(phase: Phase, s: Settings) -> None:
    from recursionlab.data import sudoku as sudoku_data
    from recursionlab.train.engine import Trainer
    from recursionlab.train.recipes import get_config
    from recursionlab.train.recipes.reasoning import build_job

    cfg = get_config("trm-mlp-sudoku", s.sudoku_profile, s.sudoku_overrides)
    cfg.train.device = s.device
    cfg.train.progress = False
    cfg.train.checkpoint_path = None
    t0 = time.perf_counter()
    # fill the on-disk cache with every core first (the recipe's builder generates on one)
    workers = max(1, min(16, os.cpu_count() or 1)) if not s.dry_run else 1
    for n, stream in ((cfg.n_train, 0), (cfg.n_test, 1)):
        sudoku_data.generate_puzzles(n, cfg.sudoku_size, cfg.difficulty, cfg.data_seed, stream=stream,
                                     workers=workers)
    job = build_job(cfg)
    data_s = time.perf_counter() - t0
    trainer = Trainer(job.model, job.loss_fn, job.batch_fn, job.train, param_groups=job.param_groups,
                      extra_optimizers=job.extra_optimizers)
    start = time.perf_counter()
    chunk = 10 if s.dry_run else 100
    while time.perf_counter() - start < s.train_s:
        trainer.cfg.steps = trainer.step + chunk
        trainer.fit()
    train_s = time.perf_counter() - start
    model = trainer.eval_model()
    model.eval()
    t1 = time.perf_counter()
    with torch.no_grad():
        metrics = job.eval_fn(model)
        if trainer.ema is not None:  # a short run's EMA (decay 0.999) lags: show the live weights too
            trainer.model.eval()
            live = job.eval_fn(trainer.model)
            trainer.model.train()
    eval_s = time.perf_counter() - t1
    live = live if trainer.ema is not None else {}
    n_test = min(cfg.n_test, cfg.eval_max_puzzles or cfg.n_test)
    phase.lines += [
        f"- config: `trm-mlp-sudoku` at profile `{s.sudoku_profile}` ({cfg.sudoku_size}x{cfg.sudoku_size} "
        f"{cfg.difficulty}, {cfg.n_train} training puzzles, batch {cfg.batch_size}, hidden {cfg.hidden}, "
        f"T={cfg.H_cycles}, n={cfg.L_cycles}), overrides {s.sudoku_overrides}",
        f"- trained {trainer.step} steps in {train_s:.1f} s ({trainer.step / train_s:.2f} steps/s, precision "
        f"{str(trainer.dtype).replace('torch.', '')}); final train loss {trainer.history.last('loss'):.4f}",
        f"- held-out ({n_test} puzzles, EMA weights, {cfg.halt_max_steps} supervision steps): exact accuracy "
        f"{metrics['test_exact']:.4f}, cell accuracy {metrics['test_cell']:.4f}"
        + (f"; live weights: exact {live['test_exact']:.4f}, cell {live['test_cell']:.4f}"
           if trainer.ema is not None else ""),
        f"- data {data_s:.1f} s, evaluation {eval_s:.1f} s",
    ]


# ----------------------------------------------------------------------------------------------------------
# Phase 4: every lesson at the gpu profile, side by side
# ----------------------------------------------------------------------------------------------------------

_NOTEBOOK_CHILD = """
import signal, sys, time
from recursionlab.course.notebooks import execute_notebook
# SIGTERM (the phase's cap) unwinds through nbclient, which then shuts its kernel down
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
t = time.perf_counter()
try:
    execute_notebook(sys.argv[1], save=False, timeout=int(sys.argv[2]))
except Exception as err:
    lines = [l for l in str(err).splitlines() if l.strip()]
    print("NOTEBOOK-FAILED", type(err).__name__, " | ".join(lines[-3:])[-600:], flush=True)
    sys.exit(1)
print(f"NOTEBOOK-OK {time.perf_counter() - t:.1f}", flush=True)
"""


def phase_notebooks(phase: Phase, s: Settings) -> None:
    """Start one process per lesson (each runs its own kernel), all at once; wait until each ends or the cap."""
    env = dict(os.environ, RECURSIONLAB_PROFILE=s.notebook_profile, RECURSIONLAB_PROGRESS="0",
               OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), MPLBACKEND="Agg")
    procs = {}
    for path in s.notebook_paths:
        procs[path] = (time.perf_counter(), subprocess.Popen(
            [sys.executable, "-c", _NOTEBOOK_CHILD, path, str(int(phase.cap_s))], cwd=ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True))
    results: dict[str, tuple[str, float]] = {}
    try:
        # stop a few seconds before the cap, so that unfinished lessons are recorded as such, not as a timeout
        while len(results) < len(procs) and time.perf_counter() < phase.deadline - 8:
            for path, (t0, proc) in procs.items():
                if path not in results and proc.poll() is not None:
                    out = proc.stdout.read() if proc.stdout else ""
                    verdict = next((ln for ln in out.splitlines() if ln.startswith("NOTEBOOK-")), "no verdict: "
                                   + " | ".join(out.strip().splitlines()[-3:])[-400:])
                    results[path] = (verdict, time.perf_counter() - t0)
            time.sleep(0.5)
    finally:  # at the cap (or on any error) stop every lesson still running: SIGTERM, then SIGKILL
        running = {path: (t0, proc) for path, (t0, proc) in procs.items() if path not in results}
        for path, (t0, proc) in running.items():
            results[path] = (f"NOTEBOOK-UNFINISHED at the phase's cap of {phase.cap_s:.0f} s",
                             time.perf_counter() - t0)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for _, proc in running.values():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
        phase.lines += [f"profile `{s.notebook_profile}`; {len(procs)} lessons started together (each its own "
                        "kernel; they share the GPU and the cores, so times are upper bounds)", "",
                        "| lesson | result | wall s |", "|---|---|---|"]
        for path in s.notebook_paths:
            verdict, secs = results[path]
            status = ("completed" if verdict.startswith("NOTEBOOK-OK") else
                      "did not finish within the cap" if "UNFINISHED" in verdict else
                      "FAILED: " + verdict.replace("NOTEBOOK-FAILED ", "").replace("|", "/"))
            phase.lines.append(f"| {Path(path).stem} | {status} | {secs:.0f} |")
    failed = [p for p, (v, _) in results.items() if not v.startswith("NOTEBOOK-OK") and "UNFINISHED" not in v]
    if failed:
        raise RuntimeError(f"{len(failed)} lesson(s) failed: {', '.join(Path(p).stem for p in failed)}")


# ----------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------


def machine() -> str:
    import platform

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.node() or 'unknown host'}: {os.cpu_count()} CPU cores, {gpu}, Python "
            f"{platform.python_version()}, torch {torch.__version__}")


def report(phases: list[Phase], command: str, s: Settings, started: float) -> str:
    total = time.perf_counter() - started
    lines = [
        f"## {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC -- GPU acceptance run"
        + (" (CPU dry run, tiny shapes: the figures mean nothing)" if s.dry_run else ""),
        "",
        f"- command: `{command}`",
        f"- machine: {machine()}",
        f"- total: {total:.0f} s; phases: "
        + ", ".join(f"{p.name} {p.status} ({p.seconds:.0f} s of {p.cap_s:.0f})" for p in phases),
        "",
    ]
    titles = {"gpu-tests": "gpu-marked tests", "throughput": "Throughput at the paper configurations",
              "sudoku": "TRM-MLP on 9x9 hard Sudoku, fixed training time",
              "notebooks": "Every lesson, side by side, at the profile named below"}
    for p in phases:
        lines += [f"### {titles.get(p.name, p.name)}: {p.status}", ""] + p.lines
        if p.error:
            lines += ["", "```", p.error.strip(), "```"]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes, seconds; temporary results file")
    parser.add_argument("--results", default=None, help="markdown file to append to (default RESULTS.md; "
                        "a temporary file with --dry-run)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["gpu-tests", "throughput", "sudoku", "notebooks"])
    args = parser.parse_args(argv)
    started = time.perf_counter()
    s = settings(args.dry_run)
    if not args.dry_run and not torch.cuda.is_available():
        print("error: no CUDA GPU on this machine; run with --dry-run for the CPU rehearsal", file=sys.stderr)
        return 2
    command = "python -m benchmarks.gpu_check " + shlex.join(argv if argv is not None else sys.argv[1:])
    bodies = {"gpu-tests": phase_gpu_tests, "throughput": phase_throughput, "sudoku": phase_sudoku,
              "notebooks": phase_notebooks}
    if args.results:
        out = Path(args.results)
    elif args.dry_run:
        out = Path(tempfile.mkstemp(prefix="gpu-check-dry-run-", suffix=".md")[1])
    else:
        out = RESULTS
    old = out.read_text() if out.exists() and out.stat().st_size else "# Benchmark results\n"
    phases = [Phase(name, s.caps[name]) for name in bodies]
    for phase in phases:
        if phase.name in args.skip:
            phase.status = "skipped"
        else:
            run_phase(phase, lambda p, body=bodies[phase.name]: body(p, s))
        # the section is rewritten after every phase: a run killed from outside still leaves what it measured
        text = report(phases, command.strip(), s, started)
        out.write_text(old.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n")
    print(f"[gpu-check] appended to {out}")
    return 0 if all(p.status in ("ok", "skipped") for p in phases) else 1


if __name__ == "__main__":
    sys.exit(main())
