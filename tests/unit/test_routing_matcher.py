"""The matcher over a registry with a model-free embedder: filters, collapse, scoring, tier ladder,
and the HNSW path agreeing with exact scoring."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from agentmesh.protocol import CapabilityVector, Constraints, Presence
from agentmesh.registry import HashingEmbedder, Registry, TokenVectors
from agentmesh.routing import Matcher, MatchWeights

TRANSLATE = {"name": "translate", "description": "Translate text between languages.", "tags": ["translate"]}
SUMMARIZE = {
    "name": "summarize",
    "description": "Summarize a long report into bullet points.",
    "tags": ["summary"],
}
INVOICE = {
    "name": "invoices",
    "description": "Extract totals and VAT from supplier invoices.",
    "tags": ["invoice"],
}


def card(agent_id: str, tier: str, caps: list[dict[str, Any]], **extra: Any) -> CapabilityVector:
    return CapabilityVector.model_validate(
        {"agent_id": agent_id, "version": 1, "tier": tier, "capabilities": caps, **extra}
    )


@pytest.fixture
def registry() -> Registry:
    reg = Registry(HashingEmbedder(256))
    for vcv in [
        card(
            "phone",
            "device",
            [TRANSLATE],
            model={"family": "gemma", "name": "g-270m", "backend": "llama_cpp"},
        ),
        card(
            "box",
            "edge",
            [SUMMARIZE, TRANSLATE],
            model={"family": "qwen", "name": "q-3b", "backend": "llama_cpp"},
        ),
        card(
            "cloud-a",
            "cloud",
            [TRANSLATE, SUMMARIZE],
            cost={"usd_per_mtok_in": 5, "usd_per_mtok_out": 15},
            model={"family": "gemma", "name": "g-27b", "backend": "openai"},
        ),
        card(
            "cloud-b",
            "cloud",
            [TRANSLATE, SUMMARIZE],
            model={"family": "qwen", "name": "q-72b", "backend": "openai"},
        ),
        card(
            "cloud-inv", "cloud", [INVOICE], policy={"region": "eu", "data_classes": ["public", "internal"]}
        ),
    ]:
        reg.apply_vcv(vcv.agent_id, vcv)
    return reg


def ids(matches: list[Any]) -> list[str]:
    return [m.agent_id for m in matches]


def test_match_collapses_to_agents_best_first(registry: Registry) -> None:
    matcher = Matcher(registry)
    matches = matcher.match("translate this text into languages", tier="cloud")
    assert ids(matches)[:2] == ["cloud-b", "cloud-a"]  # same similarity, cloud-a costs more
    assert all(m.capability == "translate" for m in matches[:2])
    assert len(set(ids(matches))) == len(matches)
    assert matches[0].score > matches[1].score
    assert matches[0].to_json().keys() == {"agent_id", "tier", "capability", "similarity", "score"}


def test_route_climbs_the_ladder_past_empty_tiers(registry: Registry) -> None:
    matcher = Matcher(registry)
    assert ids(matcher.route("translate text between languages"))[:1] == ["phone"]
    # no device agent summarises: the edge box is the first tier with a match of that quality
    assert ids(matcher.route("summarize this long report into bullet points"))[:1] == ["box"]
    # escalation: start above the device, without the agents tried
    assert ids(matcher.route("translate text", start_tier="edge", exclude={"box"}))[:1] == ["cloud-b"]


def test_offline_draining_excluded_and_busy_agents_are_filtered(registry: Registry) -> None:
    matcher = Matcher(registry)
    q = "translate text between languages"
    registry.apply_presence("cloud-b", Presence(id="cloud-b", state="offline"))
    assert ids(matcher.match(q, tier="cloud")) == ["cloud-a"]
    registry.apply_presence("cloud-b", Presence(id="cloud-b", state="online", load=0, capacity=1))
    registry.add_inflight("cloud-b", 1)  # at capacity
    assert ids(matcher.match(q, tier="cloud")) == ["cloud-a"]
    assert "cloud-b" in ids(matcher.match(q, tier="cloud", allow_busy=True))
    registry.add_inflight("cloud-b", -1)
    registry.apply_presence("cloud-a", Presence(id="cloud-a", state="draining"))
    assert ids(matcher.match(q, tier="cloud")) == ["cloud-b"]
    assert matcher.match(q, tier="cloud", exclude={"cloud-b"}) == []
    # the whole ladder: the phone is offline too, so the step goes to the edge box
    registry.apply_presence("phone", Presence(id="phone", state="offline"))
    assert ids(matcher.route(q))[:1] == ["box"]


def test_policy_and_tag_constraints(registry: Registry) -> None:
    matcher = Matcher(registry)
    q = "extract the VAT totals from this supplier invoice"
    assert ids(matcher.route(q))[:1] == ["cloud-inv"]
    assert matcher.route(q, constraints=Constraints(region="us")) == []
    assert ids(matcher.route(q, constraints=Constraints(region="eu")))[:1] == ["cloud-inv"]
    assert matcher.route(q, constraints=Constraints(region="eu", data_class="personal")) == []
    assert matcher.route(q, constraints=Constraints(max_tier="edge")) == []
    # tags are checked per capability: the box's translate capability lacks "summary"
    matches = matcher.match(
        "translate or summarize text", tier="edge", constraints=Constraints(tags=["summary"])
    )
    assert [(m.agent_id, m.capability) for m in matches] == [("box", "summarize")]


def test_max_cost_drops_expensive_agents(registry: Registry) -> None:
    matcher = Matcher(registry)
    q = "translate text between languages"
    assert set(ids(matcher.match(q, tier="cloud"))) >= {"cloud-a", "cloud-b"}
    cheap = ids(matcher.match(q, tier="cloud", constraints=Constraints(max_cost_usd=0.001)))
    assert "cloud-a" not in cheap and "cloud-b" in cheap


def test_prefer_family_breaks_ties(registry: Registry) -> None:
    matcher = Matcher(registry, MatchWeights(w_family=0.2))
    q = "translate text between languages"
    assert ids(matcher.match(q, tier="cloud", prefer_family="gemma"))[0] == "cloud-a"
    assert ids(matcher.match(q, tier="cloud", prefer_family="qwen"))[0] == "cloud-b"


def test_min_similarity_drops_unrelated(registry: Registry) -> None:
    matcher = Matcher(registry, MatchWeights(min_similarity=0.3))
    assert matcher.route("bake sourdough bread") == []
    explanation = matcher.explain("bake sourdough bread")
    assert explanation.chosen is None and explanation.ranked() == []


def test_hnsw_path_agrees_with_exact_scoring() -> None:
    rng = np.random.default_rng(7)
    words = [f"w{i}" for i in range(400)]
    reg = Registry(HashingEmbedder(128))
    for a in range(60):
        caps = [
            {
                "name": f"cap{c}",
                "description": " ".join(rng.choice(words, 6)),
                "tags": list(rng.choice(words, 2)),
            }
            for c in range(3)
        ]
        reg.apply_vcv(f"a{a}", card(f"a{a}", "cloud", caps))
    reg.apply_presence("a3", Presence(id="a3", state="offline"))
    exact = Matcher(reg, MatchWeights(exact_below=10_000, min_similarity=-1))
    approx = Matcher(reg, MatchWeights(exact_below=0, min_similarity=-1, ef_search=200))
    agree = 0
    for _ in range(20):
        q = " ".join(rng.choice(words, 4))
        a = ids(exact.match(q, tier="cloud", k=3))
        b = ids(approx.match(q, tier="cloud", k=3))
        assert "a3" not in a and "a3" not in b
        agree += a[0] == b[0]
    assert agree >= 18


def test_ranked_lists_chosen_tier_first(registry: Registry) -> None:
    matcher = Matcher(registry)
    explanation = matcher.explain("translate text between languages")
    ranked = explanation.ranked()
    assert explanation.chosen == "device" and ranked[0].agent_id == "phone"
    assert {m.tier for m in ranked[1:]} <= {"edge", "cloud"}
    assert len(explanation.ranked(2)) == 2


def test_narrow_filter_on_a_big_tier_scores_the_allowed_exactly() -> None:
    reg = Registry(HashingEmbedder(64))
    for a in range(40):
        region = "eu" if a == 7 else "us"
        caps = [{"name": f"c{c}", "description": f"task {a} {c} translate text"} for c in range(3)]
        reg.apply_vcv(f"a{a}", card(f"a{a}", "cloud", caps, policy={"region": region}))
    # exact_below small enough that the tier counts as big, big enough for the one EU agent
    matcher = Matcher(reg, MatchWeights(exact_below=12, min_similarity=-1))
    matches = matcher.match("translate text", tier="cloud", constraints=Constraints(region="eu"))
    assert ids(matches) == ["a7"]


class TokenHashingEmbedder(HashingEmbedder):
    """HashingEmbedder with per-word token vectors: a TokenEmbedder, so the matcher caches by text."""

    def embed_with_tokens(self, texts: list[str]) -> tuple[Any, list[TokenVectors]]:
        tokens = []
        for text in texts:
            words = text.lower().split()
            vectors = self.embed(words) if words else np.empty((0, self.dim), dtype=np.float32)
            tokens.append(TokenVectors(tuple(words), vectors.astype(np.float16)))
        return self.embed(texts), tokens


def test_a_planner_capability_serves_only_steps_that_ask_for_a_planner() -> None:
    plan = {"name": "plan", "description": "Decompose a task into a plan of steps.", "tags": ["plan"]}
    registry = Registry(HashingEmbedder(256))
    both = card("big-1", "device", [plan, TRANSLATE])
    registry.apply_vcv(both.agent_id, both)
    matcher = Matcher(registry, MatchWeights(min_similarity=-1.0))
    q = "Decompose a task into a plan of steps"
    assert [m.capability for m in matcher.route(q)] == ["translate"]
    assert [m.capability for m in matcher.route(q, constraints=Constraints(tags=["plan"]))] == ["plan"]


def test_a_step_waits_for_a_busy_agent_that_matches_much_better() -> None:
    chat = {"name": "qa", "description": "Answer questions about capitals of countries.", "tags": ["qa"]}
    calc = {"name": "arithmetic", "description": "Compute sums and products of numbers.", "tags": ["math"]}
    registry = Registry(HashingEmbedder(256))
    for vcv in [
        card("chat-1", "device", [chat]),
        card("calc-1", "device", [calc], qos={"max_concurrency": 4}),
    ]:
        registry.apply_vcv(vcv.agent_id, vcv)
    q = "What is the capital of the countries?"
    matcher = Matcher(registry, MatchWeights(min_similarity=-1.0))
    assert ids(matcher.route(q)) == ["chat-1", "calc-1"]
    registry.add_inflight("chat-1", 1)  # at capacity: the calculator is free but no answer to this
    assert matcher.route(q) == []
    assert ids(matcher.route(q, allow_busy=True))[0] == "chat-1"
    assert ids(Matcher(registry, MatchWeights(min_similarity=-1.0, wait_margin=2.0)).route(q)) == ["calc-1"]
    # A free agent as good as the busy one takes the step, on this tier or the next.
    for twin in (card("chat-2", "device", [chat]), card("chat-3", "edge", [chat])):
        registry.apply_vcv(twin.agent_id, twin)
        assert ids(matcher.route(q))[0] == twin.agent_id
        registry.apply_vcv(twin.agent_id, None)


def test_repeated_queries_see_load_busy_and_card_changes() -> None:
    """A query's similarities are reused across calls; what changes between them (load, an agent
    at capacity, presence, a new card) must rank exactly as a fresh matcher would."""
    registry = Registry(TokenHashingEmbedder(256))
    for vcv in [
        card("cloud-a", "cloud", [TRANSLATE], cost={"usd_per_mtok_in": 5, "usd_per_mtok_out": 15}),
        card("cloud-b", "cloud", [TRANSLATE], qos={"max_concurrency": 4}),
        card("phone", "device", [SUMMARIZE]),
    ]:
        registry.apply_vcv(vcv.agent_id, vcv)
    cached = Matcher(registry)
    q = "translate text between languages"

    def same_as_fresh() -> list[str]:
        got = [(m.agent_id, round(m.score, 6)) for m in cached.route(q)]
        assert got == [(m.agent_id, round(m.score, 6)) for m in Matcher(registry).route(q)]
        assert cached.route(q) == cached.explain(q).matches
        return [agent for agent, _ in got]

    assert same_as_fresh() == ["cloud-b", "cloud-a"]  # cloud-a costs more
    registry.add_inflight("cloud-b", 2)  # half loaded: its load now outweighs cloud-a's price
    assert same_as_fresh() == ["cloud-a", "cloud-b"]
    registry.add_inflight("cloud-b", 2)  # at capacity
    assert same_as_fresh() == ["cloud-a"]
    registry.add_inflight("cloud-b", -4)
    registry.apply_presence("cloud-a", Presence(id="cloud-a", state="offline"))
    assert same_as_fresh() == ["cloud-b"]
    cheaper = card("cloud-a", "cloud", [TRANSLATE], version=2)
    registry.apply_vcv("cloud-a", cheaper)
    registry.apply_presence("cloud-a", Presence(id="cloud-a", state="online"))
    assert same_as_fresh() == ["cloud-a", "cloud-b"]  # equal now; ties go by agent id
