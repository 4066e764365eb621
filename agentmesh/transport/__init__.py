"""MQTT I/O: the asyncio client, broker addresses and broker launchers."""

from agentmesh.transport.address import BROKER_ENV, DEFAULT_BROKER, BrokerAddress
from agentmesh.transport.brokers import (
    AmqttBroker,
    MosquittoBroker,
    RunningBroker,
    free_port,
    port_answers,
    start_broker,
)
from agentmesh.transport.client import PUBLISH_TIMEOUT_S, MqttClient, RawMessage, Subscription, Will

__all__ = [
    "BROKER_ENV",
    "DEFAULT_BROKER",
    "PUBLISH_TIMEOUT_S",
    "AmqttBroker",
    "BrokerAddress",
    "MosquittoBroker",
    "MqttClient",
    "RawMessage",
    "RunningBroker",
    "Subscription",
    "Will",
    "free_port",
    "port_answers",
    "start_broker",
]
