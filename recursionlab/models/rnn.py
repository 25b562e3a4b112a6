"""Recurrent sequence models for lessons 01 and 02: classifiers, regressors and a character language model.

Every model is the same three pieces, read top to bottom:

    x_t  -> one-hot (token inputs) or as is (float inputs)
    h_t  = cell(x_t, h_{t-1})        cell in {"elman" (hand-written), "rnn" (torch), "gru", "lstm"}
    y    = W_hy h_T + b_y            (one answer per sequence)   or   y_t = W_hy h_t + b_y (one per step)

Gated cells (Cho et al. 2014 GRU; Hochreiter & Schmidhuber 1997 LSTM) carry more weights per hidden unit (3 and
4 blocks instead of 1), so a fair comparison matches the *parameter count*, not the hidden size:
:func:`matched_hidden_size` finds the hidden size that does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from recursionlab.nn.rnn import (
    ElmanRNN,
    detach_state,
    elman_backward,
    elman_forward,
    run_truncated,
    truncation_edges,
)

__all__ = [
    "CELLS",
    "CharRNN",
    "RNNClassifier",
    "RNNRegressor",
    "count_parameters",
    "make_recurrent_layer",
    "matched_hidden_size",
    "model_parameter_count",
    "recurrent_layer_parameter_count",
    "state_gradient_norms",
]

CELLS: tuple[str, ...] = ("elman", "rnn", "gru", "lstm")
_WEIGHT_BLOCKS = {"elman": 1, "rnn": 1, "gru": 3, "lstm": 4}  # (H, D) + (H, H) blocks per layer


def _check_cell(cell: str) -> str:
    if cell not in CELLS:
        raise ValueError(f"unknown cell {cell!r}; allowed: {', '.join(CELLS)}")
    return cell


def _check_positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def make_recurrent_layer(cell: str, input_size: int, hidden_size: int) -> nn.Module:
    """A one-layer recurrent module ``(x (B, T, D), state | None) -> (hs (B, T, H), state)``.

    ``"elman"`` is :class:`recursionlab.nn.rnn.ElmanRNN` (the hand-written cell); ``"rnn"``, ``"gru"`` and
    ``"lstm"`` are ``torch.nn.RNN/GRU/LSTM(batch_first=True)`` (fast fused kernels).
    """
    _check_cell(cell)
    _check_positive("input_size", input_size)
    _check_positive("hidden_size", hidden_size)
    if cell == "elman":
        return ElmanRNN(input_size, hidden_size)
    module = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[cell]
    return module(input_size, hidden_size, batch_first=True)


def recurrent_layer_parameter_count(cell: str, input_size: int, hidden_size: int) -> int:
    """Parameters of :func:`make_recurrent_layer`: ``blocks * (H*D + H*H + biases)``.

    torch's cells keep two bias vectors per block (``b_ih`` and ``b_hh``); the hand-written Elman cell keeps one.
    """
    _check_cell(cell)
    blocks, D, H = _WEIGHT_BLOCKS[cell], input_size, hidden_size
    n_biases = 1 if cell == "elman" else 2
    return blocks * (H * D + H * H + n_biases * H)


def model_parameter_count(cell: str, input_size: int, hidden_size: int, output_size: int) -> int:
    """Parameters of a recurrent layer plus a linear readout ``H -> output_size`` (the models of this module)."""
    return recurrent_layer_parameter_count(cell, input_size, hidden_size) + hidden_size * output_size + output_size


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def matched_hidden_size(cell: str, target_params: int, input_size: int, output_size: int) -> int:
    """The hidden size whose model (:func:`model_parameter_count`) comes closest to ``target_params``.

    Example: the hidden size of a GRU with as many parameters as a plain RNN of hidden size 64::

        target = model_parameter_count("rnn", 2, 64, 1)
        matched_hidden_size("gru", target, input_size=2, output_size=1)
    """
    _check_positive("target_params", target_params)
    best, best_gap, H = 1, None, 1
    while True:
        count = model_parameter_count(cell, input_size, H, output_size)
        gap = abs(count - target_params)
        if best_gap is None or gap < best_gap:
            best, best_gap = H, gap
        if count > target_params:  # the count only grows with H
            return best
        H += 1


class _RecurrentModel(nn.Module):
    """Inputs -> recurrent layer -> linear readout; the shared body of the classifier and the regressor."""

    def __init__(
        self, input_size: int, hidden_size: int, output_size: int, cell: str, per_step: bool,
        truncation: int | None, truncation_align: str = "start",
    ) -> None:
        super().__init__()
        truncation_edges(1, None, truncation_align)  # validates the alignment
        self.truncation_align = truncation_align
        self.input_size = _check_positive("input_size", input_size)
        self.hidden_size = _check_positive("hidden_size", hidden_size)
        self.cell = _check_cell(cell)
        self.per_step = bool(per_step)
        self.truncation = None if truncation is None else _check_positive("truncation", truncation)
        self.rnn = make_recurrent_layer(cell, input_size, hidden_size)
        self.readout = nn.Linear(hidden_size, _check_positive("output_size", output_size))

    def encode_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """Token ids (B, T) int -> one-hot (B, T, input_size) float; float inputs (B, T, D) pass unchanged."""
        if not x.is_floating_point():
            if x.dim() != 2:
                raise ValueError(f"token inputs must have shape (B, T), got {tuple(x.shape)}")
            if x.numel() and (int(x.min()) < 0 or int(x.max()) >= self.input_size):
                raise ValueError(f"token ids must lie in 0..{self.input_size - 1}, got {int(x.min())}..{int(x.max())}")
            return F.one_hot(x, self.input_size).float()
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ValueError(f"float inputs must have shape (B, T, {self.input_size}), got {tuple(x.shape)}")
        return x

    def hidden_states(self, x: torch.Tensor) -> torch.Tensor:
        """Every hidden state: ``x (B, T) ids or (B, T, D) floats -> (B, T, H)``."""
        hs, _ = run_truncated(self.rnn, self.encode_inputs(x), None, self.truncation, self.truncation_align)
        return hs

    def read_out(self, hs: torch.Tensor) -> torch.Tensor:
        """Hidden states (B, T, H) -> outputs: every step's if ``per_step`` (B, T, O), else the last's (B, O)."""
        return self.readout(hs if self.per_step else hs[:, -1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.read_out(self.hidden_states(x))


class RNNClassifier(_RecurrentModel):
    """A recurrent classifier: ``x (B, T) ids or (B, T, D) floats -> logits (B, C)`` or ``(B, T, C)`` if per_step.

    Args:
        input_size: D (or the input vocabulary size for token ids, which are one-hot encoded).
        hidden_size: H; n_classes: C; cell: one of :data:`CELLS`.
        per_step: classify every step (copy task, running parity) instead of only the last.
        truncation: train with truncated BPTT in windows of this many steps (``None``: full BPTT).
        truncation_align: ``"start"`` (windows counted from the first step) or ``"end"`` (counted back from the
            last step, aligned to a loss at the end of the sequence); see :func:`recursionlab.nn.rnn.truncation_edges`.
    """

    def __init__(
        self, input_size: int, hidden_size: int, n_classes: int, cell: str = "gru", per_step: bool = False,
        truncation: int | None = None, truncation_align: str = "start",
    ) -> None:
        super().__init__(input_size, hidden_size, n_classes, cell, per_step, truncation, truncation_align)


class RNNRegressor(_RecurrentModel):
    """A recurrent regressor on the last state: ``x (B, T, D) -> y (B,)`` (or ``(B, n_outputs)`` if > 1).

    Args: as :class:`RNNClassifier`, with ``n_outputs`` real outputs.
    """

    def __init__(
        self, input_size: int, hidden_size: int, n_outputs: int = 1, cell: str = "gru",
        truncation: int | None = None, truncation_align: str = "start",
    ) -> None:
        super().__init__(input_size, hidden_size, n_outputs, cell, False, truncation, truncation_align)

    def read_out(self, hs: torch.Tensor) -> torch.Tensor:
        out = super().read_out(hs)
        return out.squeeze(-1) if out.shape[-1] == 1 else out


class CharRNN(_RecurrentModel):
    """A character-level language model: ``ids (B, T) -> next-character logits (B, T, V)``.

    ``forward_with_state(ids, state)`` also returns the recurrent state so :meth:`sample` can continue a text
    one character at a time.
    """

    def __init__(self, vocab_size: int, hidden_size: int, cell: str = "gru", truncation: int | None = None) -> None:
        super().__init__(vocab_size, hidden_size, vocab_size, cell, True, truncation)
        self.vocab_size = vocab_size

    def forward_with_state(self, ids: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        """``ids (B, T)``, state -> (logits (B, T, V), new state)."""
        hs, state = run_truncated(self.rnn, self.encode_inputs(ids), state, self.truncation)
        return self.readout(hs), state

    @torch.no_grad()
    def sample(
        self,
        prompt: torch.Tensor,
        n_new: int,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Continue ``prompt`` (T0,) ids by ``n_new`` characters drawn from softmax(logits / temperature).

        Returns (T0 + n_new,) int64 ids on the CPU (decode them with ``CharVocab.decode``). ``temperature`` -> 0
        approaches greedy decoding; > 1 makes the text more random.
        """
        if prompt.dim() != 1 or prompt.numel() == 0 or prompt.is_floating_point():
            raise ValueError(f"prompt must be a non-empty 1-D tensor of ids, got shape {tuple(prompt.shape)}")
        if isinstance(n_new, bool) or not isinstance(n_new, int) or n_new < 0:
            raise ValueError(f"n_new must be an int >= 0, got {n_new!r}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        out = prompt.detach().cpu().tolist()
        logits, state = self.forward_with_state(prompt.to(device)[None], None)
        for _ in range(n_new):
            probs = torch.softmax(logits[0, -1].float().cpu() / temperature, dim=-1)
            next_id = int(torch.multinomial(probs, 1, generator=generator))
            out.append(next_id)
            logits, state = self.forward_with_state(torch.tensor([[next_id]], device=device), state)
        self.train(was_training)
        return torch.tensor(out, dtype=torch.long)


def state_gradient_norms(
    model: RNNClassifier | RNNRegressor, x: torch.Tensor, criterion: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """How much gradient reaches each hidden state: the batch mean of ``||dL/dh_t||`` for ``t = 1..T``.

    For ``cell="elman"`` it is measured with the hand-written BPTT (:func:`recursionlab.nn.rnn.elman_backward`),
    which hands back the total gradient at every state on the way. For the torch cells (``"rnn"``, ``"gru"``,
    ``"lstm"``) the layer is run one step at a time and autograd gives ``dL/dh_t`` at every step's output (for an
    LSTM: its output ``h_t``, with the cell state carried along). Both honour the model's truncation.
    ``criterion(outputs) -> scalar loss`` closes over the targets, e.g. ``lambda out: F.mse_loss(out, y)``.
    Returns (T,) float; ``x`` as in forward.
    """
    cell = getattr(model, "cell", None)
    if cell not in CELLS:
        raise ValueError(f"state_gradient_norms needs a recurrent model with a cell in {CELLS}, got {cell!r}")
    rnn = model.rnn
    inputs = model.encode_inputs(x)
    if cell != "elman":
        edges = set(truncation_edges(inputs.shape[1], model.truncation, model.truncation_align))
        with torch.enable_grad():
            state, states = None, []
            for t in range(inputs.shape[1]):
                if t in edges:
                    state = detach_state(state)  # the same cut as training with truncated BPTT
                out, state = rnn(inputs[:, t : t + 1], state)
                h = out[:, 0]
                h.retain_grad()
                # feed h_t itself into the next step, so that h.grad is the TOTAL dL/dh_t (direct + later steps)
                state = (h[None], state[1]) if isinstance(state, tuple) else h[None]
                states.append(h)
            model.zero_grad(set_to_none=True)
            criterion(model.read_out(torch.stack(states, dim=1))).backward()
        model.zero_grad(set_to_none=True)
        return torch.stack([s.grad for s in states], dim=1).detach().norm(dim=-1).mean(dim=0)
    with torch.no_grad():
        h0 = inputs.new_zeros(inputs.shape[0], rnn.hidden_size)
        hs, cache = elman_forward(inputs, h0, rnn.W_xh, rnn.W_hh, rnn.b, rnn.nonlinearity)
    with torch.enable_grad():
        states = hs.detach().requires_grad_()
        (direct,) = torch.autograd.grad(criterion(model.read_out(states)), states)  # dL/dh_t through the readout
    with torch.no_grad():
        total = elman_backward(direct, cache, model.truncation, model.truncation_align)["hs"]  # + all later steps
    return total.norm(dim=-1).mean(dim=0)
