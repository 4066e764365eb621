"""Sample payloads of every message of DESIGN.md section 4, shared by the protocol tests.

``FULL`` sets every field (so a round trip exercises all of them); ``MINIMAL`` sets only what the
contract requires. Both are plain JSON dicts, as a third-party client in any language would send.
The tests in this file keep the samples honest: FULL must name every field of every model.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import BaseModel

from agentmesh.protocol import (
    CapabilityVector,
    Presence,
    StepAssignment,
    StepResult,
    TaskEvent,
    TaskRequest,
    TaskResult,
    TopicKind,
    Topics,
)
from agentmesh.protocol.messages import Message

T = Topics()
SENT_AT = "2025-03-04T05:06:07.123456Z"

FULL: dict[TopicKind, dict[str, Any]] = {
    TopicKind.VCV: {
        "type": "agentmesh.vcv/1",
        "sent_at": SENT_AT,
        "agent_id": "edge-summarizer.1",
        "version": 7,
        "tier": "edge",
        "capabilities": [
            {
                "name": "summarize",
                "description": "Summarize long documents into a few sentences.",
                "tags": ["text", "summary"],
                "examples": ["Summarize this report", "TL;DR of the meeting notes"],
            },
            {"name": "translate", "description": "Translate between English and German.", "tags": ["de"]},
        ],
        "model": {
            "family": "qwen2.5",
            "name": "qwen2.5-1.5b-instruct",
            "backend": "llama_cpp",
            "params_b": 1.5,
            "quant": "Q4_K_M",
            "context_window": 32768,
        },
        "cost": {"usd_per_mtok_in": 0.05, "usd_per_mtok_out": 0.1},
        "qos": {"tokens_per_s": 42.5, "p50_latency_ms": 350.0, "max_concurrency": 4},
        "policy": {"region": "eu-west", "data_classes": ["public", "internal", "personal"]},
        "embedding": {"model": "all-MiniLM-L6-v2", "vectors": [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]},
    },
    TopicKind.AGENT_PRESENCE: {
        "type": "agentmesh.presence/1",
        "sent_at": SENT_AT,
        "id": "edge-summarizer.1",
        "state": "draining",
        "load": 3,
        "capacity": 4,
    },
    TopicKind.INBOX: {
        "type": "agentmesh.assign/1",
        "sent_at": SENT_AT,
        "task_id": "5f1c9a7e2b3d4c6a8e9f0a1b2c3d4e5f",
        "step_id": "summarize-1",
        "attempt": 2,
        "router_id": "router-a",
        "reply_to": "agentmesh/v1/routers/router-a/results",
        "instruction": "Summarize the findings.",
        "inputs": {"fetch": "raw text", "clean": "clean text"},
        "previous": {"agent_id": "phone-1", "tier": "device", "output": "meh", "reason": "low confidence"},
        "deadline_s": 30.5,
        "max_tokens": 256,
        "response_format": {"type": "object", "properties": {"summary": {"type": "string"}}, "default": None},
    },
    TopicKind.SUBMIT: {
        "type": "agentmesh.task/1",
        "sent_at": SENT_AT,
        "task_id": "task-42",
        "client_id": "cli.user-1",
        "text": "Fetch the report, summarize it and translate the summary.",
        "plan": {
            "steps": [
                {
                    "id": "fetch",
                    "instruction": "Fetch the report",
                    "capability": "web fetch",
                    "depends_on": [],
                    "tier": "device",
                },
                {"id": "sum", "instruction": "Summarize it", "depends_on": ["fetch"], "tier": "edge"},
                {"id": "de", "instruction": "Translate to German", "depends_on": ["sum"]},
                {"id": "en", "instruction": "Polish the English", "depends_on": ["sum"], "tier": "cloud"},
            ],
            "output": ["de", "en"],
        },
        "reply_to": "apps/my-app/replies",
        "planner": "explicit",
        "constraints": {
            "min_tier": "edge",
            "max_tier": "cloud",
            "max_cost_usd": 0.25,
            "region": "eu-west",
            "data_class": "internal",
            "deadline_s": 60.0,
            "tags": ["german"],
        },
    },
    TopicKind.EVENTS: {
        "type": "agentmesh.event/1",
        "sent_at": SENT_AT,
        "task_id": "task-42",
        "kind": "escalated",
        "step_id": "sum",
        "agent_id": "cloud-big",
        "tier": "cloud",
        "detail": "confidence 0.31 below 0.6",
    },
    TopicKind.RESULT: {
        "type": "agentmesh.result/1",
        "sent_at": SENT_AT,
        "task_id": "task-42",
        "status": "done",
        "output": "Zusammenfassung ...",
        "outputs": {"de": "Zusammenfassung ...", "en": "Summary ..."},
        "error": "none really",
        "steps": [
            {
                "id": "sum",
                "status": "ok",
                "agent_id": "cloud-big",
                "tier": "cloud",
                "attempts": [
                    {
                        "attempt": 1,
                        "agent_id": "edge-summarizer.1",
                        "tier": "edge",
                        "status": "ok",
                        "confidence": 0.31,
                        "reason": "low confidence",
                    },
                    {"attempt": 2, "agent_id": "cloud-big", "tier": "cloud", "status": "ok"},
                ],
            }
        ],
        "usage": {"prompt_tokens": 120, "completion_tokens": 80, "latency_ms": 812.5, "cost_usd": 0.0012},
        "cloud_steps": 1,
        "escalations": 1,
        "elapsed_ms": 1234.5,
    },
    TopicKind.ROUTER_RESULTS: {
        "type": "agentmesh.stepresult/1",
        "sent_at": SENT_AT,
        "task_id": "5f1c9a7e2b3d4c6a8e9f0a1b2c3d4e5f",
        "step_id": "summarize-1",
        "attempt": 2,
        "agent_id": "edge-summarizer.1",
        "status": "declined",
        "output": "partial",
        "confidence": 0.25,
        "error": "context too long",
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "latency_ms": 12.0, "cost_usd": 0.0},
    },
    TopicKind.ROUTER_PRESENCE: {
        "type": "agentmesh.presence/1",
        "sent_at": SENT_AT,
        "id": "router-a",
        "state": "online",
        "load": 0,
        "capacity": 1,
    },
}

MINIMAL: dict[TopicKind, dict[str, Any]] = {
    TopicKind.VCV: {
        "type": "agentmesh.vcv/1",
        "agent_id": "phone-1",
        "version": 1,
        "tier": "device",
        "capabilities": [{"name": "chat", "description": "Small talk."}],
    },
    TopicKind.AGENT_PRESENCE: {"type": "agentmesh.presence/1", "id": "phone-1", "state": "online"},
    TopicKind.INBOX: {
        "type": "agentmesh.assign/1",
        "task_id": "t1",
        "step_id": "s1",
        "attempt": 1,
        "router_id": "router-a",
        "reply_to": "agentmesh/v1/routers/router-a/results",
        "instruction": "Say hi.",
        "deadline_s": 5,
    },
    TopicKind.SUBMIT: {"type": "agentmesh.task/1", "task_id": "t1", "client_id": "c1", "text": "Say hi."},
    TopicKind.EVENTS: {"type": "agentmesh.event/1", "task_id": "t1", "kind": "accepted"},
    TopicKind.RESULT: {"type": "agentmesh.result/1", "task_id": "t1", "status": "rejected"},
    TopicKind.ROUTER_RESULTS: {
        "type": "agentmesh.stepresult/1",
        "task_id": "t1",
        "step_id": "s1",
        "attempt": 1,
        "agent_id": "phone-1",
        "status": "ok",
    },
    TopicKind.ROUTER_PRESENCE: {"type": "agentmesh.presence/1", "id": "router-a", "state": "offline"},
}

MODEL: dict[TopicKind, type[Message]] = {
    TopicKind.VCV: CapabilityVector,
    TopicKind.AGENT_PRESENCE: Presence,
    TopicKind.INBOX: StepAssignment,
    TopicKind.SUBMIT: TaskRequest,
    TopicKind.EVENTS: TaskEvent,
    TopicKind.RESULT: TaskResult,
    TopicKind.ROUTER_RESULTS: StepResult,
    TopicKind.ROUTER_PRESENCE: Presence,
}


def topic_for(kind: TopicKind, data: dict[str, Any] | None = None) -> str:
    """The concrete topic a sample of ``kind`` is published on (ids taken from the sample)."""
    d = data or FULL[kind]
    builders = {
        TopicKind.VCV: lambda: T.vcv(d.get("agent_id", "phone-1")),
        TopicKind.AGENT_PRESENCE: lambda: T.agent_presence(d.get("id", "phone-1")),
        TopicKind.INBOX: lambda: T.inbox("edge-summarizer.1"),
        TopicKind.SUBMIT: lambda: T.submit,
        TopicKind.EVENTS: lambda: T.events(d.get("task_id", "t1")),
        TopicKind.RESULT: lambda: T.result(d.get("task_id", "t1")),
        TopicKind.ROUTER_RESULTS: lambda: T.router_results("router-a"),
        TopicKind.ROUTER_PRESENCE: lambda: T.router_presence(d.get("id", "router-a")),
    }
    return builders[kind]()


def sample(kind: TopicKind, *, full: bool = True) -> dict[str, Any]:
    """A deep copy, so tests may mutate it."""
    return copy.deepcopy((FULL if full else MINIMAL)[kind])


def _missing_fields(model: type[BaseModel], data: Any, path: str = "") -> list[str]:
    """Fields of ``model`` (recursively through nested models and lists of models) absent from ``data``."""
    missing: list[str] = []
    for name, field in model.model_fields.items():
        where = f"{path}{name}"
        if name not in data:
            missing.append(where)
            continue
        nested = [a for a in getattr(field.annotation, "__args__", ()) if isinstance(a, type)]
        candidates = [field.annotation, *nested]
        for sub in candidates:
            if isinstance(sub, type) and issubclass(sub, BaseModel) and isinstance(data[name], dict):
                missing += _missing_fields(sub, data[name], where + ".")
        item = getattr(field.annotation, "__args__", (None,))[0]
        if isinstance(item, type) and issubclass(item, BaseModel) and isinstance(data[name], list):
            for i, element in enumerate(data[name]):
                # Items may leave optional fields out on purpose; the first one must have them all.
                if i == 0:
                    missing += _missing_fields(item, element, f"{where}.{i}.")
    return missing


@pytest.mark.parametrize("kind", list(TopicKind))
def test_full_samples_set_every_field_of_the_model(kind: TopicKind) -> None:
    assert _missing_fields(MODEL[kind], FULL[kind]) == []


@pytest.mark.parametrize("kind", list(TopicKind))
def test_minimal_samples_hold_only_required_fields(kind: TopicKind) -> None:
    model = MODEL[kind]
    required = {name for name, f in model.model_fields.items() if f.is_required()}
    assert set(MINIMAL[kind]) - {"type"} == required
