"""The agent config file (DESIGN.md section 10) as pydantic models.

Unknown keys anywhere are an error naming them. ``backend`` is a union discriminated by ``kind``.

String values may use environment variables: ``${NAME}`` (the variable must be set, else a
ConfigError names the key and the variable) or ``${NAME:-default}`` (the default when unset or
empty). ``$$`` is a literal ``$``. Only string values are expanded, so numbers stay numbers, and
the expansion happens before validation, so an expanded value is still checked.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agentmesh.config import load_yaml, validate_config
from agentmesh.errors import ConfigError
from agentmesh.protocol.limits import MAX_CAPABILITIES
from agentmesh.protocol.messages import Capability, Cost, MeshId, Policy, Tier

ConfidenceMethod = Literal["mean_prob", "min_prob", "margin", "none"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ConfidenceConfig(_Strict):
    """How a confidence in 0..1 is computed from token log-probabilities (see agent/confidence.py)."""

    method: ConfidenceMethod = "mean_prob"


class LlamaCppBackendConfig(_Strict):
    kind: Literal["llama_cpp"]
    model: Annotated[str, Field(min_length=1)]  # a GGUF path or pkg:<package>[/<file>]
    n_ctx: Annotated[int, Field(ge=128, le=131072)] = 2048
    # None: half the usable cores (at least 1). Prompt evaluation uses n_threads_batch, default the
    # same: llama.cpp's threads spin at barriers, so more threads than free cores (other agents,
    # other processes) slows it down several times instead of speeding it up.
    n_threads: Annotated[int, Field(ge=1)] | None = None
    n_threads_batch: Annotated[int, Field(ge=1)] | None = None
    n_batch: Annotated[int, Field(ge=8)] = 512
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 0.0
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    # >1 discourages repeating recent tokens (small models loop under greedy decoding).
    repeat_penalty: Annotated[float, Field(ge=1.0, le=2.0)] = 1.0
    max_tokens: Annotated[int, Field(ge=1)] = 256
    seed: int = 0
    chat_format: str | None = None  # None: the chat template stored in the GGUF
    # chat: the model's chat template; completion: a plain "Task:/Answer:" prompt for base models.
    prompt_style: Literal["chat", "completion"] = "chat"
    confidence: ConfidenceConfig = Field(default_factory=ConfidenceConfig)


class OpenAIBackendConfig(_Strict):
    kind: Literal["openai"]
    base_url: Annotated[str, Field(min_length=1)]
    model: Annotated[str, Field(min_length=1)]
    # Name of the env var holding the key; unset or empty variable: a placeholder key is sent
    # (local servers such as llama.cpp's or Ollama need none).
    api_key_env: str | None = "OPENAI_API_KEY"
    timeout_s: Annotated[float, Field(gt=0)] = 60.0
    max_retries: Annotated[int, Field(ge=0, le=10)] = 3
    backoff_s: Annotated[float, Field(ge=0)] = 0.5
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = 0.0
    max_tokens: Annotated[int, Field(ge=1)] = 512
    logprobs: bool = True
    top_logprobs: Annotated[int, Field(ge=0, le=20)] = 2
    # How a step's JSON schema is sent: OpenAI's "json_schema", the "json_object"+schema form of
    # llama.cpp's and vLLM's servers, or "off" (the schema goes into the prompt only).
    response_format: Literal["json_schema", "json_object", "off"] = "json_schema"
    confidence: ConfidenceConfig = Field(default_factory=ConfidenceConfig)


class PythonBackendConfig(_Strict):
    kind: Literal["python"]
    callable: Annotated[str, Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")]
    # Keyword arguments passed to the callable on every call (e.g. a tool's fixed confidence).
    kwargs: dict[str, Any] = Field(default_factory=dict)
    # A sync callable runs in a worker thread; ``inline: true`` calls it on the event loop instead,
    # for functions that return in microseconds (the thread hop costs more than the call).
    # Never for anything that blocks: it would stall the agent.
    inline: bool = False


BackendConfig = Annotated[
    LlamaCppBackendConfig | OpenAIBackendConfig | PythonBackendConfig, Field(discriminator="kind")
]


class ModelInfoConfig(_Strict):
    """Overrides of the model facts the card advertises (else derived from the backend)."""

    family: str | None = None
    name: str | None = None
    params_b: Annotated[float, Field(gt=0)] | None = None
    quant: str | None = None
    context_window: Annotated[int, Field(ge=1)] | None = None


class QoSConfig(_Strict):
    tokens_per_s: Annotated[float, Field(gt=0)] | None = None
    p50_latency_ms: Annotated[float, Field(gt=0)] | None = None


class AgentConfig(_Strict):
    id: MeshId
    tier: Tier
    capabilities: Annotated[list[Capability], Field(min_length=1, max_length=MAX_CAPABILITIES)]
    backend: BackendConfig
    concurrency: Annotated[int, Field(ge=1, le=256)] = 1
    system_prompt: str = "You are a concise assistant."
    cost: Cost = Field(default_factory=Cost)
    policy: Policy = Field(default_factory=Policy)
    qos: QoSConfig = Field(default_factory=QoSConfig)
    model_info: ModelInfoConfig | None = None
    # Broker-side lifetime of the inbox session after a disconnect (assignments queue meanwhile).
    session_expiry_s: Annotated[int, Field(ge=1)] = 3600
    # Longest a SIGTERM waits for in-flight steps before answering them with an error.
    drain_timeout_s: Annotated[float, Field(gt=0)] = 120.0
    max_payload_bytes: Annotated[int, Field(ge=1024)] = 256 * 1024


_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(data: Any, env: Mapping[str, str] | None = None, *, path: str | None = None) -> Any:
    """Replace ``${NAME}`` / ``${NAME:-default}`` in every string value of ``data``."""
    environ = os.environ if env is None else env

    def walk(value: Any, key: str) -> Any:
        if isinstance(value, str):
            return _expand(value, key)
        if isinstance(value, dict):
            return {k: walk(v, f"{key}.{k}" if key else str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, f"{key}.{i}") for i, v in enumerate(value)]
        return value

    def _expand(text: str, key: str) -> str:
        def sub(m: re.Match[str]) -> str:
            if m.group(0) == "$$":
                return "$"
            name, default = m.group(1), m.group(2)
            got = environ.get(name)
            if got:
                return got
            if default is not None:
                return default
            raise ConfigError(f"environment variable {name} is not set", path=path, field=key)

        return _VAR.sub(sub, text)

    return walk(data, "")


def parse_agent_config(
    data: Any, *, path: str | None = None, env: Mapping[str, str] | None = None
) -> AgentConfig:
    return validate_config(AgentConfig, expand_env(data, env, path=path), path=path)


def load_agent_config(path: str | Path, *, env: Mapping[str, str] | None = None) -> AgentConfig:
    """Read, env-expand and validate an agent YAML file; ConfigError names the file and key."""
    return parse_agent_config(load_yaml(path), path=str(path), env=env)
