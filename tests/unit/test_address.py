"""Broker addresses: ``mqtt://host:port`` / ``mqtts://host:port`` and how --broker is resolved."""

from __future__ import annotations

import pytest

from agentmesh.errors import ConfigError
from agentmesh.transport import BROKER_ENV, DEFAULT_BROKER, BrokerAddress


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://127.0.0.1:1883", BrokerAddress("127.0.0.1", 1883)),
        ("mqtt://broker.local", BrokerAddress("broker.local", 1883)),
        ("mqtts://broker.example.com", BrokerAddress("broker.example.com", 8883, tls=True)),
        ("mqtts://broker.example.com:443", BrokerAddress("broker.example.com", 443, tls=True)),
        ("localhost:1884", BrokerAddress("localhost", 1884)),
        ("localhost", BrokerAddress("localhost", 1883)),
        ("  mqtt://h:1  ", BrokerAddress("h", 1)),
        ("mqtt://h:65535/", BrokerAddress("h", 65535)),
        ("mqtt://[::1]:1883", BrokerAddress("::1", 1883)),
        ("mqtt://alice:s3cret@h:1883", BrokerAddress("h", 1883, username="alice", password="s3cret")),
        ("mqtts://a%40b:p%3Aw%2F@h", BrokerAddress("h", 8883, tls=True, username="a@b", password="p:w/")),
        ("mqtt://bob@h", BrokerAddress("h", 1883, username="bob")),
    ],
)
def test_parse(url: str, expected: BrokerAddress) -> None:
    assert BrokerAddress.parse(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "http://h:1883",
        "tcp://h",
        "ws://h:9001",
        "mqtt://",
        "mqtt://:1883",
        "mqtt://h:0",
        "mqtt://h:65536",
        "mqtt://h:-1",
        "mqtt://h:port",
        "",
    ],
)
def test_invalid_urls_are_config_errors_naming_the_field(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        BrokerAddress.parse(url)
    assert info.value.field == "broker"


def test_errors_do_not_leak_the_password() -> None:
    with pytest.raises(ConfigError) as info:
        BrokerAddress.parse("mqtt://alice:hunter2@h:99999")
    assert "hunter2" not in str(info.value)
    assert "alice" in str(info.value)


@pytest.mark.parametrize(
    "address",
    [
        BrokerAddress("h", 1883),
        BrokerAddress("10.0.0.7", 1),
        BrokerAddress("broker.example.com", 8883, tls=True),
        BrokerAddress("::1", 1884),
        BrokerAddress("fe80::1", 8883, tls=True),
    ],
)
def test_url_round_trips(address: BrokerAddress) -> None:
    assert BrokerAddress.parse(address.url) == address
    assert str(address) == address.url


def test_url_never_shows_credentials() -> None:
    address = BrokerAddress.parse("mqtt://alice:hunter2@h:1883")
    assert address.url == "mqtt://h:1883"
    assert "hunter2" not in repr(address.url) and "hunter2" not in str(address)


def test_resolve_prefers_argument_then_environment_then_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BROKER_ENV, raising=False)
    assert BrokerAddress.resolve() == BrokerAddress.parse(DEFAULT_BROKER) == BrokerAddress("127.0.0.1", 1883)
    monkeypatch.setenv(BROKER_ENV, "mqtts://env-broker:8884")
    assert BrokerAddress.resolve() == BrokerAddress("env-broker", 8884, tls=True)
    assert BrokerAddress.resolve(None) == BrokerAddress("env-broker", 8884, tls=True)
    assert BrokerAddress.resolve("mqtt://cli:1") == BrokerAddress("cli", 1)
    monkeypatch.setenv(BROKER_ENV, "")
    assert BrokerAddress.resolve() == BrokerAddress("127.0.0.1", 1883)
    monkeypatch.setenv(BROKER_ENV, "bogus://x")
    with pytest.raises(ConfigError):
        BrokerAddress.resolve()
