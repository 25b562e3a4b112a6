"""Synthetic "latent reasoning" tasks where thinking longer (more recurrences) should help (lesson 09).

**Chain roots (parent pointers).** A sequence of ``num_nodes`` tokens describes a forest of disjoint chains. The
token at position ``i`` is the *position of node i's parent* (a root points to itself), and every parent sits to
the left of its child, so the task is causal: a left-to-right model can answer at every position. The target at
position ``i`` is the position of the root of ``i``'s chain. Finding it means following pointers: a node at depth
``d`` (``d`` hops from its root) needs ``d`` hops, or about ``log2 d`` rounds of pointer doubling, so harder
instances (longer chains) need more sequential computation -- exactly what a recurrent-depth model can buy at
test time by iterating its core more often.

Example with ``num_nodes = 6`` and chains (0, 2, 5) and (1, 3) and (4,)::

    position  0  1  2  3  4  5
    token     0  1  0  1  4  2     (parent positions)
    target    0  1  0  1  4  0     (root positions)
    depth     0  0  1  1  0  2

Every generator draws from an explicit ``torch.Generator`` (or an int seed), so a batch is a deterministic function
of its seed: the training engine's ``batch_fn(step)`` seeds with the step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = [
    "ChainBatch", "chain_roots", "chain_depths", "make_chain_batch", "make_spread_chain_batch", "follow_pointers",
    "chain_accuracy_by_depth",
]


@dataclass
class ChainBatch:
    """A batch of chain-root problems.

    tokens:  (B, N) long, parent position of every node (roots point to themselves), values in ``0..N-1``.
    targets: (B, N) long, root position of every node.
    depth:   (B, N) long, number of pointer hops from the node to its root (0 for a root).
    """

    tokens: torch.Tensor
    targets: torch.Tensor
    depth: torch.Tensor

    def to(self, device: torch.device | str) -> ChainBatch:
        """The same batch on ``device``."""
        return ChainBatch(self.tokens.to(device), self.targets.to(device), self.depth.to(device))


def _as_generator(generator: torch.Generator | int | None) -> torch.Generator:
    if generator is None:
        return torch.Generator().manual_seed(0)
    if isinstance(generator, bool) or not isinstance(generator, (int, torch.Generator)):
        raise TypeError(f"generator must be a torch.Generator, an int seed or None, got {type(generator).__name__}")
    if isinstance(generator, int):
        return torch.Generator().manual_seed(generator)
    return generator


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _check_pointers(parents: torch.Tensor) -> None:
    if parents.dtype not in (torch.int32, torch.int64) or parents.dim() != 2:
        raise ValueError(
            f"parents must be an integer tensor of shape (B, N), got {parents.dtype} {tuple(parents.shape)}"
        )
    n = parents.shape[1]
    pos = torch.arange(n, device=parents.device)
    if bool((parents < 0).any()) or bool((parents > pos).any()):
        raise ValueError(
            "every parent pointer must satisfy 0 <= parent[i] <= i (parents sit to the left; roots point to themselves)"
        )


def chain_roots(parents: torch.Tensor) -> torch.Tensor:
    """Root of every node by pointer doubling (the reference solver).

    parents: (B, N) long with ``0 <= parents[b, i] <= i``. Returns roots (B, N) long.
    ``ceil(log2 N)`` rounds of ``p <- p[p]`` reach every root, because each round doubles the hops covered.
    """
    _check_pointers(parents)
    p = parents.long()
    for _ in range(max(1, (parents.shape[1] - 1).bit_length())):
        p = torch.gather(p, 1, p)
    return p


def chain_depths(parents: torch.Tensor) -> torch.Tensor:
    """Number of hops from every node to its root. parents: (B, N) long -> depth (B, N) long."""
    _check_pointers(parents)
    p = parents.long()
    depth = torch.zeros_like(p)
    pos = torch.arange(p.shape[1], device=p.device).expand_as(p)
    # walk one hop at a time: a node still away from its root adds one hop per round
    cur = p.clone()
    prev = pos
    for _ in range(p.shape[1]):
        moving = cur != prev
        if not bool(moving.any()):
            break
        depth += moving.long()
        prev, cur = cur, torch.gather(p, 1, cur)
    return depth


def _check_chain_args(batch_size, num_nodes, max_chain, min_chain) -> tuple[int, int, int, int]:
    """Validated ``(batch_size, num_nodes, max_chain, min_chain)``: clear errors naming the bad value."""
    batch_size = _check_int("batch_size", batch_size, 1)
    num_nodes = _check_int("num_nodes", num_nodes, 2)
    max_chain = _check_int("max_chain", max_chain, 1)
    min_chain = _check_int("min_chain", min_chain, 1)
    if min_chain > max_chain or max_chain > num_nodes:
        raise ValueError(
            f"need 1 <= min_chain <= max_chain <= num_nodes, got min_chain={min_chain}, max_chain={max_chain}, "
            f"num_nodes={num_nodes}"
        )
    return batch_size, num_nodes, max_chain, min_chain


def make_chain_batch(
    batch_size: int,
    num_nodes: int = 32,
    max_chain: int = 8,
    min_chain: int = 1,
    generator: torch.Generator | int | None = None,
) -> ChainBatch:
    """A batch of random chain forests.

    For each example, chain lengths are drawn uniformly from ``min_chain..max_chain`` until the ``num_nodes``
    positions are used up (the last chain is cut to fit); a random permutation of the positions is split into
    those chains, each chain is sorted so that parents sit left of children, and each node points to its
    predecessor in its chain (the first node of a chain points to itself).

    Args:
        batch_size: B.
        num_nodes: N, the sequence length (and the vocabulary size: tokens are positions).
        max_chain, min_chain: range of chain lengths (in nodes); the deepest node of a chain of length L is
            ``L - 1`` hops from its root. ``max_chain`` may not exceed ``num_nodes``.
        generator: a ``torch.Generator`` or an int seed.

    Returns: a :class:`ChainBatch` of (B, N) long tensors.
    """
    batch_size, num_nodes, max_chain, min_chain = _check_chain_args(batch_size, num_nodes, max_chain, min_chain)
    g = _as_generator(generator)
    parents = torch.empty(batch_size, num_nodes, dtype=torch.long)
    # draw more lengths than can be needed, in one call, then cut where they fill the sequence
    lengths = torch.randint(min_chain, max_chain + 1, (batch_size, num_nodes), generator=g)
    perms = torch.argsort(torch.rand(batch_size, num_nodes, generator=g), dim=1)
    for b in range(batch_size):
        order = perms[b]
        start = 0
        for length in lengths[b].tolist():
            if start >= num_nodes:
                break
            chain = order[start : start + length].sort().values
            parents[b, chain[0]] = chain[0]
            parents[b, chain[1:]] = chain[:-1]
            start += length
    return ChainBatch(parents, chain_roots(parents), chain_depths(parents))


def make_spread_chain_batch(
    batch_size: int,
    num_nodes: int,
    max_chain: int,
    min_chain: int,
    filler_max_chain: int,
    generator: torch.Generator | int | None = None,
) -> ChainBatch:
    """Forests with ONE long chain whose root position is spread out, for evaluating length extrapolation.

    :func:`make_chain_batch` with long chains puts most nodes under root 0 (a long chain almost always contains
    position 0, the leftmost node, which is then its root), so "answer 0" scores well. Here each example has
    one long chain of ``min_chain..max_chain`` nodes whose root ``r`` is uniform over ``0..num_nodes - L``; its
    other ``L - 1`` nodes are a random subset of the positions right of ``r``. The remaining positions (those
    left of ``r`` included) form chains of ``1..filler_max_chain`` nodes, drawn as in :func:`make_chain_batch`.

    Returns a :class:`ChainBatch` of (B, N) long tensors.
    """
    batch_size, num_nodes, max_chain, min_chain = _check_chain_args(batch_size, num_nodes, max_chain, min_chain)
    filler_max_chain = _check_int("filler_max_chain", filler_max_chain, 1)
    g = _as_generator(generator)
    parents = torch.empty(batch_size, num_nodes, dtype=torch.long)
    for b in range(batch_size):
        length = int(torch.randint(min_chain, max_chain + 1, (1,), generator=g))
        root = int(torch.randint(0, num_nodes - length + 1, (1,), generator=g))
        right = torch.arange(root + 1, num_nodes)
        rest_of_chain = right[torch.randperm(len(right), generator=g)[: length - 1]].sort().values
        chain = torch.cat([torch.tensor([root]), rest_of_chain])
        parents[b, chain[0]] = chain[0]
        parents[b, chain[1:]] = chain[:-1]
        used = torch.zeros(num_nodes, dtype=torch.bool)
        used[chain] = True
        free = torch.arange(num_nodes)[~used]
        free = free[torch.randperm(len(free), generator=g)]
        start = 0
        while start < len(free):
            size = int(torch.randint(1, filler_max_chain + 1, (1,), generator=g))
            piece = free[start : start + size].sort().values
            parents[b, piece[0]] = piece[0]
            parents[b, piece[1:]] = piece[:-1]
            start += size
    return ChainBatch(parents, chain_roots(parents), chain_depths(parents))


def follow_pointers(parents: torch.Tensor, hops: int) -> torch.Tensor:
    """Where ``hops`` pointer hops from every node lead (a root stays put): ``p^(hops)(i)``.

    parents: (B, N) long with ``0 <= parents[b, i] <= i``; hops >= 0. Returns (B, N) long. With hops >= the
    deepest node's depth this is the root of every node; with fewer it is the "k-hop" trivial baseline.
    """
    _check_pointers(parents)
    hops = _check_int("hops", hops, 0)
    p = parents.long()
    where = torch.arange(p.shape[1], device=p.device).expand_as(p).clone()
    for _ in range(hops):
        where = torch.gather(p, 1, where)
    return where


def chain_accuracy_by_depth(
    predictions: torch.Tensor, targets: torch.Tensor, depth: torch.Tensor, max_depth: int | None = None
) -> torch.Tensor:
    """Accuracy of root predictions per node depth.

    predictions, targets, depth: (B, N) long. Returns (max_depth + 1,) float with NaN where a depth never occurs
    (``max_depth`` defaults to the largest depth present; deeper nodes are counted in the last bin).
    """
    if predictions.shape != targets.shape or targets.shape != depth.shape:
        raise ValueError(
            f"predictions, targets and depth must share a shape, got {tuple(predictions.shape)}, "
            f"{tuple(targets.shape)}, {tuple(depth.shape)}"
        )
    top = int(depth.max()) if max_depth is None else int(max_depth)
    correct = (predictions == targets).float().flatten()
    d = depth.flatten().clamp(max=top)
    hits = torch.zeros(top + 1).index_add_(0, d.cpu(), correct.cpu())
    count = torch.zeros(top + 1).index_add_(0, d.cpu(), torch.ones_like(correct).cpu())
    return torch.where(count > 0, hits / count.clamp(min=1), torch.full_like(hits, float("nan")))
