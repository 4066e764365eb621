"""MqttClient drives paho from the asyncio loop (no network thread): the parts that are ours now.

Keepalive pings, noticing a dead broker, reconnecting with backoff, and writes bigger than the
socket's send buffer, all against a real Mosquitto. Timeouts only guard failures.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agentmesh.transport import MosquittoBroker, MqttClient

pytestmark = pytest.mark.broker

GUARD = 30.0


@pytest.fixture
async def clients() -> AsyncIterator[list[MqttClient]]:
    made: list[MqttClient] = []
    yield made
    for client in made:
        await client.close()


def _client(broker: MosquittoBroker, made: list[MqttClient], **kwargs: Any) -> MqttClient:
    client = MqttClient(broker.address, client_id=f"loop-{uuid.uuid4().hex[:10]}", **kwargs)
    made.append(client)
    return client


async def test_no_network_thread_and_an_idle_connection_stays_up_on_pings(
    mosquitto: MosquittoBroker, clients: list[MqttClient]
) -> None:
    before = set(threading.enumerate())
    client = _client(mosquitto, clients, keepalive=1)
    await client.connect()
    sub = await client.subscribe("agentmesh/v1/idle")
    # Idle for several keepalive periods: no thread of paho's, and nothing (pings, or their
    # absence) makes either side drop the connection.
    await asyncio.sleep(4.0)
    assert client.connected and client.connects == 1
    assert not [t for t in set(threading.enumerate()) - before if "paho" in t.name.lower()]
    await client.publish("agentmesh/v1/idle", b"still here")
    assert (await sub.get(GUARD)).payload == b"still here"


async def test_a_frozen_broker_is_noticed_by_keepalive_and_the_client_comes_back(
    mosquitto: MosquittoBroker, clients: list[MqttClient]
) -> None:
    client = _client(mosquitto, clients, keepalive=1, reconnect_delay=(0.05, 0.2))
    await client.connect()
    sub = await client.subscribe("agentmesh/v1/frozen")
    assert mosquitto.proc is not None
    os.kill(mosquitto.proc.pid, signal.SIGSTOP)  # the TCP connection stays open but nothing answers
    try:
        await client.wait_disconnected(GUARD)  # no PINGRESP within keepalive
        await asyncio.sleep(1.0)  # several backoff rounds against a broker that accepts but never answers
    finally:
        os.kill(mosquitto.proc.pid, signal.SIGCONT)
    await client.wait_connected(GUARD)
    assert client.connects >= 2
    await client.publish("agentmesh/v1/frozen", b"thawed")
    assert (await sub.get(GUARD)).payload == b"thawed"


async def test_backoff_retries_until_the_broker_returns(
    mosquitto: MosquittoBroker, clients: list[MqttClient]
) -> None:
    client = _client(mosquitto, clients, reconnect_delay=(0.02, 0.1))
    await client.connect()
    sub = await client.subscribe("agentmesh/v1/back")
    await asyncio.to_thread(mosquitto.stop_sync)
    await client.wait_disconnected(GUARD)
    await asyncio.sleep(1.0)  # many refused attempts
    assert not client.connected and client.connects == 1
    await asyncio.to_thread(mosquitto.start_sync)
    await client.wait_connected(GUARD)
    assert client.connects == 2  # refused TCP connects are no CONNACKs
    await client.publish("agentmesh/v1/back", b"back")
    assert (await sub.get(GUARD)).payload == b"back"


async def test_a_burst_bigger_than_the_send_buffer_arrives_complete_and_in_order(
    mosquitto: MosquittoBroker, clients: list[MqttClient]
) -> None:
    receiver = _client(mosquitto, clients)
    sender = _client(mosquitto, clients)
    await receiver.connect()
    await sender.connect()
    sub = await receiver.subscribe("agentmesh/v1/burst")
    assert sender._paho is not None
    sock = sender._paho.socket()
    assert isinstance(sock, socket.socket)
    # A small send buffer and a burst queued in one go: paho meets a full socket and the loop must
    # wait for it to become writable again.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)
    size, n = 200 * 1024, 40
    for i in range(n - 1):
        sender.publish_nowait("agentmesh/v1/burst", i.to_bytes(4, "big") * (size // 4))
    await sender.publish("agentmesh/v1/burst", (n - 1).to_bytes(4, "big") * (size // 4), timeout=GUARD)
    got = [await sub.get(GUARD) for _ in range(n)]
    assert [int.from_bytes(m.payload[:4], "big") for m in got] == list(range(n))
    assert all(len(m.payload) == size for m in got)
    assert sender.connects == 1 and receiver.connects == 1
