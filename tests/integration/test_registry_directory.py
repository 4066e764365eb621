"""The registry kept in sync with a real broker (issue 2, must-show 1).

Cards and presence are published by a plain paho-mqtt client, as any third-party agent would.
Every test runs against Mosquitto and against the embedded amqtt broker (``any_broker``), except
the broker-restart test: only Mosquitto can be restarted on the same port with its retained
messages persisted (the amqtt launcher keeps retained state in memory, gone with the process's
broker object).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from agentmesh.directory import Directory, snapshot
from agentmesh.protocol import CapabilityVector, Topics
from agentmesh.registry import MiniLMEmbedder, Registry
from agentmesh.routing import Matcher
from agentmesh.transport import BrokerAddress, MosquittoBroker, MqttClient
from tests.integration.conftest import PlainClient, presence_payload, until, vcv_payload

pytestmark = pytest.mark.broker

T = Topics()
TRANSLATE = [
    {"name": "translate", "description": "Translate short phrases between languages.", "tags": ["translate"]}
]
SUMMARIZE = [
    {
        "name": "summarize",
        "description": "Summarize long documents and meeting transcripts.",
        "tags": ["summary"],
        "examples": ["Give me the gist of this report"],
    }
]
CODE = [{"name": "code_review", "description": "Review source code and find bugs.", "tags": ["code"]}]


@dataclass
class Live:
    client: MqttClient
    registry: Registry
    directory: Directory
    matcher: Matcher


@pytest.fixture
async def publisher(any_broker: BrokerAddress) -> AsyncIterator[PlainClient]:
    client = await PlainClient(any_broker, "third-party-publisher").connect()
    yield client
    await client.close()


async def start_live(address: BrokerAddress, embedder: MiniLMEmbedder) -> Live:
    client = MqttClient(address, client_id="registry-test-router", reconnect_delay=(0.1, 0.5))
    await client.connect()
    registry = Registry(embedder)
    directory = Directory(client, T, registry)
    await directory.start()
    return Live(client, registry, directory, Matcher(registry))


async def stop_live(live: Live) -> None:
    await live.directory.stop()
    await live.client.close()


@pytest.fixture
async def live(any_broker: BrokerAddress, minilm: MiniLMEmbedder) -> AsyncIterator[Live]:
    lv = await start_live(any_broker, minilm)
    yield lv
    await stop_live(lv)


def top(live: Live, query: str) -> str | None:
    matches = live.matcher.route(query)
    return matches[0].agent_id if matches else None


async def test_retained_cards_from_plain_client_appear(
    any_broker: BrokerAddress, publisher: PlainClient, minilm: MiniLMEmbedder
) -> None:
    await publisher.publish(T.vcv("phone-1"), vcv_payload("phone-1", 1, "device", TRANSLATE))
    await publisher.publish(T.vcv("edge-1"), vcv_payload("edge-1", 3, "edge", SUMMARIZE))
    await publisher.publish(T.agent_presence("edge-1"), presence_payload("edge-1", "online", capacity=2))
    live = await start_live(any_broker, minilm)  # connects after the cards were retained
    try:
        assert live.directory.ready
        assert {e.agent_id for e in live.registry.agents()} == {"phone-1", "edge-1"}
        edge = live.registry.get("edge-1")
        assert edge is not None and edge.version == 3 and edge.state == "online" and edge.capacity == 2
        phone = live.registry.get("phone-1")
        assert phone is not None and phone.state == "unknown" and phone.routable  # no presence: routable
        assert top(live, "how do you say good night in Italian") == "phone-1"
        assert top(live, "condense this board meeting transcript") == "edge-1"
    finally:
        await stop_live(live)


async def test_live_update_stale_version_and_deregistration(live: Live, publisher: PlainClient) -> None:
    await publisher.publish(T.vcv("a1"), vcv_payload("a1", 2, "edge", TRANSLATE))
    await until(lambda: live.registry.get("a1") is not None, what="card a1 v2")
    # A stale (lower) version is ignored. To know it was processed, publish a marker card after it
    # on the same subscription (messages of one subscription are applied in order).
    await publisher.publish(T.vcv("a1"), vcv_payload("a1", 1, "edge", CODE))
    await publisher.publish(T.vcv("marker"), vcv_payload("marker", 1, "cloud", SUMMARIZE))
    await until(lambda: live.registry.get("marker") is not None, what="marker card")
    a1 = live.registry.get("a1")
    assert a1 is not None and a1.version == 2 and a1.capability_names == ["translate"]
    assert top(live, "translate 'thank you' to German") == "a1"
    # a higher version replaces the card and its index labels
    await publisher.publish(T.vcv("a1"), vcv_payload("a1", 7, "edge", CODE))
    await until(lambda: getattr(live.registry.get("a1"), "version", 0) == 7, what="card a1 v7")
    assert live.registry.get("a1").capability_names == ["code_review"]  # type: ignore[union-attr]
    assert live.matcher.match("find the bug in this function", tier="edge")[0].agent_id == "a1"
    # an empty retained payload deregisters: the agent no longer matches anything
    await publisher.publish(T.vcv("a1"), b"")
    await until(lambda: live.registry.get("a1") is None, what="deregistration")
    assert live.matcher.match("find the bug in this function", tier="edge") == []
    assert "a1" not in {m.agent_id for m in live.matcher.route("find the bug in this function")}


async def test_last_will_makes_agent_unroutable(
    live: Live, any_broker: BrokerAddress, publisher: PlainClient
) -> None:
    offline = presence_payload("dev-1", "offline")
    agent = PlainClient(any_broker, "dev-1", will=(T.agent_presence("dev-1"), _json(offline)))
    await agent.connect()
    await agent.publish(T.vcv("dev-1"), vcv_payload("dev-1", 1, "device", TRANSLATE))
    await agent.publish(T.agent_presence("dev-1"), presence_payload("dev-1", "online"))
    await until(lambda: getattr(live.registry.get("dev-1"), "state", None) == "online", what="dev-1 online")
    assert top(live, "translate hello to Spanish") == "dev-1"
    changed = live.directory.wait_changed(timeout=30)
    await agent.kill()  # no DISCONNECT: the broker publishes the Last Will
    assert await changed
    await until(lambda: getattr(live.registry.get("dev-1"), "state", None) == "offline", what="Last Will")
    assert not live.registry.get("dev-1").routable  # type: ignore[union-attr]
    assert live.matcher.route("translate hello to Spanish") == []
    # the card stays registered (retained), the agent is just not routable until it is back
    await publisher.publish(T.agent_presence("dev-1"), presence_payload("dev-1", "online"))
    await until(lambda: top(live, "translate hello to Spanish") == "dev-1", what="dev-1 back")


async def test_malformed_messages_are_dropped_and_the_loop_goes_on(
    live: Live, publisher: PlainClient
) -> None:
    await publisher.publish(T.vcv("bad-1"), b"{not json")
    await publisher.publish(T.vcv("bad-2"), vcv_payload("someone-else", 1, "edge", TRANSLATE))  # forged
    await publisher.publish(T.vcv("bad-3"), {**vcv_payload("bad-3", 1, "edge", TRANSLATE), "extra": 1})
    await publisher.publish(T.agent_presence("bad-4"), b"\xff\xfe")
    await publisher.publish(T.vcv("good"), vcv_payload("good", 1, "edge", TRANSLATE))
    await until(lambda: live.registry.get("good") is not None, what="the good card after the bad ones")
    assert {e.agent_id for e in live.registry.agents()} == {"good"}
    assert live.directory.stats.malformed >= 4


async def test_resync_forgets_cards_cleared_while_away(live: Live, publisher: PlainClient) -> None:
    await publisher.publish(T.vcv("keep"), vcv_payload("keep", 1, "edge", SUMMARIZE))
    await until(lambda: live.registry.get("keep") is not None, what="card keep")
    # A card the broker no longer holds, as if it was cleared while we were disconnected.
    live.registry.apply_vcv(
        "ghost", CapabilityVector.model_validate_json(_json(vcv_payload("ghost", 1, "edge", CODE)))
    )
    assert live.registry.get("ghost") is not None
    await live.directory.resync()
    assert live.registry.get("ghost") is None and live.registry.get("keep") is not None


async def test_snapshot_loads_everything_once(any_broker: BrokerAddress, publisher: PlainClient) -> None:
    for i in range(5):
        await publisher.publish(T.vcv(f"s{i}"), vcv_payload(f"s{i}", 1, "cloud", TRANSLATE))
    await publisher.publish(T.agent_presence("s0"), presence_payload("s0", "draining"))
    client = MqttClient(any_broker, client_id="snapshot-test")
    await client.connect()
    try:
        registry = Registry(indexed=False)
        assert await snapshot(client, T, registry) == 5
        assert registry.get("s0").state == "draining"  # type: ignore[union-attr]
    finally:
        await client.close()


async def test_directory_survives_broker_restart(mosquitto: MosquittoBroker, minilm: MiniLMEmbedder) -> None:
    publisher = await PlainClient(mosquitto.address, "restart-publisher").connect()
    await publisher.publish(T.vcv("r1"), vcv_payload("r1", 1, "device", TRANSLATE))
    await publisher.publish(T.vcv("r2"), vcv_payload("r2", 1, "cloud", CODE))
    await publisher.close()
    live = await start_live(mosquitto.address, minilm)
    try:
        assert {e.agent_id for e in live.registry.agents()} == {"r1", "r2"}
        connects = live.client.connects
        mosquitto.stop_sync()  # SIGTERM: Mosquitto saves its retained messages
        await until(lambda: not live.client.connected, what="the disconnect")
        mosquitto.start_sync()  # same port, persisted retained messages
        await until(lambda: live.client.connects > connects and live.client.connected, what="the reconnect")
        await until(lambda: live.directory.stats.resyncs >= 1, what="the resync")
        assert {e.agent_id for e in live.registry.agents()} == {"r1", "r2"}
        # the subscriptions were restored: new cards and deregistrations arrive again
        publisher = await PlainClient(mosquitto.address, "restart-publisher-2").connect()
        await publisher.publish(T.vcv("r3"), vcv_payload("r3", 1, "edge", SUMMARIZE))
        await publisher.publish(T.vcv("r1"), b"")
        await until(lambda: live.registry.get("r3") is not None, what="card after restart")
        await until(lambda: live.registry.get("r1") is None, what="deregistration after restart")
        await publisher.close()
        assert top(live, "summarize this meeting transcript") == "r3"
    finally:
        await stop_live(live)


def _json(payload: dict[str, object]) -> bytes:
    return json.dumps(payload).encode()
