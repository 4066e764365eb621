"""Plans: validation, the single-step planner and the LLM planner's prompt and parser."""

from agentmesh.planning.plan import SINGLE_STEP_ID, plan_schema, single_step_plan, validate_plan
from agentmesh.planning.planners import (
    PLANNER_STEP_ID,
    Completion,
    TaskPart,
    complete_plan,
    looks_multipart,
    parse_plan_output,
    plan_from_output,
    planning_instruction,
    request_query,
    task_parts,
)

__all__ = [
    "PLANNER_STEP_ID",
    "SINGLE_STEP_ID",
    "Completion",
    "TaskPart",
    "complete_plan",
    "looks_multipart",
    "parse_plan_output",
    "plan_from_output",
    "plan_schema",
    "planning_instruction",
    "request_query",
    "single_step_plan",
    "task_parts",
    "validate_plan",
]
