"""Topic builders and parsers for the namespace layout of DESIGN.md section 3."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from agentmesh.errors import ProtocolError
from agentmesh.protocol.limits import DEFAULT_NAMESPACE, ID_PATTERN

_ID_RE = re.compile(ID_PATTERN)
_TASK_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class TopicKind(str, Enum):  # noqa: UP042 (public API; StrEnum changes str() of members)
    VCV = "vcv"
    AGENT_PRESENCE = "agent_presence"
    INBOX = "inbox"
    SUBMIT = "submit"
    EVENTS = "events"
    RESULT = "result"
    ROUTER_RESULTS = "router_results"
    ROUTER_PRESENCE = "router_presence"


@dataclass(frozen=True)
class TopicRef:
    """What a concrete topic names: its kind and the id in it (agent, task or router)."""

    kind: TopicKind
    id: str | None = None


def validate_namespace(ns: str) -> str:
    if not ns or ns.startswith("/") or ns.endswith("/") or any(c in ns for c in "+#\0"):
        raise ProtocolError(f"namespace {ns!r} must be a non-empty topic prefix without wildcards")
    if ns.startswith("$"):
        # amqtt drops a client's publishes after it writes to any $ topic (DESIGN.md section 8).
        raise ProtocolError(f"namespace {ns!r} must not start with '$'")
    return ns


@dataclass(frozen=True)
class Topics:
    """All topic names under one namespace."""

    ns: str = DEFAULT_NAMESPACE

    def __post_init__(self) -> None:
        validate_namespace(self.ns)

    # builders
    def vcv(self, agent_id: str) -> str:
        return f"{self.ns}/agents/{_agent(agent_id)}/vcv"

    def agent_presence(self, agent_id: str) -> str:
        return f"{self.ns}/agents/{_agent(agent_id)}/presence"

    def inbox(self, agent_id: str) -> str:
        return f"{self.ns}/agents/{_agent(agent_id)}/inbox"

    @property
    def submit(self) -> str:
        return f"{self.ns}/tasks/submit"

    def shared_submit(self, group: str) -> str:
        """The submit filter shared by a group of routers (MQTT 5 brokers only, DESIGN.md section 3)."""
        if not group or any(c in group for c in "/+#\0"):
            raise ProtocolError(f"share group {group[:80]!r} must be one topic level without wildcards")
        return f"$share/{group}/{self.submit}"

    def events(self, task_id: str) -> str:
        return f"{self.ns}/tasks/{_task(task_id)}/events"

    def result(self, task_id: str) -> str:
        return f"{self.ns}/tasks/{_task(task_id)}/result"

    def router_results(self, router_id: str) -> str:
        return f"{self.ns}/routers/{_agent(router_id)}/results"

    def router_presence(self, router_id: str) -> str:
        return f"{self.ns}/routers/{_agent(router_id)}/presence"

    # subscription filters
    @property
    def all_vcvs(self) -> str:
        return f"{self.ns}/agents/+/vcv"

    @property
    def all_agent_presence(self) -> str:
        return f"{self.ns}/agents/+/presence"

    @property
    def all_router_presence(self) -> str:
        return f"{self.ns}/routers/+/presence"

    @property
    def all_events(self) -> str:
        return f"{self.ns}/tasks/+/events"

    def parse(self, topic: str) -> TopicRef:
        """Name what ``topic`` is, or raise ProtocolError if it is not one of ours."""
        prefix = self.ns + "/"
        if not topic.startswith(prefix):
            raise ProtocolError("topic is outside the namespace " + self.ns, topic=topic)
        parts = topic[len(prefix) :].split("/")
        if parts == ["tasks", "submit"]:
            return TopicRef(TopicKind.SUBMIT)
        if len(parts) == 3:
            group, ident, leaf = parts
            kind = _KINDS.get((group, leaf))
            if kind is not None:
                ok = _TASK_RE.fullmatch(ident) if group == "tasks" else _ID_RE.fullmatch(ident)
                if not ok:
                    raise ProtocolError(f"invalid id {ident[:80]!r} in topic", topic=topic)
                return TopicRef(kind, ident)
        raise ProtocolError("unknown topic", topic=topic)


_KINDS = {
    ("agents", "vcv"): TopicKind.VCV,
    ("agents", "presence"): TopicKind.AGENT_PRESENCE,
    ("agents", "inbox"): TopicKind.INBOX,
    ("tasks", "events"): TopicKind.EVENTS,
    ("tasks", "result"): TopicKind.RESULT,
    ("routers", "results"): TopicKind.ROUTER_RESULTS,
    ("routers", "presence"): TopicKind.ROUTER_PRESENCE,
}


def _agent(agent_id: str) -> str:
    if not _ID_RE.fullmatch(agent_id):
        raise ProtocolError(f"id {agent_id[:80]!r} does not match {ID_PATTERN}", field="agent_id")
    return agent_id


def _task(task_id: str) -> str:
    if not _TASK_RE.fullmatch(task_id):
        raise ProtocolError(f"task id {task_id[:80]!r} is not a valid topic level", field="task_id")
    return task_id
