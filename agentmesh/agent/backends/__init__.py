"""Agent backends: ``llama_cpp`` (local GGUF), ``openai`` (any compatible endpoint), ``python``."""

from __future__ import annotations

from agentmesh.agent.backends.base import Backend, BackendResult
from agentmesh.agent.config import (
    BackendConfig,
    LlamaCppBackendConfig,
    OpenAIBackendConfig,
    PythonBackendConfig,
)

__all__ = ["Backend", "BackendResult", "make_backend"]


def make_backend(config: BackendConfig) -> Backend:
    """The backend for a config (not loaded yet: call ``await backend.load()``)."""
    if isinstance(config, LlamaCppBackendConfig):
        from agentmesh.agent.backends.llama_cpp import LlamaCppBackend

        return LlamaCppBackend(config)
    if isinstance(config, OpenAIBackendConfig):
        from agentmesh.agent.backends.openai_compat import OpenAIBackend

        return OpenAIBackend(config)
    if isinstance(config, PythonBackendConfig):
        from agentmesh.agent.backends.python_callable import PythonBackend

        return PythonBackend(config)
    raise TypeError(f"unknown backend config {type(config).__name__}")
