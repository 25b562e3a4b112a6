"""Pointer chasing to a root: a task whose difficulty is, by construction, a number of sequential steps (lesson 03).

Each example is a forest over ``num_nodes`` nodes given as a table of parent pointers (a root points to itself) and
one **query** node; the target is the query's root. A node at depth ``d`` is ``d`` pointer hops from its root, so a
reader that can follow one pointer per step needs ``d`` hops, plus one step to notice that it has arrived (the node
it reads points to itself). Adaptive computation (ACT, PonderNet) should therefore spend about ``d + 1`` steps on a
query of depth ``d``: difficulty is the query's depth.

Unlike :mod:`recursionlab.data.latent_tasks` (causal sequences where every parent sits left of its child), node ids
here are a random permutation, so a node's id says nothing about its depth or its root. The query's depth is drawn
uniformly from ``0..max_depth``, so every difficulty is equally common; the other nodes form chains of
``1..max_depth + 1`` nodes.

Example with ``num_nodes = 6`` and chains 4 -> 1 -> 5 (root 4) and 0 -> 3 (root 0) and 2, query 5 (depth 2)::

    node     0  1  2  3  4  5
    parent   0  4  2  0  4  1        query 5, root 4, depth 2
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["PointerChaseBatch", "pointer_chase_batch", "follow_parents", "check_parent_table"]


@dataclass
class PointerChaseBatch:
    """A batch of pointer-chasing problems.

    parents: (B, N) long, parent id of every node (a root points to itself).
    query:   (B,) long, the node whose root is asked for.
    root:    (B,) long, the target: the query's root.
    depth:   (B,) long, hops from the query to its root (0 when the query is a root).
    """

    parents: torch.Tensor
    query: torch.Tensor
    root: torch.Tensor
    depth: torch.Tensor

    def to(self, device: torch.device | str) -> PointerChaseBatch:
        """The same batch on ``device``."""
        return PointerChaseBatch(*(t.to(device) for t in (self.parents, self.query, self.root, self.depth)))


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def pointer_chase_batch(
    batch_size: int,
    num_nodes: int = 16,
    max_depth: int = 6,
    generator: torch.Generator | int | None = None,
) -> PointerChaseBatch:
    """A batch of random forests with one query each, query depth uniform in ``0..max_depth``.

    Construction (vectorised over the batch): a random permutation of the node ids is cut into consecutive
    chains; the first chain has ``depth + 1`` nodes and ends at the query, the others have ``1..max_depth + 1``
    nodes each (the last one is cut to fit). Inside a chain each node points to the one before it, and the first
    node of a chain points to itself.

    Args:
        batch_size: B.
        num_nodes: N >= max_depth + 1 (the query's chain must fit).
        max_depth: the deepest query (>= 0).
        generator: a ``torch.Generator``, an int seed, or None (seed 0).

    Returns: a :class:`PointerChaseBatch`.
    """
    batch_size = _check_int("batch_size", batch_size, 1)
    num_nodes = _check_int("num_nodes", num_nodes, 1)
    max_depth = _check_int("max_depth", max_depth, 0)
    if max_depth + 1 > num_nodes:
        raise ValueError(f"max_depth + 1 must be <= num_nodes (the query's chain must fit), got max_depth="
                         f"{max_depth}, num_nodes={num_nodes}")
    if generator is None or (isinstance(generator, int) and not isinstance(generator, bool)):
        generator = torch.Generator().manual_seed(0 if generator is None else generator)
    elif not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, an int seed or None, got {type(generator).__name__}")

    b, n = batch_size, num_nodes
    depth = torch.randint(0, max_depth + 1, (b,), generator=generator)
    perm = torch.argsort(torch.rand(b, n, generator=generator), dim=1)  # slot j holds node perm[:, j]
    # Chain starts, in slot order: slot 0, slot depth + 1, then every cumulative sum of random lengths after it.
    lengths = torch.randint(1, max_depth + 2, (b, n), generator=generator)
    starts_at = (depth + 1)[:, None] + torch.cumsum(lengths, dim=1) - lengths  # (B, N) slots of chain starts
    is_start = torch.zeros(b, n + 1, dtype=torch.bool)  # one spare column catches starts past the end
    is_start.scatter_(1, starts_at.clamp(max=n), True)
    is_start[:, 0] = True
    is_start = is_start[:, :n]
    slots = torch.arange(n).expand(b, n)
    parent_slot = torch.where(is_start, slots, slots - 1)  # a chain start points to itself, others one slot back
    parents = torch.empty(b, n, dtype=torch.long)
    parents.scatter_(1, perm, torch.gather(perm, 1, parent_slot))  # parents[perm[j]] = perm[parent_slot[j]]
    query = perm.gather(1, depth[:, None]).squeeze(1)
    root = perm[:, 0]
    return PointerChaseBatch(parents, query, root, depth)


def check_parent_table(parents: torch.Tensor, query: torch.Tensor | None = None) -> None:
    """Raise a clear error unless ``parents`` is a (B, N) integer table of ids in ``0..N-1`` (and ``query``, if
    given, a (B,) integer tensor of ids in ``0..N-1``)."""
    if not torch.is_tensor(parents) or parents.dtype not in (torch.int32, torch.int64) or parents.dim() != 2:
        raise ValueError(f"parents must be an integer tensor of shape (B, N), got "
                         f"{getattr(parents, 'dtype', type(parents).__name__)} {tuple(getattr(parents, 'shape', ()))}")
    n = parents.shape[1]
    if parents.numel() and (int(parents.min()) < 0 or int(parents.max()) >= n):
        raise ValueError(f"parent ids must lie in 0..{n - 1}, got values in {int(parents.min())}..{int(parents.max())}")
    if query is None:
        return
    if not torch.is_tensor(query) or query.dtype not in (torch.int32, torch.int64) or query.shape != parents.shape[:1]:
        raise ValueError(f"query must be an integer tensor of shape ({parents.shape[0]},), got "
                         f"{getattr(query, 'dtype', type(query).__name__)} {tuple(getattr(query, 'shape', ()))}")
    if query.numel() and (int(query.min()) < 0 or int(query.max()) >= n):
        raise ValueError(f"query ids must lie in 0..{n - 1}, got values in {int(query.min())}..{int(query.max())}")


def follow_parents(parents: torch.Tensor, nodes: torch.Tensor, hops: int) -> torch.Tensor:
    """Where ``hops`` pointer hops from ``nodes`` lead (a root stays put).

    parents: (B, N) long; nodes: (B,) long; hops >= 0. Returns (B,) long. With ``hops >= depth`` this is the root;
    with fewer it is the "k-hop" trivial baseline (``hops=0``: answer the query itself).
    """
    check_parent_table(parents, nodes)
    hops = _check_int("hops", hops, 0)
    where = nodes.long()
    for _ in range(hops):
        where = parents.long().gather(1, where[:, None]).squeeze(1)
    return where
