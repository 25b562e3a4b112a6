"""The benchmark harness measures real work (tiny sizes here; `make bench` runs the real thing)."""

from benchmarks.run import TokenMLP, engine_throughput


def test_engine_throughput_reports_positive_figures():
    r = engine_throughput("cpu", "fp32", False, steps=2, batch=2, seq=8, dim=32)
    assert r["steps/s"] > 0 and r["tokens/s"] == r["steps/s"] * 16
    assert r["TFLOP/s"] > 0 and r["MFU"] is None  # no known peak for a CPU


def test_token_mlp_flop_count():
    model = TokenMLP(vocab=10, dim=8, depth=2)
    assert model.matmul_params() == 2 * (8 * 32 + 32 * 8) + 8 * 10


def test_flop_counter_matches_matmul_arithmetic():
    import torch
    from torch import nn

    from recursionlab.train.flops import inference_flops, steps_for_budget, training_step_flops

    model = nn.Linear(8, 4, bias=False)
    x = torch.randn(5, 8)
    assert inference_flops(model, x) == 2 * 5 * 8 * 4
    # backward: grad wrt the weight only (the input needs none) -> one more matmul of the same size
    assert training_step_flops(model, lambda m, b: m(b).sum(), x) == 2 * (2 * 5 * 8 * 4)
    assert steps_for_budget(1000, 64) == 15
