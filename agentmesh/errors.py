"""Every exception agentmesh raises on purpose, in one tree.

All of them derive from :class:`AgentMeshError`, so ``except AgentMeshError`` catches anything the
runtime raises deliberately. Each carries the facts a caller needs (topic, field, agent id, path)
as attributes, not only in the message, so programs can react without parsing text.

    AgentMeshError
    ├── ConfigError            a config file or value is invalid (path, field)
    ├── ProtocolError          an MQTT payload or topic breaks the wire contract (topic, field)
    │   └── PayloadTooLarge    a payload is over the size limit (topic, size, limit)
    ├── TransportError         talking to the broker failed (broker)
    │   ├── ConnectError       the broker could not be reached or refused us
    │   │   └── IdInUse        another live client serves this agent id (agent_id)
    │   └── PublishTimeout     no PUBACK arrived in time (topic)
    ├── BrokerError            a broker could not be started (kind)
    ├── ModelError             a model could not be resolved or loaded (model)
    ├── BackendError           an agent backend failed to run a step (agent_id, backend)
    │   └── BackendAuthError   the endpoint rejected our credentials
    ├── PlanError              a plan is invalid (field, step_id)
    ├── NoMatchError           no agent can serve a step (query, tier)
    └── TaskError              a submitted task did not succeed (task_id, status)
        └── TaskTimeout        no result arrived in time
"""

from __future__ import annotations


class AgentMeshError(Exception):
    """Base class of every error agentmesh raises deliberately."""


class ConfigError(AgentMeshError):
    def __init__(self, reason: str, *, path: str | None = None, field: str | None = None) -> None:
        self.reason = reason
        self.path = path
        self.field = field
        where = ":".join(p for p in (path, field) if p)
        super().__init__(f"{where}: {reason}" if where else reason)


class ProtocolError(AgentMeshError):
    def __init__(self, reason: str, *, topic: str | None = None, field: str | None = None) -> None:
        self.reason = reason
        self.topic = topic
        self.field = field
        parts = [reason]
        if field:
            parts.insert(0, f"field {field!r}:")
        if topic:
            parts.append(f"(topic {topic})")
        super().__init__(" ".join(parts))


class PayloadTooLarge(ProtocolError):
    def __init__(self, *, topic: str | None, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"payload of {size} bytes is over the limit of {limit}", topic=topic)


class TransportError(AgentMeshError):
    def __init__(self, reason: str, *, broker: str | None = None) -> None:
        self.reason = reason
        self.broker = broker
        super().__init__(f"{reason} (broker {broker})" if broker else reason)


class ConnectError(TransportError):
    pass


class IdInUse(ConnectError):
    def __init__(self, *, agent_id: str, broker: str | None = None) -> None:
        self.agent_id = agent_id
        super().__init__(
            f"agent {agent_id} is online already: another process serves this id (MQTT brokers drop "
            "the older connection of a client id, so the two would take turns); stop it or give this "
            "agent another id",
            broker=broker,
        )


class PublishTimeout(TransportError):
    def __init__(self, *, topic: str, timeout_s: float, broker: str | None = None) -> None:
        self.topic = topic
        self.timeout_s = timeout_s
        super().__init__(f"no PUBACK for {topic} within {timeout_s:g}s", broker=broker)


class BrokerError(AgentMeshError):
    def __init__(self, reason: str, *, kind: str) -> None:
        self.reason = reason
        self.kind = kind
        super().__init__(f"{kind} broker: {reason}")


class ModelError(AgentMeshError):
    def __init__(self, reason: str, *, model: str) -> None:
        self.reason = reason
        self.model = model
        super().__init__(f"model {model!r}: {reason}")


class BackendError(AgentMeshError):
    def __init__(self, reason: str, *, backend: str, agent_id: str | None = None) -> None:
        self.reason = reason
        self.backend = backend
        self.agent_id = agent_id
        who = f"{agent_id} " if agent_id else ""
        super().__init__(f"{who}({backend}): {reason}")


class BackendAuthError(BackendError):
    pass


class PlanError(AgentMeshError):
    def __init__(self, reason: str, *, field: str | None = None, step_id: str | None = None) -> None:
        self.reason = reason
        self.field = field
        self.step_id = step_id
        where = f"step {step_id!r}: " if step_id else (f"field {field!r}: " if field else "")
        super().__init__(f"{where}{reason}")


class NoMatchError(AgentMeshError):
    def __init__(self, reason: str, *, query: str, tier: str | None = None) -> None:
        self.reason = reason
        self.query = query
        self.tier = tier
        super().__init__(f"no agent for {query[:80]!r}: {reason}")


class TaskError(AgentMeshError):
    def __init__(self, reason: str, *, task_id: str, status: str | None = None) -> None:
        self.reason = reason
        self.task_id = task_id
        self.status = status
        super().__init__(f"task {task_id} {status or 'failed'}: {reason}")


class TaskTimeout(TaskError):
    def __init__(self, *, task_id: str, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        super().__init__(f"no result within {timeout_s:g}s", task_id=task_id, status="timeout")
