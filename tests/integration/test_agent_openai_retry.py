"""The openai backend's retry loop against a real closed port on loopback (connection refused)."""

from __future__ import annotations

import time

import pytest

from agentmesh.agent.backends.openai_compat import OpenAIBackend
from agentmesh.agent.config import OpenAIBackendConfig
from agentmesh.agent.prompt import StepRequest
from agentmesh.errors import BackendError
from agentmesh.transport import free_port


def backend(**overrides: object) -> OpenAIBackend:
    config = OpenAIBackendConfig.model_validate(
        {
            "kind": "openai",
            "base_url": f"http://127.0.0.1:{free_port()}/v1",  # nothing listens there
            "model": "m",
            "api_key_env": None,
            "timeout_s": 2,
            "max_retries": 2,
            "backoff_s": 0.01,
            **overrides,
        }
    )
    return OpenAIBackend(config)


async def test_connection_errors_are_retried_then_reported() -> None:
    b = backend()
    await b.load()
    try:
        with pytest.raises(BackendError, match="after 3 attempts"):
            await b.run(StepRequest(instruction="hi"))
    finally:
        await b.close()


async def test_retries_stop_at_the_deadline() -> None:
    b = backend(max_retries=5, backoff_s=5.0)
    await b.load()
    try:
        with pytest.raises(BackendError, match="deadline"):
            await b.run(StepRequest(instruction="hi", deadline=time.monotonic() + 1.0))
    finally:
        await b.close()
