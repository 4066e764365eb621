"""The ``openai`` backend: any OpenAI-compatible chat endpoint through the official client.

Works against a cloud API, vLLM, Ollama or ``python -m llama_cpp.server``. The key is read from
the env var named by ``api_key_env``; when it is unset a placeholder is sent (local servers take
any key). Failures:

- 401/403 -> BackendAuthError at once (retrying cannot help).
- 429, 5xx, connection errors and timeouts -> retried up to ``max_retries`` times with
  exponential backoff (``backoff_s * 2**attempt``, capped at 30 s, or the server's Retry-After),
  never past the step's deadline; then BackendError naming the last error.
- Other 4xx -> BackendError with the server's message. A 400 that mentions logprobs or
  response_format switches that feature off for this agent and retries once (endpoints that do
  not support them), so the step still runs.

Usage comes from the response's ``usage``; cost is computed by the runtime from the card's prices.
Confidence comes from ``choices[0].logprobs`` when the endpoint returns them (see confidence.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from typing import Any

from agentmesh.agent.backends.base import BackendResult
from agentmesh.agent.confidence import confidence, from_openai_logprobs, loop_checked
from agentmesh.agent.config import OpenAIBackendConfig
from agentmesh.agent.prompt import StepRequest, chat_messages
from agentmesh.errors import BackendAuthError, BackendError
from agentmesh.protocol.messages import ModelInfo

log = logging.getLogger(__name__)

PLACEHOLDER_KEY = "agentmesh-no-key"
MAX_BACKOFF_S = 30.0


def backoff_delay(attempt: int, base_s: float, retry_after: str | None = None) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based)."""
    if retry_after:
        try:
            return min(MAX_BACKOFF_S, max(0.0, float(retry_after)))
        except ValueError:
            pass  # an HTTP date: fall back to our own schedule
    return float(min(MAX_BACKOFF_S, base_s * (2.0**attempt)))


def guess_model_info(model: str) -> ModelInfo:
    """Family / size from a model name ("gemma-3-27b-it" -> gemma3, 27.0)."""
    base = model.rsplit("/", 1)[-1].lower()
    parts = [p for p in re.split(r"[-_:/ ]+", base) if p]
    family = parts[0] if parts else base
    if len(parts) > 1 and re.fullmatch(r"\d+(?:\.\d+)?", parts[1]):
        family += parts[1]
    params_b = None
    for part in parts:
        m = re.fullmatch(r"(\d+(?:\.\d+)?)([bm])", part)
        if m:
            params_b = float(m.group(1)) / (1000 if m.group(2) == "m" else 1)
            break
    return ModelInfo(
        family=re.sub(r"[^a-z0-9.]+", "", family) or "openai", name=model, backend="openai", params_b=params_b
    )


class OpenAIBackend:
    kind = "openai"

    def __init__(self, config: OpenAIBackendConfig) -> None:
        self.config = config
        self._client: Any = None
        self._logprobs = config.logprobs
        self._response_format = config.response_format

    async def load(self) -> None:
        from openai import AsyncOpenAI  # imported here: only agents using this backend need it

        key = os.environ.get(self.config.api_key_env or "", "") if self.config.api_key_env else ""
        self._client = AsyncOpenAI(
            base_url=self.config.base_url,
            api_key=key or PLACEHOLDER_KEY,
            timeout=self.config.timeout_s,
            max_retries=0,  # our own loop: it knows the step's deadline and logs each retry
        )

    def model_info(self) -> ModelInfo:
        return guess_model_info(self.config.model)

    def _params(self, request: StepRequest) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": self.config.model,
            "messages": chat_messages(request),
            "max_tokens": request.max_tokens or self.config.max_tokens,
        }
        if self.config.temperature is not None:
            params["temperature"] = self.config.temperature
        if self._logprobs:
            params["logprobs"] = True
            if self.config.top_logprobs:
                params["top_logprobs"] = self.config.top_logprobs
        schema = request.response_format
        if schema is not None and self._response_format == "json_schema":
            params["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "step_output", "schema": schema},
            }
        elif schema is not None and self._response_format == "json_object":
            params["response_format"] = {"type": "json_object", "schema": schema}
        return params

    async def run(self, request: StepRequest) -> BackendResult:
        import openai

        if self._client is None:
            raise BackendError("backend not loaded", backend=self.kind)
        started = time.monotonic()
        attempt = 0
        downgraded = False
        while True:
            timeout = self.config.timeout_s
            if request.deadline is not None:
                timeout = max(0.1, min(timeout, request.deadline - time.monotonic()))
            try:
                response = await self._client.chat.completions.create(
                    **self._params(request), timeout=timeout
                )
                break
            except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
                who = f"{self.config.base_url} refused the key from ${self.config.api_key_env}"
                raise BackendAuthError(f"{who}: {_message(exc)}", backend=self.kind) from None
            except openai.BadRequestError as exc:
                text = _message(exc).lower()
                if not downgraded and self._logprobs and "logprob" in text:
                    log.warning(
                        "%s does not support logprobs; continuing without confidence", self.config.base_url
                    )
                    self._logprobs, downgraded = False, True
                    continue
                if not downgraded and self._response_format != "off" and "response_format" in text:
                    log.warning(
                        "%s rejects response_format %r; schema goes in the prompt only",
                        self.config.base_url,
                        self._response_format,
                    )
                    self._response_format, downgraded = "off", True
                    continue
                raise BackendError(
                    f"endpoint rejected the request: {_message(exc)}", backend=self.kind
                ) from None
            except (openai.RateLimitError, openai.InternalServerError, openai.APIConnectionError) as exc:
                # APITimeoutError is an APIConnectionError.
                if attempt >= self.config.max_retries:
                    raise BackendError(
                        f"{self.config.base_url} failed after {attempt + 1} attempts: {_message(exc)}",
                        backend=self.kind,
                    ) from None
                retry_after = _retry_after(exc)
                delay = backoff_delay(attempt, self.config.backoff_s, retry_after)
                if request.deadline is not None and time.monotonic() + delay >= request.deadline:
                    raise BackendError(
                        f"deadline reached while retrying: {_message(exc)}", backend=self.kind
                    ) from None
                log.warning(
                    "%s: %s; retry %d in %.2fs", self.config.base_url, _message(exc), attempt + 1, delay
                )
                attempt += 1
                await asyncio.sleep(delay)
            except openai.APIStatusError as exc:
                raise BackendError(
                    f"endpoint answered {exc.status_code}: {_message(exc)}", backend=self.kind
                ) from None
        return self._result(response, started, request)

    def _result(self, response: Any, started: float, request: StepRequest) -> BackendResult:
        if not response.choices:
            raise BackendError("endpoint returned no choices", backend=self.kind)
        choice = response.choices[0]
        text = (choice.message.content or "") if choice.message is not None else ""
        logprobs = getattr(choice, "logprobs", None)
        tokens = from_openai_logprobs(getattr(logprobs, "content", None)) if logprobs is not None else []
        usage = response.usage
        return BackendResult(
            output=text.strip(),
            confidence=loop_checked(
                text,
                confidence(tokens, self.config.confidence.method) if tokens else None,
                request=request,
            ),
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
        )

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()


def _message(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
    return str(getattr(exc, "message", None) or exc)


def _retry_after(exc: Exception) -> str | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    value = headers.get("retry-after")
    return str(value) if value is not None else None
