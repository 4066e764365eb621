"""The intent bank: expanding a query vector with the descriptions of its nearest intents, parsing a
bank file, and the shipped vectors of the built-in bank being made from its current text."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import yaml

from agentmesh.errors import ConfigError
from agentmesh.registry import HashingEmbedder
from agentmesh.registry.embedder import TUNED_MINILM_PARAMS
from agentmesh.routing.intents import BUILTIN_BANK, BUILTIN_VECTORS, IntentBank, parse_bank


def unit(*xs: float) -> np.ndarray:
    v = np.array(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


# Four dimensions: 0 and 1 are where the two intents' examples live, 2 and 3 their descriptions;
# a query is near examples, far from descriptions, as an instance is from a class.
BANK = IntentBank(
    descriptions=("Answer general-knowledge questions", "Convert text to speech"),
    description_vectors=np.stack([unit(0, 0, 1, 0), unit(0, 0, 0, 1)]),
    example_vectors=np.stack([unit(1, 0, 0, 0), unit(1, 0.2, 0, 0), unit(0, 1, 0, 0)]),
    starts=np.array([0, 2], dtype=np.intp),
)
KNOBS = {"floor": 0.3, "top": 2, "temperature": 0.03}


def test_a_query_near_an_intents_examples_moves_towards_its_description() -> None:
    query = unit(1, 0.05, 0, 0)
    nearest = BANK.nearest(query, **KNOBS)
    assert [i for i, _ in nearest] == [0, 1] and nearest[0][1] > 0.99  # the far intent: next to nothing
    out = BANK.expand(query, nearest, 1.0)
    assert out.dtype == np.float32 and np.linalg.norm(out) == pytest.approx(1.0, abs=1e-6)
    assert out @ BANK.description_vectors[0] > 0.5  # was 0
    assert out @ BANK.description_vectors[1] < 0.01
    assert out @ query > 0.6  # still mostly the query


def test_the_nearer_intent_gets_the_larger_share() -> None:
    query = unit(0.6, 1, 0, 0)
    nearest = BANK.nearest(query, **{**KNOBS, "temperature": 0.5})
    assert [i for i, _ in nearest] == [1, 0] and nearest[0][1] > nearest[1][1] > 0
    assert sum(share for _, share in nearest) == pytest.approx(1.0)
    out = BANK.expand(query, nearest, 1.0)
    assert out[3] > out[2] > 0


def test_a_query_near_no_example_or_weight_zero_is_left_alone() -> None:
    far = unit(0, 0, 0.3, 1)  # similarity 0 to every example, below the floor
    assert BANK.nearest(far, **KNOBS) == []
    np.testing.assert_array_equal(BANK.expand(far, [], 1.0), far)
    near = unit(1, 0, 0, 0)
    np.testing.assert_array_equal(BANK.expand(near, BANK.nearest(near, **KNOBS), 0.0), near)


def test_top_limits_the_intents_blended() -> None:
    query = unit(1, 0.9, 0, 0)
    nearest = BANK.nearest(query, **{**KNOBS, "top": 1, "temperature": 10.0})
    assert nearest == [(0, 1.0)]
    out = BANK.expand(query, nearest, 1.0)
    assert out[2] > 0 and out[3] == 0


def test_parse_bank_rejects_entries_without_intent_or_examples(tmp_path: Path) -> None:
    good = [{"intent": "Set reminders", "examples": ["remind me at 6", "ping me tomorrow"]}]
    descriptions, examples = parse_bank(yaml.safe_dump(good).encode(), tmp_path / "ok.yaml")
    assert descriptions == ("Set reminders",) and examples == [["remind me at 6", "ping me tomorrow"]]
    for bad in (
        [],
        {"intent": "x"},
        [{"intent": "x", "examples": []}],
        [{"intent": "x", "examples": [""]}],
        [{"examples": ["a"]}],
        [{"intent": 3, "examples": ["a"]}],
    ):
        with pytest.raises(ConfigError) as info:
            parse_bank(yaml.safe_dump(bad).encode(), tmp_path / "bad.yaml")
        assert info.value.path == str(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_bank(b"- [unclosed", tmp_path / "bad.yaml")


def test_a_missing_bank_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        IntentBank.load(HashingEmbedder(), ["builtin", str(tmp_path / "nope.yaml")])
    assert info.value.path == str(tmp_path / "nope.yaml")


def test_another_embedder_embeds_the_bank_itself(tmp_path: Path) -> None:
    path = tmp_path / "bank.yaml"
    path.write_text(yaml.safe_dump([{"intent": "Set reminders", "examples": ["remind me at 6", "ping me"]}]))
    embedder = HashingEmbedder(64)
    bank = IntentBank.load(embedder, [str(path)])
    np.testing.assert_allclose(bank.description_vectors, embedder.embed(["Set reminders"]), atol=1e-6)
    np.testing.assert_allclose(bank.example_vectors, embedder.embed(["remind me at 6", "ping me"]), atol=1e-6)
    assert bank.starts.tolist() == [0]


def test_a_bank_of_ones_own_is_added_after_the_builtin_one(tmp_path: Path) -> None:
    path = tmp_path / "brewery.yaml"
    path.write_text(
        yaml.safe_dump([{"intent": "Report fermentation tank readings", "examples": ["gravity in FV3?"]}])
    )
    embedder = HashingEmbedder(64)
    builtin = IntentBank.load(embedder)
    both = IntentBank.load(embedder, ["builtin", str(path)])
    assert both.descriptions == (*builtin.descriptions, "Report fermentation tank readings")
    assert both.starts.tolist() == [*builtin.starts.tolist(), len(builtin.example_vectors)]
    np.testing.assert_allclose(both.example_vectors[-1], embedder.embed(["gravity in FV3?"])[0], atol=1e-6)


def test_the_shipped_vectors_are_made_from_the_current_bank() -> None:
    raw = BUILTIN_BANK.read_bytes()
    descriptions, examples = parse_bank(raw, BUILTIN_BANK)
    with np.load(BUILTIN_VECTORS) as npz:
        # Stale after an edit of intents.yaml: run `python -m agentmesh.routing.intents`.
        assert str(npz["sha256"]) == hashlib.sha256(raw).hexdigest()
        # ... and after retraining the tuned MiniLM (`python -m agentmesh.routing.tuning`).
        assert str(npz["tuning_sha256"]) == hashlib.sha256(TUNED_MINILM_PARAMS.read_bytes()).hexdigest()
        assert npz["descriptions"].shape == (len(descriptions), 384)
        assert npz["examples"].shape == (sum(len(e) for e in examples), 384)
    assert len(descriptions) >= 50 and len(set(descriptions)) == len(descriptions)
