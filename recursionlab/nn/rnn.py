"""The Elman recurrent cell, written by hand, with backpropagation through time (lessons 01 and 02).

The cell (Elman 1990) reads one input per step and updates its hidden state with the *same* weights each step:

    a_t = W_xh x_t + W_hh h_{t-1} + b          (pre-activation)
    h_t = phi(a_t)                               (phi = tanh by default; relu and linear for the lessons)

Unrolled over T steps it is a T-layer network whose layers share weights. Backpropagation through time (BPTT)
is ordinary backpropagation through that unrolled graph; :func:`elman_backward` writes it out:

    dL/dh_t = g_t + W_hh^T dL/da_{t+1}            (g_t: the loss's direct gradient at step t)
    dL/da_t = dL/dh_t * phi'(a_t)
    dL/dW_xh = sum_t dL/da_t x_t^T,  dL/dW_hh = sum_t dL/da_t h_{t-1}^T,  dL/db = sum_t dL/da_t

Truncated BPTT cuts the gradient path every ``k`` steps: the state that enters a window edge is treated as a
constant (``detach``). The forward values do not change; only the gradients do. Where the edges sit matters:
``align="start"`` puts them at ``k, 2k, ...`` (windows counted from the first step, as a stream is cut), and
``align="end"`` at ``T-k, T-2k, ...`` (windows counted back from the last step, where a loss on the final step
sits): with a loss only at the end, the start-aligned last window can be as short as one step whatever ``k`` is.

The gradient that reaches ``h_t`` from ``h_T`` is a product of per-step Jacobians
``dh_T/dh_t = J_T J_{T-1} ... J_{t+1}`` with ``J_s = diag(phi'(a_s)) W_hh``; its norm shrinks or grows roughly
like ``rho(W_hh)^(T-t)`` (Bengio et al. 1994; Pascanu et al. 2013): :func:`jacobian_product_norms` measures it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = [
    "NONLINEARITIES",
    "ElmanCache",
    "ElmanRNN",
    "detach_state",
    "elman_backward",
    "elman_forward",
    "elman_step",
    "jacobian_product_norms",
    "lstm_forward",
    "matrix_with_spectral_radius",
    "run_truncated",
    "spectral_radius",
    "truncation_edges",
]

NONLINEARITIES: tuple[str, ...] = ("tanh", "relu", "linear")
TRUNCATION_ALIGNS: tuple[str, ...] = ("start", "end")


def _check_nonlinearity(nonlinearity: str) -> str:
    if nonlinearity not in NONLINEARITIES:
        raise ValueError(f"unknown nonlinearity {nonlinearity!r}; allowed: {', '.join(NONLINEARITIES)}")
    return nonlinearity


def _check_truncation(truncation: int | None) -> int | None:
    if truncation is None:
        return None
    if isinstance(truncation, bool) or not isinstance(truncation, int) or truncation < 1:
        raise ValueError(f"truncation must be a positive int (steps per gradient window) or None, got {truncation!r}")
    return truncation


def _check_align(align: str) -> str:
    if align not in TRUNCATION_ALIGNS:
        raise ValueError(f"unknown window alignment {align!r}; allowed: {', '.join(TRUNCATION_ALIGNS)}")
    return align


def truncation_edges(seq_len: int, truncation: int | None, align: str = "start") -> list[int]:
    """The steps ``t`` (0-based, ``0 < t < seq_len``) whose incoming state ``h_{t-1}`` truncated BPTT detaches.

    ``align="start"``: ``t = k, 2k, ...`` (windows counted from the first step); ``align="end"``:
    ``t = T-k, T-2k, ...`` (windows counted back from the last step, so a loss at the last step sees a full
    window of ``k`` steps). ``truncation=None`` or ``k >= T``: no edges (full BPTT).
    """
    truncation, align = _check_truncation(truncation), _check_align(align)
    if truncation is None:
        return []
    if align == "start":
        return list(range(truncation, seq_len, truncation))
    return sorted(range(seq_len - truncation, 0, -truncation))


def _activate(pre: torch.Tensor, nonlinearity: str) -> torch.Tensor:
    if nonlinearity == "tanh":
        return torch.tanh(pre)
    if nonlinearity == "relu":
        return torch.relu(pre)
    return pre


def _derivative_from_output(h: torch.Tensor, nonlinearity: str) -> torch.Tensor:
    """phi'(a) written in terms of h = phi(a), so the backward needs only the cached states."""
    if nonlinearity == "tanh":
        return 1.0 - h * h
    if nonlinearity == "relu":
        return (h > 0).to(h.dtype)
    return torch.ones_like(h)


def elman_step(
    x_t: torch.Tensor,
    h_prev: torch.Tensor,
    W_xh: torch.Tensor,
    W_hh: torch.Tensor,
    b: torch.Tensor,
    nonlinearity: str = "tanh",
) -> torch.Tensor:
    """One Elman step ``h_t = phi(W_xh x_t + W_hh h_{t-1} + b)``.

    Shapes: ``x_t (B, D)``, ``h_prev (B, H)``, ``W_xh (H, D)``, ``W_hh (H, H)``, ``b (H,)`` -> ``h_t (B, H)``.
    """
    return _activate(x_t @ W_xh.T + h_prev @ W_hh.T + b, nonlinearity)


@dataclass
class ElmanCache:
    """What the backward pass needs from the forward: inputs, initial state, every hidden state, the weights."""

    x: torch.Tensor  # (B, T, D)
    h0: torch.Tensor  # (B, H)
    hs: torch.Tensor  # (B, T, H), hs[:, t] is the state after reading x[:, t]
    W_xh: torch.Tensor  # (H, D)
    W_hh: torch.Tensor  # (H, H)
    nonlinearity: str


def _check_shapes(x: torch.Tensor, h0: torch.Tensor, W_xh: torch.Tensor, W_hh: torch.Tensor, b: torch.Tensor):
    if x.dim() != 3:
        raise ValueError(f"x must have shape (B, T, D), got {tuple(x.shape)}")
    B, T, D = x.shape
    if T < 1:
        raise ValueError("x must hold at least one time step (T >= 1), got T=0")
    H = W_hh.shape[0]
    expected = {"W_xh": (H, D), "W_hh": (H, H), "b": (H,), "h0": (B, H)}
    for name, tensor in (("W_xh", W_xh), ("W_hh", W_hh), ("b", b), ("h0", h0)):
        if tuple(tensor.shape) != expected[name]:
            raise ValueError(
                f"{name} has shape {tuple(tensor.shape)}, expected {expected[name]} for x of shape {(B, T, D)} "
                f"and hidden size {H}"
            )


def elman_forward(
    x: torch.Tensor,
    h0: torch.Tensor,
    W_xh: torch.Tensor,
    W_hh: torch.Tensor,
    b: torch.Tensor,
    nonlinearity: str = "tanh",
) -> tuple[torch.Tensor, ElmanCache]:
    """Unroll the Elman cell over a sequence and keep the cache for :func:`elman_backward`.

    Args:
        x: (B, T, D) inputs; h0: (B, H) initial state; W_xh: (H, D); W_hh: (H, H); b: (H,).
        nonlinearity: ``"tanh"`` (Elman's cell), ``"relu"`` or ``"linear"``.

    Returns:
        ``hs``: (B, T, H) every hidden state (``hs[:, -1]`` is the final one) and the :class:`ElmanCache`.
        Written with differentiable torch ops, so autograd can also differentiate it.
    """
    _check_nonlinearity(nonlinearity)
    _check_shapes(x, h0, W_xh, W_hh, b)
    h = h0
    states = []
    for t in range(x.shape[1]):
        h = elman_step(x[:, t], h, W_xh, W_hh, b, nonlinearity)  # the same weights at every step
        states.append(h)
    hs = torch.stack(states, dim=1)
    return hs, ElmanCache(x, h0, hs, W_xh, W_hh, nonlinearity)


def elman_backward(
    grad_hs: torch.Tensor, cache: ElmanCache, truncation: int | None = None, align: str = "start"
) -> dict[str, torch.Tensor]:
    """Backpropagation through time for :func:`elman_forward`, by hand.

    Args:
        grad_hs: (B, T, H) the loss's direct gradient dL/dh_t at every step (zeros where a step has no loss;
            a loss on the final state only puts its gradient in ``grad_hs[:, -1]``).
        cache: from :func:`elman_forward`.
        truncation: ``k`` for truncated BPTT (the state entering each window edge is detached), or ``None``
            for full BPTT.
        align: where the window edges sit (:func:`truncation_edges`): ``"start"`` (``k, 2k, ...``) or ``"end"``
            (``T-k, T-2k, ...``, windows aligned to a loss at the last step).

    Returns:
        dict with ``W_xh (H, D)``, ``W_hh (H, H)``, ``b (H,)``, ``x (B, T, D)``, ``h0 (B, H)``: the gradients of
        the loss, equal to autograd's on the same graph (with ``detach`` at the window edges when truncated);
        and ``hs (B, T, H)``: the *total* gradient dL/dh_t that reached each state through every later step.
    """
    truncation = _check_truncation(truncation)
    x, hs, W_xh, W_hh = cache.x, cache.hs, cache.W_xh, cache.W_hh
    edges = set(truncation_edges(x.shape[1], truncation, align))
    if tuple(grad_hs.shape) != tuple(hs.shape):
        raise ValueError(f"grad_hs has shape {tuple(grad_hs.shape)}, expected the states' shape {tuple(hs.shape)}")
    grad_W_xh = torch.zeros_like(W_xh)
    grad_W_hh = torch.zeros_like(W_hh)
    grad_b = torch.zeros(W_hh.shape[0], dtype=hs.dtype, device=hs.device)
    grad_x = torch.zeros_like(x)
    grad_states = torch.zeros_like(hs)
    grad_h_next = torch.zeros_like(cache.h0)  # dL/dh_t arriving from step t+1
    for t in reversed(range(x.shape[1])):
        h_prev = hs[:, t - 1] if t > 0 else cache.h0
        grad_h = grad_hs[:, t] + grad_h_next  # the loss at t plus everything later that depends on h_t
        grad_states[:, t] = grad_h
        grad_a = grad_h * _derivative_from_output(hs[:, t], cache.nonlinearity)
        grad_W_xh += grad_a.T @ x[:, t]  # shared weights: the gradients of all steps add up
        grad_W_hh += grad_a.T @ h_prev
        grad_b += grad_a.sum(dim=0)
        grad_x[:, t] = grad_a @ W_xh
        grad_h_next = grad_a @ W_hh
        if t in edges:
            grad_h_next = torch.zeros_like(grad_h_next)  # h_{t-1} entered this window detached
    return {"W_xh": grad_W_xh, "W_hh": grad_W_hh, "b": grad_b, "x": grad_x, "h0": grad_h_next, "hs": grad_states}


class _ElmanBPTT(torch.autograd.Function):
    """Plugs the hand-written backward into autograd (used by ``ElmanRNN(manual_backward=True)``)."""

    @staticmethod
    def forward(ctx, x, h0, W_xh, W_hh, b, nonlinearity, truncation):
        with torch.autocast(device_type=x.device.type, enabled=False):
            dtype = W_hh.dtype
            hs, cache = elman_forward(x.to(dtype), h0.to(dtype), W_xh, W_hh, b, nonlinearity)
        ctx.save_for_backward(cache.x, cache.h0, hs, W_xh, W_hh)
        ctx.nonlinearity, ctx.truncation, ctx.in_dtypes = nonlinearity, truncation, (x.dtype, h0.dtype)
        return hs

    @staticmethod
    def backward(ctx, grad_hs):
        x, h0, hs, W_xh, W_hh = ctx.saved_tensors
        cache = ElmanCache(x, h0, hs, W_xh, W_hh, ctx.nonlinearity)
        grads = elman_backward(grad_hs.to(hs.dtype), cache, ctx.truncation)
        x_dtype, h0_dtype = ctx.in_dtypes
        return (grads["x"].to(x_dtype), grads["h0"].to(h0_dtype), grads["W_xh"], grads["W_hh"], grads["b"],
                None, None)


class ElmanRNN(nn.Module):
    """A one-layer Elman RNN over whole sequences, with the interface of ``torch.nn.RNN(batch_first=True)``.

    ``forward(x (B, T, D), h0 (B, H) | None) -> (hs (B, T, H), h_T (B, H))``.

    Args:
        input_size: D; hidden_size: H; nonlinearity: ``"tanh"``, ``"relu"`` or ``"linear"``.
        manual_backward: use the hand-written BPTT of :func:`elman_backward` instead of autograd (same numbers).
        truncation: with ``manual_backward``, the truncated-BPTT window ``k`` (``None``: full BPTT).
            With autograd, truncate by running the layer through :func:`run_truncated` instead.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        nonlinearity: str = "tanh",
        manual_backward: bool = False,
        truncation: int | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.input_size, self.hidden_size = input_size, hidden_size
        self.nonlinearity = _check_nonlinearity(nonlinearity)
        self.manual_backward = bool(manual_backward)
        self.truncation = _check_truncation(truncation)
        if self.truncation is not None and not self.manual_backward:
            raise ValueError("truncation here needs manual_backward=True; with autograd use run_truncated(...)")
        self.W_xh = nn.Parameter(torch.empty(hidden_size, input_size))
        self.W_hh = nn.Parameter(torch.empty(hidden_size, hidden_size))
        self.b = nn.Parameter(torch.empty(hidden_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform(-1/sqrt(H), 1/sqrt(H)) for every weight, as ``torch.nn.RNN`` does."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in (self.W_xh, self.W_hh, self.b):
            nn.init.uniform_(p, -bound, bound)

    def forward(self, x: torch.Tensor, h0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ValueError(f"x must have shape (B, T, {self.input_size}), got {tuple(x.shape)}")
        if h0 is None:
            h0 = x.new_zeros(x.shape[0], self.hidden_size)
        if self.manual_backward:
            hs = _ElmanBPTT.apply(x, h0, self.W_xh, self.W_hh, self.b, self.nonlinearity, self.truncation)
        else:
            hs, _ = elman_forward(x, h0.to(x.dtype), self.W_xh, self.W_hh, self.b, self.nonlinearity)
        return hs, hs[:, -1]

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, nonlinearity={self.nonlinearity!r}"


def detach_state(state: Any) -> Any:
    """Detach a recurrent state: a tensor, or a tuple/list of tensors (an LSTM's ``(h, c)``)."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return state.detach()
    if isinstance(state, (tuple, list)):
        return type(state)(detach_state(s) for s in state)
    raise TypeError(f"a recurrent state must be a tensor or a tuple of tensors, got {type(state).__name__}")


def run_truncated(
    layer: nn.Module, x: torch.Tensor, state: Any = None, truncation: int | None = None, align: str = "start"
) -> tuple[torch.Tensor, Any]:
    """Run a sequence layer ``(x (B, t, D), state) -> (outputs (B, t, H), state)`` in windows of ``truncation``
    steps, detaching the state between windows (truncated BPTT). ``None`` runs the whole sequence at once.
    ``align`` places the window edges (:func:`truncation_edges`): ``"start"`` counts windows from the first step,
    ``"end"`` back from the last (use it when the loss sits at the end of the sequence).

    Works for :class:`ElmanRNN` and ``torch.nn.RNN/GRU/LSTM(batch_first=True)``. Returns ``(outputs (B, T, H),
    final state)``; the forward values equal the untruncated ones.
    """
    truncation = _check_truncation(truncation)
    if x.dim() < 2:
        raise ValueError(f"x must have shape (B, T, ...), got {tuple(x.shape)}")
    seq_len = x.shape[1]
    edges = truncation_edges(seq_len, truncation, align)
    if not edges:
        return layer(x, state)
    outputs = []
    for start, stop in zip([0, *edges], [*edges, seq_len]):
        if start > 0:
            state = detach_state(state)  # no gradient flows into the previous window
        out, state = layer(x[:, start:stop], state)
        outputs.append(out)
    return torch.cat(outputs, dim=1), state


def lstm_forward(
    x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor, W_ih: torch.Tensor, W_hh: torch.Tensor, b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """An LSTM layer written out (Hochreiter & Schmidhuber 1997, with a forget gate), in ``torch.nn.LSTM``'s layout.

    Per step: ``[i, f, g, o] = split(W_ih x_t + W_hh h_{t-1} + b, 4)``; ``i, f, o`` through a sigmoid, ``g``
    through tanh; ``c_t = f * c_{t-1} + i * g``; ``h_t = o * tanh(c_t)``.

    Shapes: ``x (B, T, D)``, ``h0, c0 (B, H)``, ``W_ih (4H, D)``, ``W_hh (4H, H)``, ``b (4H,)`` (torch's two bias
    vectors summed). Returns ``hs (B, T, H)``, ``cs (B, T, H)`` and ``gates (B, T, 4H)`` (the activated
    ``i, f, g, o``), everything a hand-written backward pass needs.
    """
    H = h0.shape[-1]
    if W_ih.shape[0] != 4 * H or W_hh.shape != (4 * H, H) or b.shape != (4 * H,) or c0.shape != h0.shape:
        raise ValueError(f"need W_ih (4H, D), W_hh (4H, H), b (4H,), c0 like h0 (B, H) with H={H}; got "
                         f"{tuple(W_ih.shape)}, {tuple(W_hh.shape)}, {tuple(b.shape)}, {tuple(c0.shape)}")
    h, c, hs, cs, gates = h0, c0, [], [], []
    for t in range(x.shape[1]):
        i, f, g, o = (x[:, t] @ W_ih.T + h @ W_hh.T + b).split(H, dim=-1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c = f * c + i * g  # the cell state: an additive path for the gradient, scaled by the forget gate
        h = o * torch.tanh(c)
        hs.append(h)
        cs.append(c)
        gates.append(torch.cat([i, f, g, o], dim=-1))
    return torch.stack(hs, dim=1), torch.stack(cs, dim=1), torch.stack(gates, dim=1)


def spectral_radius(W: torch.Tensor) -> float:
    """The largest absolute eigenvalue of a square matrix ``W (H, H)``."""
    if W.dim() != 2 or W.shape[0] != W.shape[1]:
        raise ValueError(f"spectral_radius needs a square matrix, got shape {tuple(W.shape)}")
    return float(torch.linalg.eigvals(W.detach().double()).abs().max())


def matrix_with_spectral_radius(
    hidden_size: int, radius: float, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """A random Gaussian ``(H, H)`` matrix rescaled so its spectral radius is exactly ``radius`` (>= 0)."""
    if isinstance(hidden_size, bool) or not isinstance(hidden_size, int) or hidden_size < 1:
        raise ValueError(f"hidden_size must be a positive int, got {hidden_size!r}")
    if not radius >= 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    W = torch.randn(hidden_size, hidden_size, generator=generator, dtype=torch.float64) / math.sqrt(hidden_size)
    return (W * (radius / spectral_radius(W))).to(dtype)


def jacobian_product_norms(
    W_hh: torch.Tensor, hs: torch.Tensor, nonlinearity: str = "tanh", ord: int | str = 2
) -> torch.Tensor:
    """Norms of ``dh_T / dh_{T-k}`` for ``k = 0..T``: how much of a gradient at the last state reaches k steps back.

    ``dh_T/dh_{T-k} = J_T J_{T-1} ... J_{T-k+1}`` with ``J_s = diag(phi'(a_s)) W_hh`` (``k = 0``: the identity).

    Args:
        W_hh: (H, H); hs: (B, T, H) or (T, H) hidden states from :func:`elman_forward` (``hs[:, s-1]`` is h_s);
        nonlinearity: the cell's; ord: matrix norm (2: spectral, ``"fro"``: Frobenius).

    Returns:
        (B, T+1) (or (T+1,) for unbatched ``hs``) norms; column ``k`` is ``||dh_T/dh_{T-k}||``.
    """
    _check_nonlinearity(nonlinearity)
    unbatched = hs.dim() == 2
    if unbatched:
        hs = hs.unsqueeze(0)
    if hs.dim() != 3 or hs.shape[-1] != W_hh.shape[0] or W_hh.shape[0] != W_hh.shape[1]:
        raise ValueError(f"need W_hh (H, H) and hs (B, T, H); got {tuple(W_hh.shape)} and {tuple(hs.shape)}")
    B, T, H = hs.shape
    slopes = _derivative_from_output(hs.detach(), nonlinearity)  # (B, T, H), phi'(a_s)
    W = W_hh.detach().to(hs.dtype)
    product = torch.eye(H, dtype=hs.dtype, device=hs.device).expand(B, H, H)
    norms = [torch.linalg.matrix_norm(product, ord=ord)]
    for k in range(1, T + 1):
        step_jacobian = slopes[:, T - k, :, None] * W  # J for state h_{T-k+1}: diag(phi') W_hh, (B, H, H)
        product = product @ step_jacobian
        norms.append(torch.linalg.matrix_norm(product, ord=ord))
    out = torch.stack(norms, dim=1)
    return out[0] if unbatched else out
