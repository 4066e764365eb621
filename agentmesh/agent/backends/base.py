"""The contract between the agent runtime and a backend (llama.cpp, OpenAI-compatible, Python)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from agentmesh.agent.prompt import StepRequest
from agentmesh.protocol.messages import ModelInfo


@dataclass(frozen=True)
class BackendResult:
    output: str
    confidence: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    status: Literal["ok", "declined"] = "ok"
    reason: str | None = None  # why the step was declined
    # Seconds from the request to the first generated token, when the backend can tell.
    first_token_s: float | None = None


class Backend(Protocol):
    """A loaded model or tool. ``run`` raises BackendError (or any exception) on failure; the
    runtime turns that into an ``error`` StepResult carrying the message."""

    kind: str

    async def load(self) -> None:
        """Load the model / import the callable. Blocking work runs in a thread."""

    def model_info(self) -> ModelInfo | None:
        """Facts for the capability card (after load)."""

    async def run(self, request: StepRequest) -> BackendResult: ...

    async def close(self) -> None: ...
