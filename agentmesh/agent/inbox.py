"""Checks on what arrives in an agent's inbox, and how to answer what does not parse.

A malformed assignment that still names task_id, step_id, attempt and a usable reply_to gets an
``error`` StepResult naming the problem, so the router does not wait for a timeout; anything
else is logged and dropped. Nothing here does I/O.
"""

from __future__ import annotations

import json
import re
from typing import Any

from agentmesh.protocol.messages import StepResult, check_reply_topic

_STEP_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def reply_topic_problem(topic: Any) -> str | None:
    """Why ``topic`` cannot be published to, or None."""
    if not isinstance(topic, str):
        return "reply_to must be a string"
    try:
        check_reply_topic(topic)
    except ValueError as exc:
        return f"reply_to: {exc}"
    return None


def salvage_reply(payload: bytes, *, max_bytes: int) -> tuple[str, str, int, str] | None:
    """(task_id, step_id, attempt, reply_to) from a payload that failed validation, if present."""
    if len(payload) > max_bytes * 2:  # too big even to look at
        return None
    try:
        data = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    task_id, step_id, attempt, reply_to = (data.get(k) for k in ("task_id", "step_id", "attempt", "reply_to"))
    if not (isinstance(task_id, str) and _STEP_RE.fullmatch(task_id)):
        return None
    if not (isinstance(step_id, str) and _STEP_RE.fullmatch(step_id)):
        return None
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
        return None
    if reply_topic_problem(reply_to) is not None:
        return None
    return task_id, step_id, attempt, str(reply_to)


def rejection(fields: tuple[str, str, int, str], agent_id: str, reason: str) -> StepResult:
    task_id, step_id, attempt, _ = fields
    return StepResult(
        task_id=task_id,
        step_id=step_id,
        attempt=attempt,
        agent_id=agent_id,
        status="error",
        error=f"invalid assignment: {reason}"[:2000],
    )
