"""Tool callables for ``python`` backend agents (``callable: "agentmesh.agent.tools:NAME"``).

Each is ``fn(instruction, inputs, **kwargs)`` with ``kwargs`` from the config's ``backend.kwargs``.

Real tools:
- ``calculate``: exact arithmetic on the expression found in the instruction (no eval).
- ``convert_units``: "convert 5 km to miles", "100 F in C", "how many ounces is 2 lb".
Both decline (status "declined", with the reason) a request they cannot parse, so the router can
send the step on to a model instead. A step that works on an earlier step's answer ("convert the
result to pounds", with that answer in ``inputs``) gets the answer's value in place of the words.

Test and benchmark helpers (the router's escalation tests use them):
- ``echo``: returns the instruction and the inputs; optional ``delay_s``, ``log_file`` (appends
  one line per call, to count executions) and ``confidence``.
- ``low_confidence``: answers with a fixed low ``confidence`` (default 0.1).
- ``canned``: answers every step with ``output`` (the router's planner tests plan with it).
- ``fail``: raises RuntimeError(``message``).
- ``decline``: declines with ``reason``.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from agentmesh.agent.tools.arith import (
    ArithmeticError_,
    ambiguous_comma,
    evaluate,
    extract_expression,
    format_number,
    has_operator,
)
from agentmesh.agent.tools.units import UnitError, convert, format_quantity, parse_query

__all__ = ["calculate", "canned", "convert_units", "decline", "echo", "fail", "low_confidence", "with_inputs"]


# "Then multiply the result by 3": a step that works on an earlier step's answer names it so; the
# definite phrases first, so "Is that right? Multiply the result by 2" replaces "the result".
_REFERENCES = (
    re.compile(r"\b(?:the\s+(?:result|answer|total)|that\s+(?:number|value|amount|result|total))\b", re.I),
    re.compile(r"\b(?:that|it)\b", re.IGNORECASE),
)
_QUANTITY = re.compile(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?|[-+]?\d+(?:\.\d+)?(?:/\d+)?(?:e[-+]?\d+)?")
_SAYS = re.compile(r"=|\b(?:is|equals|makes)\b", re.IGNORECASE)
# A tool reads a short request; a long text is not one, and some patterns slow down on it.
MAX_TOOL_INSTRUCTION = 1000


def with_inputs(instruction: str, inputs: dict[str, str], *, keep_unit: bool = False) -> str:
    """The instruction with its reference to the one earlier answer in ``inputs`` replaced by that
    answer's value: ("Convert the result to pounds", {"s1": "12 kg"}) -> "Convert 12 kg to pounds".
    The value is the first number after the last "=" (or else after the first "is"/"equals"):
    "5 km = 3.1 mi" gives 3.1, or "3.1 mi" with ``keep_unit``; "15% of 80 is 12." gives 12; the
    calculator's "1/3 \u2248 0.33" gives (1/3), in brackets so it keeps its precedence. Unchanged
    when there is not exactly one input or it holds no number."""
    if len(inputs) != 1:
        return instruction
    answer = next(iter(inputs.values()))
    if "=" in answer:
        answer = answer.rsplit("=", 1)[1]
    elif said := _SAYS.search(answer):
        answer = answer[said.end() :]
    number = _QUANTITY.search(answer)
    if number is None:
        return instruction
    if keep_unit:
        value = answer[number.start() :].split("\u2248")[0].strip().rstrip(" .")
    else:
        value = f"({number.group(0).replace(',', '')})"
    for reference in _REFERENCES:
        replaced, n = reference.subn(lambda _: value, instruction, count=1)
        if n:
            return replaced
    return instruction


def calculate(instruction: str, inputs: dict[str, str]) -> dict[str, Any]:
    if len(instruction) > MAX_TOOL_INSTRUCTION:
        return {"status": "declined", "reason": f"longer than {MAX_TOOL_INSTRUCTION} characters"}
    instruction = with_inputs(instruction, inputs)
    comma = ambiguous_comma(instruction)
    if comma is not None:
        return {"status": "declined", "reason": f"is the comma in {comma!r} a decimal point or a separator?"}
    expression = extract_expression(instruction)
    if expression is None:
        return {"status": "declined", "reason": "no arithmetic expression in the instruction"}
    if not has_operator(expression):
        # "Convert 12 kg to pounds" holds a number, not a sum: answering "12" would be wrong.
        return {
            "status": "declined",
            "reason": f"nothing to calculate in the instruction (only {expression!r})",
        }
    try:
        value = evaluate(expression)
    except ArithmeticError_ as exc:
        return {"status": "declined", "reason": f"cannot evaluate {expression!r}: {exc}"}
    return {"output": format_number(value), "confidence": 1.0}


def convert_units(instruction: str, inputs: dict[str, str]) -> dict[str, Any]:
    if len(instruction) > MAX_TOOL_INSTRUCTION:
        return {"status": "declined", "reason": f"longer than {MAX_TOOL_INSTRUCTION} characters"}
    try:
        value, source, target = parse_query(with_inputs(instruction, inputs, keep_unit=True))
        result = convert(value, source, target)
    except UnitError as exc:
        return {"status": "declined", "reason": str(exc)}
    return {
        "output": f"{format_quantity(value, source)} = {format_quantity(result, target)}",
        "confidence": 1.0,
    }


def echo(
    instruction: str,
    inputs: dict[str, str],
    *,
    delay_s: float = 0.0,
    log_file: str | None = None,
    confidence: float | None = None,
) -> str | dict[str, Any]:
    if log_file:
        with open(log_file, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"instruction": instruction}) + "\n")
    if delay_s > 0:
        time.sleep(delay_s)
    lines = [instruction, *(f"[{k}] {v}" for k, v in inputs.items())]
    output = "\n".join(lines)
    if confidence is None:
        return output
    return {"output": output, "confidence": confidence}


def canned(
    instruction: str, inputs: dict[str, str], *, output: str, confidence: float = 1.0
) -> dict[str, Any]:
    """Answers every step with ``output`` (a planner that always plans the same)."""
    return {"output": output, "confidence": confidence}


def low_confidence(instruction: str, inputs: dict[str, str], *, confidence: float = 0.1) -> dict[str, Any]:
    return {"output": f"not sure: {instruction}", "confidence": confidence}


def fail(instruction: str, inputs: dict[str, str], *, message: str = "this tool always fails") -> str:
    raise RuntimeError(message)


def decline(
    instruction: str, inputs: dict[str, str], *, reason: str = "this tool declines every step"
) -> dict[str, Any]:
    return {"status": "declined", "reason": reason}
