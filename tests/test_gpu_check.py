"""The prepared GPU acceptance run (``make gpu-check``): its CPU dry run goes through every phase in seconds,
and a phase that fails or runs past its cap is reported while the next phases still run."""

import time

from benchmarks import gpu_check


def test_dry_run_runs_every_phase_and_appends_a_section(tmp_path):
    out = tmp_path / "RESULTS.md"
    out.write_text("# Benchmark results\n\nearlier section\n")
    assert gpu_check.main(["--dry-run", "--results", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# Benchmark results\n\nearlier section\n\n## ")  # appended, nothing rewritten
    assert "CPU dry run" in text and "gpu-tests ok" in text and "throughput ok" in text and "sudoku ok" in text
    assert "notebooks ok" in text and "| 00_welcome | completed |" in text
    assert "3 skipped" in text  # the gpu-marked tests ran (and skipped cleanly without CUDA)
    rows = [line for line in text.splitlines() if line.startswith(("| hrm-sudoku", "| trm-sudoku"))]
    assert len(rows) == 6  # HRM and TRM: bf16, fp32, bf16 compiled (as the real run)
    assert all("FAILED" not in r for r in rows)
    assert "exact accuracy" in text and "held-out" in text


def test_a_failing_or_slow_phase_is_reported_and_the_run_goes_on():
    def boom(phase):
        raise RuntimeError("no kernel image")

    def slow(phase):
        time.sleep(5)

    failed = gpu_check.run_phase(gpu_check.Phase("throughput", 10), boom)
    assert failed.status == "failed" and "no kernel image" in failed.error
    late = gpu_check.run_phase(gpu_check.Phase("sudoku", 0.2), slow)
    assert late.status == "timed out" and late.seconds < 2
    ok = gpu_check.run_phase(gpu_check.Phase("gpu-tests", 10), lambda phase: phase.lines.append("fine"))
    assert ok.status == "ok"
    s = gpu_check.settings(dry_run=True)
    text = gpu_check.report([failed, late, ok], "python -m benchmarks.gpu_check --dry-run", s, time.perf_counter())
    assert "throughput failed" in text and "sudoku timed out" in text and "no kernel image" in text
    assert "ran past its cap" in text and "fine" in text


def test_without_a_gpu_the_real_run_refuses_clearly(capsys, monkeypatch):
    monkeypatch.setattr(gpu_check.torch.cuda, "is_available", lambda: False)
    assert gpu_check.main([]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err


def test_one_measurement_past_its_cap_does_not_end_the_phase():
    def body(phase):
        try:
            gpu_check.run_capped(phase, 0.2, lambda: time.sleep(5))
        except gpu_check.RunTimeout as err:
            phase.lines.append(f"run: {err}")
        phase.lines.append(gpu_check.run_capped(phase, 5, lambda: "next run done"))

    phase = gpu_check.run_phase(gpu_check.Phase("throughput", 10), body)
    assert phase.status == "ok" and phase.seconds < 3
    assert phase.lines == ["run: ran past its cap of 0 s", "next run done"]


def test_every_mfu_uses_the_planners_gpu_table(monkeypatch):
    """One table of peaks for the project: the planner's lookup by device name, used by both benchmarks."""
    from benchmarks import run as bench_run
    from recursionlab.train.plan import GPU_SPECS, device_peak_flops

    assert device_peak_flops(gpu_check.torch.device("cpu")) == (None, "no table peak for a CPU")
    cuda = gpu_check.torch.device("cuda")
    for name, key in (("NVIDIA H200", "h200"), ("NVIDIA GeForce RTX 4090", "4090"), ("NVIDIA A100-SXM4-80GB", "a100")):
        monkeypatch.setattr(gpu_check.torch.cuda, "get_device_name", lambda device=None, name=name: name)
        assert device_peak_flops(cuda) == (GPU_SPECS[key].bf16_flops, GPU_SPECS[key].name)
        assert device_peak_flops(cuda, gpu_check.torch.float32)[0] == GPU_SPECS[key].fp32_flops
        assert bench_run.device_peak(cuda) == GPU_SPECS[key].bf16_flops
    monkeypatch.setattr(gpu_check.torch.cuda, "get_device_name", lambda device=None: "Some Future GPU")
    assert device_peak_flops(cuda)[0] is None and bench_run.device_peak(cuda) is None
