"""torch.compile readiness on the CPU: one supervision step (forward + loss + backward) of HRM, TRM, the
recurrent-depth core and the MoR block is captured by dynamo as ONE graph (``fullgraph=True`` fails on any
graph break) and the compiled step's loss and gradients equal eager.

The default tests use ``backend="aot_eager"``: dynamo captures and AOTAutograd traces forward and backward
exactly as for inductor, but runs the traced graph with eager kernels, so a graph break is still caught
while the test costs seconds, not a C++ compilation. ``test_inductor_compiles_trm_step`` runs the real
inductor backend on the TRM step; it takes ~40 CPU-seconds of C++ compilation (2 minutes on a shared 2-core
machine), too much for ``make test``, so it runs only with ``RECURSIONLAB_INDUCTOR=1`` (``make gpu-check``
compiles with inductor on the GPU).

What is deliberately outside the compiled region, and why:

* the *metrics* of :func:`recursionlab.models.hrm.act_loss` are Python floats (``float(tensor)`` reads a value
  back for logging): a graph break by design, so the compiled step returns the loss tensor of the same
  formula (:func:`_act_loss_tensor`) and the test checks it equals ``act_loss(...).loss``;
* the recurrent-depth initial state with ``noise_seed`` builds a seeded ``torch.Generator``, which cannot be
  created inside a compiled region: ``s_0`` is drawn before the step and passed in (it is noise, not compute);
* the token-id range checks of the language models (``int(ids.min())`` on CPU tensors) read values back too:
  the recurrent-depth and MoR steps start from the embedded tokens, which is where the recursion begins.
"""

import os
import time

import pytest
import torch
import torch.nn.functional as F

from recursionlab.models.hrm import HRM, HRMConfig, act_loss, halting_bce
from recursionlab.models.mor import MixtureOfRecursionsLM, MoRConfig
from recursionlab.models.recurrent_depth import RecurrentDepthConfig, RecurrentDepthModel
from recursionlab.models.trm import TRM, TRMConfig
from recursionlab.nn.losses import stablemax_cross_entropy

COMPILE_SECONDS: dict[str, float] = {}


def _act_loss_tensor(out, q_loss_weight: float = 0.5) -> torch.Tensor:
    """The loss of :func:`act_loss` without its logging metrics (which read values back to Python)."""
    labels = out.labels
    divisor = (labels != -100).sum(-1).clamp_min(1)
    lm = (stablemax_cross_entropy(out.logits, labels, reduction="none").sum(-1) / divisor).sum()
    total = lm + q_loss_weight * halting_bce(out.logits, labels, out.q_halt_logits)
    if out.target_q_continue is not None:
        total = total + q_loss_weight * F.binary_cross_entropy_with_logits(
            out.q_continue_logits, out.target_q_continue, reduction="sum"
        )
    return total / labels.shape[0]


def _compare(name: str, model: torch.nn.Module, step, *inputs, backend: str = "aot_eager") -> None:
    """Run ``step(*inputs) -> loss`` eagerly and compiled (fullgraph); equal loss and gradients."""
    grads = []
    losses = []
    for compiled in (False, True):
        torch.manual_seed(0)
        model.zero_grad(set_to_none=True)
        fn = torch.compile(step, fullgraph=True, backend=backend) if compiled else step
        start = time.perf_counter()
        loss = fn(*inputs)
        loss.backward()
        if compiled:
            COMPILE_SECONDS[name] = time.perf_counter() - start
        losses.append(loss.detach())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-6, atol=1e-7)
    assert grads[0] and grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-5, atol=1e-7, msg=f"{name}: grad of {n}")


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _puzzle_batch(vocab: int = 6, seq_len: int = 16, batch: int = 4):
    g = torch.Generator().manual_seed(1)
    inputs = torch.randint(1, vocab, (batch, seq_len), generator=g)
    labels = torch.randint(1, vocab, (batch, seq_len), generator=g)
    return inputs, labels, torch.zeros(batch, dtype=torch.long)


@pytest.mark.parametrize("kind", ["hrm", "trm"])
def test_hrm_trm_supervision_step_compiles_to_one_graph(kind, backend="aot_eager"):
    shape = dict(vocab_size=6, seq_len=16, hidden=32, n_heads=2, ffn_multiple_of=16, halt_max_steps=3,
                 halt_exploration_prob=0.0, puzzle_emb_len=2 if kind == "trm" else 1)
    torch.manual_seed(0)
    if kind == "hrm":
        # HRM's q_continue_loss adds a second, no-grad segment for the Q target: inside the same graph
        model = HRM(HRMConfig(H_layers=1, L_layers=1, H_cycles=1, L_cycles=2, **shape))
    else:
        model = TRM(TRMConfig(L_layers=1, H_cycles=2, L_cycles=1, **shape))
    inputs, labels, ids = _puzzle_batch()

    def step(inputs, labels, ids):
        model.reset_carry()
        return _act_loss_tensor(model(inputs, labels, ids))

    model.reset_carry()
    assert torch.equal(act_loss(model(inputs, labels, ids)).loss, step(inputs, labels, ids))  # same formula
    _compare(kind, model, step, inputs, labels, ids, backend=backend)


def test_recurrent_depth_core_compiles_to_one_graph():
    torch.manual_seed(0)
    model = RecurrentDepthModel(RecurrentDepthConfig(vocab_size=12, dim=32, n_heads=2, mlp_inner=64,
                                                      max_positions=16, backprop_k=2))
    tokens = torch.randint(0, 12, (3, 10), generator=torch.Generator().manual_seed(2))
    positions = torch.arange(10)
    rope = model.rotary(positions)
    # s_0 is drawn outside: a seeded torch.Generator cannot be created inside a compiled region (graph break)
    state0 = model.initial_state(torch.zeros(3, 10, 32), positions, noise_seed=3)

    def step(tokens, state0):
        e = _embed(model, tokens, positions, rope)
        state = model.iterate(state0, e, rope, no_grad_steps=1, grad_steps=2)  # truncated backprop
        logits = model.decode(state, rope)
        return F.cross_entropy(logits.flatten(0, 1), tokens.flatten())

    _compare("recurrent-depth", model, step, tokens, state0)


def _embed(model: RecurrentDepthModel, tokens, positions, rope):
    # RecurrentDepthModel.embed minus its CPU range check (reads the token values back, see the docstring)
    x = model.embedding(tokens) * model.config.dim**0.5
    for blk in model.prelude:
        x = blk(x, rope=rope)
    return x


def test_mor_expert_choice_block_compiles_to_one_graph():
    torch.manual_seed(0)
    model = MixtureOfRecursionsLM(MoRConfig(vocab_size=12, dim=32, n_heads=2, n_layers=4, n_recursions=2,
                                            routing="expert", max_seq_len=16))
    model.train()
    ids = torch.randint(0, 12, (3, 10), generator=torch.Generator().manual_seed(4))
    pos = torch.arange(10).expand(3, 10)

    def step(ids):
        h = model.embed(ids)
        for i, unit in enumerate(model.prelude_units):
            h = model._run_units([unit], h, pos, torch.ones_like(pos, dtype=torch.bool), ("pre", i), None)
        h, aux, _, _, _ = model._expert_choice(h, pos, "topk", None)
        for i, unit in enumerate(model.coda_units):
            h = model._run_units([unit], h, pos, torch.ones_like(pos, dtype=torch.bool), ("post", i), None)
        logits = model.read_out(h)
        return F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten()) + aux

    _compare("mor", model, step, ids)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("RECURSIONLAB_INDUCTOR") != "1",
                    reason="~40 CPU-seconds of C++ compilation; set RECURSIONLAB_INDUCTOR=1")
def test_inductor_compiles_trm_step():
    test_hrm_trm_supervision_step_compiles_to_one_graph("trm", backend="inductor")
