"""The messages of the wire contract (DESIGN.md section 4) as strict pydantic v2 models.

Unknown fields are rejected and no type coercion happens, so what a third-party client sends
is exactly what it means. Every message carries ``type`` and ``sent_at`` (ISO 8601, UTC).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from agentmesh.protocol.limits import ID_PATTERN, MAX_CAPABILITIES, MAX_PLAN_STEPS, MAX_TOPIC_LEVELS

Tier = Literal["device", "edge", "cloud"]
DataClass = Literal["public", "internal", "personal"]
Backend = Literal["llama_cpp", "openai", "python"]
TIERS: tuple[Tier, ...] = ("device", "edge", "cloud")
# A capability with this tag is a planner (DESIGN section 6): it gets the planning steps and no others.
PLAN_TAG = "plan"

_ID_RE = re.compile(ID_PATTERN)
_STEP_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class RuleError(ValueError):
    """A rule across fields broke; ``field`` names the field to blame, relative to the model.

    pydantic reports model-level validators without a location, so the codec reads ``field`` from
    here to name the offending field in its ProtocolError.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field


def _short(value: str, limit: int = 80) -> str:
    """repr() of ``value`` cut to ``limit`` characters, so a hostile payload cannot bloat the error."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_id(value: str) -> str:
    if not _ID_RE.fullmatch(value):
        raise ValueError(f"{_short(value)} does not match {ID_PATTERN}")
    return value


def _check_step_id(value: str) -> str:
    if not _STEP_RE.fullmatch(value):
        raise ValueError(f"step id {_short(value)} must be 1-64 letters, digits, '.', '_' or '-'")
    return value


def _check_task_id(value: str) -> str:
    if not _STEP_RE.fullmatch(value):
        raise ValueError(f"task id {_short(value)} must be 1-64 letters, digits, '.', '_' or '-'")
    return value


def check_reply_topic(value: str) -> str:
    """A topic the router or an agent can publish a reply to, or ValueError saying why not."""
    # Published to verbatim: paho refuses wildcards, amqtt drops a client after it publishes to a
    # '$' topic (DESIGN.md section 8), and a broker drops one that publishes to a topic deeper
    # than it allows (and a persistent session sends that publish again after every reconnect).
    if not value:
        raise ValueError("must be a topic name, not empty")
    if any(c in value for c in "+#\0"):
        raise ValueError(f"{_short(value)} must be a topic name without wildcards ('+', '#') or NUL")
    if value.startswith("$"):
        raise ValueError(f"{_short(value)} must not start with '$'")
    if len(value.encode("utf-8", "surrogatepass")) > 65535:
        raise ValueError("topic is longer than 65535 bytes")
    if value.count("/") >= MAX_TOPIC_LEVELS:
        raise ValueError(f"topic has more than {MAX_TOPIC_LEVELS} levels")
    return value


def _check_finite(value: dict[str, Any]) -> dict[str, Any]:
    # The float fields have allow_inf_nan=False (see _Model); free-form JSON needs the same rule,
    # or a NaN/Infinity that pydantic's parser accepts would be encoded as null on the way out.
    pending: list[Any] = [value]
    seen: set[int] = set()  # a dict built in Python may hold itself
    while pending:
        item = pending.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError("JSON has no NaN or Infinity")
        if isinstance(item, dict | list) and id(item) not in seen:
            seen.add(id(item))
            pending.extend(item.values() if isinstance(item, dict) else item)
    return value


MeshId = Annotated[str, AfterValidator(_check_id)]
ReplyTopic = Annotated[str, AfterValidator(check_reply_topic)]
StepId = Annotated[str, AfterValidator(_check_step_id)]
TaskId = Annotated[str, AfterValidator(_check_task_id)]
Confidence = Annotated[float, Field(ge=0.0, le=1.0)]


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Model(BaseModel):
    # allow_inf_nan=False: JSON has no NaN/Infinity (pydantic would encode them as null, which then
    # fails to parse on the other side), and Python's json module accepts them on input.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=False, allow_inf_nan=False)


class _Message(_Model):
    sent_at: datetime = Field(default_factory=utcnow)

    @field_validator("sent_at", mode="after")
    @classmethod
    def _as_utc(cls, value: datetime) -> datetime:
        # Third-party clients may send an offset or no zone at all; keep every sent_at aware and in
        # UTC so consumers can compare them with utcnow() without a naive/aware TypeError, and so
        # pydantic writes it back with a "Z".
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


# ---- capability vector ---------------------------------------------------------------------


class Capability(_Model):
    name: Annotated[str, Field(min_length=1, max_length=64)]
    description: Annotated[str, Field(min_length=1, max_length=2000)]
    tags: list[str] = Field(default_factory=list)
    examples: list[str] = Field(default_factory=list)


class ModelInfo(_Model):
    family: str
    name: str
    backend: Backend
    params_b: Annotated[float, Field(gt=0)] | None = None
    quant: str | None = None
    context_window: Annotated[int, Field(ge=1)] | None = None


class Cost(_Model):
    usd_per_mtok_in: Annotated[float, Field(ge=0)] = 0.0
    usd_per_mtok_out: Annotated[float, Field(ge=0)] = 0.0


class QoS(_Model):
    tokens_per_s: Annotated[float, Field(gt=0)] | None = None
    p50_latency_ms: Annotated[float, Field(ge=0)] | None = None
    max_concurrency: Annotated[int, Field(ge=1)] = 1


class Policy(_Model):
    region: str | None = None
    data_classes: list[DataClass] = Field(default_factory=lambda: list[DataClass](["public"]))


def _same_dimension(vectors: list[list[float]]) -> list[list[float]]:
    dims = {len(v) for v in vectors}
    if 0 in dims:
        raise ValueError("vectors must not be empty")
    if len(dims) > 1:
        raise ValueError(f"vectors must all have the same dimension, got {sorted(dims)}")
    return vectors


class Embedding(_Model):
    model: str
    vectors: Annotated[list[list[float]], AfterValidator(_same_dimension)]


class CapabilityVector(_Message):
    type: Literal["agentmesh.vcv/1"] = "agentmesh.vcv/1"
    agent_id: MeshId
    version: Annotated[int, Field(ge=1)]
    tier: Tier
    capabilities: Annotated[list[Capability], Field(min_length=1, max_length=MAX_CAPABILITIES)]
    model: ModelInfo | None = None
    cost: Cost = Field(default_factory=Cost)
    qos: QoS = Field(default_factory=QoS)
    policy: Policy = Field(default_factory=Policy)
    embedding: Embedding | None = None

    @model_validator(mode="after")
    def _embedding_matches(self) -> CapabilityVector:
        if self.embedding is not None and len(self.embedding.vectors) != len(self.capabilities):
            raise RuleError("embedding", "embedding.vectors must hold one vector per capability, in order")
        return self


# ---- presence ------------------------------------------------------------------------------

PresenceState = Literal["online", "offline", "draining"]


class Presence(_Message):
    type: Literal["agentmesh.presence/1"] = "agentmesh.presence/1"
    id: MeshId
    state: PresenceState
    load: Annotated[int, Field(ge=0)] = 0
    capacity: Annotated[int, Field(ge=1)] = 1


# ---- tasks and plans -----------------------------------------------------------------------


class PlanStep(_Model):
    id: StepId
    instruction: Annotated[str, Field(min_length=1)]
    capability: str | None = None
    depends_on: list[StepId] = Field(default_factory=list)
    tier: Tier | None = None

    @property
    def query(self) -> str:
        return self.capability or self.instruction


class Plan(_Model):
    """A DAG of steps. Structural rules (unique ids, known deps, acyclic) are checked here so an
    invalid plan never enters the system; planning.validate_plan gives the same checks with
    step-level errors for planners that want to retry."""

    steps: Annotated[list[PlanStep], Field(min_length=1, max_length=MAX_PLAN_STEPS)]
    output: list[StepId] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check_dag(self) -> Plan:
        from agentmesh.protocol.dag import dag_problem  # local: keeps the module order simple

        problem = dag_problem(self)
        if problem is not None:
            raise RuleError("output" if problem.startswith("output") else "steps", problem)
        return self

    def sinks(self) -> list[str]:
        used = {dep for step in self.steps for dep in step.depends_on}
        return [s.id for s in self.steps if s.id not in used]

    def outputs(self) -> list[str]:
        return list(self.output) if self.output else self.sinks()


PlannerKind = Literal["auto", "llm", "single", "explicit"]


class Constraints(_Model):
    min_tier: Tier = "device"
    max_tier: Tier = "cloud"
    max_cost_usd: Annotated[float, Field(ge=0)] | None = None
    region: str | None = None
    data_class: DataClass = "public"
    deadline_s: Annotated[float, Field(gt=0)] | None = None
    tags: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _tier_order(self) -> Constraints:
        if TIERS.index(self.min_tier) > TIERS.index(self.max_tier):
            raise RuleError("min_tier", f"min_tier {self.min_tier!r} is above max_tier {self.max_tier!r}")
        return self


class TaskRequest(_Message):
    type: Literal["agentmesh.task/1"] = "agentmesh.task/1"
    task_id: TaskId
    client_id: MeshId
    text: str
    plan: Plan | None = None
    reply_to: ReplyTopic | None = None
    planner: PlannerKind = "auto"
    constraints: Constraints = Field(default_factory=Constraints)

    @model_validator(mode="after")
    def _needs_something(self) -> TaskRequest:
        if not self.text.strip() and self.plan is None:
            raise RuleError("text", "text must not be empty when no plan is given")
        if self.planner == "explicit" and self.plan is None:
            raise RuleError("plan", "planner 'explicit' needs a plan")
        return self


# ---- steps ---------------------------------------------------------------------------------


class PreviousAttempt(_Model):
    agent_id: str
    tier: Tier
    output: str
    reason: str


class StepAssignment(_Message):
    type: Literal["agentmesh.assign/1"] = "agentmesh.assign/1"
    task_id: TaskId
    step_id: StepId
    attempt: Annotated[int, Field(ge=1)]
    router_id: MeshId
    reply_to: ReplyTopic
    instruction: str
    inputs: dict[str, str] = Field(default_factory=dict)
    previous: PreviousAttempt | None = None
    deadline_s: Annotated[float, Field(gt=0)]
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    response_format: Annotated[dict[str, Any], AfterValidator(_check_finite)] | None = None


class Usage(_Model):
    prompt_tokens: Annotated[int, Field(ge=0)] = 0
    completion_tokens: Annotated[int, Field(ge=0)] = 0
    latency_ms: Annotated[float, Field(ge=0)] = 0.0
    cost_usd: Annotated[float, Field(ge=0)] = 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            latency_ms=self.latency_ms + other.latency_ms,
            cost_usd=self.cost_usd + other.cost_usd,
        )


StepStatus = Literal["ok", "error", "declined"]


class StepResult(_Message):
    type: Literal["agentmesh.stepresult/1"] = "agentmesh.stepresult/1"
    task_id: TaskId
    step_id: StepId
    attempt: Annotated[int, Field(ge=1)]
    agent_id: MeshId
    status: StepStatus
    output: str = ""
    confidence: Confidence | None = None
    error: str | None = None
    usage: Usage = Field(default_factory=Usage)


# ---- task events and results ---------------------------------------------------------------

EventKind = Literal[
    "accepted",
    "planned",
    "dispatched",
    "step_done",
    "escalated",
    "reassigned",
    "step_failed",
    "done",
    "failed",
    "rejected",
]


class TaskEvent(_Message):
    type: Literal["agentmesh.event/1"] = "agentmesh.event/1"
    task_id: str
    kind: EventKind
    step_id: str | None = None
    agent_id: str | None = None
    tier: Tier | None = None
    detail: str = ""


class AttemptRecord(_Model):
    attempt: Annotated[int, Field(ge=1)]
    agent_id: str
    tier: Tier
    status: str
    confidence: Confidence | None = None
    reason: str | None = None


class StepRecord(_Model):
    id: str
    status: str
    agent_id: str | None = None
    tier: Tier | None = None
    attempts: list[AttemptRecord] = Field(default_factory=list)


TaskStatus = Literal["done", "failed", "rejected"]


class TaskResult(_Message):
    type: Literal["agentmesh.result/1"] = "agentmesh.result/1"
    task_id: str
    status: TaskStatus
    output: str = ""
    outputs: dict[str, str] = Field(default_factory=dict)
    error: str | None = None
    steps: list[StepRecord] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    cloud_steps: Annotated[int, Field(ge=0)] = 0
    escalations: Annotated[int, Field(ge=0)] = 0
    elapsed_ms: Annotated[float, Field(ge=0)] = 0.0


Message = CapabilityVector | Presence | TaskRequest | StepAssignment | StepResult | TaskEvent | TaskResult
