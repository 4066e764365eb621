"""Keeps a Registry in sync with the broker's retained cards and presence.

Subscribes (plainly, never shared: Mosquitto's shared subscriptions get no retained messages) to
``{ns}/agents/+/vcv`` and ``{ns}/agents/+/presence`` and applies every message. Cards are embedded
in a worker thread, in batches, so a flood of cards (a router starting on a big mesh, a reconnect)
does not block the event loop. A malformed message is logged with its reason and skipped.

After a reconnect the MqttClient resubscribes and the broker re-sends the retained state; the
Directory then also reloads the whole retained snapshot and forgets agents whose card vanished
while it was disconnected, so the registry is whole again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from agentmesh.errors import AgentMeshError, ProtocolError, TransportError
from agentmesh.protocol import CapabilityVector, Presence, TopicKind, Topics, parse
from agentmesh.registry.store import Registry, RegistryChange
from agentmesh.transport.client import MqttClient, RawMessage, Subscription

log = logging.getLogger(__name__)


@dataclass
class DirectoryStats:
    applied: int = 0
    ignored: int = 0
    malformed: int = 0
    resyncs: int = 0


async def apply_messages(
    registry: Registry, topics: Topics, messages: Iterable[RawMessage], stats: DirectoryStats | None = None
) -> DirectoryStats:
    """Parse and apply card/presence messages, embedding the new cards in one batch in a thread."""
    stats = stats or DirectoryStats()
    cards: dict[str, CapabilityVector | None] = {}  # the last card per agent wins within a batch
    for msg in messages:
        try:
            message = parse(msg.topic, msg.payload, topics=topics)
            ref = topics.parse(msg.topic)
        except ProtocolError as exc:
            stats.malformed += 1
            log.warning("dropping malformed message on %s: %s", msg.topic, exc)
            continue
        if ref.id is None:
            continue
        if ref.kind is TopicKind.VCV:
            cards.pop(ref.id, None)
            cards[ref.id] = message if isinstance(message, CapabilityVector) else None
        elif ref.kind is TopicKind.AGENT_PRESENCE:
            changed = registry.apply_presence(ref.id, message if isinstance(message, Presence) else None)
            stats.applied += changed
            stats.ignored += not changed
    await apply_cards(registry, cards, stats)
    return stats


async def apply_cards(
    registry: Registry, cards: dict[str, CapabilityVector | None], stats: DirectoryStats
) -> None:
    fresh: list[CapabilityVector] = []
    fresh_ids: list[str] = []
    for agent_id, vcv in cards.items():
        if vcv is None:
            changed = registry.apply_vcv(agent_id, None)
            stats.applied += changed
            stats.ignored += not changed
            continue
        reason = registry.rejects(agent_id, vcv)
        if reason is not None:
            stats.ignored += 1
            log.info("ignoring card on %s: %s", agent_id, reason)
            continue
        fresh.append(vcv)
        fresh_ids.append(agent_id)
    if not fresh:
        return
    prepared = await asyncio.to_thread(registry.prepare_many, fresh)
    # Versions are re-checked inside: a newer card may have landed while we were embedding.
    applied = registry.apply_many(prepared, agent_ids=fresh_ids)
    stats.applied += len(applied)
    stats.ignored += len(prepared) - len(applied)


async def snapshot(client: MqttClient, topics: Topics, registry: Registry, *, timeout: float = 10.0) -> int:
    """Load every retained card and presence once (for one-shot commands); returns the agent count."""
    messages = await client.retained([topics.all_vcvs, topics.all_agent_presence], timeout=timeout)
    await apply_messages(registry, topics, messages)
    return len(registry)


class Directory:
    """A live view of the mesh: ``await start()``, use ``registry``, ``await stop()``."""

    def __init__(
        self,
        client: MqttClient,
        topics: Topics,
        registry: Registry,
        *,
        sync_timeout: float = 10.0,
        reconnect_poll_s: float = 0.2,
    ) -> None:
        self.client = client
        self.topics = topics
        self.registry = registry
        self.sync_timeout = sync_timeout
        self.reconnect_poll_s = reconnect_poll_s
        self.stats = DirectoryStats()
        self._subs: list[Subscription] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._changed = asyncio.Event()
        self._ready = asyncio.Event()
        self._connects_seen = 0
        registry.add_listener(self._on_registry_change)

    # ---- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Subscribe, load the retained state (returns once it is applied) and follow updates."""
        filters = [self.topics.all_vcvs, self.topics.all_agent_presence]
        self._subs = [await self.client.subscribe(f) for f in filters]
        self._connects_seen = self.client.connects
        try:
            initial = await self.client.retained(filters, timeout=self.sync_timeout)
        except AgentMeshError as exc:
            # e.g. an ACL that forbids the end-of-retained marker: what arrives is still applied.
            log.warning("could not load the retained snapshot (%s); following updates only", exc)
            initial = []
        await apply_messages(self.registry, self.topics, initial, self.stats)
        self._ready.set()
        log.info("directory ready: %d agents", len(self.registry))
        # The live subscriptions hold the same retained messages again; they are re-applied
        # (same versions: ignored) by the followers.
        self._tasks = [
            asyncio.create_task(self._follow(sub), name=f"directory {sub.filter}") for sub in self._subs
        ]
        self._tasks.append(asyncio.create_task(self._watch_reconnects(), name="directory reconnects"))

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        subs, self._subs = self._subs, []
        for sub in subs:
            with contextlib.suppress(AgentMeshError):
                await self.client.unsubscribe(sub)
        self.registry.remove_listener(self._on_registry_change)

    async def __aenter__(self) -> Directory:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    # ---- change notification ------------------------------------------------------------

    def on_change(self, callback: Callable[[RegistryChange], None]) -> None:
        """Call ``callback`` (on the event loop) for every card/presence change."""
        self.registry.add_listener(callback)

    async def wait_changed(self, timeout: float | None = None) -> bool:
        """Wait for the next registry change; False on timeout."""
        event = self._changed
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def _on_registry_change(self, change: RegistryChange) -> None:
        # Swap in a fresh event so every current waiter wakes exactly once.
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    # ---- internals ----------------------------------------------------------------------

    async def _follow(self, sub: Subscription) -> None:
        while True:
            try:
                first = await sub.get()
            except TransportError:
                return  # the subscription or the client was closed
            batch = [first, *sub.drain()]
            try:
                await apply_messages(self.registry, self.topics, batch, self.stats)
            except asyncio.CancelledError:
                raise
            except Exception:  # never let one bad batch stop the directory
                log.exception("directory failed to apply %d messages from %s", len(batch), sub.filter)

    async def _watch_reconnects(self) -> None:
        while True:
            await asyncio.sleep(self.reconnect_poll_s)
            if self.client.connects > self._connects_seen and self.client.connected:
                self._connects_seen = self.client.connects
                try:
                    await self.resync()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("resync after reconnect failed (%s); will retry on the next one", exc)

    async def resync(self) -> None:
        """Reload the retained snapshot and forget what vanished from it (cards cleared, presence
        removed) while we were not listening. Entries updated meanwhile are kept."""
        before_cards = {e.agent_id: e.vcv for e in self.registry.agents()}
        before_presence = {e.agent_id: e.presence for e in self.registry.agents() if e.presence is not None}
        messages = await self.client.retained(
            [self.topics.all_vcvs, self.topics.all_agent_presence], timeout=self.sync_timeout
        )
        await apply_messages(self.registry, self.topics, messages, self.stats)
        seen_cards: set[str] = set()
        seen_presence: set[str] = set()
        for msg in messages:
            with contextlib.suppress(ProtocolError):
                ref = self.topics.parse(msg.topic)
                if ref.id is not None and msg.payload:
                    (seen_cards if ref.kind is TopicKind.VCV else seen_presence).add(ref.id)
        for agent_id, vcv in before_cards.items():
            entry = self.registry.get(agent_id)
            if agent_id not in seen_cards and entry is not None and entry.vcv is vcv:
                log.info("card of %s vanished while disconnected; deregistering", agent_id)
                self.registry.apply_vcv(agent_id, None)
        for agent_id, presence in before_presence.items():
            entry = self.registry.get(agent_id)
            if agent_id not in seen_presence and entry is not None and entry.presence is presence:
                self.registry.apply_presence(agent_id, None)
        self.stats.resyncs += 1
        log.info("directory resynced: %d agents", len(self.registry))
