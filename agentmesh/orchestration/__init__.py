"""Step state machine, escalation policy and the durable ledger (no I/O but SQLite)."""

from agentmesh.orchestration.ledger import Ledger
from agentmesh.orchestration.policy import (
    EscalationPolicy,
    Verdict,
    judge,
    start_tier,
    tier_span,
    tiers_above,
    why_not_escalated,
)
from agentmesh.orchestration.state import Attempt, Step, Task

__all__ = [
    "Attempt",
    "EscalationPolicy",
    "Ledger",
    "Step",
    "Task",
    "Verdict",
    "judge",
    "start_tier",
    "tier_span",
    "tiers_above",
    "why_not_escalated",
]
