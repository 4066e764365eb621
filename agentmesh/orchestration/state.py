"""The state of a task in flight: steps, attempts, and the transitions between them.

Everything here is plain data plus pure functions, so the whole state machine is unit-tested
without a broker. The router owns the I/O: it asks these objects what to do next and does it.

Step life: pending -> dispatched -> done | failed, with a list of attempts; a step whose capable
agents are all at capacity is *waiting* in the router's queue in between. A step is *ready* when
it is pending and all its dependencies are done.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import to_json

from agentmesh.planning.planners import PLANNER_STEP_ID
from agentmesh.protocol import (
    MAX_PAYLOAD_BYTES,
    TIERS,
    AttemptRecord,
    PreviousAttempt,
    TaskRequest,
    TaskResult,
    Tier,
    Usage,
)

AttemptStatus = Literal["dispatched", "ok", "error", "declined", "timeout", "offline", "cancelled"]
StepStatus = Literal["pending", "waiting", "dispatched", "done", "failed"]
TaskStatus = Literal["planning", "running", "done", "failed", "rejected"]

# A system prompt and the chat template's markers around the instruction and inputs.
PROMPT_FRAMING_TOKENS = 128

_RESULT_TYPE = TaskResult.model_fields["type"].default


class _State(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Attempt(_State):
    attempt: int
    agent_id: str
    tier: Tier
    family: str | None = None
    status: AttemptStatus = "dispatched"
    output: str = ""
    confidence: float | None = None
    reason: str | None = None
    usage: Usage = Field(default_factory=Usage)
    dispatched_at: float = Field(default_factory=time.time)
    deadline_at: float = 0.0

    @property
    def finished(self) -> bool:
        return self.status != "dispatched"

    def record(self) -> AttemptRecord:
        return AttemptRecord(
            attempt=self.attempt,
            agent_id=self.agent_id,
            tier=self.tier,
            status=self.status,
            confidence=self.confidence,
            reason=self.reason,
        )


class Step(_State):
    id: str
    instruction: str
    query: str
    depends_on: list[str] = Field(default_factory=list)
    tier: Tier | None = None
    status: StepStatus = "pending"
    attempts: list[Attempt] = Field(default_factory=list)
    accepted: int | None = None  # index into attempts of the answer we kept
    planner_retries: int = 0

    @property
    def current(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None

    @property
    def output(self) -> str:
        return self.attempts[self.accepted].output if self.accepted is not None else ""

    def tried_agents(self) -> set[str]:
        return {a.agent_id for a in self.attempts}

    def best_ok(self) -> int | None:
        """Index of the best successful attempt: highest confidence, later (higher tier) on ties."""
        best: int | None = None
        for i, a in enumerate(self.attempts):
            if a.status != "ok" or not a.output.strip():
                continue
            score = (a.confidence if a.confidence is not None else 1.0, TIERS.index(a.tier), i)
            if best is None:
                best = i
                continue
            b = self.attempts[best]
            if score > (b.confidence if b.confidence is not None else 1.0, TIERS.index(b.tier), best):
                best = i
        return best

    def record_data(self) -> dict[str, Any]:
        """The step's record in the TaskResult as plain data (None fields left out)."""
        kept = self.attempts[self.accepted] if self.accepted is not None else self.current
        data: dict[str, Any] = {"id": self.id, "status": self.status}
        if kept is not None:
            data["agent_id"] = kept.agent_id
            data["tier"] = kept.tier
        attempts = []
        for a in self.attempts:
            item: dict[str, Any] = {
                "attempt": a.attempt,
                "agent_id": a.agent_id,
                "tier": a.tier,
                "status": a.status,
            }
            if a.confidence is not None:
                item["confidence"] = a.confidence
            if a.reason is not None:
                item["reason"] = a.reason
            attempts.append(item)
        data["attempts"] = attempts
        return data

    def previous(self) -> PreviousAttempt | None:
        """The weak attempt handed to the next agent, so it can improve on it: the last one with an
        answer (one that declined or failed has nothing to improve on), else the last one."""
        finished = [a for a in self.attempts if a.status in ("ok", "error", "declined")]
        if not finished:
            return None
        a = next((a for a in reversed(finished) if a.output.strip()), finished[-1])
        return PreviousAttempt(agent_id=a.agent_id, tier=a.tier, output=a.output, reason=a.reason or a.status)


class Task(_State):
    request: TaskRequest
    status: TaskStatus = "planning"
    steps: dict[str, Step] = Field(default_factory=dict)
    output_ids: list[str] = Field(default_factory=list)
    escalations: int = 0
    started_at: float = Field(default_factory=time.time)
    finished_at: float | None = None
    error: str | None = None

    @property
    def task_id(self) -> str:
        return self.request.task_id

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed", "rejected")

    def dag_steps(self) -> list[Step]:
        return [s for s in self.steps.values() if s.id != PLANNER_STEP_ID]

    def ready(self) -> list[Step]:
        out = []
        for step in self.dag_steps():
            if step.status == "pending" and all(
                self.steps[d].status == "done" for d in step.depends_on if d in self.steps
            ):
                out.append(step)
        return out

    def prompt_tokens(self, step: Step) -> int:
        """About how many tokens an agent's prompt for ``step`` takes: its instruction, its
        dependencies' outputs and a weak answer to improve on, at 4 characters a token (usual for
        English; text that takes more only fails on the agent, as it would unchecked), plus the
        agent's own framing."""
        chars = len(step.instruction)
        chars += sum(len(self.steps[d].output) for d in step.depends_on if d in self.steps)
        chars += max((len(a.output) for a in step.attempts), default=0)
        return chars // 4 + PROMPT_FRAMING_TOKENS

    def blocked_by_failure(self) -> bool:
        return any(s.status == "failed" for s in self.dag_steps())

    def complete(self) -> bool:
        return bool(self.output_ids) and all(self.steps[i].status == "done" for i in self.output_ids)

    def in_flight(self) -> list[tuple[Step, Attempt]]:
        return [
            (s, s.attempts[-1])
            for s in self.steps.values()
            if s.status == "dispatched" and s.attempts and not s.attempts[-1].finished
        ]

    def usage(self) -> Usage:
        # One Usage for the totals, not one per attempt added.
        attempts = [a.usage for step in self.steps.values() for a in step.attempts]
        return Usage(
            prompt_tokens=sum(u.prompt_tokens for u in attempts),
            completion_tokens=sum(u.completion_tokens for u in attempts),
            latency_ms=sum((u.latency_ms for u in attempts), 0.0),
            cost_usd=sum((u.cost_usd for u in attempts), 0.0),
        )

    def result_payload(self, sent_at: datetime | None = None, limit: int = MAX_PAYLOAD_BYTES) -> bytes:
        """The encoded TaskResult, without building and validating it and its record models (every
        value here was validated on its way in): pydantic's own serializer over plain data, on the
        path of every task's result. ``result()`` parses it, and tests check that it round-trips
        to the same bytes. A result over ``limit`` has its longest texts cut (and says so in
        ``error``): a broker takes no bigger message, and a client waits for the result."""
        status = self.final_status()
        outputs, output = self.outputs()
        end = self.finished_at or time.time()
        data: dict[str, Any] = {
            "sent_at": sent_at or datetime.now(UTC),
            "type": _RESULT_TYPE,
            "task_id": self.task_id,
            "status": status,
            "output": output,
            "outputs": outputs,
        }
        if self.error is not None:
            data["error"] = self.error
        usage = self.usage()
        data["steps"] = [s.record_data() for s in self.steps.values()]
        data["usage"] = {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "latency_ms": usage.latency_ms,
            "cost_usd": usage.cost_usd,
        }
        data["cloud_steps"] = sum(1 for s in self.dag_steps() if any(a.tier == "cloud" for a in s.attempts))
        data["escalations"] = self.escalations
        data["elapsed_ms"] = max(0.0, (end - self.started_at) * 1000.0)
        payload = to_json(data)
        return payload if len(payload) <= limit else _cut_to_fit(data, limit)

    def final_status(self) -> Literal["done", "failed", "rejected"]:
        return self.status if self.status in ("done", "failed", "rejected") else "failed"

    def outputs(self) -> tuple[dict[str, str], str]:
        """The done steps' outputs, and the task's output (its output steps', when it is done)."""
        outputs = {s.id: s.output for s in self.dag_steps() if s.status == "done"}
        if self.final_status() != "done":
            return outputs, ""
        return outputs, "\n\n".join(outputs[i] for i in self.output_ids if i in outputs)

    def result(self) -> TaskResult:
        return TaskResult.model_validate_json(self.result_payload())


def _cut_to_fit(data: dict[str, Any], limit: int) -> bytes:
    """``data`` encoded within ``limit`` bytes: its texts (outputs, error, attempt reasons) cut to
    one length, halved until the result fits, and a note of it in ``error``."""
    note = f"the result was over the {limit}-byte MQTT payload limit, so its longest texts are cut"
    data["error"] = data.get("error") or ""
    slots: list[tuple[dict[str, Any], str]] = [(data, "output"), (data, "error")]
    slots += [(data["outputs"], k) for k in data["outputs"]]
    slots += [(a, "reason") for step in data["steps"] for a in step["attempts"] if "reason" in a]
    texts = [box[key] for box, key in slots]
    cap = max(len(text) for text in texts)
    while True:
        cap //= 2
        for (box, key), text in zip(slots, texts, strict=True):
            box[key] = f"{text[:cap]} [cut: {len(text) - cap} more characters]" if len(text) > cap else text
        data["error"] = f"{data['error']}; {note}" if data["error"] else note
        payload = to_json(data)
        if len(payload) <= limit or cap == 0:
            return payload
