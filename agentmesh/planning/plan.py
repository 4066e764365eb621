"""Plan validation with errors a planner can act on, and the JSON schema planners must follow."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from agentmesh.errors import PlanError
from agentmesh.protocol import Plan, PlanStep, dag_problem
from agentmesh.protocol.limits import MAX_PLAN_STEPS


def validate_plan(data: Any) -> Plan:
    """Turn ``data`` (a dict or a Plan) into a valid Plan or raise PlanError naming the problem."""
    if isinstance(data, Plan):
        problem = dag_problem(data)
        if problem:
            raise PlanError(problem)
        return data
    if not isinstance(data, dict):
        raise PlanError(f"a plan must be a JSON object, got {type(data).__name__}")
    try:
        return Plan.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err["loc"]]
        step_id = None
        if len(loc) >= 2 and loc[0] == "steps" and loc[1].isdigit():
            steps = data.get("steps") or []
            idx = int(loc[1])
            if idx < len(steps) and isinstance(steps[idx], dict):
                step_id = str(steps[idx].get("id", idx))
        msg = err["msg"].removeprefix("Value error, ")
        raise PlanError(msg, field=".".join(loc) or None, step_id=step_id) from None


SINGLE_STEP_ID = "s1"


def single_step_plan(text: str, query: str | None = None) -> Plan:
    """The whole task as one step, matched by ``query`` (default: the text)."""
    return Plan(steps=[PlanStep(id=SINGLE_STEP_ID, instruction=text, capability=query)])


def plan_schema() -> dict[str, Any]:
    """The JSON schema a planner agent's output is constrained to.

    Smaller than Plan's own schema on purpose: grammar-constrained decoding on a tiny model works
    best with few, simple fields, and ids are normalised afterwards anyway.
    """
    return {
        "type": "object",
        "properties": {
            "steps": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_PLAN_STEPS,
                "items": {
                    "type": "object",
                    # Length caps stop a small model's degenerate repetition inside a string.
                    "properties": {
                        "id": {"type": "string", "maxLength": 16},
                        "instruction": {"type": "string", "maxLength": 400},
                        "depends_on": {
                            "type": "array",
                            "items": {"type": "string", "maxLength": 16},
                            "maxItems": MAX_PLAN_STEPS,
                        },
                    },
                    "required": ["id", "instruction", "depends_on"],
                },
            }
        },
        "required": ["steps"],
    }
