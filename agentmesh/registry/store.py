"""The registry: every agent's current card (VCV) and presence, embedded into per-tier indices.

Rules (DESIGN.md section 3): a card is applied only on its own agent's topic and only if its version
is higher than the one held; an empty retained payload (None) deregisters. Presence is independent
of the card and may arrive first. An agent without presence is routable (a card published by a
plain MQTT client still matches); ``offline`` (its Last Will) or ``draining`` is not.

Embedding is the slow part, so it is split out: ``prepare`` (thread-safe, may run in a worker
thread) turns a card into vectors, ``apply_vcv`` (cheap, call it from one thread) swaps them in.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from agentmesh.protocol import TIERS, CapabilityVector, Message, Presence, Tier, TopicKind, TopicRef, Topics
from agentmesh.registry.embedder import (
    Embedder,
    MiniLMEmbedder,
    TokenEmbedder,
    TokenVectors,
    Vectors,
    normalize_rows,
    same_model,
)
from agentmesh.registry.glossary import Glossary
from agentmesh.registry.index import IndexParams, TierIndex
from agentmesh.registry.lexical import DocumentFrequency, LexicalIndex
from agentmesh.registry.text import TOKEN_VIEWS, ViewKind, capability_terms, capability_views

log = logging.getLogger(__name__)

AgentState = Literal["online", "offline", "draining", "unknown"]
ChangeKind = Literal["card", "deregister", "presence"]


@dataclass(frozen=True)
class PreparedCard:
    """A card with the vectors of its capabilities' views (``vectors[i]`` is views x dim) and, when
    the embedder exposes them, the content-token vectors of each capability (late interaction)."""

    vcv: CapabilityVector
    vectors: list[Vectors]
    kinds: list[tuple[ViewKind, ...]]
    tokens: list[TokenVectors | None] = field(default_factory=list)
    provided: bool = False
    # Each capability's lexical terms, its acronyms spelled out: computed here (in a worker
    # thread) so that applying the card on the event loop does not spell it out again.
    terms: list[Counter[str]] = field(default_factory=list)


@dataclass
class AgentEntry:
    vcv: CapabilityVector
    presence: Presence | None = None
    inflight: int = 0
    state_since: float = field(default_factory=time.time)  # when ``state`` last changed
    vectors: list[Vectors] = field(default_factory=list, repr=False)
    kinds: list[tuple[ViewKind, ...]] = field(default_factory=list, repr=False)
    tokens: list[TokenVectors | None] = field(default_factory=list, repr=False)

    @property
    def agent_id(self) -> str:
        return self.vcv.agent_id

    @property
    def version(self) -> int:
        return self.vcv.version

    @property
    def tier(self) -> Tier:
        return self.vcv.tier

    @property
    def state(self) -> AgentState:
        return self.presence.state if self.presence is not None else "unknown"

    @property
    def routable(self) -> bool:
        return self.state in ("online", "unknown")

    @property
    def capacity(self) -> int:
        return self.presence.capacity if self.presence is not None else self.vcv.qos.max_concurrency

    @property
    def load(self) -> int:
        reported = self.presence.load if self.presence is not None else 0
        return max(reported, self.inflight)

    @property
    def family(self) -> str | None:
        return self.vcv.model.family if self.vcv.model is not None else None

    @property
    def capability_names(self) -> list[str]:
        return [c.name for c in self.vcv.capabilities]

    @property
    def context_window(self) -> int | None:
        return self.vcv.model.context_window if self.vcv.model is not None else None


@dataclass(frozen=True)
class RegistryChange:
    agent_id: str
    kind: ChangeKind
    routable: bool


Listener = Callable[[RegistryChange], None]


class Registry:
    """Cards and presence of every agent, embedded into one HNSW index per tier.

    ``embedder`` defaults to a (lazily loaded) MiniLMEmbedder. ``indexed=False`` only tracks cards
    and presence (no model, no index), e.g. to list the mesh. ``glossary`` spells out acronyms in
    card text and in requests (registry/glossary.py); the built-in one by default. A card that
    brings vectors of our model (``embedding``) is taken as sent: its vectors are not spelled out.
    """

    def __init__(
        self,
        embedder: Embedder | None = None,
        *,
        params: IndexParams | None = None,
        indexed: bool = True,
        glossary: Glossary | None = None,
    ) -> None:
        if indexed and embedder is None:
            embedder = MiniLMEmbedder()
        self.embedder: Embedder | None = embedder if indexed else None
        self.params = params or IndexParams()
        if glossary is None:
            glossary = Glossary.load() if indexed else Glossary()
        self.glossary = glossary
        self._entries: dict[str, AgentEntry] = {}
        self._presence: dict[str, Presence] = {}
        self._inflight: dict[str, int] = {}
        self._indices: dict[Tier, TierIndex] = {}
        if self.embedder is not None:
            self._indices = {tier: TierIndex(self.embedder.dim, self.params) for tier in TIERS}
        self.lexical = LexicalIndex()
        self.pieces = DocumentFrequency()
        self._listeners: list[Listener] = []
        # Bumped on every change / on card changes only / on in-flight changes: matchers cache
        # per-tier filters and matrices against these.
        self.generation = 0
        self.cards_generation = 0
        # Bumped when an agent reaches or leaves its capacity (not on every load change): what
        # the matcher's cached filters depend on.
        self.busy_generation = 0
        # (cards_generation, [(context window, agent id)] ascending), built when first asked
        self._windows: tuple[int, list[tuple[int, str]]] = (-1, [])

    # ---- reading ------------------------------------------------------------------------

    def get(self, agent_id: str) -> AgentEntry | None:
        return self._entries.get(agent_id)

    def agents(self) -> list[AgentEntry]:
        return sorted(self._entries.values(), key=lambda e: (TIERS.index(e.tier), e.agent_id))

    def agents_in_tier(self, tier: Tier) -> list[AgentEntry]:
        return [e for e in self._entries.values() if e.tier == tier]

    def without_room(self, tokens: int) -> set[str]:
        """Agents whose model's context window (as their card states it) is under ``tokens``."""
        generation, windows = self._windows
        if generation != self.cards_generation:
            windows = sorted(
                (e.context_window, e.agent_id) for e in self._entries.values() if e.context_window is not None
            )
            self._windows = (self.cards_generation, windows)
        small: set[str] = set()
        for window, agent_id in windows:
            if window >= tokens:
                break
            small.add(agent_id)
        return small

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, agent_id: object) -> bool:
        return agent_id in self._entries

    def index(self, tier: Tier) -> TierIndex:
        if not self._indices:
            raise RuntimeError("this registry has no embedder, so no index")
        return self._indices[tier]

    @property
    def indexed(self) -> bool:
        return bool(self._indices)

    # ---- listeners ----------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _notify(self, agent_id: str, kind: ChangeKind) -> None:
        self.generation += 1
        if kind != "presence":
            self.cards_generation += 1
        entry = self._entries.get(agent_id)
        change = RegistryChange(agent_id, kind, entry.routable if entry is not None else False)
        for listener in list(self._listeners):
            try:
                listener(change)
            except Exception:  # a broken listener must not stop the registry
                log.exception("registry listener failed on %s", change)

    # ---- cards --------------------------------------------------------------------------

    def rejects(self, agent_id: str, vcv: CapabilityVector) -> str | None:
        """Why ``vcv`` on ``agent_id``'s topic would be ignored, or None if it would be applied."""
        if vcv.agent_id != agent_id:
            return f"card of {vcv.agent_id!r} on the topic of {agent_id!r}"
        held = self._entries.get(agent_id)
        if held is not None and vcv.version <= held.version:
            return f"version {vcv.version} is not above the held version {held.version}"
        return None

    def prepare(self, vcv: CapabilityVector) -> PreparedCard:
        """Embed a card's capability views. Thread-safe; the slow step of applying a card."""
        return self.prepare_many([vcv])[0]

    def prepare_many(self, vcvs: list[CapabilityVector]) -> list[PreparedCard]:
        """Embed several cards in one batch (much faster than one by one)."""
        spelled = [[self.glossary.expand_capability(cap) for cap in vcv.capabilities] for vcv in vcvs]
        card_terms = [[capability_terms(cap) for cap in caps] for caps in spelled]
        if self.embedder is None:
            return [PreparedCard(v, [], [], terms=t) for v, t in zip(vcvs, card_terms, strict=True)]
        embedder = self.embedder
        out: list[PreparedCard] = []
        texts: list[str] = []
        plan: list[tuple[int, list[tuple[ViewKind, ...]]]] = []
        for i, vcv in enumerate(vcvs):
            provided = _provided_vectors(vcv, embedder)
            if provided is not None:
                out.append(
                    PreparedCard(
                        vcv,
                        [row.reshape(1, -1) for row in provided],
                        [("card",)] * len(provided),
                        [None] * len(provided),
                        provided=True,
                        terms=card_terms[i],
                    )
                )
                continue
            kinds: list[tuple[ViewKind, ...]] = []
            for cap in spelled[i]:
                views = capability_views(cap, max_examples=self.params.max_examples)
                kinds.append(tuple(v.kind for v in views))
                texts.extend(v.text for v in views)
            plan.append((i, kinds))
            out.append(PreparedCard(vcv, [], [], terms=card_terms[i]))  # placeholder, filled below
        if not texts:
            return out
        tokens: list[TokenVectors] | None = None
        if isinstance(embedder, TokenEmbedder):
            matrix, tokens = embedder.embed_with_tokens(texts)
        else:
            matrix = embedder.embed(texts)
        pos = 0
        for i, kinds in plan:
            vectors: list[Vectors] = []
            cap_tokens: list[TokenVectors | None] = []
            for cap_kinds in kinds:
                n = len(cap_kinds)
                vectors.append(matrix[pos : pos + n])
                if tokens is None:
                    cap_tokens.append(None)
                else:
                    parts = [tokens[pos + j] for j, kind in enumerate(cap_kinds) if kind in TOKEN_VIEWS]
                    cap_tokens.append(TokenVectors.concat(parts, embedder.dim))
                pos += n
            out[i] = PreparedCard(vcvs[i], vectors, kinds, cap_tokens, terms=card_terms[i])
        return out

    def apply_vcv(
        self, agent_id: str, vcv: CapabilityVector | None, *, prepared: PreparedCard | None = None
    ) -> bool:
        """Apply a card (or deregister on None). Returns whether the registry changed."""
        if vcv is None:
            return self._deregister(agent_id)
        if prepared is None or prepared.vcv is not vcv:
            if self.rejects(agent_id, vcv) is not None:
                log.info("ignoring card on %s: %s", agent_id, self.rejects(agent_id, vcv))
                return False
            prepared = self.prepare(vcv)
        return bool(self.apply_many([prepared], agent_ids=[agent_id]))

    def apply_many(
        self, cards: list[PreparedCard], *, agent_ids: list[str] | None = None, num_threads: int = 1
    ) -> list[str]:
        """Apply prepared cards (each on its own agent's topic unless ``agent_ids`` says otherwise)
        with one index insertion per tier. Returns the agents that changed."""
        accepted: dict[str, PreparedCard] = {}
        for i, card in enumerate(cards):
            agent_id = agent_ids[i] if agent_ids is not None else card.vcv.agent_id
            held = accepted.get(agent_id)
            reason = self.rejects(agent_id, card.vcv)
            if reason is not None or (held is not None and card.vcv.version <= held.vcv.version):
                log.info("ignoring card on %s: %s", agent_id, reason or "a newer one is in the same batch")
                continue
            accepted[agent_id] = card
        by_tier: dict[Tier, list[tuple[str, Vectors, list[tuple[int, int]]]]] = {}
        for agent_id, card in accepted.items():
            old = self._entries.get(agent_id)
            if old is not None and old.tier != card.vcv.tier and self._indices:
                self._indices[old.tier].remove_agent(agent_id)
            if self._indices:
                refs = [(c, v) for c, vecs in enumerate(card.vectors) for v in range(len(vecs))]
                stacked = np.vstack(card.vectors) if card.vectors else np.empty((0, self.embedder_dim))
                by_tier.setdefault(card.vcv.tier, []).append((agent_id, stacked.astype(np.float32), refs))
        for tier, items in by_tier.items():
            self._indices[tier].set_agents(items, num_threads=num_threads)
        for agent_id, card in accepted.items():
            old = self._entries.get(agent_id)
            if old is not None:
                self._forget_terms(old)
            entry = AgentEntry(
                vcv=card.vcv,
                presence=self._presence.get(agent_id),
                inflight=self._inflight.get(agent_id, 0),
                vectors=card.vectors,
                kinds=card.kinds,
                tokens=card.tokens or [None] * len(card.vectors),
            )
            for c, counts in enumerate(card.terms):
                self.lexical.add((agent_id, c), counts)
                tokens = entry.tokens[c] if c < len(entry.tokens) else None
                if tokens is not None:
                    self.pieces.add((agent_id, c), tokens.pieces)
            self._entries[agent_id] = entry
            self._notify(agent_id, "card")
        return list(accepted)

    @property
    def embedder_dim(self) -> int:
        return self.embedder.dim if self.embedder is not None else 0

    def _deregister(self, agent_id: str) -> bool:
        entry = self._entries.pop(agent_id, None)
        if entry is None:
            return False
        if self._indices:
            self._indices[entry.tier].remove_agent(agent_id)
        self._forget_terms(entry)
        self._notify(agent_id, "deregister")
        return True

    def _forget_terms(self, entry: AgentEntry) -> None:
        for c in range(len(entry.vcv.capabilities)):
            self.lexical.remove((entry.agent_id, c))
            self.pieces.remove((entry.agent_id, c))

    # ---- presence and load --------------------------------------------------------------

    def apply_presence(self, agent_id: str, presence: Presence | None) -> bool:
        """Record an agent's presence (None: cleared). Returns whether anything changed."""
        if presence is not None and presence.id != agent_id:
            log.info("ignoring presence of %r on the topic of %r", presence.id, agent_id)
            return False
        if presence is None:
            if self._presence.pop(agent_id, None) is None:
                return False
        else:
            self._presence[agent_id] = presence
        entry = self._entries.get(agent_id)
        if entry is not None:
            was = entry.state
            entry.presence = presence
            if entry.state != was:
                entry.state_since = time.time()
            self._notify(agent_id, "presence")
        return True

    def add_inflight(self, agent_id: str, delta: int) -> int:
        """Steps this router has sent to ``agent_id`` and not yet seen answered; returns the new count."""
        count = max(0, self._inflight.get(agent_id, 0) + delta)
        if count:
            self._inflight[agent_id] = count
        else:
            self._inflight.pop(agent_id, None)
        entry = self._entries.get(agent_id)
        if entry is not None and entry.inflight != count:
            was_busy = entry.load >= entry.capacity
            entry.inflight = count
            if (entry.load >= entry.capacity) != was_busy:
                self.busy_generation += 1
        return count

    # ---- messages -----------------------------------------------------------------------

    def apply_message(
        self,
        topic: str | TopicRef,
        message: Message | None,
        *,
        topics: Topics | None = None,
        prepared: PreparedCard | None = None,
    ) -> bool:
        """Apply what ``codec.parse`` returned for a card or presence topic; other topics are ignored."""
        ref = topic if isinstance(topic, TopicRef) else (topics or Topics()).parse(topic)
        if ref.id is None:
            return False
        if ref.kind is TopicKind.VCV and (message is None or isinstance(message, CapabilityVector)):
            return self.apply_vcv(ref.id, message, prepared=prepared)
        if ref.kind is TopicKind.AGENT_PRESENCE and (message is None or isinstance(message, Presence)):
            return self.apply_presence(ref.id, message)
        return False

    def clear(self, agent_ids: Iterable[str] | None = None) -> None:
        """Forget agents (all by default), e.g. before reloading a snapshot."""
        for agent_id in list(self._entries if agent_ids is None else agent_ids):
            self._deregister(agent_id)


def _provided_vectors(vcv: CapabilityVector, embedder: Embedder) -> Vectors | None:
    """The card's own vectors, if they come from our model and have our dimension."""
    emb = vcv.embedding
    if emb is None or not same_model(emb.model, embedder.model_name):
        return None
    if any(len(v) != embedder.dim for v in emb.vectors):
        log.info(
            "%s: embedding vectors are not %d-dimensional; embedding the text", vcv.agent_id, embedder.dim
        )
        return None
    arr = normalize_rows(emb.vectors)
    if not np.all(np.isfinite(arr)):
        return None
    return arr
