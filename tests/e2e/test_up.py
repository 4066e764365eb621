"""`agentmesh up` on real models: SmolLM2 (device and planner), Gemma 3 270M (edge), tool agents.

A two-part task goes through the LLM planner (SmolLM2, output constrained to the plan schema) and
its parts run in parallel on the agents the router picks; a task whose parts the planner leaves out
still gets every part answered.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from agentmesh import MeshClient
from agentmesh.directory import snapshot
from agentmesh.protocol import Topics
from agentmesh.registry import Registry
from agentmesh.transport import BrokerAddress, MqttClient, free_port

ROOT = Path(__file__).resolve().parents[2]
AGENTS = ["phone-1", "edge-1", "planner-1", "calc-1", "units-1"]

pytestmark = pytest.mark.model


@pytest.fixture
def mesh_up(tmp_path: Path) -> Iterator[tuple[BrokerAddress, subprocess.Popen[bytes], Path]]:
    demo = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    demo["router"]["ledger"] = str(tmp_path / "ledger.sqlite")
    for entry in demo["agents"]:
        entry["config"] = str((ROOT / "configs" / entry["config"]).resolve())
    mesh_file = tmp_path / "mesh.yaml"
    mesh_file.write_text(yaml.safe_dump(demo))
    broker = BrokerAddress("127.0.0.1", free_port())
    log = tmp_path / "up.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentmesh", "--broker", broker.url, "up", str(mesh_file)],
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        env={"AGENTMESH_STATE_DIR": str(tmp_path / "state"), **_env()},
    )
    try:
        yield broker, proc, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env.pop("AGENTMESH_CLOUD_BASE_URL", None)  # the demo's cloud agent stays off
    return env


async def wait_until_up(broker: BrokerAddress, proc: subprocess.Popen[bytes], log: Path) -> None:
    """`up` says so once its router has every agent; then the cards are on the broker too."""
    deadline = time.monotonic() + 240
    while "The mesh is up" not in log.read_text():
        assert proc.poll() is None, f"agentmesh up exited:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"the mesh did not come up:\n{log.read_text()[-3000:]}"
        await asyncio.sleep(0.2)
    async with MqttClient(broker, client_id="e2e-probe") as client:
        registry = Registry(indexed=False)
        await snapshot(client, Topics(), registry)
    assert {e.agent_id for e in registry.agents() if e.state == "online"} == set(AGENTS)


async def test_up_answers_a_two_part_task_through_the_llm_planner(
    mesh_up: tuple[BrokerAddress, subprocess.Popen[bytes], Path],
) -> None:
    broker, proc, log = mesh_up
    await wait_until_up(broker, proc, log)
    async with MeshClient(broker) as mesh:
        handle = await mesh.submit("Convert 5 km to miles. Then compute 12*12.", planner="llm", events=True)
        events = [ev async for ev in handle.events()]
        result = await handle.result(timeout=120)
    assert result.status == "done", f"{result.error}\n{log.read_text()[-3000:]}"
    planned = next(e for e in events if e.kind == "planned")
    assert planned.detail.startswith("planned by planner-1"), planned.detail
    planner = next(s for s in result.steps if s.id == "planner")
    assert planner.attempts[-1].status == "ok" and planner.attempts[-1].agent_id == "planner-1"
    dag = [s for s in result.steps if s.id != "planner"]
    assert len(dag) == 2, result.steps
    assert "144" in result.output and "3.10685" in result.output, result.output
    assert {s.agent_id for s in dag} == {"units-1", "calc-1"}
    assert result.usage.completion_tokens > 0  # the planner generated its plan

    # SmolLM2 plans only the first part of this one; the router adds the parts it left out, and
    # the dependent one gets the answer it refers to (112) in place of "the result".
    async with MeshClient(broker) as mesh:
        handle = await mesh.submit(
            "Convert 3 miles to km; compute 45+67. Then multiply the result by 2.", planner="llm", events=True
        )
        events = [ev async for ev in handle.events()]
        result = await handle.result(timeout=120)
    assert result.status == "done", f"{result.error}\n{log.read_text()[-3000:]}"
    planned = next(e for e in events if e.kind == "planned")
    assert planned.detail.startswith("planned by planner-1"), planned.detail
    assert "4.828032 km" in result.output and "224" in result.output, (planned.detail, result.output)

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    text = log.read_text()
    assert "The mesh is up" in text and "stopping" in text
