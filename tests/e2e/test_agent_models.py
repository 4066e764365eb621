"""Agents with real models, as processes, driven by a plain paho client through a real Mosquitto:
SmolLM2 (device) and Gemma 3 270M (edge) on llama.cpp, and the openai backend against a real
``python -m llama_cpp.server`` serving SmolLM2's GGUF."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentmesh.transport import MosquittoBroker
from tests.agent_fixtures import REPO, AgentProcess, PahoProbe, agent_probe, assignment, topics
from tests.e2e.conftest import LlamaServer

pytestmark = [pytest.mark.broker, pytest.mark.model]

REPLY = "agentmesh/v1/routers/e2e-router/results"


def example(name: str, **backend: Any) -> dict[str, Any]:
    """One of the shipped agents/ configs, with small generation limits for a quick test."""
    config: dict[str, Any] = yaml.safe_load((REPO / "agents" / name).read_text())
    config["backend"].update(backend)
    return config


@pytest.fixture
def probe(mosquitto: MosquittoBroker) -> Iterator[PahoProbe]:
    with agent_probe(mosquitto.address, REPLY) as p:
        yield p


@pytest.fixture
def procs() -> Iterator[list[AgentProcess]]:
    started: list[AgentProcess] = []
    yield started
    for proc in started:
        assert proc.stop() == 0, proc.logs()


def run(
    procs: list[AgentProcess],
    config: dict[str, Any],
    broker: MosquittoBroker,
    tmp: Path,
    probe: PahoProbe,
    env: dict[str, str] | None = None,
) -> AgentProcess:
    proc = AgentProcess(config, broker.address, tmp, env=env).start()
    procs.append(proc)
    proc.wait_online(probe, timeout=120)
    return proc


def ask(probe: PahoProbe, agent_id: str, task_id: str, instruction: str, **extra: Any) -> dict[str, Any]:
    probe.publish(
        topics(agent_id)["inbox"], assignment(REPLY, task_id=task_id, instruction=instruction, **extra)
    )
    return probe.wait_for(REPLY, lambda r: r["task_id"] == task_id, timeout=120)


def check_generated(result: dict[str, Any]) -> None:
    assert result["status"] == "ok", result
    assert result["output"].strip()
    assert 0.0 < result["confidence"] <= 1.0
    assert result["usage"]["prompt_tokens"] > 0 and result["usage"]["completion_tokens"] > 0
    assert result["usage"]["latency_ms"] > 0


def test_smollm2_device_agent(
    mosquitto: MosquittoBroker, tmp_path: Path, probe: PahoProbe, procs: list[AgentProcess]
) -> None:
    config = example("device-smollm2.yaml", n_ctx=1024, max_tokens=24)
    config["concurrency"] = 2  # two steps share one llama.cpp context: serialized, both answered
    run(procs, config, mosquitto, tmp_path, probe)
    card = probe.wait_for(topics("phone-1")["vcv"])
    assert card["model"]["family"] == "smollm2" and card["model"]["quant"] == "Q4_1"
    assert card["model"]["params_b"] == pytest.approx(0.135)

    for tid, text in [("t-a", "What is the capital of Peru?"), ("t-b", "Name a primary color.")]:
        probe.publish(topics("phone-1")["inbox"], assignment(REPLY, task_id=tid, instruction=text))
    first = probe.wait_for(REPLY, lambda r: r["task_id"] == "t-a", timeout=120)
    second = probe.wait_for(REPLY, lambda r: r["task_id"] == "t-b", timeout=120)
    check_generated(first)
    check_generated(second)

    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 24}},
        "required": ["city"],
        "additionalProperties": False,
    }
    structured = ask(
        probe,
        "phone-1",
        "t-json",
        "Which city is the capital of Peru?",
        response_format=schema,
        max_tokens=40,
        inputs={"s0": "Peru is a country in South America."},
        previous={"agent_id": "phone-2", "tier": "device", "output": "Cusco", "reason": "low confidence"},
    )
    check_generated(structured)
    parsed = json.loads(structured["output"])
    assert isinstance(parsed, dict) and isinstance(parsed["city"], str)


def test_gemma3_edge_agent(
    mosquitto: MosquittoBroker, tmp_path: Path, probe: PahoProbe, procs: list[AgentProcess]
) -> None:
    cache = tmp_path / "cache"  # assembled from the chunk packages into this cache on first use
    config = example("edge-gemma3.yaml", n_ctx=1024, max_tokens=16)
    run(procs, config, mosquitto, tmp_path, probe, env={"AGENTMESH_CACHE": str(cache)})
    assert [p.name for p in (cache / "models").iterdir()] == ["gemma-3-270m-q4_k_m-a5fd3b62230a.gguf"]
    card = probe.wait_for(topics("edge-1")["vcv"])
    assert (
        card["tier"] == "edge" and card["model"]["family"] == "gemma3" and card["model"]["quant"] == "Q4_K_M"
    )
    check_generated(ask(probe, "edge-1", "t-g", "What is the capital of France?"))


def test_openai_backend_against_llama_cpp_server(
    mosquitto: MosquittoBroker,
    tmp_path: Path,
    probe: PahoProbe,
    procs: list[AgentProcess],
    llama_server: LlamaServer,
) -> None:
    config = example("cloud-openai.yaml", max_tokens=24, response_format="json_object")
    config["cost"] = {"usd_per_mtok_in": 1.0, "usd_per_mtok_out": 2.0}
    env = {
        "AGENTMESH_CLOUD_BASE_URL": llama_server.base_url,
        "AGENTMESH_CLOUD_MODEL": llama_server.model,
        "AGENTMESH_CLOUD_API_KEY": llama_server.api_key,
    }
    run(procs, config, mosquitto, tmp_path, probe, env=env)
    result = ask(probe, "cloud-1", "t-o", "What is the capital of Peru?")
    check_generated(result)
    usage = result["usage"]
    expected = (usage["prompt_tokens"] * 1.0 + usage["completion_tokens"] * 2.0) / 1e6
    assert usage["cost_usd"] == pytest.approx(expected)

    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 24}},
        "required": ["city"],
    }
    structured = ask(
        probe, "cloud-1", "t-oj", "Name the capital of Peru.", response_format=schema, max_tokens=40
    )
    assert structured["status"] == "ok"
    assert isinstance(json.loads(structured["output"])["city"], str)

    # The same agent with a wrong key: a clear auth error, no retries, and the agent keeps serving.
    wrong = dict(config, id="cloud-2")
    run(procs, wrong, mosquitto, tmp_path, probe, env={**env, "AGENTMESH_CLOUD_API_KEY": "not-the-key"})
    denied = ask(probe, "cloud-2", "t-denied", "Hello?")
    assert denied["status"] == "error" and "refused the key" in denied["error"]
