"""Pure scoring functions of the matcher (no index, no model)."""

from __future__ import annotations

import numpy as np
import pytest

from agentmesh.protocol import CapabilityVector, Constraints
from agentmesh.registry import normalize_rows
from agentmesh.registry.text import capability_views, humanize, stem, terms
from agentmesh.routing import MatchWeights, ladder, pick_tier, score, view_similarity
from agentmesh.routing.scoring import (
    combined_similarity,
    estimated_step_cost,
    has_tags,
    late_interaction,
    policy_problem,
    saturate,
    views_similarity,
)

W = MatchWeights()


def vcv(**extra: object) -> CapabilityVector:
    return CapabilityVector.model_validate(
        {
            "agent_id": "a1",
            "version": 1,
            "tier": "cloud",
            "capabilities": [{"name": "chat", "description": "Talk."}],
            **extra,
        }
    )


def test_view_similarity_blends_best_view_with_card() -> None:
    assert view_similarity([0.2, 0.8, 0.4], 0.5) == pytest.approx(0.5)
    assert view_similarity([0.2, 0.8], 0.0) == pytest.approx(0.2)  # card only
    assert view_similarity([0.2, 0.8], 1.0) == pytest.approx(0.8)  # best view only
    assert view_similarity([], 0.5) == 0.0


def test_views_similarity_matches_the_one_capability_form() -> None:
    sims = np.array([0.2, 0.8, 0.4, 0.5, 0.1, 0.9], dtype=np.float32)
    starts = np.array([0, 3, 4])  # capabilities of 3, 1 and 2 views
    got = views_similarity(sims, starts, 0.5)
    want = [view_similarity(sims[0:3], 0.5), view_similarity(sims[3:4], 0.5), view_similarity(sims[4:6], 0.5)]
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_combined_similarity_falls_back_to_dense_without_tokens() -> None:
    assert combined_similarity(0.4, None, 0.0, w_token=0.5, w_lexical=0.1) == pytest.approx(0.4)
    assert combined_similarity(0.4, 0.6, 1.0, w_token=0.5, w_lexical=0.1) == pytest.approx(0.6)


def test_late_interaction_rewards_the_matching_rare_token() -> None:
    e = np.eye(4, dtype=np.float32)
    query = e[[0, 1]]  # tokens 0 ("help", common) and 1 ("invoice", rare)
    weights = np.array([0.1, 2.0], dtype=np.float32)
    has_rare = e[[1, 2]]
    has_common = e[[0, 2]]
    assert late_interaction(query, weights, has_rare) > late_interaction(query, weights, has_common)  # type: ignore[operator]
    assert late_interaction(query, weights, query) == pytest.approx(1.0)
    assert late_interaction(query[:0], weights[:0], has_rare) is None
    assert late_interaction(query, weights, has_rare[:0]) is None


def test_saturate_is_half_at_reference() -> None:
    assert saturate(0, 10) == 0.0
    assert saturate(10, 10) == pytest.approx(0.5)
    assert 0.9 < saturate(1000, 10) < 1.0


def test_score_penalises_cost_load_latency_and_rewards_family() -> None:
    base = dict(price_usd_per_mtok=0.0, load=0, capacity=2, latency_ms=None, same_family=False, weights=W)
    free = score(0.6, **base)  # type: ignore[arg-type]
    assert free == pytest.approx(0.6)
    assert score(0.6, **{**base, "price_usd_per_mtok": 10.0}) == pytest.approx(0.6 - W.w_cost * 0.5)  # type: ignore[arg-type]
    assert score(0.6, **{**base, "load": 1}) == pytest.approx(0.6 - W.w_load * 0.5)  # type: ignore[arg-type]
    assert score(0.6, **{**base, "latency_ms": 2000.0}) == pytest.approx(0.6 - W.w_latency * 0.5)  # type: ignore[arg-type]
    assert score(0.6, **{**base, "same_family": True}) == pytest.approx(0.6 + W.w_family)  # type: ignore[arg-type]


def test_policy_problems_name_the_reason() -> None:
    agent = vcv(
        policy={"region": "eu", "data_classes": ["public", "internal"]}, cost={"usd_per_mtok_out": 10}
    )
    assert policy_problem(agent, Constraints(), W) is None
    assert "region" in policy_problem(agent, Constraints(region="us"), W)  # type: ignore[operator]
    assert "personal" in policy_problem(agent, Constraints(data_class="personal"), W)  # type: ignore[operator]
    cost = estimated_step_cost(agent, W)
    assert cost == pytest.approx(10 * W.est_tokens_out / 1e6)
    assert policy_problem(agent, Constraints(max_cost_usd=cost * 2), W) is None
    assert "max_cost" in policy_problem(agent, Constraints(max_cost_usd=cost / 2), W)  # type: ignore[operator]
    assert policy_problem(vcv(), Constraints(region="eu"), W) is not None  # no region declared


def test_tags_must_all_be_present_case_insensitively() -> None:
    assert has_tags(["Legal", "contracts"], [])
    assert has_tags(["Legal", "contracts"], ["legal"])
    assert not has_tags(["legal"], ["legal", "gdpr"])


def test_ladder_respects_start_and_constraints() -> None:
    assert ladder("device") == ["device", "edge", "cloud"]
    assert ladder("edge") == ["edge", "cloud"]
    assert ladder("device", Constraints(min_tier="edge", max_tier="edge")) == ["edge"]
    assert ladder("cloud", Constraints(max_tier="edge")) == []


def test_pick_tier_prefers_cheap_tier_only_when_close_to_best() -> None:
    best = [("device", 0.40), ("edge", None), ("cloud", 0.50)]
    assert pick_tier(best, 0.0) == "cloud"  # type: ignore[arg-type]
    assert pick_tier(best, 0.15) == "device"  # type: ignore[arg-type]
    assert pick_tier([("device", None), ("edge", 0.3)], 0.0) == "edge"  # empty tier falls through
    assert pick_tier([("device", None)], 0.1) is None
    assert pick_tier([("device", 0.5), ("cloud", 0.5)], 0.0) == "device"  # ties go to the cheaper tier


def test_text_views_and_terms() -> None:
    cap = vcv(
        capabilities=[
            {
                "name": "summarizeText",
                "description": "Summarize long documents.",
                "tags": ["summary"],
                "examples": ["tl;dr this", "tl;dr this"],
            }
        ]
    ).capabilities[0]
    views = capability_views(cap)
    assert [v.kind for v in views] == ["card", "example", "name", "description"]
    assert views[0].text == "summarize text: Summarize long documents. (summary)"
    assert humanize("send-SMS_now") == "send sms now"
    assert stem("summaries") == stem("summary") and stem("translating") == stem("translate")
    assert stem("summarise") == stem("summarize") and stem("images") == stem("image")
    assert terms("Please translate THE invoices") == [stem("translate"), stem("invoice")]


def test_normalize_rows_handles_zero_rows() -> None:
    out = normalize_rows([[3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]])
