"""ACT (Graves 2016), the Universal Transformer and PonderNet (Banino et al. 2021): halting invariants and learning."""

from __future__ import annotations

import math

import pytest
import torch

from recursionlab.data.algorithmic import parity_batch
from recursionlab.models.act import (
    ACTParityNet,
    PonderNetParityNet,
    UniversalTransformer,
    act,
    expected_steps,
    pondernet_halting_distribution,
    pondernet_loss,
    pondernet_step_losses,
    sample_halting_step,
    truncated_geometric_prior,
)
from recursionlab.train.recipes import run_recipe


def random_step_fn(shape: tuple[int, ...], dim: int, seed: int, scale: float = 1.0):
    """A step whose halting probabilities are random (uniform in (0, scale)) for every unit and step."""
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(dim, dim, generator=gen) / math.sqrt(dim)

    def step(state: torch.Tensor, n: int):
        new_state = torch.tanh(state @ weight + 0.1 * n)
        halt = scale * torch.rand(shape, generator=gen)
        return new_state, 2.0 * new_state, halt

    return step


def brute_force_act(halts: list[float], max_steps: int, epsilon: float) -> tuple[int, float, list[float]]:
    """ACT's N, R and p^n for one unit, from the definitions, with Python floats."""
    total = 0.0
    for n, h in enumerate(halts[:max_steps], start=1):
        if n == max_steps or total + h >= 1.0 - epsilon:
            return n, 1.0 - total, halts[: n - 1] + [1.0 - total]
        total += h
    raise AssertionError("unreachable: the cap always halts")


@pytest.mark.parametrize("shape", [(7,), (3, 5)])
@pytest.mark.parametrize("max_steps,epsilon,scale", [(6, 0.01, 1.0), (12, 0.05, 0.3), (3, 0.0, 0.2), (1, 0.01, 1.0)])
def test_act_probabilities_sum_to_one_and_respect_the_cap(shape, max_steps, epsilon, scale):
    for seed in range(5):
        step = random_step_fn(shape, 4, seed, scale)
        result = act(step, torch.randn(*shape, 4), max_steps, epsilon)
        p = result.halting_probs
        assert p.shape[:-1] == shape and 1 <= p.shape[-1] <= max_steps
        assert torch.allclose(p.sum(-1), torch.ones(shape), atol=1e-6), "the remainder must make sum_n p^n = 1"
        assert bool((p >= 0).all())
        assert bool((result.n_steps >= 1).all()) and bool((result.n_steps <= max_steps).all())
        # p^n is zero after each unit's halting step, and p^N is the remainder R.
        steps = torch.arange(1, p.shape[-1] + 1)
        assert bool((p[..., steps > result.n_steps[..., None]] == 0).all()) if p.dim() == 2 else True
        at_halt = p.gather(-1, (result.n_steps - 1)[..., None]).squeeze(-1)
        assert torch.allclose(at_halt, result.remainder)
        assert torch.allclose(result.ponder_cost, result.n_steps.float() + result.remainder)


def test_act_matches_a_brute_force_per_unit():
    shape, max_steps, eps = (6,), 8, 0.01
    gen = torch.Generator().manual_seed(3)
    table = torch.rand(max_steps, *shape, generator=gen) * 0.6  # halting probability of unit u at step n

    def step(state, n):
        return state + 1, state * 0 + n, table[n - 1]

    result = act(step, torch.zeros(*shape, 2), max_steps, eps)
    for u in range(shape[0]):
        n_ref, r_ref, p_ref = brute_force_act(table[:, u].tolist(), max_steps, eps)
        assert int(result.n_steps[u]) == n_ref
        assert math.isclose(float(result.remainder[u]), r_ref, abs_tol=1e-6)
        assert torch.allclose(result.halting_probs[u, :n_ref], torch.tensor(p_ref), atol=1e-6)
        # the mean-field output: step n outputs the constant n, so y = sum_n n p^n = the expected step
        assert math.isclose(float(result.output[u, 0]), sum((i + 1) * q for i, q in enumerate(p_ref)), abs_tol=1e-5)


def test_act_runs_to_the_cap_when_never_confident_and_halts_at_once_when_sure():
    never = act(lambda s, n: (s, s, torch.full((4,), 1e-3)), torch.zeros(4, 2), 5)
    assert never.n_steps.tolist() == [5] * 4 and never.halting_probs.shape == (4, 5)
    assert torch.allclose(never.remainder, torch.full((4,), 1 - 4e-3))
    sure = act(lambda s, n: (s, s, torch.ones(4)), torch.zeros(4, 2), 5)
    assert sure.n_steps.tolist() == [1] * 4 and sure.halting_probs.shape == (4, 1)


def test_act_ponder_cost_gradient_flows_only_through_the_remainder():
    logit = torch.tensor([0.0, -1.0, -3.0], requires_grad=True)

    def step(state, n):
        return state, state, torch.sigmoid(logit + 0.0 * n)

    result = act(step, torch.zeros(3, 1), 10)
    result.ponder_cost.sum().backward()
    # rho = N + 1 - (N - 1) h with h = sigmoid(logit): d rho / d logit = -(N - 1) h (1 - h)
    h = torch.sigmoid(logit.detach())
    expected = -(result.n_steps.float() - 1) * h * (1 - h)
    assert torch.allclose(logit.grad, expected, atol=1e-6)


def test_act_parity_net_and_universal_transformer_shapes():
    x, _, _ = parity_batch(16, n_elems=6, generator=0)
    net = ACTParityNet(n_elems=6, hidden=16, max_steps=5)
    result = net(x)
    assert result.output.shape == (16, 2) and result.n_steps.shape == (16,)
    assert torch.allclose(result.halting_probs.sum(-1), torch.ones(16), atol=1e-6)
    assert int(result.n_steps.max()) <= 5

    ut = UniversalTransformer(vocab_size=5, n_classes=3, dim=16, n_heads=2, max_steps=4)
    tokens = torch.randint(0, 5, (3, 7))
    logits, res = ut(tokens)
    assert logits.shape == (3, 7, 3) and res.n_steps.shape == (3, 7)
    assert torch.allclose(res.halting_probs.sum(-1), torch.ones(3, 7), atol=1e-5)
    assert int(res.n_steps.max()) <= 4
    plain = UniversalTransformer(vocab_size=5, n_classes=3, dim=16, n_heads=2, max_steps=4, use_act=False)
    assert plain(tokens)[1].n_steps.eq(4).all()


def brute_force_halting(lambdas: list[float]) -> list[float]:
    lam = lambdas[:-1] + [1.0]
    out, alive = [], 1.0
    for value in lam:
        out.append(alive * value)
        alive *= 1.0 - value
    return out


def test_pondernet_distribution_sums_to_one_and_matches_the_product_formula():
    gen = torch.Generator().manual_seed(0)
    lambdas = torch.rand(5, 3, 9, generator=gen, dtype=torch.float64)
    p = pondernet_halting_distribution(lambdas)
    assert torch.allclose(p.sum(-1), torch.ones(5, 3, dtype=torch.float64), atol=1e-12)
    for i in range(5):
        for j in range(3):
            assert torch.allclose(p[i, j], torch.tensor(brute_force_halting(lambdas[i, j].tolist()), dtype=p.dtype))
    # the last step takes the whole remainder, lambda_N := 1 whatever the network said
    assert torch.allclose(p[..., -1], torch.prod(1 - lambdas[..., :-1], dim=-1))
    with pytest.raises(ValueError):
        pondernet_halting_distribution(torch.tensor([0.5, 1.5]))


def test_truncated_geometric_prior():
    prior = truncated_geometric_prior(0.2, 12, dtype=torch.float64)
    raw = torch.tensor([0.8**k * 0.2 for k in range(12)], dtype=torch.float64)
    assert torch.allclose(prior, raw / raw.sum())
    assert math.isclose(float(prior.sum()), 1.0, abs_tol=1e-12)
    long = truncated_geometric_prior(0.2, 200, dtype=torch.float64)
    assert math.isclose(float(expected_steps(long)), 1 / 0.2, rel_tol=1e-6)  # mean 1/lambda_p steps


@pytest.mark.parametrize("lambda_p,beta", [(0.2, 0.01), (0.5, 1.0), (0.05, 0.3)])
def test_pondernet_loss_kl_matches_brute_force(lambda_p, beta):
    gen = torch.Generator().manual_seed(1)
    lambdas = torch.rand(4, 7, generator=gen, dtype=torch.float64)
    lambdas[0, 2] = 1.0  # a saturated halting unit: later p_n are exactly 0 (0 log 0 = 0)
    p = pondernet_halting_distribution(lambdas)
    step_losses = torch.rand(4, 7, generator=gen, dtype=torch.float64)
    parts = pondernet_loss(step_losses, p, lambda_p, beta)
    raw = [(1 - lambda_p) ** k * lambda_p for k in range(7)]
    prior = [v / sum(raw) for v in raw]
    kls, recs = [], []
    for b in range(4):
        kls.append(sum(q * (math.log(q) - math.log(g)) for q, g in zip(p[b].tolist(), prior) if q > 0))
        recs.append(sum(q * loss for q, loss in zip(p[b].tolist(), step_losses[b].tolist())))
    assert math.isclose(float(parts.kl), sum(kls) / 4, rel_tol=1e-9)
    assert math.isclose(float(parts.reconstruction), sum(recs) / 4, rel_tol=1e-9)
    assert math.isclose(float(parts.total), sum(recs) / 4 + beta * sum(kls) / 4, rel_tol=1e-9)


def test_pondernet_gradients_stay_finite_with_saturated_halting():
    lambdas = torch.tensor([[0.3, 1.0, 0.5, 0.2]], requires_grad=True)
    parts = pondernet_loss(torch.rand(1, 4), pondernet_halting_distribution(lambdas), 0.2, 0.01)
    parts.total.backward()
    assert torch.isfinite(lambdas.grad).all()


def test_sample_halting_step_follows_the_halting_distribution():
    lambdas = torch.tensor([0.1, 0.5, 0.3, 0.7]).expand(40000, 4)
    gen = torch.Generator().manual_seed(0)
    halt = sample_halting_step(lambdas, gen)
    freq = torch.bincount(halt, minlength=4).double() / 40000
    assert torch.allclose(freq, pondernet_halting_distribution(lambdas[:1]).double()[0], atol=0.01)


def test_pondernet_parity_net_shapes_and_prediction():
    x, y, _ = parity_batch(8, n_elems=5, generator=1)
    net = PonderNetParityNet(n_elems=5, hidden=16, max_steps=6)
    result = net(x)
    assert result.logits.shape == (8, 6, 2) and result.lambdas.shape == (8, 6)
    assert torch.allclose(result.halting_dist.sum(-1), torch.ones(8), atol=1e-6)
    assert pondernet_step_losses(result, y).shape == (8, 6)
    logits, steps = net.predict(x, torch.Generator().manual_seed(0))
    assert logits.shape == (8, 2) and bool(((steps >= 1) & (steps <= 6)).all())


def test_act_learns_short_parity_of_varying_length():
    """ACT on 4-element parity (1..4 non-zeros): well above chance on held-out vectors within seconds."""
    run = run_recipe(
        "act-parity",
        "smoke",
        overrides={"n_elems": 4, "hidden": 32, "max_steps": 6, "batch_size": 64, "train.steps": 400},
    )
    x, y, _ = parity_batch(1000, n_elems=4, generator=12345)
    with torch.no_grad():
        result = run.model(x)
    accuracy = float((result.output.argmax(-1) == y).float().mean())
    assert accuracy > 0.8, f"ACT parity accuracy {accuracy:.3f}"
    assert int(result.n_steps.max()) <= 6
