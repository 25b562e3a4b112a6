"""Pointer chasing to a root (lesson 03): the task generator, the one-hop ponder cell, and learned halting that
spends more steps on deeper queries."""

from __future__ import annotations

import pytest
import torch

from recursionlab.data.pointer_chase import follow_parents, pointer_chase_batch
from recursionlab.models.act import ACTPointerNet, PonderNetPointerNet, pondernet_step_losses
from recursionlab.train.recipes.adaptive import pointer_chase_seeds


def walk_to_root(parents: torch.Tensor, node: int) -> tuple[int, int]:
    """(root, depth) of one node by walking its pointers in Python; fails on a cycle longer than a self-loop."""
    depth, seen = 0, {node}
    while int(parents[node]) != node:
        node = int(parents[node])
        assert node not in seen, "the parent table has a cycle"
        seen.add(node)
        depth += 1
    return node, depth


def test_batches_are_forests_with_the_stated_root_and_depth():
    batch = pointer_chase_batch(300, num_nodes=10, max_depth=5, generator=3)
    assert batch.parents.shape == (300, 10) and batch.query.shape == batch.root.shape == batch.depth.shape == (300,)
    for b in range(300):
        for node in range(10):  # every node reaches a root: no cycles, and no chain longer than max_depth + 1
            assert walk_to_root(batch.parents[b], node)[1] <= 5
        assert walk_to_root(batch.parents[b], int(batch.query[b])) == (int(batch.root[b]), int(batch.depth[b]))
    # every difficulty occurs, about equally often (uniform over 0..5: 50 expected each)
    counts = torch.bincount(batch.depth, minlength=6)
    assert int(counts.min()) >= 30, counts.tolist()
    # ids carry no depth information: the query id is spread over all nodes
    assert len(set(batch.query.tolist())) == 10
    again = pointer_chase_batch(300, num_nodes=10, max_depth=5, generator=3)
    assert torch.equal(batch.parents, again.parents) and torch.equal(batch.query, again.query)
    # k-hop following is right exactly for depth <= k, and max_depth hops always reach the root
    for k in range(6):
        assert torch.equal(follow_parents(batch.parents, batch.query, k) == batch.root, batch.depth <= k)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="max_depth \\+ 1 must be <= num_nodes"):
        pointer_chase_batch(4, num_nodes=5, max_depth=5)
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        pointer_chase_batch(0)
    with pytest.raises(TypeError, match="max_depth must be an int"):
        pointer_chase_batch(4, max_depth=2.5)
    with pytest.raises(TypeError, match="generator"):
        pointer_chase_batch(4, generator="seed")
    parents = torch.tensor([[0, 0, 1]])
    with pytest.raises(ValueError, match="hops must be >= 0"):
        follow_parents(parents, torch.tensor([2]), -1)
    with pytest.raises(ValueError, match="parent ids must lie in 0..2"):
        follow_parents(torch.tensor([[0, 0, 3]]), torch.tensor([2]), 1)
    with pytest.raises(ValueError, match="query ids must lie in 0..2"):
        follow_parents(parents, torch.tensor([5]), 1)
    net = ACTPointerNet(num_nodes=3, dim=8, max_steps=4)
    with pytest.raises(ValueError, match="parents must be an int64 tensor of shape \\(B, 3\\)"):
        net(torch.zeros(1, 4, dtype=torch.long), torch.tensor([0]))
    with pytest.raises(ValueError, match="parents must be an int64"):
        net(parents.float(), torch.tensor([0]))
    with pytest.raises(ValueError, match="query must be an int64 tensor of shape \\(1,\\)"):
        net(parents, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="query ids must lie in 0..2, got 3..3"):
        net(parents, torch.tensor([3]))
    with pytest.raises(ValueError, match="max_steps must be >= 1"):
        PonderNetPointerNet(num_nodes=3, max_steps=0)


def test_pointer_nets_shapes():
    batch = pointer_chase_batch(6, num_nodes=8, max_depth=3, generator=1)
    act_result = ACTPointerNet(num_nodes=8, dim=8, max_steps=5)(batch.parents, batch.query)
    assert act_result.output.shape == (6, 8) and act_result.n_steps.shape == (6,)
    assert torch.allclose(act_result.halting_probs.sum(-1), torch.ones(6), atol=1e-6)
    pn = PonderNetPointerNet(num_nodes=8, dim=8, max_steps=5)
    result = pn(batch.parents, batch.query)
    assert result.logits.shape == (6, 5, 8) and result.lambdas.shape == (6, 5)
    assert pondernet_step_losses(result, batch.root).shape == (6, 5)
    logits, steps = pn.predict(batch.parents, batch.query, torch.Generator().manual_seed(0))
    assert logits.shape == (6, 8) and bool(((steps >= 1) & (steps <= 5)).all())


def test_learned_halting_spends_more_steps_on_deeper_queries():
    """ACT and PonderNet at the smoke profile (12 nodes, depth 0..4, 150 steps): right on held-out queries, and the
    mean number of steps grows with depth (the ideal is depth + 1; an untrained net halts after the same number
    of steps whatever the depth)."""
    table = pointer_chase_seeds(seeds=(0,), profile="smoke", n_test=1000, deep_max_depth=7)
    top = table["max_depth"]
    assert top == 4 and min(table["depth_counts"]) > 100
    for name, runs in table["runs"].items():
        run = runs["0"]
        assert run["acc"] > 0.9, f"{name}: held-out accuracy {run['acc']:.3f}"
        steps = run["steps_by_depth"]
        assert steps[top] - steps[0] > 0.75 * top, f"{name}: steps by depth {steps}"
        assert all(b > a for a, b in zip(steps, steps[1:])), f"{name}: steps must rise with depth, got {steps}"
        # the answer beats the best trivial baseline that spends the same mean number of hops at every depth
        fixed = table["baselines"][str(round(run["steps"]))]
        assert run["acc"] > sum(fixed) / len(fixed) + 0.1, f"{name}: {run['acc']:.3f} vs fixed-hop {fixed}"
        # deeper queries than any in training, with the cap raised: still more steps for deeper queries
        deep = run["deep_steps_by_depth"]
        assert deep[7] - deep[top] > 1.5, f"{name}: steps on deeper-than-training queries {deep}"
    with pytest.raises(ValueError, match="deep_max_depth must lie in 5..11"):
        pointer_chase_seeds(seeds=(), profile="smoke", deep_max_depth=4)
