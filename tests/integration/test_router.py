"""The router against a real Mosquitto, real agent processes (python backend) and a real client."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from agentmesh import MeshClient, Router
from agentmesh.protocol import Presence, TaskEvent, TaskResult, Topics, decode
from agentmesh.registry import Embedder, MiniLMEmbedder
from agentmesh.transport import MosquittoBroker, MqttClient
from tests.agent_fixtures import AgentProcess
from tests.meshkit import agent_config, router_config, run_collecting, wait_registered

pytestmark = pytest.mark.broker


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return MiniLMEmbedder()


class Mesh:
    def __init__(self, broker: MosquittoBroker, tmp: Path, embedder: Embedder) -> None:
        self.broker = broker
        self.tmp = tmp
        self.embedder = embedder
        self.agents: list[AgentProcess] = []
        self.router: Router | None = None
        self.client: MeshClient | None = None

    def agent(self, agent_id: str, **kwargs: Any) -> AgentProcess:
        proc = AgentProcess(agent_config(agent_id, **kwargs), self.broker.address, self.tmp).start()
        self.agents.append(proc)
        return proc

    async def start(self, *agent_ids: str, **router_overrides: Any) -> tuple[Router, MeshClient]:
        self.router = Router(
            router_config(self.tmp, **router_overrides), broker=self.broker.address, embedder=self.embedder
        )
        await self.router.start()
        await wait_registered(self.router, *agent_ids)
        self.client = MeshClient(self.broker.address)
        await self.client.connect()
        return self.router, self.client

    async def close(self) -> None:
        if self.client:
            await self.client.close()
        if self.router:
            await self.router.stop()
        for a in self.agents:
            a.stop()


@pytest.fixture
async def mesh(mosquitto: MosquittoBroker, tmp_path: Path, embedder: Embedder) -> AsyncIterator[Mesh]:
    m = Mesh(mosquitto, tmp_path, embedder)
    try:
        yield m
    finally:
        await m.close()


def attempts_of(result: TaskResult, step_id: str) -> list[tuple[str, str, str]]:
    step = next(s for s in result.steps if s.id == step_id)
    return [(a.agent_id, a.tier, a.status) for a in step.attempts]


async def test_three_step_dag_runs_branches_in_parallel_and_passes_outputs(mesh: Mesh) -> None:
    mesh.agent("echo-1", kwargs={"delay_s": 0.5}, concurrency=2)
    _, client = await mesh.start("echo-1")
    plan = {
        "steps": [
            {"id": "left", "instruction": "alpha", "capability": "repeat the text back"},
            {"id": "right", "instruction": "beta", "capability": "repeat the text back"},
            {
                "id": "join",
                "instruction": "combine",
                "capability": "repeat the text back",
                "depends_on": ["left", "right"],
            },
        ]
    }
    result, events = await run_collecting(client, "echo three steps", plan=plan)
    assert result.status == "done", result.error
    assert result.outputs["left"] == "alpha" and result.outputs["right"] == "beta"
    assert "[left] alpha" in result.output and "[right] beta" in result.output
    kinds = [(e.kind, e.step_id) for e in events]
    # Both branches were dispatched before either finished: they ran in parallel.
    first_done = kinds.index(next(k for k in kinds if k[0] == "step_done"))
    assert ("dispatched", "left") in kinds[:first_done] and ("dispatched", "right") in kinds[:first_done]
    assert kinds.index(("dispatched", "join")) > kinds.index(("step_done", "left"))
    assert kinds[0][0] == "accepted" and kinds[-1][0] == "done"
    assert result.escalations == 0 and len(result.steps) == 3


async def test_low_confidence_on_device_escalates_to_edge(mesh: Mesh) -> None:
    mesh.agent("phone-1", tier="device", tool="low_confidence", kwargs={"confidence": 0.2})
    mesh.agent("edge-1", tier="edge", kwargs={"confidence": 0.9})
    _, client = await mesh.start("phone-1", "edge-1")
    result, events = await run_collecting(client, "repeat the word hello")
    assert result.status == "done", result.error
    assert attempts_of(result, "s1") == [("phone-1", "device", "ok"), ("edge-1", "edge", "ok")]
    weak = result.steps[0].attempts[0]
    assert weak.confidence == pytest.approx(0.2) and weak.reason and "below 0.50" in weak.reason
    assert result.escalations == 1
    assert [e.kind for e in events].count("escalated") == 1
    assert result.output.startswith("repeat the word hello")


async def test_an_agent_that_raises_is_escalated(mesh: Mesh) -> None:
    mesh.agent("phone-1", tier="device", tool="fail", kwargs={"message": "disk on fire"})
    mesh.agent("edge-1", tier="edge")
    _, client = await mesh.start("phone-1", "edge-1")
    result, _ = await run_collecting(client, "repeat the word hello")
    assert result.status == "done", result.error
    assert attempts_of(result, "s1") == [("phone-1", "device", "error"), ("edge-1", "edge", "ok")]
    assert "disk on fire" in (result.steps[0].attempts[0].reason or "")


async def test_max_tier_device_keeps_the_best_device_answer(mesh: Mesh) -> None:
    mesh.agent("phone-1", tier="device", tool="low_confidence", kwargs={"confidence": 0.2})
    mesh.agent("edge-1", tier="edge", kwargs={"confidence": 0.9})
    _, client = await mesh.start("phone-1", "edge-1")
    result, events = await run_collecting(client, "repeat the word hello", max_tier="device")
    assert result.status == "done", result.error
    assert attempts_of(result, "s1") == [("phone-1", "device", "ok")]
    assert result.output.startswith("not sure:")
    reason = result.steps[0].attempts[0].reason or ""
    assert "below 0.50" in reason and "not escalated: max_tier is device" in reason
    assert all(e.tier in (None, "device") for e in events)


async def test_a_lower_tiers_answer_kept_over_a_weaker_escalation_says_so(mesh: Mesh) -> None:
    mesh.agent("phone-1", tier="device", tool="low_confidence", kwargs={"confidence": 0.4})
    mesh.agent("edge-1", tier="edge", tool="low_confidence", kwargs={"confidence": 0.2})
    _, client = await mesh.start("phone-1", "edge-1")
    result, events = await run_collecting(client, "repeat the word hello", max_tier="edge")
    assert attempts_of(result, "s1") == [("phone-1", "device", "ok"), ("edge-1", "edge", "ok")]
    done = next(e for e in events if e.kind == "step_done")
    assert done.agent_id == "phone-1"
    assert "kept as the best of 2 attempts (edge-1: confidence 0.20 below 0.50" in done.detail


async def test_an_error_with_nowhere_to_go_fails_the_task(mesh: Mesh) -> None:
    mesh.agent("phone-1", tier="device", tool="fail", kwargs={"message": "disk on fire"})
    mesh.agent("edge-1", tier="edge")
    _, client = await mesh.start("phone-1", "edge-1")
    result, events = await run_collecting(client, "repeat the word hello", max_tier="device")
    assert result.status == "failed"
    assert result.error and "disk on fire" in result.error and "max_tier is device" in result.error
    assert [e.kind for e in events][-2:] == ["step_failed", "failed"]


async def test_an_agent_killed_mid_step_has_its_step_reassigned(mesh: Mesh) -> None:
    slow = mesh.agent("slow-1", kwargs={"delay_s": 60})
    router, client = await mesh.start("slow-1")
    spare: list[AgentProcess] = []

    async def on_event(ev: TaskEvent) -> None:
        if ev.kind == "dispatched" and ev.agent_id == "slow-1":
            spare.append(mesh.agent("spare-1"))
            await wait_registered(router, "spare-1")
            slow.signal(signal.SIGKILL)  # no DISCONNECT: the broker publishes its Last Will

    result, events = await run_collecting(client, "repeat the word hello", on_event=on_event)
    assert result.status == "done", result.error
    assert attempts_of(result, "s1") == [("slow-1", "device", "offline"), ("spare-1", "device", "ok")]
    assert "reassigned" in [e.kind for e in events]


QA = "Answer factual questions: capitals of countries, dates, definitions."
MATH = "Compute arithmetic: + - * /."
QUESTIONS = ["What is the capital of Japan?", "What is the capital of Peru?"]


async def test_a_step_waits_for_the_busy_agent_it_needs_rather_than_take_a_poor_match(mesh: Mesh) -> None:
    # In the demo a capital question went to the calculator (which declined) while the chat agent
    # was busy with another task.
    mesh.agent("chat-1", kwargs={"delay_s": 0.5}, concurrency=1, capability="qa", description=QA)
    mesh.agent("calc-1", tool="calculate", capability="arithmetic", description=MATH)
    _, client = await mesh.start("chat-1", "calc-1")
    results = await asyncio.gather(*(run_collecting(client, q) for q in QUESTIONS))
    for (result, _), question in zip(results, QUESTIONS, strict=True):
        assert result.status == "done", result.error
        assert attempts_of(result, "s1") == [("chat-1", "device", "ok")]
        assert result.output == question


async def test_a_step_waiting_for_a_busy_agent_holds_up_no_other_step(mesh: Mesh) -> None:
    mesh.agent("chat-1", kwargs={"delay_s": 2.0}, concurrency=1, capability="qa", description=QA)
    mesh.agent("math-1", kwargs={"delay_s": 0.2}, concurrency=1, capability="arithmetic", description=MATH)
    _, client = await mesh.start("chat-1", "math-1")
    finished: list[str] = []

    async def run(text: str) -> None:
        result, _ = await run_collecting(client, text)
        assert result.status == "done", result.error
        finished.append(text)

    # Both agents busy, then a capital question and a sum wait; when math-1 frees up, the
    # question (first in the queue) keeps waiting for chat-1 and the sum goes to math-1.
    await asyncio.gather(
        run("What is the capital of Japan?"),
        run("Compute 12 * 7 + 3"),
        run("What is the capital of Peru?"),
        run("Compute 99 / 3 - 1"),
    )
    assert sorted(finished[:2]) == ["Compute 12 * 7 + 3", "Compute 99 / 3 - 1"]


async def test_after_wait_for_better_s_a_step_takes_the_free_agent(mesh: Mesh) -> None:
    mesh.agent("chat-1", kwargs={"delay_s": 1.0}, concurrency=1, capability="qa", description=QA)
    mesh.agent("math-1", concurrency=1, capability="arithmetic", description=MATH)
    _, client = await mesh.start("chat-1", "math-1", wait_for_better_s=0)
    results = await asyncio.gather(*(run_collecting(client, q) for q in QUESTIONS))
    first_agents = sorted(result.steps[0].attempts[0].agent_id for result, _ in results)
    assert first_agents == ["chat-1", "math-1"]


def canned_planner(mesh: Mesh, *steps: str) -> None:
    """A planner agent that answers every planning step with the same plan of ``steps``."""
    plan = {
        "steps": [{"id": f"s{n}", "instruction": text, "depends_on": []} for n, text in enumerate(steps, 1)]
    }
    mesh.agent(
        "planner-1",
        tier="edge",
        tool="canned",
        kwargs={"output": json.dumps(plan)},
        capability="plan",
        description="Decompose a task into a plan of steps, as JSON.",
        tags=["plan"],
    )


async def test_the_router_adds_what_the_llm_plan_left_out(mesh: Mesh) -> None:
    canned_planner(mesh, "Compute 6*7.")
    mesh.agent("calc-1", tool="calculate", capability="arithmetic", description=MATH)
    _, client = await mesh.start("planner-1", "calc-1")
    result, events = await run_collecting(
        client, "Compute 6*7. Then multiply the result by 2. Also compute 10-3.", planner="llm"
    )
    assert result.status == "done", result.error
    planned = next(e for e in events if e.kind == "planned")
    assert planned.detail == (
        "planned by planner-1; the router added s2, s3 for what the plan left out of the task: "
        "s1; s2 <- s1; s3"
    )
    assert result.outputs == {"s1": "42", "s2": "84", "s3": "7"} and result.output == "42\n\n84\n\n7"


async def test_a_plan_of_copied_examples_is_made_of_the_tasks_requests(mesh: Mesh) -> None:
    canned_planner(mesh, "What is 2+3?", "Write a haiku about the result.")  # the prompt's examples
    mesh.agent("calc-1", tool="calculate", capability="arithmetic", description=MATH)
    _, client = await mesh.start("planner-1", "calc-1")
    result, events = await run_collecting(
        client, "Compute 6*7, then multiply the result by 2.", planner="llm"
    )
    assert result.status == "done", result.error
    assert "reassigned" not in [e.kind for e in events]  # no second planning call
    planned = next(e for e in events if e.kind == "planned")
    assert planned.detail == (
        "planned by planner-1; the plan had no steps of its own; the router made s1, s2 of the task's "
        "requests: s1; s2 <- s1"
    )
    assert result.output == "42\n\n84"


async def test_a_plan_that_drops_the_material_falls_back_to_one_step(mesh: Mesh) -> None:
    # The planner leaves out the sentence the request works on, and does so again when asked again.
    canned_planner(mesh, "Repeat the text back.")
    mesh.agent("echo-1")
    _, client = await mesh.start("planner-1", "echo-1")
    text = "The quarterly numbers came in higher than expected. Repeat the text back."
    result, events = await run_collecting(client, text, planner="llm")
    assert result.status == "done", result.error
    reassigned = [e for e in events if e.kind == "reassigned"]
    assert len(reassigned) == 1 and "leaves out part of the task" in reassigned[0].detail
    planned = next(e for e in events if e.kind == "planned")
    assert planned.detail.startswith("single step (planner failed: ") and "leaves out" in planned.detail
    assert result.output.startswith(text)


async def test_a_task_nothing_can_serve_is_rejected(mesh: Mesh) -> None:
    mesh.agent("echo-1")
    _, client = await mesh.start("echo-1")
    result, events = await run_collecting(client, "repeat the word hello", region="mars")
    assert result.status == "rejected"
    assert result.error and "no agent can serve step s1" in result.error
    assert events[-1].kind == "rejected"


async def test_a_malformed_task_is_rejected_and_the_router_keeps_serving(mesh: Mesh) -> None:
    mesh.agent("echo-1")
    _, client = await mesh.start("echo-1")
    topics = Topics()
    async with MqttClient(mesh.broker.address, client_id="raw-client") as raw:
        events = await raw.subscribe(topics.events("bad-1"))
        bad = {"type": "agentmesh.task/1", "task_id": "bad-1", "client_id": "raw-client", "text": 42}
        await raw.publish(topics.submit, json.dumps(bad).encode())
        await raw.publish(topics.submit, b"\xff\xfe not even utf-8")
        ev = decode(TaskEvent, (await events.get(timeout=30)).payload)
        assert isinstance(ev, TaskEvent) and ev.kind == "rejected" and "text" in ev.detail
    result = await client.run("repeat the word hello", timeout=60)
    assert result.status == "done", result.error


async def test_a_task_id_reused_for_another_task_is_rejected_and_the_first_kept(mesh: Mesh) -> None:
    mesh.agent("echo-1")
    _, client = await mesh.start("echo-1")
    topics = Topics()
    first = await client.run("repeat the word first", task_id="reused-1", timeout=60)
    assert first.status == "done", first.error
    async with MqttClient(mesh.broker.address, client_id="raw-client") as raw:
        events = await raw.subscribe(topics.events("reused-1"))
        replies = await raw.subscribe("replies/raw-client")
        second = {
            "type": "agentmesh.task/1",
            "task_id": "reused-1",
            "client_id": "raw-client",
            "text": "repeat the word second",
            "reply_to": "replies/raw-client",
        }
        await raw.publish(topics.submit, json.dumps(second).encode())
        ev = decode(TaskEvent, (await events.get(timeout=30)).payload)
        reply = decode(TaskResult, (await replies.get(timeout=30)).payload)
    assert isinstance(ev, TaskEvent) and ev.kind == "rejected"
    assert "task_id reused-1 is already taken by another task" in ev.detail
    assert isinstance(reply, TaskResult) and reply.status == "rejected" and reply.error == ev.detail
    kept = await client.fetch_result("reused-1")
    assert kept is not None and kept.output.startswith("repeat the word first")


async def test_a_task_the_router_cannot_plan_fails_with_the_reason(
    mesh: Mesh, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A bug in the planning code (a task holding the quote placeholders' characters once raised
    # IndexError there) must fail that task, not leave it accepted and unplanned.
    def broken(text: str) -> bool:
        if "boom" in text:
            raise IndexError("list index out of range")
        return False

    monkeypatch.setattr("agentmesh.router.looks_multipart", broken)
    mesh.agent("echo-1")
    _, client = await mesh.start("echo-1")
    result = await client.run("boom", timeout=60)
    assert result.status == "failed"
    assert result.error == "the router could not plan it: IndexError: list index out of range"
    result = await client.run("repeat the word hello", timeout=60)
    assert result.status == "done", result.error


async def test_a_task_whose_steps_cannot_be_embedded_fails_with_the_reason(
    mesh: Mesh, monkeypatch: pytest.MonkeyPatch
) -> None:
    mesh.agent("echo-1")
    router, client = await mesh.start("echo-1")
    embed = router.matcher.prepare_queries

    def broken(queries: list[str]) -> Any:
        if any("boom" in q for q in queries):
            raise MemoryError("no room for the embedding")
        return embed(queries)

    monkeypatch.setattr(router.matcher, "prepare_queries", broken)
    result = await client.run("boom", timeout=60)
    assert result.status == "failed"
    assert result.error == "the router could not embed its steps: MemoryError: no room for the embedding"
    result = await client.run("repeat the word hello", timeout=60)
    assert result.status == "done", result.error


@pytest.fixture
def router_yaml(tmp_path: Path, mosquitto: MosquittoBroker) -> Path:
    path = tmp_path / "router.yaml"
    path.write_text(
        json.dumps({"router_id": "router-k", "ledger": str(tmp_path / "router-k.sqlite"), "tick_s": 0.1})
    )
    return path


def start_router_process(config: Path, broker: MosquittoBroker, log: Path) -> Any:
    import subprocess
    import sys

    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agentmesh",
            "--broker",
            broker.address.url,
            "router",
            "--config",
            str(config),
        ],
        stdout=subprocess.DEVNULL,
        stderr=log.open("ab"),
    )


async def wait_router_online(broker: MosquittoBroker, router_id: str, state: str = "online") -> None:
    topics = Topics()
    async with MqttClient(broker.address, client_id=f"watch-{router_id}") as raw:
        sub = await raw.subscribe(topics.router_presence(router_id))
        while True:
            msg = await sub.get(timeout=90)
            presence = decode(Presence, msg.payload) if msg.payload else None
            if isinstance(presence, Presence) and presence.state == state:
                return


@pytest.fixture
def processes() -> Iterator[list[Any]]:
    procs: list[Any] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(10)


async def test_a_router_killed_mid_task_and_restarted_finishes_it(
    mesh: Mesh, router_yaml: Path, processes: list[Any]
) -> None:
    mesh.agent("slow-1", kwargs={"delay_s": 3})
    log = mesh.tmp / "router.log"
    # Ticks a minute apart: what the killed router wrote is still in its pending file, not yet in
    # SQLite, so the restart has to replay it.
    config = json.loads(router_yaml.read_text())
    slow_ticks = router_yaml.with_name("router-slow-ticks.yaml")
    slow_ticks.write_text(json.dumps({**config, "tick_s": 60}))
    router = start_router_process(slow_ticks, mesh.broker, log)
    processes.append(router)
    async with MeshClient(mesh.broker.address) as client:
        # A task published before any router subscribed is lost (plain MQTT): wait for the
        # router's retained presence, then for a probe task to complete.
        await wait_router_online(mesh.broker, "router-k")
        probe = await client.run("repeat the word ready", timeout=90)
        assert probe.status == "done", probe.error
        handle = await client.submit("repeat the word survive", events=True)
        async for ev in handle.events():
            if ev.kind == "dispatched":
                break
        router.kill()  # SIGKILL mid-step: its Last Will marks it offline
        router.wait(10)
        assert handle.task_id in Path(config["ledger"] + "-pending").read_text()
        await wait_router_online(mesh.broker, "router-k", state="offline")
        restarted = start_router_process(router_yaml, mesh.broker, log)
        processes.append(restarted)
        result = await handle.result(timeout=90)
    assert result.status == "done", f"{result.error}\n{log.read_text()[-3000:]}"
    assert result.output.startswith("repeat the word survive")


async def test_a_router_that_stops_leaves_the_share_group_to_the_routers_still_online(
    mesh: Mesh, tmp_path: Path
) -> None:
    mesh.agent("echo-1", concurrency=4)
    staying, client = await mesh.start("echo-1", router_id="router-b")
    leaving = Router(
        router_config(tmp_path, router_id="router-a", ledger=str(tmp_path / "a.sqlite")),
        broker=mesh.broker.address,
        embedder=mesh.embedder,
    )
    await leaving.start()
    await wait_registered(leaving, "echo-1")
    await leaving.stop()
    # Before, the broker kept a share of the group's tasks for router-a's persistent session,
    # where they waited until it came back.
    results = await asyncio.gather(*(client.run(f"repeat {i}", timeout=30) for i in range(6)))
    assert [r.status for r in results] == ["done"] * 6
    assert staying.active_tasks == 0


async def test_a_lone_router_gets_the_tasks_sent_while_it_was_stopped(mesh: Mesh) -> None:
    mesh.agent("echo-1")
    router, client = await mesh.start("echo-1")
    await router.stop()
    handles = [await client.submit(f"repeat {i}") for i in range(3)]
    mesh.router = Router(router.config, broker=mesh.broker.address, embedder=mesh.embedder)
    await mesh.router.start()
    results = [await h.result(timeout=60) for h in handles]
    assert [r.status for r in results] == ["done"] * 3


async def test_a_reply_to_no_broker_takes_is_refused_and_the_router_keeps_its_connection(
    mesh: Mesh,
) -> None:
    mesh.agent("echo-1")
    router, client = await mesh.start("echo-1")
    topics = Topics()
    async with MqttClient(mesh.broker.address, client_id="raw-client") as raw:
        events = await raw.subscribe(topics.events("deep-1"))
        deep = {
            "type": "agentmesh.task/1",
            "task_id": "deep-1",
            "client_id": "raw-client",
            "text": "repeat the word deep",
            "reply_to": "/".join(["a"] * 202),  # Mosquitto drops a client that publishes there
        }
        await raw.publish(topics.submit, json.dumps(deep).encode())
        ev = decode(TaskEvent, (await events.get(timeout=30)).payload)
    assert isinstance(ev, TaskEvent) and ev.kind == "rejected" and "levels" in ev.detail
    result = await client.run("repeat the word hello", timeout=60)
    assert result.status == "done", result.error
    assert router.client.connects == 1  # never dropped by the broker


async def test_a_malformed_request_never_touches_another_tasks_result(mesh: Mesh) -> None:
    mesh.agent("echo-1")
    _, client = await mesh.start("echo-1")
    first = await client.run("repeat the word kept", task_id="held-1", timeout=60)
    assert first.status == "done", first.error
    async with MqttClient(mesh.broker.address, client_id="raw-client") as raw:
        replies = await raw.subscribe("replies/raw")
        bad = {"task_id": "held-1", "reply_to": "replies/raw"}
        await raw.publish(Topics().submit, json.dumps(bad).encode())
        reply = decode(TaskResult, (await replies.get(timeout=30)).payload)  # its sender hears of it
    assert isinstance(reply, TaskResult) and reply.status == "rejected"
    kept = await client.fetch_result("held-1")
    assert kept is not None and kept.status == "done" and kept.output == first.output


async def test_a_result_over_the_payload_limit_comes_with_its_texts_cut(mesh: Mesh) -> None:
    mesh.agent("echo-1")
    _, client = await mesh.start("echo-1")
    result = await client.run("repeat " + "y" * 140_000, timeout=60)  # output and outputs: 280 KB
    assert result.status == "done"
    assert result.error is not None and "payload limit" in result.error
    assert result.output.startswith("repeat yyy") and result.output.endswith("more characters]")


async def test_a_step_whose_assignment_is_over_the_payload_limit_fails_at_once(mesh: Mesh) -> None:
    mesh.agent("echo-1", concurrency=4)
    _, client = await mesh.start("echo-1", step_timeout_s=600)
    plan = {
        "steps": [
            {"id": "s0", "instruction": "repeat " + "x" * 100_000},
            *({"id": f"s{i}", "instruction": f"repeat {i}", "depends_on": ["s0"]} for i in (1, 2, 3)),
            # s4's inputs: three outputs of over 100 KB each
            {"id": "s4", "instruction": "repeat them all", "depends_on": ["s1", "s2", "s3"]},
        ]
    }
    result = await client.run(plan=plan, timeout=60)  # not the 600 s step timeout
    assert result.status == "failed", result.error
    assert result.error is not None and "step s4 failed" in result.error
    assert "over the 262144-byte MQTT payload limit" in result.error


async def test_a_presence_that_flickers_offline_does_not_cost_the_steps_in_flight(mesh: Mesh) -> None:
    mesh.agent("slow-1", kwargs={"delay_s": 2})
    _, client = await mesh.start("slow-1")
    handle = await client.submit("repeat the word steady", events=True)
    async for ev in handle.events():
        if ev.kind == "dispatched":
            break
    topic = Topics().agent_presence("slow-1")
    async with MqttClient(mesh.broker.address, client_id="flicker") as raw:
        for state in ("offline", "online") * 3:
            await raw.publish(topic, Presence(id="slow-1", state=state, capacity=1))
            await asyncio.sleep(0.15)  # longer than the router's tick: it sees the agent offline
    result = await handle.result(timeout=60)
    assert result.status == "done", result.error
    assert [a.status for a in result.steps[0].attempts] == ["ok"]


async def test_a_declined_step_goes_to_a_near_tie_on_its_tier_before_escalating(mesh: Mesh) -> None:
    # Two device agents that match the step almost equally; the first one declines it.
    mesh.agent("picky-1", tool="decline")
    mesh.agent("echo-1", description="Repeat the given text back, with the inputs of earlier steps.")
    mesh.agent("echo-edge", tier="edge", description="Echo back whatever it is sent.")
    router, client = await mesh.start("picky-1", "echo-1", "echo-edge")
    text = "repeat the word tie"
    ranked = [m.agent_id for m in router.matcher.match(text, tier="device")]
    assert ranked[0] == "picky-1"  # else this test would not reach the decline
    result = await client.run(text, timeout=60)
    assert result.status == "done", result.error
    assert attempts_of(result, "s1") == [("picky-1", "device", "declined"), ("echo-1", "device", "ok")]
    # Without a near tie the decline escalates, as DESIGN.md section 6 says.
    router.config.matching.decline_margin = 0.0
    result = await client.run("repeat the word apart", timeout=60)
    assert attempts_of(result, "s1")[0][0] == "picky-1"
    assert attempts_of(result, "s1")[-1][:2] == ("echo-edge", "edge")


async def test_a_long_task_is_routed_by_what_it_asks_for_not_by_its_material(mesh: Mesh) -> None:
    mesh.agent(
        "calc-1",
        tool="calculate",
        capability="arithmetic",
        description="Evaluate arithmetic expressions and percentages.",
    )
    mesh.agent("echo-1")
    _, client = await mesh.start("calc-1", "echo-1")
    material = "Revenue grew 12% to 4.5 million while costs rose 3% and margins held at 18%. " * 240
    result = await client.run(material + "Repeat this report back to me.", timeout=60)
    assert attempts_of(result, "s1")[0][0] == "echo-1"


async def test_a_step_too_long_for_a_models_context_goes_to_an_agent_with_room(mesh: Mesh) -> None:
    mesh.agent("phone-1", tier="device", context_window=2048)
    mesh.agent("edge-1", tier="edge", context_window=32768)
    _, client = await mesh.start("phone-1", "edge-1")
    short = await client.run("repeat the word hello", timeout=60)
    assert attempts_of(short, "s1") == [("phone-1", "device", "ok")]
    document = "The pump on line 3 was serviced and its seals replaced. " * 200  # ~11k chars
    long = await client.run("Repeat this log back: " + document, timeout=60)
    assert long.status == "done", long.error
    assert attempts_of(long, "s1") == [("edge-1", "edge", "ok")]
    kept_down, events = await run_collecting(client, "Repeat this log back: " + document, max_tier="device")
    assert kept_down.status == "rejected"
    assert (
        kept_down.error
        and "context window of about" in kept_down.error
        and "have less (phone-1: 2048)" in kept_down.error
    )
    assert events[-1].kind == "rejected"
