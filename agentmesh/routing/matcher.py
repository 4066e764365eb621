"""The matcher of DESIGN.md section 5: filtered kNN per tier, collapse to agents, score, tier ladder.

Per tier: the query vector goes through that tier's HNSW index with a filter that drops labels of
agents that may not take the step (offline/draining, excluded, at capacity, policy, cost, tags).
The capabilities behind the hits are then scored exactly over all their views, blended with BM25
term overlap, collapsed to the best capability per agent, thresholded and scored with cost, load,
latency and model family. Small tiers skip HNSW and score every allowed label exactly.

Across tiers (``route``) the cheapest tier whose best match is close to the best of all allowed
tiers wins; an empty tier falls through.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agentmesh.errors import AgentMeshError
from agentmesh.protocol import Constraints, Tier
from agentmesh.registry.embedder import TokenEmbedder, TokenVectors, Vectors
from agentmesh.registry.store import AgentEntry, Registry
from agentmesh.registry.text import terms
from agentmesh.routing.scoring import (
    MatchWeights,
    blended_price,
    combined_similarity,
    has_tags,
    ladder,
    late_interaction,
    pick_tier,
    policy_problem,
    score,
    view_similarity,
)

CapKey = tuple[str, int]


@dataclass(frozen=True)
class Match:
    agent_id: str
    tier: Tier
    capability: str
    similarity: float
    score: float
    dense: float = 0.0
    lexical: float = 0.0
    capability_index: int = 0
    family: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The ``match --json`` shape of DESIGN.md section 9."""
        return {
            "agent_id": self.agent_id,
            "tier": self.tier,
            "capability": self.capability,
            "similarity": round(self.similarity, 4),
            "score": round(self.score, 4),
        }


@dataclass(frozen=True)
class RouteExplanation:
    """Where a query would go: every tier's matches and the tier the ladder picks."""

    query: str
    tiers: list[Tier]
    by_tier: dict[Tier, list[Match]]
    chosen: Tier | None

    @property
    def matches(self) -> list[Match]:
        return self.by_tier.get(self.chosen, []) if self.chosen is not None else []

    def ranked(self, k: int | None = None) -> list[Match]:
        """Where the step goes first, then the alternatives: the chosen tier's matches in score
        order, then the other tiers' by similarity."""
        others = [m for t in self.tiers if t != self.chosen for m in self.by_tier[t]]
        others.sort(key=lambda m: (-m.similarity, m.agent_id))
        out = self.matches + others
        return out[:k] if k is not None else out


@dataclass(frozen=True)
class PreparedQuery:
    """A query embedded once for all tiers: sentence vector, content tokens, lexical terms."""

    text: str
    vector: Vectors
    tokens: TokenVectors | None
    terms: list[str]


@dataclass
class _TierFilter:
    """Which labels of one tier a query may not see, for one (registry state, constraints) pair."""

    blocked_labels: set[int] = field(default_factory=set)
    allowed_agents: list[AgentEntry] = field(default_factory=list)
    allowed_labels: int = 0
    blocked_caps: set[CapKey] = field(default_factory=set)


class Matcher:
    def __init__(self, registry: Registry, weights: MatchWeights | None = None) -> None:
        if registry.embedder is None:
            raise AgentMeshError("matching needs a registry with an embedder")
        self.registry = registry
        self.weights = weights or MatchWeights()
        self._filters: OrderedDict[tuple[Any, ...], _TierFilter] = OrderedDict()

    # ---- queries ------------------------------------------------------------------------

    def embed_query(self, text: str) -> Vectors:
        return self.prepare_query(text).vector

    def embed_queries(self, texts: list[str]) -> Vectors:
        """Embed many queries in one batch (and warm the embedder's cache for matching them)."""
        embedder = self.registry.embedder
        assert embedder is not None
        if isinstance(embedder, TokenEmbedder):
            return embedder.embed_with_tokens(texts)[0]
        return embedder.embed(texts)

    def prepare_query(self, text: str, vector: Vectors | None = None) -> PreparedQuery:
        """Embed ``text`` (thread-safe; the slow part of matching). With ``vector`` given, only
        the sentence vector is used (no token matching)."""
        embedder = self.registry.embedder
        assert embedder is not None
        tokens: TokenVectors | None = None
        if vector is None:
            if isinstance(embedder, TokenEmbedder):
                vectors, toks = embedder.embed_with_tokens([text])
                vector, tokens = vectors[0], toks[0]
            else:
                vector = embedder.embed([text])[0]
        return PreparedQuery(text, vector, tokens, terms(text))

    def match(
        self,
        query: str | PreparedQuery,
        *,
        tier: Tier,
        constraints: Constraints | None = None,
        exclude: Collection[str] = (),
        prefer_family: str | None = None,
        k: int | None = None,
        query_vector: Vectors | None = None,
        allow_busy: bool = False,
    ) -> list[Match]:
        """The best agents of one tier for ``query``, best first (at most ``k``)."""
        prepared = query if isinstance(query, PreparedQuery) else self.prepare_query(query, query_vector)
        return self._match_tier(prepared, tier, constraints, exclude, prefer_family, k, allow_busy)

    def explain(
        self,
        query: str | PreparedQuery,
        *,
        constraints: Constraints | None = None,
        start_tier: Tier = "device",
        exclude: Collection[str] = (),
        prefer_family: str | None = None,
        k: int | None = None,
        query_vector: Vectors | None = None,
        allow_busy: bool = False,
    ) -> RouteExplanation:
        """Every tier's matches on the ladder and the tier the step would go to."""
        prepared = query if isinstance(query, PreparedQuery) else self.prepare_query(query, query_vector)
        tiers = ladder(start_tier, constraints)
        by_tier = {
            t: self._match_tier(prepared, t, constraints, exclude, prefer_family, k, allow_busy)
            for t in tiers
        }
        best = [(t, max((m.similarity for m in by_tier[t]), default=None)) for t in tiers]
        chosen = pick_tier(best, self.weights.tier_margin)
        return RouteExplanation(prepared.text, tiers, by_tier, chosen)

    def route(
        self,
        query: str | PreparedQuery,
        *,
        constraints: Constraints | None = None,
        start_tier: Tier = "device",
        exclude: Collection[str] = (),
        prefer_family: str | None = None,
        k: int | None = None,
        query_vector: Vectors | None = None,
        allow_busy: bool = False,
    ) -> list[Match]:
        """The tier ladder: matches of the tier the step goes to (empty if no tier has any).

        Escalation is ``route(q, start_tier=<next tier up>, exclude=<agents tried>,
        prefer_family=<family of the weak attempt>)``.
        """
        return self.explain(
            query,
            constraints=constraints,
            start_tier=start_tier,
            exclude=exclude,
            prefer_family=prefer_family,
            k=k,
            query_vector=query_vector,
            allow_busy=allow_busy,
        ).matches

    async def aroute(self, query: str, **kwargs: Any) -> list[Match]:
        """``route`` with the query embedded in a worker thread (the event loop stays free)."""
        prepared = await asyncio.to_thread(self.prepare_query, query, kwargs.pop("query_vector", None))
        return self.route(prepared, **kwargs)

    async def amatch(self, query: str, **kwargs: Any) -> list[Match]:
        prepared = await asyncio.to_thread(self.prepare_query, query, kwargs.pop("query_vector", None))
        return self.match(prepared, **kwargs)

    # ---- one tier -----------------------------------------------------------------------

    def _match_tier(
        self,
        query: PreparedQuery,
        tier: Tier,
        constraints: Constraints | None,
        exclude: Collection[str],
        prefer_family: str | None,
        k: int | None,
        allow_busy: bool,
    ) -> list[Match]:
        w = self.weights
        k = k or w.k
        filt = self._tier_filter(tier, constraints, allow_busy)
        excluded = [e for e in filt.allowed_agents if e.agent_id in exclude] if exclude else []
        allowed_labels = filt.allowed_labels - sum(sum(len(v) for v in e.vectors) for e in excluded)
        if allowed_labels <= 0:
            return []
        index = self.registry.index(tier)
        vec = query.vector
        excluded_ids = {e.agent_id for e in excluded}
        candidates: dict[CapKey, float]  # capability -> dense similarity
        if allowed_labels <= w.exact_below:
            candidates = self._exact(vec, filt, excluded_ids)
        else:
            blocked = filt.blocked_labels
            if excluded:
                blocked = blocked | {label for e in excluded for label in index.labels_of(e.agent_id)}
            allowed: Callable[[int], bool] | None = (lambda label: label not in blocked) if blocked else None
            fetch = min(max(k * w.oversample, w.min_fetch), allowed_labels)
            labels, _ = index.knn(vec, fetch, ef=max(w.ef_search, fetch), allowed=allowed)
            caps = {(ref.agent_id, ref.cap) for ref in map(index.ref, labels.tolist())}
            candidates = {}
            for agent_id, cap in caps:
                entry = self.registry.get(agent_id)
                if entry is None or (agent_id, cap) in filt.blocked_caps:
                    continue
                candidates[(agent_id, cap)] = view_similarity(entry.vectors[cap] @ vec, w.w_best_view)
        return self._rank(candidates, query, tier, prefer_family, k)

    def _exact(self, vec: Vectors, filt: _TierFilter, excluded: set[str]) -> dict[CapKey, float]:
        w = self.weights
        out: dict[CapKey, float] = {}
        for entry in filt.allowed_agents:
            if entry.agent_id in excluded:
                continue
            for cap, views in enumerate(entry.vectors):
                if (entry.agent_id, cap) not in filt.blocked_caps:
                    out[(entry.agent_id, cap)] = view_similarity(views @ vec, w.w_best_view)
        # Lexical scoring only needs the dense front-runners.
        keep = max(w.min_fetch, w.k * w.oversample)
        if len(out) > keep:
            top = sorted(out.items(), key=lambda kv: kv[1], reverse=True)[:keep]
            out = dict(top)
        return out

    def _rank(
        self,
        candidates: dict[CapKey, float],
        query: PreparedQuery,
        tier: Tier,
        prefer_family: str | None,
        k: int,
    ) -> list[Match]:
        w = self.weights
        reg = self.registry
        lexical = reg.lexical.scores(query.terms, candidates.keys()) if w.w_lexical > 0 else {}
        qtok = query.tokens if w.w_token > 0 and query.tokens is not None and len(query.tokens) else None
        qweights = np.array([reg.pieces.idf(p) for p in qtok.pieces], dtype=np.float32) if qtok else None
        best: dict[str, tuple[float, float, float, int]] = {}
        for (agent_id, cap), dense in candidates.items():
            lex = float(lexical.get((agent_id, cap), 0.0))
            token: float | None = None
            if qtok is not None and qweights is not None:
                entry = reg.get(agent_id)
                cap_tokens = entry.tokens[cap] if entry is not None and cap < len(entry.tokens) else None
                if cap_tokens is not None:
                    token = late_interaction(qtok.vectors, qweights, cap_tokens.vectors)
            sim = combined_similarity(dense, token, lex, w_token=w.w_token, w_lexical=w.w_lexical)
            held = best.get(agent_id)
            if held is None or sim > held[0]:
                best[agent_id] = (sim, dense, lex, cap)
        out: list[Match] = []
        for agent_id, (sim, dense, lex, cap) in best.items():
            if sim < w.min_similarity:
                continue
            entry = self.registry.get(agent_id)
            if entry is None:
                continue
            family = entry.family
            value = score(
                sim,
                price_usd_per_mtok=blended_price(entry.vcv, w),
                load=entry.load,
                capacity=entry.capacity,
                latency_ms=entry.vcv.qos.p50_latency_ms,
                same_family=prefer_family is not None and family == prefer_family,
                weights=w,
            )
            out.append(
                Match(
                    agent_id=agent_id,
                    tier=tier,
                    capability=entry.vcv.capabilities[cap].name,
                    similarity=sim,
                    score=value,
                    dense=dense,
                    lexical=lex,
                    capability_index=cap,
                    family=family,
                )
            )
        out.sort(key=lambda m: (-m.score, -m.similarity, m.agent_id))
        return out[:k]

    # ---- filters ------------------------------------------------------------------------

    def _tier_filter(self, tier: Tier, constraints: Constraints | None, allow_busy: bool) -> _TierFilter:
        reg = self.registry
        ckey = (
            None
            if constraints is None
            else (
                constraints.region,
                constraints.data_class,
                constraints.max_cost_usd,
                tuple(constraints.tags),
            )
        )
        key = (tier, reg.generation, reg.load_generation, ckey, allow_busy)
        cached = self._filters.get(key)
        if cached is not None:
            self._filters.move_to_end(key)
            return cached
        index = reg.index(tier)
        filt = _TierFilter()
        required_tags = list(constraints.tags) if constraints is not None else []
        for entry in reg.agents_in_tier(tier):
            ok = entry.routable and (allow_busy or entry.load < entry.capacity)
            if ok and constraints is not None:
                ok = policy_problem(entry.vcv, constraints, self.weights) is None
            if not ok:
                filt.blocked_labels.update(index.labels_of(entry.agent_id))
                continue
            tagged = [has_tags(c.tags, required_tags) for c in entry.vcv.capabilities]
            if not any(tagged):
                filt.blocked_labels.update(index.labels_of(entry.agent_id))
                continue
            if not all(tagged):
                for label in index.labels_of(entry.agent_id):
                    if not tagged[index.ref(label).cap]:
                        filt.blocked_labels.add(label)
                filt.blocked_caps.update((entry.agent_id, c) for c, ok_cap in enumerate(tagged) if not ok_cap)
            filt.allowed_agents.append(entry)
            filt.allowed_labels += sum(
                len(v) for v, ok_cap in zip(entry.vectors, tagged, strict=True) if ok_cap
            )
        self._filters[key] = filt
        while len(self._filters) > 32:
            self._filters.popitem(last=False)
        return filt
