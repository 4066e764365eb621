"""The matcher of DESIGN.md section 5: filtered kNN per tier, collapse to agents, score, tier ladder.

The query vector is the query's embedding bridged towards card language by the intent bank
(routing/intents.py). Per tier it goes through that tier's HNSW index with a filter that drops
labels of agents that may not take the step (offline/draining, excluded, at capacity, policy,
cost, tags).
The capabilities behind the hits are then scored exactly over all their views, blended with BM25
term overlap, collapsed to the best capability per agent, thresholded and scored with cost, load,
latency and model family. Small tiers skip HNSW and score every allowed label exactly.

Across tiers (``route``) the cheapest tier whose best match is close to the best of all allowed
tiers wins; an empty tier falls through.

A query seen before (a retry, an escalation, the same task text again) reuses its candidates and
their similarities per tier until a card or a presence changes or an agent reaches or leaves its
capacity; load is applied live, so a busier agent still ranks lower at once.
"""

from __future__ import annotations

import asyncio
import heapq
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from agentmesh.errors import AgentMeshError
from agentmesh.protocol import PLAN_TAG, Constraints, Tier
from agentmesh.registry.embedder import TokenEmbedder, TokenVectors, Vectors
from agentmesh.registry.index import LabelRef
from agentmesh.registry.store import AgentEntry, Registry
from agentmesh.registry.text import terms
from agentmesh.routing.intents import IntentBank
from agentmesh.routing.scoring import (
    MatchWeights,
    blended_price,
    combined_similarity,
    has_tags,
    ladder,
    late_interaction,
    load_penalty,
    pick_tier,
    policy_problem,
    score,
    views_similarity,
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
    intents: tuple[tuple[str, float], ...] = ()  # the bank's descriptions that bridged it, weights


@dataclass
class _TierFilter:
    """Which labels of one tier a query may not see, for one (registry state, constraints) pair."""

    key: tuple[Any, ...] = ()
    blocked_labels: set[int] = field(default_factory=set)
    allowed_agents: list[AgentEntry] = field(default_factory=list)
    allowed_labels: int = 0
    blocked_caps: set[CapKey] = field(default_factory=set)
    cap_mask: npt.NDArray[np.bool_] | None = None  # over _TierMatrix.caps, built on first exact use


@dataclass(frozen=True)
class _Similarities:
    """One query's candidate capabilities on one tier, before the per-agent penalties: what a
    repeated query (a retry, an escalation, the same task text again) reuses."""

    keys: list[CapKey]
    sims: npt.NDArray[np.float64]
    dense: npt.NDArray[np.float64]
    lexical: npt.NDArray[np.float64]
    order: list[int]  # indices of ``sims``, best first

    @property
    def best(self) -> float | None:
        return float(self.sims[self.order[0]]) if self.order else None


@dataclass
class _TierMatrix:
    """Every view vector of one tier stacked, for exact scoring of small tiers in one product."""

    matrix: Vectors
    starts: npt.NDArray[np.intp]  # first row (the card view) of each capability
    caps: list[CapKey]
    agent_caps: dict[str, list[int]]


class Matcher:
    def __init__(self, registry: Registry, weights: MatchWeights | None = None) -> None:
        if registry.embedder is None:
            raise AgentMeshError("matching needs a registry with an embedder")
        self.registry = registry
        self.weights = weights or MatchWeights()
        self._intents: IntentBank | None = None  # loaded on first use
        self._filters: OrderedDict[tuple[Any, ...], _TierFilter] = OrderedDict()
        self._matrices: dict[Tier, tuple[int, _TierMatrix]] = {}
        self._similarities: OrderedDict[tuple[Any, ...], _Similarities] = OrderedDict()
        self._prepared: OrderedDict[str, PreparedQuery] = OrderedDict()
        self._prepared_lock = threading.Lock()  # prepare_query runs in worker threads too
        self._penalty_cache: tuple[int, dict[str, tuple[float, str | None, AgentEntry]]] | None = None

    # ---- queries ------------------------------------------------------------------------

    def embed_query(self, text: str) -> Vectors:
        return self.prepare_query(text).vector

    def embed_queries(self, texts: list[str]) -> Vectors:
        """Embed many queries in one batch (and warm the embedder's cache for matching them)."""
        return self._embed([self.registry.glossary.expand(t) for t in texts])

    def _embed(self, spelled: list[str]) -> Vectors:
        embedder = self.registry.embedder
        assert embedder is not None
        if isinstance(embedder, TokenEmbedder):
            return embedder.embed_with_tokens(spelled)[0]
        return embedder.embed(spelled)

    def prepare_queries(self, texts: list[str]) -> list[PreparedQuery]:
        """``prepare_query`` for many texts, embedded in one batch (thread-safe: for a worker
        thread, so that matching them later on the event loop only hits the cache)."""
        with self._prepared_lock:
            new = [t for t in dict.fromkeys(texts) if t not in self._prepared]
        spelled = {t: self.registry.glossary.expand(t) for t in new}
        if spelled:
            self._embed(list(spelled.values()))
        return [self._prepare(t, spelled.pop(t)) if t in spelled else self.prepare_query(t) for t in texts]

    def intent_bank(self) -> IntentBank | None:
        """The intent bank queries are expanded with (routing/intents.py); None when w_intent is 0
        or no bank is named."""
        if self.weights.w_intent <= 0 or not self.weights.intent_banks:
            return None
        if self._intents is None:
            with self._prepared_lock:
                if self._intents is None:
                    assert self.registry.embedder is not None
                    self._intents = IntentBank.load(self.registry.embedder, self.weights.intent_banks)
        return self._intents

    def prepare_query(self, text: str, vector: Vectors | None = None) -> PreparedQuery:
        """Embed ``text``, its acronyms spelled out by the registry's glossary, and expand it with
        the intent bank (thread-safe; the slow part of matching). With ``vector`` given, that
        vector is used as it is (no intents, no token matching)."""
        if vector is not None:
            return PreparedQuery(text, vector, None, terms(self.registry.glossary.expand(text)))
        with self._prepared_lock:
            hit = self._prepared.get(text)
            if hit is not None:
                self._prepared.move_to_end(text)
                return hit
        return self._prepare(text, self.registry.glossary.expand(text))  # spelled out as the cards

    def _prepare(self, text: str, spelled: str) -> PreparedQuery:
        embedder = self.registry.embedder
        assert embedder is not None
        tokens: TokenVectors | None = None
        if isinstance(embedder, TokenEmbedder):
            vectors, toks = embedder.embed_with_tokens([spelled])
            vector, tokens = vectors[0], toks[0]
        else:
            vector = embedder.embed([spelled])[0]
        bank = self.intent_bank()
        intents: tuple[tuple[str, float], ...] = ()
        if bank is not None:
            w = self.weights
            nearest = bank.nearest(
                vector, floor=w.intent_floor, top=w.intent_top, temperature=w.intent_temperature
            )
            vector = bank.expand(vector, nearest, w.w_intent)
            intents = tuple((bank.descriptions[i], share) for i, share in nearest)
        prepared = PreparedQuery(text, vector, tokens, terms(spelled), intents)
        with self._prepared_lock:
            self._prepared[text] = prepared
            while len(self._prepared) > 4096:
                self._prepared.popitem(last=False)
        return prepared

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
        k = k or self.weights.k
        sims, chosen = self._ladder(prepared, constraints, start_tier, exclude, k, allow_busy)
        by_tier = {t: self._rank(s, t, prefer_family, k) for t, s in sims.items()}
        return RouteExplanation(prepared.text, list(sims), by_tier, chosen)

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
        wait_for_better: bool = True,
    ) -> list[Match]:
        """The tier ladder: matches of the tier the step goes to (empty if no tier has any, or
        with ``wait_for_better`` when the step should wait for a busy agent that matches much
        better: ``wait_margin``); the same as ``explain(...).matches`` otherwise, ranking only the
        chosen tier.

        Escalation is ``route(q, start_tier=<next tier up>, exclude=<agents tried>,
        prefer_family=<family of the weak attempt>)``.
        """
        prepared = query if isinstance(query, PreparedQuery) else self.prepare_query(query, query_vector)
        k = k or self.weights.k
        sims, chosen = self._ladder(prepared, constraints, start_tier, exclude, k, allow_busy)
        if chosen is None or (
            wait_for_better
            and not allow_busy
            and self._busy_one_is_better(prepared, constraints, start_tier, exclude, k, sims[chosen])
        ):
            return []
        return self._rank(sims[chosen], chosen, prefer_family, k)

    def _busy_one_is_better(
        self,
        query: PreparedQuery,
        constraints: Constraints | None,
        start_tier: Tier,
        exclude: Collection[str],
        k: int,
        free: _Similarities,
    ) -> bool:
        """Whether an agent at capacity matches so much better (``wait_margin``) than the best free
        one that the step should wait for it: a capital question is not for the calculator because
        the chat agent is busy. A free agent as good, on any tier of the ladder, takes it."""
        tiers = ladder(start_tier, constraints)
        if all(
            self._tier_filter(t, constraints, False).allowed_labels
            == self._tier_filter(t, constraints, True).allowed_labels
            for t in tiers
        ):
            return False  # nobody on the ladder is at capacity
        everyone, tier = self._ladder(query, constraints, start_tier, exclude, k, True)
        best = everyone[tier].best if tier is not None else None
        return best is not None and free.best is not None and free.best < best - self.weights.wait_margin

    def _ladder(
        self,
        query: PreparedQuery,
        constraints: Constraints | None,
        start_tier: Tier,
        exclude: Collection[str],
        k: int,
        allow_busy: bool,
    ) -> tuple[dict[Tier, _Similarities], Tier | None]:
        """Each tier's candidates on the ladder, and the tier the step goes to."""
        sims = {
            t: self._tier_similarities(query, t, constraints, exclude, k, allow_busy)
            for t in ladder(start_tier, constraints)
        }
        floor = self.weights.min_similarity
        best = [(t, s.best if s.best is not None and s.best >= floor else None) for t, s in sims.items()]
        return sims, pick_tier(best, self.weights.tier_margin)

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
        k = k or self.weights.k
        sims = self._tier_similarities(query, tier, constraints, exclude, k, allow_busy)
        return self._rank(sims, tier, prefer_family, k)

    def _tier_similarities(
        self,
        query: PreparedQuery,
        tier: Tier,
        constraints: Constraints | None,
        exclude: Collection[str],
        k: int,
        allow_busy: bool,
    ) -> _Similarities:
        filt = self._tier_filter(tier, constraints, allow_busy)
        excluded = (
            frozenset(e.agent_id for e in filt.allowed_agents if e.agent_id in exclude)
            if exclude
            else frozenset()
        )
        if query.tokens is None:  # a caller's own vector: not keyed by the text
            return self._score(query, tier, filt, excluded, k)
        key = (filt.key, query.text, k, excluded)
        similarities = self._similarities.get(key)
        if similarities is None:
            similarities = self._similarities[key] = self._score(query, tier, filt, excluded, k)
            while len(self._similarities) > 2048:
                self._similarities.popitem(last=False)
        else:
            self._similarities.move_to_end(key)
        return similarities

    def _score(
        self, query: PreparedQuery, tier: Tier, filt: _TierFilter, excluded: frozenset[str], k: int
    ) -> _Similarities:
        return self._score_candidates(self._candidates(query, tier, filt, excluded, k), query)

    def _candidates(
        self, query: PreparedQuery, tier: Tier, filt: _TierFilter, excluded: frozenset[str], k: int
    ) -> dict[CapKey, float]:
        """The capabilities worth scoring fully, with their dense similarity."""
        w = self.weights
        excluded_entries = [e for e in filt.allowed_agents if e.agent_id in excluded] if excluded else []
        allowed_labels = filt.allowed_labels - sum(sum(len(v) for v in e.vectors) for e in excluded_entries)
        if allowed_labels <= 0:
            return {}
        index = self.registry.index(tier)
        vec = query.vector
        if allowed_labels <= w.exact_below and len(index) <= 4 * w.exact_below:
            return self._exact(tier, vec, filt, excluded)
        if allowed_labels <= w.exact_below:
            # A big tier under a narrow filter (a region, a tag): score the few allowed directly.
            refs = [
                LabelRef(e.agent_id, c, 0)
                for e in filt.allowed_agents
                if e.agent_id not in excluded
                for c in range(len(e.vectors))
            ]
            return self._front_runners(self._rescore(refs, vec, filt.blocked_caps))
        blocked = filt.blocked_labels
        if excluded_entries:
            blocked = blocked | {label for e in excluded_entries for label in index.labels_of(e.agent_id)}
        allowed: Callable[[int], bool] | None = (lambda label: label not in blocked) if blocked else None
        fetch = min(max(k * w.oversample, w.min_fetch), allowed_labels)
        labels, sims = index.knn(vec, fetch, ef=max(w.ef_search, fetch), allowed=allowed)
        known = dict(zip(labels.tolist(), sims.tolist(), strict=True))
        return self._rescore(index.refs(list(known)), vec, filt.blocked_caps, known_sims=known)

    def _rescore(
        self,
        refs: list[LabelRef],
        vec: Vectors,
        blocked: set[CapKey],
        *,
        known_sims: dict[int, float] | None = None,
    ) -> dict[CapKey, float]:
        """Exact dense similarity over all views of the capabilities behind the kNN hits, in one
        matrix product (a hit on one view brings in its capability's other views). A capability
        with a single view keeps the similarity the kNN already computed."""
        reg = self.registry
        out: dict[CapKey, float] = {}
        keys: list[CapKey] = []
        mats: list[Vectors] = []
        labels = list(known_sims) if known_sims is not None else []
        for i, ref in enumerate(refs):
            key = (ref.agent_id, ref.cap)
            if key in out or key in blocked:
                continue
            if ref.views == 1 and known_sims is not None:
                out[key] = known_sims[labels[i]]
                continue
            entry = reg.get(ref.agent_id)
            if entry is None or ref.cap >= len(entry.vectors):
                continue
            out[key] = 0.0  # placeholder keeps the kNN order; filled below
            keys.append(key)
            mats.append(entry.vectors[ref.cap])
        if keys:
            starts = np.cumsum([0] + [len(m) for m in mats[:-1]])
            dense = views_similarity(np.vstack(mats) @ vec, starts, self.weights.w_best_view)
            out.update(zip(keys, dense.tolist(), strict=True))
        return out

    def _exact(
        self, tier: Tier, vec: Vectors, filt: _TierFilter, excluded: frozenset[str]
    ) -> dict[CapKey, float]:
        """Score every allowed capability of the tier exactly; keep the dense front-runners."""
        w = self.weights
        tm = self._tier_matrix(tier)
        if not tm.caps:
            return {}
        if filt.cap_mask is None or len(filt.cap_mask) != len(tm.caps):
            allowed_ids = {e.agent_id for e in filt.allowed_agents}
            filt.cap_mask = np.array(
                [aid in allowed_ids and (aid, c) not in filt.blocked_caps for aid, c in tm.caps], dtype=bool
            )
        dense = views_similarity(tm.matrix @ vec, tm.starts, w.w_best_view)
        dense = np.where(filt.cap_mask, dense, -np.inf)
        for agent_id in excluded:
            dense[tm.agent_caps.get(agent_id, [])] = -np.inf
        keep = min(max(w.min_fetch, w.k * w.oversample), len(dense))
        top = np.argpartition(-dense, keep - 1)[:keep] if keep < len(dense) else np.arange(len(dense))
        top = top[np.isfinite(dense[top])]
        caps = tm.caps
        return dict(zip([caps[i] for i in top.tolist()], dense[top].tolist(), strict=True))

    def _front_runners(self, candidates: dict[CapKey, float]) -> dict[CapKey, float]:
        """Lexical and token scoring only need the dense front-runners."""
        keep = max(self.weights.min_fetch, self.weights.k * self.weights.oversample)
        if len(candidates) <= keep:
            return candidates
        return dict(sorted(candidates.items(), key=lambda kv: kv[1], reverse=True)[:keep])

    def _tier_matrix(self, tier: Tier) -> _TierMatrix:
        reg = self.registry
        cached = self._matrices.get(tier)
        if cached is not None and cached[0] == reg.cards_generation:
            return cached[1]
        rows: list[Vectors] = []
        starts: list[int] = []
        caps: list[CapKey] = []
        agent_caps: dict[str, list[int]] = {}
        n = 0
        for entry in reg.agents_in_tier(tier):
            for c, views in enumerate(entry.vectors):
                agent_caps.setdefault(entry.agent_id, []).append(len(caps))
                caps.append((entry.agent_id, c))
                starts.append(n)
                rows.append(views)
                n += len(views)
        dim = reg.embedder_dim
        matrix = np.ascontiguousarray(np.vstack(rows) if rows else np.empty((0, dim)), dtype=np.float32)
        tm = _TierMatrix(matrix, np.asarray(starts, dtype=np.intp), caps, agent_caps)
        self._matrices[tier] = (reg.cards_generation, tm)
        return tm

    def _score_candidates(self, candidates: dict[CapKey, float], query: PreparedQuery) -> _Similarities:
        """Blend each candidate's dense similarity with token late interaction and BM25."""
        w = self.weights
        reg = self.registry
        keys = list(candidates)
        dense = np.fromiter(candidates.values(), dtype=np.float64, count=len(keys))
        lex = np.zeros(len(keys))
        if keys and w.w_lexical > 0 and query.terms:
            scores = reg.lexical.scores(query.terms, keys)
            lex = np.array([scores[key] for key in keys])
        token = dense.copy()  # capabilities without token vectors fall back to the sentence score
        qtok = query.tokens if w.w_token > 0 and query.tokens is not None and len(query.tokens) else None
        if keys and qtok is not None:
            qweights = np.array([reg.pieces.idf(p) for p in qtok.pieces], dtype=np.float32)
            for i, (agent_id, cap) in enumerate(keys):
                entry = reg.get(agent_id)
                cap_tokens = entry.tokens[cap] if entry is not None and cap < len(entry.tokens) else None
                if cap_tokens is not None:
                    value = late_interaction(qtok.vectors, qweights, cap_tokens.vectors)
                    if value is not None:
                        token[i] = value
        sims = np.asarray(combined_similarity(dense, token, lex, w_token=w.w_token, w_lexical=w.w_lexical))
        order = np.argsort(-sims, kind="stable").tolist()
        return _Similarities(keys, sims, dense, lex, order)

    def _rank(self, s: _Similarities, tier: Tier, prefer_family: str | None, k: int) -> list[Match]:
        """Collapse to agents (best capability each) in similarity order, then score. Penalties are
        >= 0 and the family bonus <= w_family, so once k agents are scored, an agent whose
        similarity + w_family is below the k-th score cannot get in."""
        w = self.weights
        penalties = self._penalties()
        seen: set[str] = set()
        ranked: list[tuple[float, float, str, int]] = []  # (score, similarity, agent, candidate)
        best_k: list[float] = []  # min-heap of the k best scores so far
        sim_list = s.sims.tolist()
        for i in s.order:
            sim = sim_list[i]
            if sim < w.min_similarity or (len(best_k) >= k and sim + w.w_family < best_k[0]):
                break
            agent_id = s.keys[i][0]
            if agent_id in seen or agent_id not in penalties:
                continue
            seen.add(agent_id)
            penalty, family, entry = penalties[agent_id]
            bonus = w.w_family if prefer_family is not None and family == prefer_family else 0.0
            value = sim - penalty - load_penalty(entry.load, entry.capacity, w) + bonus
            ranked.append((value, sim, agent_id, i))
            if len(best_k) < k:
                heapq.heappush(best_k, value)
            elif value > best_k[0]:
                heapq.heapreplace(best_k, value)
        ranked.sort(key=lambda r: (-r[0], -r[1], r[2]))
        out: list[Match] = []
        for value, sim, agent_id, i in ranked[:k]:
            entry = penalties[agent_id][2]
            cap = s.keys[i][1]
            out.append(
                Match(
                    agent_id=agent_id,
                    tier=tier,
                    capability=entry.vcv.capabilities[cap].name,
                    similarity=sim,
                    score=value,
                    dense=float(s.dense[i]),
                    lexical=float(s.lexical[i]),
                    capability_index=cap,
                    family=entry.family,
                )
            )
        return out

    def _penalties(self) -> dict[str, tuple[float, str | None, AgentEntry]]:
        """Per agent: what cost and latency take off its score, its model family and its entry
        (load is read live: it changes with every assignment)."""
        reg = self.registry
        if self._penalty_cache is not None and self._penalty_cache[0] == reg.generation:
            return self._penalty_cache[1]
        w = self.weights
        out: dict[str, tuple[float, str | None, AgentEntry]] = {}
        for entry in reg.agents():
            unloaded = score(
                0.0,
                price_usd_per_mtok=blended_price(entry.vcv, w),
                load=0,
                capacity=entry.capacity,
                latency_ms=entry.vcv.qos.p50_latency_ms,
                same_family=False,
                weights=w,
            )
            out[entry.agent_id] = (-unloaded, entry.family, entry)
        self._penalty_cache = (reg.generation, out)
        return out

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
        # Which agents are at capacity matters only to a filter that leaves them out.
        key = (tier, reg.generation, None if allow_busy else reg.busy_generation, ckey, allow_busy)
        cached = self._filters.get(key)
        if cached is not None:
            self._filters.move_to_end(key)
            return cached
        index = reg.index(tier)
        filt = _TierFilter(key)
        required_tags = list(constraints.tags) if constraints is not None else []
        # A planner's capability answers in plan JSON: no ordinary step goes to it.
        planning = PLAN_TAG in required_tags
        for entry in reg.agents_in_tier(tier):
            ok = entry.routable and (allow_busy or entry.load < entry.capacity)
            if ok and constraints is not None:
                ok = policy_problem(entry.vcv, constraints, self.weights) is None
            if not ok:
                filt.blocked_labels.update(index.labels_of(entry.agent_id))
                continue
            tagged = [
                has_tags(c.tags, required_tags) and (planning or PLAN_TAG not in c.tags)
                for c in entry.vcv.capabilities
            ]
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
