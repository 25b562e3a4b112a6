"""Conformance with the official HRM and TRM code: the project's proof of faithfulness (keep these forever).

Each fixture in tests/fixtures/ (see its README.md) holds an official state dict, three batches, and what the
official model + loss head produced at three consecutive training supervision steps and in an evaluation run
(float64). The state dict goes through the library's converter into ``HRM``/``TRM``; every recorded tensor
must come out equal to float64 rounding.
"""

from pathlib import Path

import pytest
import torch

from recursionlab.models.convert import load_official_state, official_name
from recursionlab.models.hrm import IGNORE_INDEX, act_loss

FIXTURES = Path(__file__).with_name("fixtures")
KINDS = ("hrm", "trm_att", "trm_mlp")


def _get(record: dict, path: str):
    for part in path.split("/"):
        record = record[part]
    return record


def _check(what: str, got: torch.Tensor, want: torch.Tensor, rel: float = 1e-12) -> None:
    """Equal up to float64 rounding (the official attention sums in another order: ~1e-16 differences)."""
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    if not want.dtype.is_floating_point:
        assert torch.equal(got.to(want.dtype), want), f"{what}: {got.tolist()} != {want.tolist()}"
        return
    err = (got.double() - want.double()).abs().max().item() if want.numel() else 0.0
    scale = want.double().abs().max().item() if want.numel() else 0.0
    assert err <= rel * max(scale, 1.0), f"{what}: max abs error {err:.3g} (scale {scale:.3g})"


def _official_metrics(out, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """The official loss head's metric sums (halted slots with a supervised label only)."""
    mask = labels != IGNORE_INDEX
    counts = mask.sum(-1)
    correct = mask & (out.logits.argmax(-1) == labels)
    exact = correct.sum(-1) == counts
    valid = out.halted & (counts > 0)
    return {
        "count": valid.sum(),
        "exact_accuracy": (valid & exact).sum(),
        "q_halt_accuracy": (valid & ((out.q_halt_logits >= 0) == exact)).sum(),
        "steps": torch.where(valid, out.steps, 0).sum(),
        "accuracy": torch.where(valid, correct.float().sum(-1) / counts.clamp_min(1), 0).sum(),
    }


@pytest.fixture(scope="module", params=KINDS)
def fixture(request):
    return torch.load(FIXTURES / f"{request.param}_official_small.pt", weights_only=True)


def test_fixture_files_are_the_documented_ones(fixture):
    assert fixture["format_version"] == 1 and fixture["num_train_steps"] == 3
    assert fixture["kind"] in KINDS and fixture["grad_scale"] == 0.25


def test_training_steps_reproduce_the_official_code(fixture):
    converted = load_official_state(fixture["state_dict"], kind=fixture["kind"][:3], config=fixture["config"])
    model = converted.model.train()
    assert next(model.parameters()).dtype == torch.float64
    batches = [{k: v.long() for k, v in b.items()} for b in fixture["batches"]]
    b0 = batches[0]
    carry = model.initial_carry(b0["inputs"], b0["labels"], b0["puzzle_identifiers"])
    for step, (batch, rec) in enumerate(zip(batches, fixture["train_steps"]), start=1):
        model.zero_grad(set_to_none=True)
        carry, out = model.segment(carry, batch["inputs"], batch["labels"], batch["puzzle_identifiers"])
        loss = act_loss(out)
        loss.loss.backward()  # batch mean = grad_scale (1/B) * the official batch-sum loss
        at = f"{fixture['kind']} step {step}"
        _check(f"{at} logits", out.logits, _get(rec, "outputs/logits"))
        _check(f"{at} q_halt", out.q_halt_logits, _get(rec, "outputs/q_halt_logits"))
        _check(f"{at} q_continue", out.q_continue_logits, _get(rec, "outputs/q_continue_logits"))
        if "target_q_continue" in rec["outputs"]:
            _check(f"{at} target_q_continue", out.target_q_continue, _get(rec, "outputs/target_q_continue"))
        else:
            assert out.target_q_continue is None
        _check(f"{at} z_H", carry.z_H, _get(rec, "carry/z_H"))
        _check(f"{at} z_L", carry.z_L, _get(rec, "carry/z_L"))
        _check(f"{at} steps", carry.steps, _get(rec, "carry/steps"))
        _check(f"{at} halted", carry.halted, _get(rec, "carry/halted"))
        for ours, theirs in (("inputs", "inputs"), ("labels", "labels"), ("puzzle_ids", "puzzle_identifiers")):
            _check(f"{at} carry {ours}", getattr(carry, ours), _get(rec, f"carry/current_data/{theirs}"))
        # the loss terms are summed in another order than the official head's: float32-level last bits
        _check(f"{at} loss", loss.loss.detach() * 4, rec["loss"], rel=1e-7)
        lm_loss = torch.tensor(loss.metrics["lm_loss"] * 4, dtype=torch.float64)
        _check(f"{at} lm_loss", lm_loss, _get(rec, "metrics/lm_loss"), rel=1e-12)
        q_halt_loss = torch.tensor(loss.metrics["q_halt_loss"] * 4)
        _check(f"{at} q_halt_loss", q_halt_loss, _get(rec, "metrics/q_halt_loss"), rel=1e-6)
        for name, value in _official_metrics(out, carry.labels).items():
            _check(f"{at} metric {name}", value, _get(rec, f"metrics/{name}"), rel=1e-6)
        grads = rec["grads"]
        for name, p in model.named_parameters():
            _check(f"{at} grad {name}", p.grad, grads[official_name(name, converted.kind)])
        # the puzzle table: per-slot gradients of the sparse rows, and their per-id sum
        ids, row_grad = model.take_puzzle_grad()
        _check(f"{at} puzzle ids", ids, rec["puzzle_emb_local_ids"])
        _check(f"{at} puzzle row grads", row_grad, rec["puzzle_emb_local_grad"])
        table_grad = torch.zeros_like(model.puzzle_emb).index_add_(0, ids, row_grad)
        _check(f"{at} puzzle table grad", table_grad, grads["inner.puzzle_emb.weights"])
        assert set(grads) == {official_name(n, converted.kind) for n, _ in model.named_parameters()} | {
            "inner.puzzle_emb.weights"
        }


def test_evaluation_run_reproduces_the_official_code(fixture):
    model = load_official_state(fixture["state_dict"], config=fixture["config"]).model.eval()
    rec = fixture["eval"]
    b0 = {k: v.long() for k, v in fixture["batches"][0].items()}
    with torch.inference_mode():
        carry = model.initial_carry(b0["inputs"], b0["labels"], b0["puzzle_identifiers"])
        for call in range(rec["num_steps"]):
            carry, out = model.segment(carry, b0["inputs"], b0["labels"], b0["puzzle_identifiers"])
            assert bool(carry.halted.all()) == (call == rec["num_steps"] - 1)
        loss = act_loss(out)
    _check("eval logits", out.logits, _get(rec, "outputs/logits"))
    _check("eval q_halt", out.q_halt_logits, _get(rec, "outputs/q_halt_logits"))
    _check("eval q_continue", out.q_continue_logits, _get(rec, "outputs/q_continue_logits"))
    for key in ("z_H", "z_L", "steps", "halted"):
        _check(f"eval {key}", getattr(carry, key), _get(rec, f"carry/{key}"))
    _check("eval loss", loss.loss * 4, rec["loss"], rel=1e-7)
    for name, value in _official_metrics(out, carry.labels).items():
        _check(f"eval metric {name}", value, _get(rec, f"metrics/{name}"), rel=1e-6)
