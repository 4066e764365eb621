"""Shared fixtures: real brokers on free ports.

A missing Mosquitto is a failure, not a skip (.ci/run installs it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from agentmesh.transport import AmqttBroker, BrokerAddress, MosquittoBroker


def require_mosquitto() -> None:
    # A missing broker fails loudly rather than skipping: a skipped broker test proves nothing.
    if not MosquittoBroker.available():
        pytest.fail("mosquitto is not installed: apt-get install -y mosquitto (.ci/run does it)")


@pytest.fixture
def mosquitto() -> Iterator[MosquittoBroker]:
    """A fresh Mosquitto on a free port with broker/mosquitto.conf; stopped afterwards."""
    require_mosquitto()
    broker = MosquittoBroker()
    broker.start_sync()
    try:
        yield broker
    finally:
        broker.cleanup()


@pytest.fixture
async def amqtt_broker() -> AsyncIterator[AmqttBroker]:
    """The embedded amqtt broker on a free port, on the test's event loop."""
    broker = AmqttBroker()
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()


@pytest.fixture(params=["mosquitto", "amqtt"])
async def any_broker(request: pytest.FixtureRequest) -> AsyncIterator[BrokerAddress]:
    """Each test using this runs once against Mosquitto and once against amqtt."""
    if request.param == "mosquitto":
        require_mosquitto()
        m = MosquittoBroker()
        await m.start()
        try:
            yield m.address
        finally:
            await m.stop()
    else:
        a = AmqttBroker()
        await a.start()
        try:
            yield a.address
        finally:
            await a.stop()


@pytest.fixture
def broker_url(mosquitto: MosquittoBroker) -> str:
    return mosquitto.address.url
