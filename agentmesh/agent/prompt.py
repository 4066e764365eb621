"""What a model sees for one step: the system prompt, the instruction, the outputs of the steps it
depends on, and the weak previous answer when the step was escalated (so a bigger model can
improve on it rather than start blind)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from agentmesh.protocol.messages import PreviousAttempt


@dataclass(frozen=True)
class StepRequest:
    """One step as the backends see it (transport-free)."""

    instruction: str
    inputs: dict[str, str] = field(default_factory=dict)
    previous: PreviousAttempt | None = None
    system_prompt: str = ""
    max_tokens: int | None = None
    response_format: dict[str, Any] | None = None
    deadline: float | None = None  # time.monotonic() after which the backend should stop early


def user_message(request: StepRequest, *, schema_in_prompt: bool = True) -> str:
    """The user turn. ``schema_in_prompt=False`` when the decoder itself enforces the schema (a
    grammar): small models tend to copy schema text such as "#/$defs/..." into their answer."""
    parts = [request.instruction.strip()]
    # No step ids: with "[s1]" labels Gemma 3 270M went on writing "[s2] ... Answer: [s3] ..." at
    # confidence 0.9, so nothing escalated the loop.
    outputs = [output.strip() for output in request.inputs.values()]
    if len(outputs) == 1:
        parts.append(f"Earlier result: {outputs[0]}")
    elif outputs:
        parts.append("\n".join(["Earlier results:", *(f"- {output}" for output in outputs)]))
    # An attempt that declined or failed left nothing to improve on, and telling a small model
    # about it made Gemma 3 270M answer with nothing at all.
    if request.previous is not None and request.previous.output.strip():
        prev = request.previous
        parts.append(
            f"A previous attempt by {prev.agent_id} ({prev.tier} tier) was not good enough "
            f"({prev.reason}). Write a better answer; reuse what is right in it.\n"
            f"Previous attempt:\n{prev.output.strip()}"
        )
    if request.response_format is not None and schema_in_prompt:
        schema = json.dumps(request.response_format, separators=(",", ":"))
        parts.append(f"Answer with one JSON object matching this JSON schema:\n{schema}")
    elif request.response_format is not None:
        parts.append("Answer with one JSON object only.")
    return "\n\n".join(p for p in parts if p)


def chat_messages(request: StepRequest, *, schema_in_prompt: bool = True) -> list[dict[str, str]]:
    messages: list[dict[str, str]] = []
    if request.system_prompt.strip():
        messages.append({"role": "system", "content": request.system_prompt.strip()})
    messages.append({"role": "user", "content": user_message(request, schema_in_prompt=schema_in_prompt)})
    return messages
