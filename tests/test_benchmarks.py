"""The benchmark harness measures real work (tiny sizes here; `make bench` runs the real thing)."""

from benchmarks.run import TokenMLP, engine_throughput


def test_engine_throughput_reports_positive_figures():
    r = engine_throughput("cpu", "fp32", False, steps=2, batch=2, seq=8, dim=32)
    assert r["steps/s"] > 0 and r["tokens/s"] == r["steps/s"] * 16
    assert r["TFLOP/s"] > 0 and r["MFU"] is None  # no known peak for a CPU


def test_token_mlp_flop_count():
    model = TokenMLP(vocab=10, dim=8, depth=2)
    assert model.matmul_params() == 2 * (8 * 32 + 32 * 8) + 8 * 10
