"""The router's configuration (``agentmesh router --config FILE``); every knob has a working default."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agentmesh.config import load_config
from agentmesh.orchestration import EscalationPolicy
from agentmesh.protocol import DEFAULT_NAMESPACE, ID_PATTERN
from agentmesh.routing import MatchWeights


class RouterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    router_id: str = Field("router-1", pattern=ID_PATTERN)
    namespace: str = DEFAULT_NAMESPACE
    broker: str | None = Field(
        None, description="mqtt://host:port; the CLI's --broker and $AGENTMESH_BROKER win"
    )
    share_group: str | None = Field(
        "agentmesh",
        description="shared-subscription group for the submit topic on MQTT 5 brokers, so N routers split "
        "the load; null subscribes plainly (every router sees every task)",
    )
    session_expiry_s: int = Field(
        3600,
        ge=0,
        description="how long the broker keeps this router's MQTT session (MQTT 5) while it is down: "
        "step results, and its share of new tasks when no other router of its group is online, wait "
        "there for its restart; 0 keeps nothing",
    )
    ledger: str | None = Field(
        None,
        description="SQLite file; default ~/.local/state/agentmesh/<router_id>.sqlite; ':memory:' for none",
    )
    escalation: EscalationPolicy = Field(default_factory=EscalationPolicy)
    matching: MatchWeights = Field(default_factory=MatchWeights)
    glossaries: list[str] = Field(
        default_factory=lambda: ["builtin"],
        description="acronyms spelled out in cards and requests before matching: builtin "
        "(agentmesh/data/glossary.yaml) and YAML files of your own (ACRONYM: expansion; later files win)",
    )
    step_timeout_s: float = Field(
        120.0, gt=0, description="an agent silent this long has its step reassigned"
    )
    offline_grace_s: float = Field(
        2.0,
        ge=0,
        description="an agent offline this long has its steps reassigned (a presence that flickers "
        "offline and back does not cost the steps it is working on)",
    )
    wait_for_better_s: float = Field(
        30.0,
        ge=0,
        description="a step waits this long for a busy agent that matches much better "
        "(matching.wait_margin), then takes the best free one",
    )
    planner_timeout_s: float = Field(60.0, gt=0)
    plan_retries: int = Field(1, ge=0, description="times a planner is asked again after an invalid plan")
    max_plan_steps: int = Field(8, ge=1, le=32)
    max_tokens: int | None = Field(512, ge=1, description="max_tokens sent with each assignment")
    result_ttl_s: float = Field(600.0, gt=0, description="retained TaskResults are cleared after this")
    ledger_keep_s: float = Field(
        7 * 86400.0, gt=0, description="finished tasks are pruned from the ledger after this"
    )
    tick_s: float = Field(0.2, gt=0, description="how often timeouts, offline agents and TTLs are checked")

    @field_validator("ledger")
    @classmethod
    def _expand(cls, value: str | None) -> str | None:
        return str(Path(value).expanduser()) if value and value != ":memory:" else value

    def ledger_path(self) -> str:
        return self.ledger or str(Path("~/.local/state/agentmesh").expanduser() / f"{self.router_id}.sqlite")

    @classmethod
    def load(cls, path: str | Path | None) -> RouterConfig:
        return load_config(cls, path) if path else cls()
