"""Capability card building and the version rule (agent/card.py)."""

from __future__ import annotations

from pathlib import Path

from agentmesh.agent.card import KnownVersion, VersionStore, build_card, card_digest, next_version
from agentmesh.agent.config import parse_agent_config
from agentmesh.protocol import ModelInfo

CFG = {
    "id": "calc-1",
    "tier": "edge",
    "capabilities": [{"name": "math", "description": "Exact arithmetic.", "tags": ["math"]}],
    "backend": {"kind": "python", "callable": "agentmesh.agent.tools:calculate"},
    "concurrency": 3,
    "cost": {"usd_per_mtok_in": 0.5, "usd_per_mtok_out": 1.5},
    "qos": {"tokens_per_s": 40},
    "policy": {"region": "eu", "data_classes": ["public", "internal"]},
}


def test_card_carries_the_config() -> None:
    cfg = parse_agent_config(CFG)
    card = build_card(cfg, ModelInfo(family="python", name="x", backend="python"), 4)
    assert card.agent_id == "calc-1" and card.version == 4 and card.tier == "edge"
    assert card.qos.max_concurrency == 3 and card.qos.tokens_per_s == 40
    assert card.cost.usd_per_mtok_out == 1.5
    assert card.policy.region == "eu"
    assert card.model is not None and card.model.family == "python"


def test_model_info_overrides() -> None:
    cfg = parse_agent_config({**CFG, "model_info": {"family": "gemma3", "params_b": 27}})
    card = build_card(cfg, ModelInfo(family="gemma", name="g", backend="python"), 1)
    assert card.model is not None and card.model.family == "gemma3" and card.model.params_b == 27
    cfg2 = parse_agent_config({**CFG, "model_info": {"family": "f", "name": "n"}})
    card2 = build_card(cfg2, None, 1)
    assert card2.model is not None and card2.model.backend == "python"


def test_digest_ignores_version_and_time_but_not_content() -> None:
    cfg = parse_agent_config(CFG)
    a = build_card(cfg, None, 1)
    b = build_card(cfg, None, 9)
    assert card_digest(a) == card_digest(b)
    changed = parse_agent_config({**CFG, "concurrency": 4})
    assert card_digest(build_card(changed, None, 1)) != card_digest(a)


def test_next_version() -> None:
    assert next_version("d") == 1
    assert next_version("d", None, None) == 1
    assert next_version("d", KnownVersion(3, "d"), None) == 3  # unchanged: same version
    assert next_version("e", KnownVersion(3, "d"), None) == 4  # changed: bump
    # The state file is the floor when the broker lost its retained card...
    assert next_version("d", None, KnownVersion(7, "d")) == 7
    assert next_version("e", KnownVersion(2, "e"), KnownVersion(7, "d")) == 8
    # ...and the broker wins when it is newer (another host published with this id).
    assert next_version("d", KnownVersion(9, "x"), KnownVersion(7, "d")) == 10
    # Same version, different content somewhere: move past it.
    assert next_version("d", KnownVersion(5, "d"), KnownVersion(5, "z")) == 6


def test_version_store_round_trip(tmp_path: Path) -> None:
    store = VersionStore("agentmesh/v1", "calc-1", tmp_path)
    assert store.load() is None
    store.save(KnownVersion(3, "abc"))
    assert VersionStore("agentmesh/v1", "calc-1", tmp_path).load() == KnownVersion(3, "abc")
    assert VersionStore("other/ns", "calc-1", tmp_path).load() is None
    store.path.write_text("{not json")
    assert store.load() is None
