"""TierIndex: incremental replace (mark_deleted + slot reuse), growth by resize, filtered kNN."""

from __future__ import annotations

import numpy as np

from agentmesh.registry import IndexParams, TierIndex, normalize_rows


def unit(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    return normalize_rows(np.random.default_rng(seed).normal(size=(n, dim)))


def test_replace_reuses_deleted_slots_without_growing() -> None:
    index = TierIndex(16, IndexParams(initial_capacity=16))
    index.set_agent("a", unit(8), [(0, v) for v in range(8)])
    index.set_agent("b", unit(8, seed=1), [(0, v) for v in range(8)])
    assert len(index) == 16 and index.capacity == 16
    for version in range(5):  # churn: "a" republishes its card again and again
        index.set_agent("a", unit(8, seed=10 + version), [(0, v) for v in range(8)])
    assert len(index) == 16
    assert index.capacity == 16 and index.resizes == 0


def test_growth_resizes_instead_of_rebuilding() -> None:
    index = TierIndex(16, IndexParams(initial_capacity=16))
    vectors = unit(100, seed=3)
    for i in range(10):
        index.set_agent(f"a{i}", vectors[i * 10 : (i + 1) * 10], [(c, 0) for c in range(10)])
    assert len(index) == 100
    assert index.capacity >= 100 and index.resizes >= 1
    # every vector is still its own nearest neighbour after the resizes
    for i in (0, 55, 99):
        labels, sims = index.knn(vectors[i], 1)
        ref = index.ref(int(labels[0]))
        assert (ref.agent_id, ref.cap) == (f"a{i // 10}", i % 10)
        assert sims[0] > 0.999


def test_removed_agent_is_never_returned() -> None:
    index = TierIndex(16)
    vectors = unit(20, seed=4)
    index.set_agent("a", vectors[:10], [(c, 0) for c in range(10)])
    index.set_agent("b", vectors[10:], [(c, 0) for c in range(10)])
    assert index.remove_agent("a") == 10
    labels, _ = index.knn(vectors[0], 10)
    assert {index.ref(int(label)).agent_id for label in labels} == {"b"}
    assert index.labels_of("a") == [] and index.agents() == ["b"]


def test_filter_excludes_labels_and_fewer_results_are_fine() -> None:
    index = TierIndex(16)
    vectors = unit(30, seed=5)
    for i in range(3):
        index.set_agent(f"a{i}", vectors[i * 10 : (i + 1) * 10], [(c, 0) for c in range(10)])
    blocked = set(index.labels_of("a0")) | set(index.labels_of("a1"))
    labels, sims = index.knn(vectors[0], 15, allowed=lambda label: label not in blocked)
    assert 1 <= len(labels) <= 10
    assert {index.ref(int(label)).agent_id for label in labels} == {"a2"}
    assert list(sims) == sorted(sims, reverse=True)


def test_empty_index_answers_nothing() -> None:
    index = TierIndex(16)
    labels, sims = index.knn(unit(1)[0], 5)
    assert len(labels) == 0 and len(sims) == 0
