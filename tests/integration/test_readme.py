"""README's examples work as written (only the broker address is swapped for the test broker)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentmesh.errors import TaskTimeout
from agentmesh.protocol import TaskResult, Topics, decode
from agentmesh.transport import MosquittoBroker, MqttClient
from tests.agent_fixtures import AgentProcess

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
CALC = {
    "id": "calc-1",
    "tier": "device",
    "capabilities": [
        {
            "name": "arithmetic",
            "description": "Compute exact results of arithmetic expressions.",
            "tags": ["math", "calculator"],
            "examples": ["What is 12 * (3 + 4)?"],
        }
    ],
    "backend": {"kind": "python", "callable": "agentmesh.agent.tools:calculate"},
}

pytestmark = pytest.mark.broker


def start_router(mosquitto: MosquittoBroker, router_id: str, home: Path) -> subprocess.Popen[bytes]:
    """`agentmesh router` as a process, its default ledger under ``home``."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agentmesh",
            "--broker",
            mosquitto.address.url,
            "router",
            "--router-id",
            router_id,
        ],
        env=dict(os.environ, HOME=str(home)),
        stderr=subprocess.DEVNULL,
    )


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, re.DOTALL)


@pytest.fixture
def calc_agent(mosquitto: MosquittoBroker, tmp_path: Path) -> Iterator[AgentProcess]:
    agent = AgentProcess(CALC, mosquitto.address, tmp_path).start()
    yield agent
    agent.stop()


def test_the_python_embedding_example_runs(
    mosquitto: MosquittoBroker, calc_agent: AgentProcess, tmp_path: Path
) -> None:
    example = next(b for b in blocks("python") if "Router(" in b and "MeshClient(" in b)
    code = example.replace("mqtt://127.0.0.1:1883", mosquitto.address.url)
    env = dict(os.environ, HOME=str(tmp_path), PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert lines[-1] == "done 391", out.stdout
    assert any(line.startswith("dispatched s1 calc-1") for line in lines), out.stdout


async def test_the_mosquitto_pub_example_runs(
    mosquitto: MosquittoBroker, calc_agent: AgentProcess, tmp_path: Path
) -> None:
    if shutil.which("mosquitto_pub") is None:
        pytest.fail("mosquitto_pub is not installed: apt-get install -y mosquitto-clients (.ci/run does it)")
    shell = next(b for b in blocks("bash") if "mosquitto_pub" in b)
    payload = re.search(r"-m '(\{.*?\})'", shell, re.DOTALL)
    assert payload is not None
    router = start_router(mosquitto, "readme", tmp_path)
    try:
        topics = Topics()
        async with MqttClient(mosquitto.address, client_id="readme-check") as client:
            presence = await client.subscribe(topics.router_presence("readme"))
            await presence.get(timeout=120)  # the router is subscribed once its presence is out
            result_sub = await client.subscribe(topics.result("demo-1"))
            subprocess.run(
                [
                    "mosquitto_pub", "-h", "127.0.0.1", "-p", str(mosquitto.port), "-q", "1",
                    "-t", "agentmesh/v1/tasks/submit", "-m", payload.group(1),
                ],
                check=True,
                timeout=30,
            )  # fmt: skip
            result = decode(TaskResult, (await result_sub.get(timeout=60)).payload)
    finally:
        router.terminate()
        router.wait(30)
    assert isinstance(result, TaskResult)
    assert result.status == "done" and result.output == "391", result


def test_the_sync_helper_for_scripts(
    mosquitto: MosquittoBroker, calc_agent: AgentProcess, tmp_path: Path
) -> None:
    from agentmesh import run_task

    assert "agentmesh.run_task(" in README
    router = start_router(mosquitto, "sync", tmp_path)
    try:
        deadline = time.monotonic() + 120
        while True:  # the first tasks may be published before the router has subscribed
            try:
                result = run_task("What is 17*23?", broker=mosquitto.address.url, timeout=5)
                break
            except TaskTimeout:
                assert time.monotonic() < deadline, "the router never answered"
    finally:
        router.terminate()
        router.wait(30)
    assert result.status == "done" and result.output == "391"


def test_submit_takes_a_plan_file_without_text(
    mosquitto: MosquittoBroker, calc_agent: AgentProcess, tmp_path: Path
) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text("steps:\n  - {id: a, instruction: 'What is 17*23?'}\n")
    router = start_router(mosquitto, "plan-file", tmp_path)
    command = [sys.executable, "-m", "agentmesh", "--broker", mosquitto.address.url, "submit"]
    try:
        deadline = time.monotonic() + 120
        while True:  # the first tasks may be published before the router has subscribed
            out = subprocess.run(
                [*command, "--plan", str(plan), "--wait", "--json", "--timeout", "5"],
                capture_output=True,
                text=True,
                timeout=60,
            )
            if out.returncode != 1 or time.monotonic() > deadline:
                break
    finally:
        router.terminate()
        router.wait(30)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout)["output"] == "391"
    empty = subprocess.run([*command, "--wait"], capture_output=True, text=True, timeout=60)
    assert empty.returncode == 2 and "TEXT is empty (give a task, or --plan FILE)" in empty.stderr
