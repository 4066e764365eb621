"""Pure scoring: how view similarities, lexical overlap and an agent's cost/load/latency become
one number. No I/O, no state; the matcher feeds these."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from agentmesh.protocol import TIERS, CapabilityVector, Constraints, Tier


class MatchWeights(BaseModel):
    """Matching knobs (the router config embeds this as ``matching:``)."""

    model_config = ConfigDict(extra="forbid")

    k: int = Field(5, ge=1, le=100, description="matches returned per query")
    min_similarity: float = Field(0.15, ge=-1.0, le=2.0, description="below this a capability does not match")
    tier_margin: float = Field(
        0.0,
        ge=0.0,
        le=2.0,
        description="a cheaper tier wins the ladder only if its best similarity is this close to the best",
    )
    wait_margin: float = Field(
        0.2,
        ge=0.0,
        le=2.0,
        description="a step waits for a busy agent rather than go to a free one this much less similar",
    )
    decline_margin: float = Field(
        0.05,
        ge=0.0,
        le=2.0,
        description="a declined step goes to another agent of the same tier that matched it this close "
        "to the one that declined (a near tie), before escalating",
    )
    w_cost: float = Field(0.05, ge=0.0, description="penalty for price (normalised to 0..1)")
    w_load: float = Field(0.1, ge=0.0, description="penalty for load/capacity")
    w_latency: float = Field(0.03, ge=0.0, description="penalty for p50 latency (normalised to 0..1)")
    w_family: float = Field(0.05, ge=0.0, description="bonus for the model family of the previous attempt")
    w_lexical: float = Field(0.1, ge=0.0, le=1.0, description="weight of BM25 term overlap in the similarity")
    w_token: float = Field(
        0.5, ge=0.0, le=1.0, description="weight of token late interaction against the sentence vectors"
    )
    w_best_view: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="blend of the best view (an example, the name) against the whole card",
    )
    w_intent: float = Field(
        0.8,
        ge=0.0,
        le=10.0,
        description="weight of the nearest intents' descriptions added to the query vector (0: off)",
    )
    intent_floor: float = Field(
        0.3, ge=-1.0, le=1.0, description="an intent counts only if one of its examples is this similar"
    )
    intent_top: int = Field(3, ge=1, le=100, description="nearest intents blended into the query")
    intent_temperature: float = Field(
        0.03, gt=0.0, le=10.0, description="softmax temperature over the nearest intents' similarities"
    )
    intent_banks: list[str] = Field(
        default_factory=lambda: ["builtin"],
        description="the intent banks: 'builtin' (agentmesh/data/intents.yaml) and paths of YAML files "
        "of your own intents",
    )
    cost_ref_usd_per_mtok: float = Field(10.0, gt=0, description="price that counts as half the cost penalty")
    latency_ref_ms: float = Field(
        2000.0, gt=0, description="p50 latency that counts as half the latency penalty"
    )
    est_tokens_in: int = Field(1000, ge=0, description="tokens assumed per step to check max_cost_usd")
    est_tokens_out: int = Field(500, ge=0)
    oversample: int = Field(6, ge=1, le=100, description="kNN labels fetched per wanted match")
    min_fetch: int = Field(24, ge=1)
    ef_search: int = Field(48, ge=8, le=4096, description="HNSW search breadth")
    exact_below: int = Field(
        4096, ge=0, description="score every allowed label exactly when there are at most this many"
    )


# ---- similarity -------------------------------------------------------------------------------


def view_similarity(sims: Sequence[float] | np.ndarray, w_best_view: float) -> float:
    """One capability's dense similarity from its views' cosines; view 0 is the whole card.

    The best view catches a request phrased like one example; the card keeps a lone lucky example
    or a short name from outvoting what the capability is as a whole.
    """
    arr = np.asarray(sims, dtype=np.float32)
    if arr.size == 0:
        return 0.0
    return float(w_best_view * arr.max() + (1.0 - w_best_view) * arr[0])


def late_interaction(
    query: npt.NDArray[np.floating[Any]],
    query_weights: npt.NDArray[np.floating[Any]],
    capability: npt.NDArray[np.floating[Any]],
) -> float | None:
    """Token-level match of a query and a capability (unit token vectors as rows), both ways.

    Each query token takes its best match among the capability's tokens (weighted by rarity, so
    "invoice" counts more than "help"), and each capability token its best match in the query.
    Sentence vectors average a text into one point; this keeps the decisive words visible.
    None when either side has no content tokens.
    """
    if len(query) == 0 or len(capability) == 0:
        return None
    sims = np.asarray(query, dtype=np.float32) @ np.asarray(capability, dtype=np.float32).T
    weights = np.asarray(query_weights, dtype=np.float32)
    total = float(weights.sum())
    forward = (
        float((sims.max(axis=1) * weights).sum() / total) if total > 0 else float(sims.max(axis=1).mean())
    )
    backward = float(sims.max(axis=0).mean())
    return 0.5 * forward + 0.5 * backward


Score = TypeVar("Score", float, npt.NDArray[np.float64])


def views_similarity(
    sims: npt.NDArray[np.floating[Any]], starts: npt.NDArray[np.intp], w_best_view: float
) -> npt.NDArray[np.float64]:
    """``view_similarity`` for many capabilities at once: ``sims`` holds the views of each
    capability contiguously, its card view first, starting at ``starts``."""
    best = np.maximum.reduceat(sims, starts)
    return np.asarray(w_best_view * best + (1.0 - w_best_view) * sims[starts], dtype=np.float64)


def combined_similarity(
    dense: Score, token: Score | None, lexical: Score, *, w_token: float, w_lexical: float
) -> Score:
    """Sentence similarity blended with token late interaction (when known) plus term overlap.
    Works on floats or element-wise on arrays."""
    if token is None:
        token = dense
    return (1.0 - w_token) * dense + w_token * token + w_lexical * lexical


# ---- penalties ----------------------------------------------------------------------------------


def saturate(value: float, ref: float) -> float:
    """0 at 0, 0.5 at ``ref``, towards 1 above: comparable penalties without knowing the range."""
    if value <= 0:
        return 0.0
    return value / (value + ref)


def blended_price(vcv: CapabilityVector, weights: MatchWeights) -> float:
    """USD per million tokens, weighted by the assumed input/output mix of a step."""
    tin, tout = weights.est_tokens_in, weights.est_tokens_out
    total = tin + tout
    if total == 0:
        return (vcv.cost.usd_per_mtok_in + vcv.cost.usd_per_mtok_out) / 2
    return (vcv.cost.usd_per_mtok_in * tin + vcv.cost.usd_per_mtok_out * tout) / total


def estimated_step_cost(vcv: CapabilityVector, weights: MatchWeights) -> float:
    return (
        vcv.cost.usd_per_mtok_in * weights.est_tokens_in + vcv.cost.usd_per_mtok_out * weights.est_tokens_out
    ) / 1e6


def score(
    similarity: float,
    *,
    price_usd_per_mtok: float,
    load: int,
    capacity: int,
    latency_ms: float | None,
    same_family: bool,
    weights: MatchWeights,
) -> float:
    """DESIGN.md section 5: sim - w_cost*cost - w_load*load/capacity - w_latency*latency (+ w_family)."""
    value = similarity
    value -= weights.w_cost * saturate(price_usd_per_mtok, weights.cost_ref_usd_per_mtok)
    value -= load_penalty(load, capacity, weights)
    if latency_ms is not None:
        value -= weights.w_latency * saturate(latency_ms, weights.latency_ref_ms)
    if same_family:
        value += weights.w_family
    return value


def load_penalty(load: int, capacity: int, weights: MatchWeights) -> float:
    return weights.w_load * min(1.0, load / max(1, capacity))


# ---- constraints ---------------------------------------------------------------------------------


def policy_problem(vcv: CapabilityVector, constraints: Constraints, weights: MatchWeights) -> str | None:
    """Why an agent may not take a step under ``constraints`` (None: it may)."""
    if constraints.region is not None and vcv.policy.region != constraints.region:
        return f"region {vcv.policy.region!r} is not {constraints.region!r}"
    if constraints.data_class not in vcv.policy.data_classes:
        return f"does not accept {constraints.data_class} data"
    if constraints.max_cost_usd is not None and estimated_step_cost(vcv, weights) > constraints.max_cost_usd:
        return "over max_cost_usd"
    return None


def has_tags(cap_tags: Sequence[str], required: Sequence[str]) -> bool:
    if not required:
        return True
    have = {t.lower() for t in cap_tags}
    return all(t.lower() in have for t in required)


def ladder(start: Tier, constraints: Constraints | None = None) -> list[Tier]:
    """Tiers to try, cheapest first: from max(start, min_tier) up to max_tier."""
    lo = TIERS.index(start)
    hi = len(TIERS) - 1
    if constraints is not None:
        lo = max(lo, TIERS.index(constraints.min_tier))
        hi = TIERS.index(constraints.max_tier)
    return list(TIERS[lo : hi + 1])


def pick_tier(best_by_tier: Sequence[tuple[Tier, float | None]], margin: float) -> Tier | None:
    """The first tier (in ladder order) with a match whose best similarity is within ``margin`` of
    the best over all tiers. A cheap tier with a merely related capability does not capture a
    request that a higher tier serves much better; a tier with nothing falls through."""
    present = [(t, s) for t, s in best_by_tier if s is not None]
    if not present:
        return None
    top = max(s for _, s in present)
    for tier, sim in present:
        if sim >= top - margin:
            return tier
    return present[-1][0]  # unreachable: the top tier itself passes
