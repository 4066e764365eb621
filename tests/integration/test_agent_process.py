"""Agents as real processes (``python -m agentmesh.agent``) driven by a plain paho client:
round trip, exactly-once execution of re-deliveries, Last Will on SIGKILL, SIGTERM drain,
assignments queued while the agent was down, and the exit code for a bad config."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentmesh.transport import MosquittoBroker
from tests.agent_fixtures import AgentProcess, PahoProbe, agent_probe, assignment, python_agent, topics

pytestmark = pytest.mark.broker

REPLY = "agentmesh/v1/routers/test-router/results"


@pytest.fixture
def probe(mosquitto: MosquittoBroker) -> Iterator[PahoProbe]:
    with agent_probe(mosquitto.address, REPLY) as p:
        yield p


@pytest.fixture
def procs() -> Iterator[list[AgentProcess]]:
    started: list[AgentProcess] = []
    yield started
    for proc in started:
        proc.stop()


def launch(
    procs: list[AgentProcess], mosquitto: MosquittoBroker, tmp_path: Path, config: dict[str, object]
) -> AgentProcess:
    proc = AgentProcess(config, mosquitto.address, tmp_path).start()
    procs.append(proc)
    return proc


def test_plain_paho_round_trip_and_exactly_once(
    mosquitto: MosquittoBroker, tmp_path: Path, probe: PahoProbe, procs: list[AgentProcess]
) -> None:
    log = tmp_path / "calls.jsonl"
    agent = launch(procs, mosquitto, tmp_path, python_agent("echo-p", delay_s=0.5, log_file=str(log)))
    agent.wait_online(probe)
    card = probe.wait_for(topics("echo-p")["vcv"])
    assert card["agent_id"] == "echo-p" and card["version"] >= 1

    msg = assignment(REPLY, task_id="t-once", instruction="hello mesh", inputs={"prev": "42"})
    for _ in range(3):  # QoS 1 re-delivery and a router's resend look the same to the agent
        probe.publish(topics("echo-p")["inbox"], msg)
    result = probe.wait_for(REPLY, lambda r: r["task_id"] == "t-once")
    assert result["type"] == "agentmesh.stepresult/1"
    assert result["status"] == "ok" and result["output"] == "hello mesh\n[prev] 42"
    assert result["agent_id"] == "echo-p" and result["usage"]["latency_ms"] > 0
    probe.publish(topics("echo-p")["inbox"], msg)  # after it finished: the cached result again
    again = probe.wait_for(REPLY, lambda r: r["task_id"] == "t-once")
    assert again["output"] == result["output"]
    assert len(log.read_text().splitlines()) == 1


def test_malformed_input_keeps_the_process_serving(
    mosquitto: MosquittoBroker, tmp_path: Path, probe: PahoProbe, procs: list[AgentProcess]
) -> None:
    agent = launch(procs, mosquitto, tmp_path, python_agent("bad-p"))
    agent.wait_online(probe)
    inbox = topics("bad-p")["inbox"]
    probe.publish(inbox, b"\xff\xfe not json")
    probe.publish(inbox, {**assignment(REPLY, task_id="t-noreply"), "attempt": "first"})  # log only
    probe.publish(inbox, assignment(REPLY, task_id="t-bad", deadline_s=-1))
    probe.publish(inbox, assignment(REPLY, task_id="t-huge", instruction="y" * (260 * 1024)))
    probe.publish(inbox, assignment(REPLY, task_id="t-good", instruction="fine"))
    bad = probe.wait_for(REPLY, lambda r: r["task_id"] == "t-bad")
    assert bad["status"] == "error" and "deadline_s" in bad["error"]
    huge = probe.wait_for(REPLY, lambda r: r["task_id"] == "t-huge")
    assert huge["status"] == "error" and "over the limit" in huge["error"]
    good = probe.wait_for(REPLY, lambda r: r["task_id"] == "t-good")
    assert good["status"] == "ok" and good["output"] == "fine"
    assert agent.proc is not None and agent.proc.poll() is None
    assert "not UTF-8" in agent.logs() and "'attempt'" in agent.logs()
    assert not [r for r in probe.collect(REPLY, 0.3) if r["task_id"] == "t-noreply"]


def test_sigkill_publishes_offline_through_the_last_will(
    mosquitto: MosquittoBroker, tmp_path: Path, probe: PahoProbe, procs: list[AgentProcess]
) -> None:
    agent = launch(procs, mosquitto, tmp_path, python_agent("will-p"))
    agent.wait_online(probe)
    agent.signal(signal.SIGKILL)
    agent.wait(10)
    presence = probe.wait_for(topics("will-p")["presence"], lambda p: p["state"] != "online", timeout=60)
    assert presence["state"] == "offline" and presence["id"] == "will-p"
    # ...and it is retained: a client connecting later sees the agent offline.
    with PahoProbe(mosquitto.address) as late:
        late.subscribe(topics("will-p")["presence"])
        assert late.wait_for(topics("will-p")["presence"])["state"] == "offline"


def test_sigterm_drains_in_flight_steps_and_exits_0(
    mosquitto: MosquittoBroker, tmp_path: Path, probe: PahoProbe, procs: list[AgentProcess]
) -> None:
    log = tmp_path / "calls.jsonl"
    agent = launch(procs, mosquitto, tmp_path, python_agent("drain-p", delay_s=1.5, log_file=str(log)))
    agent.wait_online(probe)
    probe.publish(topics("drain-p")["inbox"], assignment(REPLY, task_id="t-drain", instruction="finish me"))
    probe.wait_for(topics("drain-p")["presence"], lambda p: p["load"] >= 1)  # it is running
    agent.signal(signal.SIGTERM)
    draining = probe.wait_for(topics("drain-p")["presence"], lambda p: p["state"] != "online")
    assert draining["state"] == "draining"
    result = probe.wait_for(REPLY, lambda r: r["task_id"] == "t-drain")
    assert result["status"] == "ok" and result["output"] == "finish me"
    offline = probe.wait_for(topics("drain-p")["presence"], lambda p: p["state"] == "offline")
    assert offline["load"] == 0
    assert agent.wait(30) == 0


def test_assignments_sent_while_down_arrive_after_restart(
    mosquitto: MosquittoBroker, tmp_path: Path, probe: PahoProbe, procs: list[AgentProcess]
) -> None:
    config = python_agent("queue-p")
    agent = launch(procs, mosquitto, tmp_path, config)
    agent.wait_online(probe)
    agent.signal(signal.SIGKILL)
    agent.wait(10)
    probe.wait_for(topics("queue-p")["presence"], lambda p: p["state"] == "offline")
    # The persistent session keeps the inbox subscription: the broker queues these for the agent.
    for i in range(3):
        probe.publish(
            topics("queue-p")["inbox"], assignment(REPLY, task_id=f"t-q{i}", instruction=f"queued {i}")
        )
    restarted = launch(procs, mosquitto, tmp_path, config)
    got = {probe.wait_for(REPLY)["task_id"] for _ in range(3)}
    assert got == {"t-q0", "t-q1", "t-q2"}
    restarted.wait_online(probe)


def run_agent_cli(path: Path, mosquitto: MosquittoBroker) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentmesh.agent", str(path), "--broker", mosquitto.address.url],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_bad_config_exits_2_naming_file_and_key(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "id: bad-1\ntier: device\ncapabilities: [{name: x, description: y}]\n"
        "backend: {kind: python, callable: 'agentmesh.agent.tools:echo'}\nconcurency: 2\n"
    )
    proc = run_agent_cli(path, mosquitto)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and "concurency" in lines[0]

    path.write_text(
        "id: bad-2\ntier: device\ncapabilities: [{name: x, description: y}]\n"
        "backend: {kind: python, callable: 'no_such_module_abc:f'}\n"
    )
    proc = run_agent_cli(path, mosquitto)
    assert proc.returncode == 2
    assert str(path) in proc.stderr and "backend.callable" in proc.stderr


def test_missing_model_exits_2_and_unreachable_broker_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(
        "id: m-1\ntier: device\ncapabilities: [{name: x, description: y}]\n"
        "backend: {kind: llama_cpp, model: 'pkg:no_such_model_pkg'}\n"
    )
    dead = "mqtt://127.0.0.1:9"  # nothing listens on the discard port
    proc = subprocess.run(
        [sys.executable, "-m", "agentmesh.agent", str(path), "--broker", dead],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert f"{path}:backend.model" in proc.stderr and "no_such_model_pkg" in proc.stderr
    # A capability without examples is worth a warning: examples are what requests match best.
    assert f"{path}: capabilities without examples: x;" in proc.stderr
    echo = tmp_path / "e.yaml"
    echo.write_text(
        "id: e-1\ntier: device\ncapabilities: [{name: x, description: y}]\n"
        "backend: {kind: python, callable: 'agentmesh.agent.tools:echo'}\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "agentmesh.agent", str(echo), "--broker", dead],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "AGENTMESH_STATE_DIR": str(tmp_path / "state")},
    )
    assert proc.returncode == 1 and "cannot connect" in proc.stderr


def test_sigterm_without_a_broker_exits_without_waiting_for_acks(
    mosquitto: MosquittoBroker, tmp_path: Path, probe: PahoProbe, procs: list[AgentProcess]
) -> None:
    agent = launch(procs, mosquitto, tmp_path, python_agent("gone-p"))
    agent.wait_online(probe)
    mosquitto.stop_sync()
    agent.signal(signal.SIGTERM)
    # Each stop-time publish once waited 30 s for a PUBACK that could not come (60 s in all).
    assert agent.wait(20) == 0
    assert "unreachable: stopping without publishing" in agent.logs()
    assert "agent gone-p offline" in agent.logs()
