"""Registry rules without a broker or a model: versions, deregistration, topic mismatch, presence,
in-flight load, provided embeddings, tier moves, listeners."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from agentmesh.protocol import CapabilityVector, Presence, TopicKind, TopicRef, Topics
from agentmesh.registry import HashingEmbedder, Registry, RegistryChange


def card(agent_id: str, version: int = 1, *, tier: str = "device", **extra: Any) -> CapabilityVector:
    caps = extra.pop(
        "capabilities",
        [{"name": "summarize", "description": "Summarize a text into bullet points.", "tags": ["summary"]}],
    )
    return CapabilityVector.model_validate(
        {"agent_id": agent_id, "version": version, "tier": tier, "capabilities": caps, **extra}
    )


@pytest.fixture
def registry() -> Registry:
    return Registry(HashingEmbedder(64))


def test_card_is_indexed_under_its_tier(registry: Registry) -> None:
    assert registry.apply_vcv("a1", card("a1", tier="edge"))
    entry = registry.get("a1")
    assert entry is not None and entry.tier == "edge" and entry.version == 1
    # card, name and description views of the one capability
    assert len(registry.index("edge").labels_of("a1")) == 3
    assert registry.index("device").labels_of("a1") == []


def test_higher_version_replaces_equal_or_lower_is_ignored(registry: Registry) -> None:
    assert registry.apply_vcv("a1", card("a1", 2))
    old_labels = registry.index("device").labels_of("a1")
    assert not registry.apply_vcv("a1", card("a1", 2))
    assert not registry.apply_vcv("a1", card("a1", 1))
    assert registry.get("a1").version == 2  # type: ignore[union-attr]
    assert registry.index("device").labels_of("a1") == old_labels
    assert registry.apply_vcv("a1", card("a1", 5))
    assert registry.get("a1").version == 5  # type: ignore[union-attr]
    assert set(registry.index("device").labels_of("a1")).isdisjoint(old_labels)
    assert len(registry.index("device")) == 3  # old labels gone


def test_card_on_another_agents_topic_is_rejected(registry: Registry) -> None:
    assert registry.rejects("a2", card("a1")) is not None
    assert not registry.apply_vcv("a2", card("a1"))
    assert registry.get("a1") is None and registry.get("a2") is None


def test_deregister_removes_agent_and_labels(registry: Registry) -> None:
    registry.apply_vcv("a1", card("a1", 3))
    assert registry.apply_vcv("a1", None)
    assert registry.get("a1") is None
    assert len(registry.index("device")) == 0
    assert len(registry.lexical) == 0
    assert not registry.apply_vcv("a1", None)  # nothing to remove
    # a fresh card after deregistration starts over (an agent restarting at version 1)
    assert registry.apply_vcv("a1", card("a1", 1))


def test_tier_move_leaves_old_index(registry: Registry) -> None:
    registry.apply_vcv("a1", card("a1", 1, tier="device"))
    registry.apply_vcv("a1", card("a1", 2, tier="cloud"))
    assert registry.index("device").labels_of("a1") == []
    assert registry.index("cloud").labels_of("a1")
    assert [e.agent_id for e in registry.agents_in_tier("cloud")] == ["a1"]


def test_presence_absent_means_routable_offline_and_draining_not(registry: Registry) -> None:
    registry.apply_vcv("a1", card("a1", qos={"max_concurrency": 3}))
    entry = registry.get("a1")
    assert entry is not None
    assert entry.state == "unknown" and entry.routable and entry.capacity == 3 and entry.load == 0
    registry.apply_presence("a1", Presence(id="a1", state="online", load=2, capacity=4))
    assert entry.state == "online" and entry.routable and entry.load == 2 and entry.capacity == 4
    registry.apply_presence("a1", Presence(id="a1", state="draining"))
    assert not entry.routable
    registry.apply_presence("a1", Presence(id="a1", state="offline"))
    assert entry.state == "offline" and not entry.routable
    registry.apply_presence("a1", None)
    assert entry.state == "unknown" and entry.routable


def test_presence_before_card_is_kept(registry: Registry) -> None:
    registry.apply_presence("a1", Presence(id="a1", state="offline"))
    registry.apply_vcv("a1", card("a1"))
    assert registry.get("a1").state == "offline"  # type: ignore[union-attr]


def test_presence_for_another_id_is_ignored(registry: Registry) -> None:
    registry.apply_vcv("a1", card("a1"))
    assert not registry.apply_presence("a1", Presence(id="a2", state="offline"))
    assert registry.get("a1").state == "unknown"  # type: ignore[union-attr]


def test_inflight_counts_as_load(registry: Registry) -> None:
    registry.apply_vcv("a1", card("a1"))
    registry.apply_presence("a1", Presence(id="a1", state="online", load=1, capacity=4))
    assert registry.add_inflight("a1", 3) == 3
    assert registry.get("a1").load == 3  # type: ignore[union-attr]
    assert registry.add_inflight("a1", -5) == 0  # never below zero
    assert registry.get("a1").load == 1  # type: ignore[union-attr]
    # in-flight survives a new card version
    registry.add_inflight("a1", 2)
    registry.apply_vcv("a1", card("a1", 2))
    assert registry.get("a1").inflight == 2  # type: ignore[union-attr]


def test_provided_embedding_of_our_model_is_used() -> None:
    embedder = HashingEmbedder(8)
    registry = Registry(embedder)
    vec = [1.0, 0, 0, 0, 0, 0, 0, 0]
    vcv = card("a1", embedding={"model": "hashing-bow", "vectors": [vec]})
    prepared = registry.prepare(vcv)
    assert prepared.provided and len(prepared.vectors) == 1
    np.testing.assert_allclose(prepared.vectors[0][0], vec)
    # another model's vectors, or the wrong dimension: the text is embedded instead
    assert not registry.prepare(card("a1", embedding={"model": "other", "vectors": [vec]})).provided
    assert not registry.prepare(
        card("a1", embedding={"model": "hashing-bow", "vectors": [[1.0, 0.0]]})
    ).provided


def test_apply_message_dispatches_on_topic(registry: Registry) -> None:
    topics = Topics()
    assert registry.apply_message(topics.vcv("a1"), card("a1"))
    assert registry.apply_message(
        TopicRef(TopicKind.AGENT_PRESENCE, "a1"), Presence(id="a1", state="offline")
    )
    assert registry.get("a1").state == "offline"  # type: ignore[union-attr]
    assert not registry.apply_message(topics.inbox("a1"), None)
    assert registry.apply_message(topics.vcv("a1"), None)
    assert registry.get("a1") is None


def test_listeners_see_changes_and_a_failing_one_does_no_harm(registry: Registry) -> None:
    seen: list[RegistryChange] = []

    def broken(change: RegistryChange) -> None:
        raise RuntimeError("boom")

    registry.add_listener(broken)
    registry.add_listener(seen.append)
    registry.apply_vcv("a1", card("a1"))
    registry.apply_vcv("a1", card("a1"))  # ignored: no change
    registry.apply_presence("a1", Presence(id="a1", state="offline"))
    registry.apply_vcv("a1", None)
    assert [(c.kind, c.routable) for c in seen] == [
        ("card", True),
        ("presence", False),
        ("deregister", False),
    ]


def test_registry_without_index_lists_cards() -> None:
    registry = Registry(indexed=False)
    assert registry.embedder is None and not registry.indexed
    registry.apply_vcv("a1", card("a1"))
    assert [e.agent_id for e in registry.agents()] == ["a1"]


def test_agents_are_listed_by_tier_then_id(registry: Registry) -> None:
    for agent_id, tier in [("z", "device"), ("b", "cloud"), ("a", "edge"), ("c", "device")]:
        registry.apply_vcv(agent_id, card(agent_id, tier=tier))
    assert [e.agent_id for e in registry.agents()] == ["c", "z", "a", "b"]


def test_apply_many_inserts_once_per_tier_and_keeps_version_rules(registry: Registry) -> None:
    registry.apply_vcv("a1", card("a1", 5))
    batch = [
        card("a1", 4),
        card("a2", 1, tier="edge"),
        card("a3", 1, tier="edge"),
        card("a3", 2, tier="edge"),
    ]
    applied = registry.apply_many([registry.prepare(v) for v in batch], num_threads=2)
    assert applied == ["a2", "a3"]  # a1's card is stale; the newer a3 card of the batch wins
    assert registry.get("a1").version == 5  # type: ignore[union-attr]
    assert registry.get("a3").version == 2  # type: ignore[union-attr]
    assert len(registry.index("edge")) == 6
    # a card on another agent's topic is rejected in batches too
    assert registry.apply_many([registry.prepare(card("a9"))], agent_ids=["a8"]) == []


def test_without_room_names_the_agents_whose_context_window_is_too_small(registry: Registry) -> None:
    model = {"family": "smollm2", "name": "s", "backend": "llama_cpp"}
    registry.apply_vcv("small", card("small", model={**model, "context_window": 2048}))
    registry.apply_vcv("big", card("big", model={**model, "context_window": 32768}))
    registry.apply_vcv("unsaid", card("unsaid"))  # no window stated: never left out for it
    assert registry.without_room(2048) == set()
    assert registry.without_room(2049) == {"small"}
    assert registry.without_room(40000) == {"small", "big"}
    registry.apply_vcv("small", card("small", 2, model={**model, "context_window": 65536}))
    assert registry.without_room(40000) == {"big"}
    registry.apply_vcv("big", None)
    assert registry.without_room(40000) == set()
