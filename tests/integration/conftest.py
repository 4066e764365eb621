"""Fixtures for registry/directory integration tests: the real MiniLM model (loaded once per
session) and a *plain* paho-mqtt client, as any third-party agent would use."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agentmesh.registry import MiniLMEmbedder
from agentmesh.transport import BrokerAddress


@pytest.fixture(scope="session")
def minilm() -> MiniLMEmbedder:
    embedder = MiniLMEmbedder()
    embedder.load()
    return embedder


class PlainClient:
    """paho-mqtt 2.x used directly (MQTT 3.1.1, no agentmesh code), with an optional Last Will.

    Blocking paho calls run in threads so an in-process broker (amqtt) on the test's loop keeps
    serving meanwhile.
    """

    def __init__(
        self, address: BrokerAddress, client_id: str, *, will: tuple[str, bytes] | None = None
    ) -> None:
        self.address = address
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv311)
        if will is not None:
            self.client.will_set(will[0], will[1], qos=1, retain=True)
        self._connected = threading.Event()
        self.client.on_connect = lambda *a: self._connected.set()

    async def connect(self) -> PlainClient:
        await asyncio.to_thread(self.client.connect, self.address.host, self.address.port, 30)
        self.client.loop_start()
        ok = await asyncio.to_thread(self._connected.wait, 10)
        assert ok, "plain client did not connect"
        return self

    async def publish(
        self, topic: str, payload: bytes | str | dict[str, Any], *, retain: bool = True
    ) -> None:
        if isinstance(payload, dict):
            payload = json.dumps(payload)
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        await asyncio.to_thread(info.wait_for_publish, 10)
        assert info.is_published(), f"no PUBACK for {topic}"

    async def kill(self) -> None:
        """Drop the TCP connection without DISCONNECT: the broker must fire the Last Will."""
        await asyncio.to_thread(self.client.loop_stop)
        sock = self.client.socket()
        if sock is not None:
            sock.close()

    async def close(self) -> None:
        self.client.disconnect()
        await asyncio.to_thread(self.client.loop_stop)


def vcv_payload(
    agent_id: str, version: int, tier: str, caps: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    """A card as a third-party client would write it: plain JSON."""
    return {
        "type": "agentmesh.vcv/1",
        "sent_at": "2025-01-01T00:00:00Z",
        "agent_id": agent_id,
        "version": version,
        "tier": tier,
        "capabilities": caps,
        **extra,
    }


def presence_payload(agent_id: str, state: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "agentmesh.presence/1",
        "sent_at": "2025-01-01T00:00:00Z",
        "id": agent_id,
        "state": state,
        **extra,
    }


async def until(predicate: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    """Poll until ``predicate()`` holds (the test fails, with ``what``, if it never does)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
