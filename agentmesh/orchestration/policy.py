"""When is an answer good enough, and where does a weak one go next? (DESIGN.md section 6)"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agentmesh.protocol import TIERS, Constraints, StepResult, Tier


def _default_floors() -> dict[Tier, float]:
    return {"device": 0.5, "edge": 0.5, "cloud": 0.0}


class EscalationPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_confidence: dict[Tier, Annotated[float, Field(ge=0.0, le=1.0)]] = Field(
        default_factory=_default_floors,
        description="an ok answer below this confidence on a tier escalates to the next tier",
    )
    max_attempts: int = Field(
        4, ge=1, description="attempts per step, escalations and reassignments included"
    )

    @field_validator("min_confidence", mode="after")
    @classmethod
    def _keep_unnamed_tiers(cls, floors: dict[Tier, float]) -> dict[Tier, float]:
        # `min_confidence: {device: 0.7}` means "stricter on device", not "no floor on edge".
        return {**_default_floors(), **floors}


@dataclass(frozen=True)
class Verdict:
    accept: bool
    reason: str | None = None


def judge(result: StepResult, tier: Tier, policy: EscalationPolicy) -> Verdict:
    """Accept a step result, or say why it is weak."""
    if result.status == "error":
        return Verdict(False, f"error: {result.error or 'agent reported an error'}")
    if result.status == "declined":
        return Verdict(False, f"declined{': ' + result.error if result.error else ''}")
    if not result.output.strip():
        return Verdict(False, "empty answer")
    floor = policy.min_confidence.get(tier, 0.0)
    if result.confidence is not None and result.confidence < floor:
        return Verdict(False, f"confidence {result.confidence:.2f} below {floor:.2f} on {tier}")
    return Verdict(True)


def tiers_above(tier: Tier, constraints: Constraints) -> list[Tier]:
    """Tiers a weak step may still move up to, in ladder order."""
    hi = TIERS.index(constraints.max_tier)
    return [t for t in TIERS[TIERS.index(tier) + 1 : hi + 1]]


def tier_span(lo: Tier, hi: Tier) -> str:
    """Tiers from ``lo`` up to ``hi`` in words, for reasons users read."""
    return f"the {lo} tier" if lo == hi else f"tiers {lo} to {hi}"


def start_tier(step_tier: Tier | None, constraints: Constraints) -> Tier:
    lo = TIERS.index(constraints.min_tier)
    if step_tier is not None:
        lo = max(lo, TIERS.index(step_tier))
    return TIERS[min(lo, TIERS.index(constraints.max_tier))]


def why_not_escalated(tier: Tier, constraints: Constraints, *, attempts_left: bool, budget_left: bool) -> str:
    if not tiers_above(tier, constraints):
        return f"not escalated: max_tier is {constraints.max_tier}"
    if not attempts_left:
        return "not escalated: attempt limit reached"
    if not budget_left:
        return "not escalated: max_cost_usd reached"
    return "not escalated: no agent on a higher tier can serve it"
