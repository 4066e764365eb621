"""The transport's own QoS 1 PUBLISH packets and PUBACK reads equal paho's (no broker needed)."""

from __future__ import annotations

import gc
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agentmesh.transport.client import _LoopClient


class _Socket:
    def __init__(self) -> None:
        self.inbound = b""

    def recv(self, size: int) -> bytes:
        if not self.inbound:
            raise BlockingIOError
        data, self.inbound = self.inbound[:size], self.inbound[size:]
        return data

    def close(self) -> None:
        pass


def _client(protocol: int) -> _LoopClient:
    client = _LoopClient(CallbackAPIVersion.VERSION2, client_id="packets", protocol=protocol)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client._sock = _Socket()
    client.on_socket_register_write = lambda *args: None
    return client


@pytest.mark.parametrize("protocol", [paho.MQTTv5, paho.MQTTv311])
@pytest.mark.parametrize("size", [0, 1, 120, 121, 122, 127, 128, 16379, 16384, 300_000])
@pytest.mark.parametrize("retain", [False, True])
def test_fast_qos1_publish_writes_what_paho_writes(protocol: int, size: int, retain: bool) -> None:
    client = _client(protocol)
    topic, payload = "agentmesh/v1/tasks/t1/events", bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    info = client.publish(topic, payload, 1, retain)
    ours = bytes(client._out_packet.pop()["packet"])
    message = client._out_messages[info.mid]
    assert (message.topic, message.payload, message.qos, message.retain) == (topic, payload, 1, retain)
    client._send_publish(info.mid, topic.encode(), payload, 1, retain, False)
    assert ours == bytes(client._out_packet.pop()["packet"])


def test_puback_read_from_the_buffer_acknowledges_the_publish() -> None:
    client = _client(paho.MQTTv5)
    acked: list[tuple[int, Any]] = []
    client.on_publish = lambda c, u, mid, rc, props: acked.append((mid, rc.value))
    first = client.publish("a/b", b"1", 1, False)
    second = client.publish("a/b", b"2", 1, False)
    sock: Any = client._sock
    # MQTT 5 with a reason code (no subscribers), then the short form of MQTT 3.1.1.
    sock.inbound = b"\x40\x03" + first.mid.to_bytes(2, "big") + b"\x10"
    sock.inbound += b"\x40\x02" + second.mid.to_bytes(2, "big")
    assert client.loop_read() == paho.MQTT_ERR_SUCCESS
    while client.buffered:
        client.loop_read()
    assert acked == [(first.mid, 0x10), (second.mid, 0)]
    assert client._out_messages == {} and client._inflight_messages == 0
    assert first.is_published() and second.is_published()


def test_received_publishes_leave_no_garbage_cycles() -> None:
    """paho's per-topic callback lookup made a reference cycle per message; every process paid
    for it in garbage collections."""
    client = _client(paho.MQTTv5)
    got: list[bytes] = []
    client.on_message = lambda c, u, msg: got.append(bytes(msg.payload))
    topic = b"agentmesh/v1/routers/r1/results"
    body = len(topic).to_bytes(2, "big") + topic + (7).to_bytes(2, "big") + b"\x00" + b"x" * 300
    packet = b"\x32" + bytes([len(body) & 0x7F | 0x80, len(body) >> 7]) + body
    sock: Any = client._sock
    gc.collect()
    gc.disable()
    try:
        for _ in range(50):
            sock.inbound = packet
            client.loop_read()
            client._out_packet.clear()  # the PUBACKs
        assert len(got) == 50
        assert gc.collect() == 0
    finally:
        gc.enable()
