"""The agent runtime: one backend behind an MQTT inbox (DESIGN.md sections 3, 4, 6).

Lifecycle of ``Agent``:

1. ``start()``: load the backend (model / callable); wait while the broker holds presence
   ``online`` for this id (up to ``id_wait_s``, then IdInUse: another live process serves it);
   connect with ``client_id`` = agent id, a
   persistent session (assignments sent while we are briefly away are queued by the broker) and
   a Last Will of presence ``offline`` (retained); subscribe to the inbox; publish the capability
   card retained with a version that grows whenever the card changes (agent/card.py); publish
   presence ``online``.
2. Serving: every assignment is validated (size, schema, reply_to), deduplicated by
   (task_id, step_id, attempt) and run with at most ``concurrency`` steps at once; the
   StepResult goes QoS 1 to the assignment's ``reply_to``. Load changes are reported in presence,
   coalesced to at most one update per ``presence_interval_s``.
3. ``stop()``: presence ``draining``; new assignments are declined (the router reassigns them);
   in-flight steps finish (up to ``drain_timeout_s``, then they are answered with an error);
   presence ``offline``; clean disconnect.

Deadlines: ``deadline_s`` is the step's budget counted from when the agent receives it (clocks of
different machines need not agree). An assignment whose ``sent_at`` is older than its budget plus
``CLOCK_SKEW_S`` sat in a broker queue too long: it is answered with an error instead of run. A
step still queued or running when its budget is spent is answered with an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from agentmesh.agent.backends import Backend, BackendResult, make_backend
from agentmesh.agent.card import KnownVersion, VersionStore, build_card, card_digest, next_version
from agentmesh.agent.config import AgentConfig
from agentmesh.agent.dedup import StepKey, StepLedger
from agentmesh.agent.inbox import rejection, reply_topic_problem, salvage_reply
from agentmesh.agent.prompt import StepRequest
from agentmesh.errors import AgentMeshError, BackendError, IdInUse, PayloadTooLarge, ProtocolError
from agentmesh.protocol import (
    DEFAULT_NAMESPACE,
    CapabilityVector,
    Presence,
    StepAssignment,
    StepResult,
    Topics,
    Usage,
    decode,
    encode,
    parse,
)
from agentmesh.protocol.messages import StepStatus
from agentmesh.transport import PUBLISH_TIMEOUT_S, BrokerAddress, MqttClient, RawMessage, Subscription, Will

log = logging.getLogger("agentmesh.agent")

CLOCK_SKEW_S = 5.0
# How long a start waits for the retained presence of its id to go offline: 1.5 keepalives
# (15 s) is when a broker fires the Last Will of a client that vanished.
ID_WAIT_S = 25.0
STOP_PUBLISH_TIMEOUT_S = 5.0  # the router waits as long for its own offline presence


@dataclass
class AgentStats:
    received: int = 0
    executed: int = 0
    duplicates: int = 0
    rejected: int = 0
    declined: int = 0
    errors: int = 0


@dataclass
class _Running:
    assignment: StepAssignment
    task: asyncio.Task[None]
    answered: bool = False


@dataclass
class _State:
    state: str = "online"
    load: int = 0
    published: tuple[str, int] | None = None
    dirty: asyncio.Event = field(default_factory=asyncio.Event)


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        broker: BrokerAddress,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        backend: Backend | None = None,
        state_root: Path | None = None,
        presence_interval_s: float = 0.25,
        id_wait_s: float = ID_WAIT_S,
    ) -> None:
        self.config = config
        self.id_wait_s = id_wait_s
        self.broker = broker
        self.topics = Topics(namespace)
        self.backend = backend or make_backend(config.backend)
        self.versions = VersionStore(namespace, config.id, state_root)
        self.presence_interval_s = presence_interval_s
        self.card: CapabilityVector | None = None
        self.stats = AgentStats()
        self.client: MqttClient | None = None
        self._ledger = StepLedger()
        self._running: dict[StepKey, _Running] = {}
        self._slots = asyncio.Semaphore(config.concurrency)
        self._presence = _State()
        self._draining = False
        self._tasks: list[asyncio.Task[None]] = []
        self._sends: set[asyncio.Task[None]] = set()
        self._stopped = False
        self._inbox: Subscription | None = None

    @property
    def id(self) -> str:
        return self.config.id

    async def __aenter__(self) -> Agent:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---- start -------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.backend.load()
        await self._wait_for_the_id()
        offline = Presence(id=self.id, state="offline", capacity=self.config.concurrency)
        client = MqttClient(
            self.broker,
            client_id=self.id,
            will=Will(self.topics.agent_presence(self.id), encode(offline), qos=1, retain=True),
            session_expiry_s=self.config.session_expiry_s,
        )
        # Subscribed before CONNECT: a persistent session delivers the assignments queued while
        # we were away right after CONNACK, and they need a subscription to land in.
        inbox = await client.subscribe(self.topics.inbox(self.id), qos=1)
        try:
            await client.connect()
        except BaseException:
            with contextlib.suppress(Exception):
                await client.close()
            raise
        self.client, self._inbox = client, inbox
        try:
            await self._publish_card()
        except BaseException:
            self.client = None
            with contextlib.suppress(Exception):
                await client.close()
            raise
        await self._publish_presence(force=True)
        self._tasks = [
            asyncio.create_task(self._serve(inbox), name=f"{self.id}-inbox"),
            asyncio.create_task(self._presence_loop(), name=f"{self.id}-presence"),
            asyncio.create_task(self._watch_reconnects(), name=f"{self.id}-reconnect"),
        ]
        version = self.card.version if self.card else 0
        log.info("agent %s online (card v%d, %s backend)", self.id, version, self.backend.kind)

    async def _publish_card(self) -> None:
        assert self.client is not None
        draft = build_card(self.config, self.backend.model_info(), 1)
        digest = card_digest(draft)
        retained = await self._retained_version()
        stored = self.versions.load()
        version = next_version(digest, retained, stored)
        card = draft.model_copy(update={"version": version})
        await self.client.publish(self.topics.vcv(self.id), card, qos=1, retain=True)
        self.card = card
        try:
            self.versions.save(KnownVersion(version, digest))
        except OSError as exc:
            log.warning("cannot write %s (%s); card versions may repeat", self.versions.path, exc)

    async def _retained_version(self) -> KnownVersion | None:
        assert self.client is not None
        topic = self.topics.vcv(self.id)
        for raw in await self.client.retained([topic]):
            try:
                card = parse(raw.topic, raw.payload, topics=self.topics)
            except ProtocolError as exc:
                log.warning("ignoring the unreadable card retained on %s: %s", topic, exc)
                continue
            if isinstance(card, CapabilityVector):
                return KnownVersion(card.version, card_digest(card))
        return None

    async def _wait_for_the_id(self) -> None:
        """Raise IdInUse while another live process serves this agent id. Connecting with its
        client id would make the broker drop the other's connection, and both would reconnect in
        turn forever. A process that died has its Last Will mark it offline: at once when its
        connection closed, or once the broker's keepalive gives up on it (waited for here)."""
        topic = self.topics.agent_presence(self.id)
        deadline = time.monotonic() + self.id_wait_s
        probe_id = f"{self.id}-start-{uuid.uuid4().hex[:8]}"
        try:
            async with MqttClient(self.broker, client_id=probe_id) as probe:
                for tries in itertools.count():
                    held = await probe.retained([topic], timeout=5)
                    if not any(_online(raw.payload) for raw in held):
                        return
                    if time.monotonic() > deadline:
                        raise IdInUse(agent_id=self.id, broker=str(self.broker))
                    if not tries:
                        log.warning(
                            "agent %s is online already; waiting up to %gs for it to go offline",
                            self.id,
                            self.id_wait_s,
                        )
                    await asyncio.sleep(min(2.0, self.id_wait_s))
        except IdInUse:
            raise
        except AgentMeshError as exc:  # the check is a courtesy: an ACL may forbid the probe
            log.info("could not check whether agent %s is online already: %s", self.id, exc)

    # ---- presence ----------------------------------------------------------------------------

    def _presence_msg(self) -> Presence:
        return Presence(
            id=self.id,
            state=self._presence.state,  # type: ignore[arg-type]
            load=self._presence.load,
            capacity=self.config.concurrency,
        )

    async def _publish_presence(self, *, force: bool = False) -> None:
        client = self.client
        if client is None:
            return
        timeout = self._publish_timeout(client)
        if timeout is None:
            return
        now = (self._presence.state, self._presence.load)
        if not force and now == self._presence.published:
            return
        self._presence.published = now
        try:
            topic = self.topics.agent_presence(self.id)
            await client.publish(topic, self._presence_msg(), qos=1, retain=True, timeout=timeout)
        except AgentMeshError as exc:
            log.warning("presence update failed: %s", exc)

    def _load_changed(self, delta: int) -> None:
        self._presence.load += delta
        self._presence.dirty.set()

    async def _presence_loop(self) -> None:
        while True:
            await self._presence.dirty.wait()
            self._presence.dirty.clear()
            if self._draining:
                continue
            await self._publish_presence()
            # Coalesce: a busy agent sends at most one presence per interval, not two per step.
            await asyncio.sleep(self.presence_interval_s)

    async def _watch_reconnects(self) -> None:
        """After a reconnect, our Last Will may have marked us offline: say we are back."""
        client = self.client
        assert client is not None
        while True:
            await client.wait_disconnected()
            await client.wait_connected()
            log.info("reconnected; republishing card and presence")
            # The broker may have restarted without its retained messages, or published our Will.
            try:
                if self.card is not None:
                    await client.publish(self.topics.vcv(self.id), self.card, qos=1, retain=True)
            except AgentMeshError as exc:
                log.warning("card republish failed: %s", exc)
            await self._publish_presence(force=True)

    # ---- serving -----------------------------------------------------------------------------

    async def _serve(self, inbox: Subscription) -> None:
        async for raw in inbox:
            try:
                self._on_message(raw)
            except Exception:  # one bad message must never stop the inbox
                log.exception("unexpected error handling a message on %s", raw.topic)

    def _on_message(self, raw: RawMessage) -> None:
        self.stats.received += 1
        limit = self.config.max_payload_bytes
        try:
            msg = decode(StepAssignment, raw.payload, topic=raw.topic, limit=limit)
            assert isinstance(msg, StepAssignment)
            problem = reply_topic_problem(msg.reply_to)
            if problem is not None:
                raise ProtocolError(problem, topic=raw.topic, field="reply_to")
        except ProtocolError as exc:
            self.stats.rejected += 1
            fields = salvage_reply(raw.payload, max_bytes=limit)
            log.warning("rejected assignment (%d bytes) on %s: %s", len(raw.payload), raw.topic, exc)
            if fields is not None:
                self._send_soon(fields[3], rejection(fields, self.id, str(exc)))
            return
        key: StepKey = (msg.task_id, msg.step_id, msg.attempt)
        if self._draining:
            self.stats.declined += 1
            self._send_soon(msg.reply_to, self._result(msg, "declined", error="agent is shutting down"))
            return
        seen, cached = self._ledger.begin(key)
        if seen == "running":
            self.stats.duplicates += 1
            log.info("duplicate of running step %s/%s#%d ignored", *key)
            return
        if seen == "done" and cached is not None:
            self.stats.duplicates += 1
            log.info("duplicate of finished step %s/%s#%d: resending its result", *key)
            self._send_soon(msg.reply_to, cached)
            return
        inline = getattr(self.backend, "run_inline", None)
        if inline is not None and getattr(self.backend, "inline", False):
            self._answer_inline(key, msg, inline)
            return
        task = asyncio.create_task(self._execute(key, msg), name=f"step-{msg.task_id}-{msg.step_id}")
        self._running[key] = _Running(msg, task)
        self._load_changed(+1)

    def _answer_inline(
        self, key: StepKey, msg: StepAssignment, run: Callable[[StepRequest], BackendResult]
    ) -> None:
        """A microsecond tool (python backend, ``inline: true``): run it right here and queue the
        result, without a task or thread hop (each costs more than the call itself)."""
        started = time.monotonic()
        result = self._stale(msg)
        if result is None:
            try:
                out = run(self._request(msg, started + msg.deadline_s))
                result = self._result_from(msg, out, (time.monotonic() - started) * 1000.0)
            except Exception as exc:
                result = self._result(msg, "error", error=_describe(exc))
        self._finished(key, result)
        client = self.client
        if client is None:
            return
        try:
            # paho keeps and retries the QoS 1 publish itself (also across a reconnect).
            try:
                client.publish_nowait(msg.reply_to, result, qos=1)
            except PayloadTooLarge as exc:
                client.publish_nowait(msg.reply_to, self._too_large(result, exc), qos=1)
        except AgentMeshError as exc:
            log.error("could not deliver the result of %s/%s: %s", msg.task_id, msg.step_id, exc)

    def _send_soon(self, topic: str, result: StepResult) -> None:
        task = asyncio.create_task(self._send(topic, result))
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def _execute(self, key: StepKey, msg: StepAssignment) -> None:
        received = time.monotonic()
        deadline = received + msg.deadline_s
        try:
            result = await self._run_step(msg, deadline)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the backend's failure is the step's result, not the agent's
            result = self._result(msg, "error", error=_describe(exc))
        finally:
            self._load_changed(-1)
        running = self._running.pop(key, None)
        if running is not None and running.answered:
            return  # stop() already answered it
        self._finished(key, result)
        await self._send(msg.reply_to, result)

    def _finished(self, key: StepKey, result: StepResult) -> None:
        self._ledger.finish(key, result)
        if result.status == "ok":
            self.stats.executed += 1
        else:
            self.stats.errors += result.status == "error"
            self.stats.declined += result.status == "declined"

    def _stale(self, msg: StepAssignment) -> StepResult | None:
        """An error result when the step waited in a broker queue longer than its whole budget."""
        age = (datetime.now(UTC) - _aware(msg.sent_at)).total_seconds()
        if age <= msg.deadline_s + CLOCK_SKEW_S:
            return None
        why = f"deadline of {msg.deadline_s:g}s passed before the agent got the step (sent {age:.1f}s ago)"
        return self._result(msg, "error", error=why)

    def _request(self, msg: StepAssignment, deadline: float) -> StepRequest:
        return StepRequest(
            instruction=msg.instruction,
            inputs=dict(msg.inputs),
            previous=msg.previous,
            system_prompt=self.config.system_prompt,
            max_tokens=msg.max_tokens,
            response_format=msg.response_format,
            deadline=deadline,
        )

    async def _run_step(self, msg: StepAssignment, deadline: float) -> StepResult:
        stale = self._stale(msg)
        if stale is not None:
            return stale
        try:
            if self._slots.locked():  # only a queued step needs the timeout machinery
                async with asyncio.timeout_at(_loop_time(deadline)):
                    await self._slots.acquire()
            else:
                await self._slots.acquire()
        except TimeoutError:
            why = f"deadline of {msg.deadline_s:g}s passed while the step was queued"
            return self._result(msg, "error", error=why)
        try:
            request = self._request(msg, deadline)
            started = time.monotonic()
            try:
                async with asyncio.timeout_at(_loop_time(deadline)):
                    out = await self.backend.run(request)
            except TimeoutError:
                why = f"deadline of {msg.deadline_s:g}s passed while the step ran"
                return self._result(msg, "error", error=why)
            latency_ms = (time.monotonic() - started) * 1000.0
        finally:
            self._slots.release()
        return self._result_from(msg, out, latency_ms)

    def _result_from(self, msg: StepAssignment, out: BackendResult, latency_ms: float) -> StepResult:
        cost = self.config.cost
        usd = (out.prompt_tokens * cost.usd_per_mtok_in + out.completion_tokens * cost.usd_per_mtok_out) / 1e6
        usage = Usage(
            prompt_tokens=out.prompt_tokens,
            completion_tokens=out.completion_tokens,
            latency_ms=latency_ms,
            cost_usd=usd,
        )
        if out.status == "declined":
            reason = out.reason or "declined"
            return self._result(msg, "declined", output=out.output, error=reason, usage=usage)
        return self._result(msg, "ok", output=out.output, confidence=out.confidence, usage=usage)

    def _result(
        self,
        msg: StepAssignment,
        status: StepStatus,
        *,
        output: str = "",
        error: str | None = None,
        confidence: float | None = None,
        usage: Usage | None = None,
    ) -> StepResult:
        return StepResult(
            task_id=msg.task_id,
            step_id=msg.step_id,
            attempt=msg.attempt,
            agent_id=self.id,
            status=status,
            output=output,
            confidence=confidence,
            error=error[:4000] if error else None,
            usage=usage or Usage(),
        )

    async def _send(self, topic: str, result: StepResult) -> None:
        client = self.client
        if client is None:
            return
        timeout = self._publish_timeout(client)
        if timeout is None:
            log.warning("result of %s/%s not sent: the broker is unreachable", result.task_id, result.step_id)
            return
        try:
            try:
                await client.publish(topic, result, qos=1, timeout=timeout)
            except PayloadTooLarge as exc:
                await client.publish(topic, self._too_large(result, exc), qos=1, timeout=timeout)
        except AgentMeshError as exc:
            step = f"{result.task_id}/{result.step_id}"
            log.error("could not deliver the result of %s to %s: %s", step, topic, exc)

    def _too_large(self, result: StepResult, exc: PayloadTooLarge) -> StepResult:
        """The router gets an error it can act on instead of waiting for a result that cannot be sent."""
        log.warning("result of %s/%s is too large to send: %s", result.task_id, result.step_id, exc)
        return result.model_copy(
            update={"status": "error", "output": "", "confidence": None, "error": f"output too large: {exc}"}
        )

    # ---- stop --------------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return len(self._running)

    def _publish_timeout(self, client: MqttClient) -> float | None:
        """How long a publish may wait for its PUBACK; None: do not publish. Stopping must not wait
        for a broker that is gone (once 30 s per publish): its Last Will says we are offline, and
        the router reassigns our steps."""
        if not self._stopped:
            return PUBLISH_TIMEOUT_S
        return STOP_PUBLISH_TIMEOUT_S if client.connected else None

    async def stop(self, *, drain_timeout_s: float | None = None) -> None:
        """Drain and disconnect: presence draining, finish in-flight steps, presence offline."""
        if self._stopped:
            return
        self._stopped = True
        self._draining = True
        timeout = self.config.drain_timeout_s if drain_timeout_s is None else drain_timeout_s
        if self.client is not None:
            self._presence.state = "draining"
            if not self.client.connected:
                log.warning("broker %s unreachable: stopping without publishing to it", self.client.broker)
            await self._publish_presence(force=True)
            log.info("agent %s draining (%d steps in flight)", self.id, len(self._running))
        pending = [r.task for r in self._running.values()]
        if pending:
            _, still = await asyncio.wait(pending, timeout=timeout)
            for key, running in list(self._running.items()):
                if running.task in still:
                    running.answered = True
                    running.task.cancel()
                    self._running.pop(key, None)
                    why = "agent stopped before the step finished"
                    await self._send(
                        running.assignment.reply_to, self._result(running.assignment, "error", error=why)
                    )
        # Results being re-sent or rejections still in flight go out before we disconnect.
        if self._sends:
            await asyncio.wait(list(self._sends), timeout=5.0)
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self.client is not None:
            self._presence.state = "offline"
            self._presence.load = 0
            await self._publish_presence(force=True)
            await self.client.close()
        await self.backend.close()
        log.info("agent %s offline", self.id)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BackendError):
        return exc.reason
    if isinstance(exc, AgentMeshError):
        return str(exc)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _loop_time(deadline_monotonic: float) -> float:
    """asyncio's clock is time.monotonic() on every platform we run on; convert defensively."""
    loop = asyncio.get_running_loop()
    return loop.time() + (deadline_monotonic - time.monotonic())


def _online(payload: bytes) -> bool:
    try:
        presence = decode(Presence, payload)
    except ProtocolError:
        return False
    return isinstance(presence, Presence) and presence.state == "online"
