"""Broker launchers: Mosquitto as a subprocess, amqtt in-process, and start_broker's choice."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentmesh.errors import BrokerError
from agentmesh.transport import AmqttBroker, MosquittoBroker, MqttClient, port_answers, start_broker
from tests.conftest import require_mosquitto

pytestmark = pytest.mark.broker


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port something else is listening on."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield int(listener.getsockname()[1])


async def roundtrip(broker_url: str) -> bytes:
    async with MqttClient(broker_url, client_id="launcher-check") as client:
        sub = await client.subscribe("agentmesh/v1/ping")
        await client.publish("agentmesh/v1/ping", b"pong")
        return (await sub.get(30)).payload


def test_mosquitto_on_a_busy_port_is_a_broker_error(busy_port: int) -> None:
    require_mosquitto()
    broker = MosquittoBroker(busy_port)
    try:
        with pytest.raises(BrokerError) as info:
            broker.start_sync()
        assert info.value.kind == "mosquitto" and str(busy_port) in str(info.value)
        assert broker.proc is None
    finally:
        broker.cleanup()


async def test_amqtt_on_a_busy_port_is_a_broker_error(busy_port: int) -> None:
    broker = AmqttBroker(busy_port)
    with pytest.raises(BrokerError) as info:
        await broker.start()
    assert info.value.kind == "amqtt"
    await broker.stop()


def test_mosquitto_with_a_broken_config_reports_why(tmp_path: Path) -> None:
    require_mosquitto()
    conf = tmp_path / "broken.conf"
    conf.write_text("no_such_option 1\n")
    broker = MosquittoBroker(conf=conf)
    try:
        with pytest.raises(BrokerError, match="no_such_option"):
            broker.start_sync()
    finally:
        broker.cleanup()


async def test_mosquitto_starts_stops_and_cleans_up() -> None:
    require_mosquitto()
    broker = MosquittoBroker()
    await broker.start()
    data_dir = broker.data_dir
    assert port_answers("127.0.0.1", broker.port)
    assert await roundtrip(broker.address.url) == b"pong"
    conf = (data_dir / "mosquitto.conf").read_text()
    assert "set_tcp_nodelay true" in conf  # DESIGN.md section 8: both ends need it
    assert f"listener {broker.port} 127.0.0.1" in conf
    await broker.stop()
    assert not port_answers("127.0.0.1", broker.port)
    assert not data_dir.exists()


async def test_mosquitto_writes_its_log_and_persistence_into_the_data_dir(tmp_path: Path) -> None:
    require_mosquitto()
    # Started as root, mosquitto drops to its own user; the data dir must stay writable for it.
    broker = MosquittoBroker(data_dir=tmp_path)
    await broker.start()
    try:
        assert await roundtrip(broker.address.url) == b"pong"
    finally:
        broker.stop_sync()
    assert "running" in (tmp_path / "mosquitto.log").read_text()
    assert (tmp_path / "mosquitto.db").exists()
    broker.cleanup()
    assert (tmp_path / "mosquitto.conf").is_file()  # a caller's own data dir is left in place


async def test_amqtt_starts_and_stops() -> None:
    broker = AmqttBroker()
    await broker.start()
    assert await roundtrip(broker.address.url) == b"pong"
    await broker.stop()
    assert not port_answers("127.0.0.1", broker.port)
    await broker.stop()  # stopping twice is harmless


async def test_start_broker_picks_mosquitto_when_installed() -> None:
    require_mosquitto()
    broker = await start_broker()
    try:
        assert broker.kind == "mosquitto"
        assert await roundtrip(broker.address.url) == b"pong"
    finally:
        await broker.stop()


async def test_start_broker_can_be_asked_for_amqtt() -> None:
    broker = await start_broker(prefer="amqtt")
    try:
        assert broker.kind == "amqtt" and isinstance(broker, AmqttBroker)
        async with MqttClient(broker.address, client_id="v311-check") as client:
            assert not client.mqtt5
    finally:
        await broker.stop()
