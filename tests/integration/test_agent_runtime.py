"""The agent runtime in-process against real brokers (python backend): cards, presence, results,
deduplication, malformed input, deadlines, concurrency, drain, versions across restarts."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agentmesh.agent import Agent, parse_agent_config
from agentmesh.errors import IdInUse
from agentmesh.protocol import CapabilityVector, Presence, StepResult, Topics, decode
from agentmesh.transport import BrokerAddress, MosquittoBroker, MqttClient, Subscription
from tests.agent_fixtures import PahoProbe, assignment, python_agent

pytestmark = pytest.mark.broker

T = Topics()
REPLY = "agentmesh/v1/routers/test-router/results"

_ACTIVE = {"now": 0, "max": 0}
_LOCK = threading.Lock()


def tracked(instruction: str, inputs: dict[str, str], *, delay_s: float = 0.3) -> str:
    """Counts how many calls overlap (used as a python-backend callable by this module)."""
    with _LOCK:
        _ACTIVE["now"] += 1
        _ACTIVE["max"] = max(_ACTIVE["max"], _ACTIVE["now"])
    try:
        time.sleep(delay_s)
    finally:
        with _LOCK:
            _ACTIVE["now"] -= 1
    return instruction


class Harness:
    """An in-process agent plus a test client subscribed to the reply topic and the agent's topics."""

    def __init__(self, broker: BrokerAddress, state: Path) -> None:
        self.broker = broker
        self.state = state
        self.client = MqttClient(broker, client_id=f"test-{uuid.uuid4().hex[:8]}")
        self.results: Subscription | None = None
        self.agents: list[Agent] = []

    async def __aenter__(self) -> Harness:
        await self.client.connect()
        self.results = await self.client.subscribe(REPLY)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for agent in self.agents:
            await agent.stop(drain_timeout_s=5)
        await self.client.close()

    async def agent(self, config: dict[str, Any], **kwargs: Any) -> Agent:
        agent = Agent(parse_agent_config(config), self.broker, state_root=self.state, **kwargs)
        await agent.start()
        self.agents.append(agent)
        return agent

    async def send(self, agent_id: str, payload: dict[str, Any] | bytes) -> None:
        data = json.dumps(payload).encode() if isinstance(payload, dict) else payload
        await self.client.publish(T.inbox(agent_id), data)

    async def send_raw(self, agent_id: str, payload: dict[str, Any]) -> None:
        """Through a plain paho client: MqttClient refuses to send oversized payloads."""

        def publish() -> None:
            with PahoProbe(self.broker) as probe:
                probe.publish(T.inbox(agent_id), payload)

        await asyncio.to_thread(publish)

    async def result(self, wait_s: float = 20.0) -> StepResult:
        assert self.results is not None
        raw = await self.results.get(wait_s)
        msg = decode(StepResult, raw.payload)
        assert isinstance(msg, StepResult)
        return msg

    async def no_result(self, seconds: float) -> None:
        assert self.results is not None
        with pytest.raises(TimeoutError):
            raw = await self.results.get(seconds)
            pytest.fail(f"unexpected result {raw.payload[:200]!r}")


@pytest.fixture
async def harness(mosquitto: MosquittoBroker, tmp_path: Path) -> AsyncIterator[Harness]:
    async with Harness(mosquitto.address, tmp_path / "state") as h:
        yield h


async def test_round_trip_on_any_broker(any_broker: BrokerAddress, tmp_path: Path) -> None:
    async with Harness(any_broker, tmp_path) as h:
        agent = await h.agent(python_agent("echo-a"))
        retained = await h.client.retained([T.vcv("echo-a"), T.agent_presence("echo-a")])
        by_topic = {m.topic: m.payload for m in retained}
        card = decode(CapabilityVector, by_topic[T.vcv("echo-a")])
        assert isinstance(card, CapabilityVector)
        assert card.version == 1 and card.qos.max_concurrency == 2
        assert card.model is not None and card.model.backend == "python"
        presence = decode(Presence, by_topic[T.agent_presence("echo-a")])
        assert isinstance(presence, Presence) and presence.state == "online" and presence.capacity == 2

        await h.send("echo-a", assignment(REPLY, instruction="ping", inputs={"s0": "pong"}))
        res = await h.result()
        assert res.status == "ok" and res.output == "ping\n[s0] pong" and res.agent_id == "echo-a"
        assert res.usage.latency_ms > 0
        assert agent.stats.executed == 1


async def test_redelivered_assignment_runs_once(harness: Harness, tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    await harness.agent(python_agent("dup-a", delay_s=0.5, log_file=str(log)))
    msg = assignment(REPLY, task_id="t-dup", instruction="once")
    for _ in range(3):  # while the first is still running
        await harness.send("dup-a", msg)
    first = await harness.result()
    await harness.send("dup-a", msg)  # after it finished: the cached result comes again
    again = await harness.result()
    await harness.no_result(0.5)
    assert len(log.read_text().splitlines()) == 1
    assert first.status == again.status == "ok" and first.output == again.output == "once"
    # A new attempt of the same step is new work.
    await harness.send("dup-a", {**msg, "attempt": 2})
    assert (await harness.result()).attempt == 2
    assert len(log.read_text().splitlines()) == 2


async def test_malformed_and_oversized_assignments(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="agentmesh.agent")
    agent = await harness.agent(python_agent("bad-a"))
    await harness.send("bad-a", b"this is not json")
    await harness.send("bad-a", b'{"type": "agentmesh.assign/1", "reply_to": "x"}')  # nothing to answer with
    missing = assignment(REPLY, task_id="t-missing")
    del missing["instruction"]
    await harness.send("bad-a", missing)
    res = await harness.result()
    assert res.status == "error" and res.task_id == "t-missing"
    assert res.error is not None and "instruction" in res.error

    wrong_type = assignment(REPLY, task_id="t-type", deadline_s="soon")
    await harness.send("bad-a", wrong_type)
    res = await harness.result()
    assert res.task_id == "t-type" and res.error is not None and "deadline_s" in res.error

    big = assignment(REPLY, task_id="t-big", instruction="x" * (270 * 1024))
    await harness.send_raw("bad-a", big)
    res = await harness.result()
    assert res.task_id == "t-big" and res.status == "error"
    assert res.error is not None and "limit" in res.error

    await harness.send("bad-a", assignment("agentmesh/v1/routers/+/results", task_id="t-wild"))
    await harness.send("bad-a", assignment(REPLY, task_id="t-ok", instruction="still here"))
    res = await harness.result()
    assert (res.task_id, res.status, res.output) == ("t-ok", "ok", "still here")
    assert agent.stats.rejected == 6
    text = caplog.text
    assert "not JSON" in text and "reply_to" in text


async def test_raising_callable_gives_an_error_result(harness: Harness) -> None:
    await harness.agent(python_agent("fail-a", "fail", message="disk on fire"))
    await harness.send("fail-a", assignment(REPLY))
    res = await harness.result()
    assert res.status == "error" and res.error == "RuntimeError: disk on fire"
    assert res.output == ""


async def test_a_second_process_with_a_live_agents_id_is_refused(harness: Harness) -> None:
    first = await harness.agent(python_agent("twin-a", "echo"))
    with pytest.raises(IdInUse) as info:
        await harness.agent(python_agent("twin-a", "echo"), id_wait_s=1.0)
    assert info.value.agent_id == "twin-a" and "another process serves this id" in str(info.value)
    assert first.client is not None and first.client.connects == 1  # never dropped by the twin
    await first.stop()
    harness.agents.remove(first)
    await harness.agent(python_agent("twin-a", "echo"), id_wait_s=1.0)  # offline now: it starts


async def test_declining_tool_and_confidence(harness: Harness) -> None:
    await harness.agent(python_agent("no-a", "decline", reason="not my job"))
    await harness.agent(python_agent("low-a", "low_confidence", confidence=0.07))
    await harness.send("no-a", assignment(REPLY, task_id="t-no"))
    await harness.send("low-a", assignment(REPLY, task_id="t-low"))
    got = {r.task_id: r for r in [await harness.result(), await harness.result()]}
    assert got["t-no"].status == "declined" and got["t-no"].error == "not my job"
    assert got["t-low"].status == "ok" and got["t-low"].confidence == 0.07


async def test_cost_comes_from_the_card(harness: Harness) -> None:
    cfg = python_agent("calc-a", "calculate")
    cfg["cost"] = {"usd_per_mtok_in": 1.0, "usd_per_mtok_out": 2.0}
    await harness.agent(cfg)
    await harness.send("calc-a", assignment(REPLY, instruction="What is 6 * 7?"))
    res = await harness.result()
    assert res.output == "42" and res.confidence == 1.0
    assert res.usage.cost_usd == 0.0  # a tool reports no tokens: no cost


async def test_concurrency_is_bounded_and_load_reported(harness: Harness) -> None:
    _ACTIVE.update(now=0, max=0)
    cfg = python_agent("busy-a", f"{__name__}:tracked", delay_s=0.4)
    cfg["concurrency"] = 2
    presence = await harness.client.subscribe(T.agent_presence("busy-a"))
    agent = await harness.agent(cfg)
    started = time.monotonic()
    for i in range(5):
        await harness.send("busy-a", assignment(REPLY, task_id=f"t{i}"))
    results = [await harness.result() for _ in range(5)]
    busy_s = time.monotonic() - started
    assert sorted(r.task_id for r in results) == [f"t{i}" for i in range(5)]
    assert all(r.status == "ok" for r in results)
    assert _ACTIVE["max"] == 2
    loads = []
    while presence.pending():
        p = decode(Presence, (await presence.get(1)).payload)
        assert isinstance(p, Presence)
        loads.append(p.load)
    assert max(loads) >= 2  # busy was visible
    # Coalesced: at most one update per interval (plus the first and the last), however many
    # load changes (10 here) happened in between.
    assert len(loads) <= busy_s / agent.presence_interval_s + 3


async def test_deadlines(harness: Harness) -> None:
    await harness.agent(python_agent("slow-a", delay_s=3.0))
    await harness.send("slow-a", assignment(REPLY, task_id="t-late", deadline_s=0.3))
    res = await harness.result()
    assert res.status == "error" and res.error is not None and "deadline" in res.error
    stale = assignment(REPLY, task_id="t-stale", deadline_s=1.0)
    stale["sent_at"] = (datetime.now(UTC) - timedelta(minutes=5)).isoformat().replace("+00:00", "Z")
    await harness.send("slow-a", stale)
    res = await harness.result()
    assert res.task_id == "t-stale" and res.error is not None and "before the agent got" in res.error


async def test_drain_finishes_in_flight_and_declines_new(harness: Harness) -> None:
    presence = await harness.client.subscribe(T.agent_presence("drain-a"))
    agent = await harness.agent(python_agent("drain-a", delay_s=2.0))
    await harness.send("drain-a", assignment(REPLY, task_id="t-inflight"))
    for _ in range(100):
        if agent.in_flight:
            break
        await asyncio.sleep(0.02)
    stopping = asyncio.create_task(agent.stop())
    await asyncio.sleep(0.2)
    await harness.send("drain-a", assignment(REPLY, task_id="t-new"))
    got = {r.task_id: r for r in [await harness.result(), await harness.result()]}
    await stopping
    assert got["t-inflight"].status == "ok"
    assert got["t-new"].status == "declined"
    states = []
    while presence.pending():
        p = decode(Presence, (await presence.get(1)).payload)
        assert isinstance(p, Presence)
        states.append(p.state)
    assert states[-2:] == ["draining", "offline"]


async def test_card_version_grows_when_the_card_changes(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    state = tmp_path / "state"
    cfg = python_agent("ver-a")

    async def run_once(config: dict[str, Any], broker: BrokerAddress) -> int:
        agent = Agent(parse_agent_config(config), broker, state_root=state)
        await agent.start()
        await agent.stop()
        assert agent.card is not None
        return agent.card.version

    assert await run_once(cfg, mosquitto.address) == 1
    assert await run_once(cfg, mosquitto.address) == 1  # unchanged card, unchanged version
    cfg["capabilities"][0]["description"] = "Repeat the instruction, now with more words."
    assert await run_once(cfg, mosquitto.address) == 2

    # A fresh broker has no retained card: the state file keeps the version from going back.
    fresh = MosquittoBroker()
    fresh.start_sync()
    try:
        assert await run_once(cfg, fresh.address) == 2
        cfg["concurrency"] = 5
        assert await run_once(cfg, fresh.address) == 3
    finally:
        fresh.cleanup()
    # Back on the first broker, which still holds v2: v3 (from the state file) is newer there.
    assert await run_once(cfg, mosquitto.address) == 3


async def test_reconnects_after_broker_restart(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    async with Harness(mosquitto.address, tmp_path) as h:
        agent = await h.agent(python_agent("rc-a"))
        await asyncio.to_thread(mosquitto.stop_sync)
        await asyncio.to_thread(mosquitto.start_sync)
        assert agent.client is not None
        await agent.client.wait_connected(30)
        await h.client.wait_connected(30)
        await h.send("rc-a", assignment(REPLY, task_id="t-after", instruction="back"))
        res = await h.result(30)
        assert (res.task_id, res.output) == ("t-after", "back")
        retained = await h.client.retained([T.agent_presence("rc-a")])
        p = decode(Presence, retained[0].payload)
        assert isinstance(p, Presence) and p.state == "online"


async def test_inline_tools_answer_dedupe_and_fail_cleanly(harness: Harness, tmp_path: Path) -> None:
    log = tmp_path / "inline.jsonl"
    echo = python_agent("inl-echo", log_file=str(log))
    echo["backend"]["inline"] = True
    failing = python_agent("inl-fail", "fail", message="inline boom")
    failing["backend"]["inline"] = True
    await harness.agent(echo)
    await harness.agent(failing)
    msg = assignment(REPLY, task_id="t-inl", instruction="fast")
    await harness.send("inl-echo", msg)
    await harness.send("inl-echo", msg)  # duplicate: the cached result, not a second call
    first, second = await harness.result(), await harness.result()
    assert first.output == second.output == "fast" and first.status == "ok"
    assert len(log.read_text().splitlines()) == 1
    await harness.send("inl-fail", assignment(REPLY, task_id="t-inl-fail"))
    res = await harness.result()
    assert res.status == "error" and res.error == "RuntimeError: inline boom"


def bigger(instruction: str, inputs: dict[str, str], *, size: int) -> str:
    return "x" * size


async def test_an_output_too_large_to_send_becomes_an_error(harness: Harness) -> None:
    await harness.agent(python_agent("big-out", f"{__name__}:bigger", size=300_000))
    await harness.send("big-out", assignment(REPLY, task_id="t-too-big"))
    res = await harness.result()
    assert res.task_id == "t-too-big" and res.status == "error" and res.output == ""
    assert res.error is not None and "too large" in res.error
    fits = python_agent("fits-out", f"{__name__}:bigger", size=200_000)
    fits["backend"]["inline"] = True
    await harness.agent(fits)
    await harness.send("fits-out", assignment(REPLY, task_id="t-fits"))
    res = await harness.result()
    assert res.status == "ok" and len(res.output) == 200_000
