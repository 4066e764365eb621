"""The ``python`` backend: a plain function as an agent (tools: arithmetic, unit conversion...).

``callable: "package.module:function"`` is called as ``fn(instruction, inputs, **kwargs)``, or
``fn(instruction, inputs, previous, **kwargs)`` when it has a third positional parameter (or one
named ``previous``), where ``kwargs`` are the config's ``backend.kwargs``. Sync functions run in
a worker thread (or, with ``inline: true``, right on the event loop: for tools that return in
microseconds), coroutine functions on the loop. The return value is the output string, or a
dict with ``output`` and optionally ``confidence`` (0..1), ``status`` ("ok" | "declined") and
``reason`` (why it declined; sent as the StepResult's ``error``). ``previous`` is None or a dict
{agent_id, tier, output, reason}.
Any exception becomes an ``error`` StepResult carrying its message.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import math
from collections.abc import Callable
from typing import Any

from agentmesh.agent.backends.base import BackendResult
from agentmesh.agent.config import PythonBackendConfig
from agentmesh.agent.prompt import StepRequest
from agentmesh.errors import BackendError, ConfigError
from agentmesh.protocol.messages import ModelInfo


def import_callable(spec: str) -> Callable[..., Any]:
    """``package.module:attr.attr`` -> the object; ConfigError naming ``backend.callable``."""
    module_name, _, attr_path = spec.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import {module_name!r}: {exc}", field="backend.callable") from None
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(
                f"{module_name!r} has no attribute {attr_path!r}", field="backend.callable"
            ) from None
    if not callable(obj):
        raise ConfigError(f"{spec!r} is not callable", field="backend.callable")
    return obj  # type: ignore[no-any-return]


def wants_previous(fn: Callable[..., Any]) -> bool:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    if any(p.name == "previous" for p in params):
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 3 or any(p.kind == p.VAR_POSITIONAL for p in params)


def to_result(value: Any, *, spec: str) -> BackendResult:
    """Interpret what a callable returned."""
    if isinstance(value, str):
        return BackendResult(output=value)
    if isinstance(value, dict):
        unknown = set(value) - {"output", "confidence", "status", "reason"}
        if unknown:
            raise BackendError(f"{spec} returned unknown keys {sorted(unknown)}", backend="python")
        output = value.get("output", "")
        if not isinstance(output, str):
            raise BackendError(
                f"{spec} returned a non-string 'output' ({type(output).__name__})", backend="python"
            )
        conf = value.get("confidence")
        if conf is not None:
            if (
                isinstance(conf, bool)
                or not isinstance(conf, int | float)
                or not 0.0 <= conf <= 1.0
                or math.isnan(conf)
            ):
                raise BackendError(
                    f"{spec} returned confidence {conf!r}, not a number in 0..1", backend="python"
                )
            conf = float(conf)
        status = value.get("status", "ok")
        if status not in ("ok", "declined"):
            raise BackendError(f"{spec} returned status {status!r}, not 'ok' or 'declined'", backend="python")
        reason = value.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise BackendError(f"{spec} returned a non-string 'reason'", backend="python")
        return BackendResult(output=output, confidence=conf, status=status, reason=reason)
    raise BackendError(f"{spec} returned {type(value).__name__}, expected str or dict", backend="python")


class PythonBackend:
    kind = "python"

    def __init__(self, config: PythonBackendConfig) -> None:
        self.config = config
        self._fn: Callable[..., Any] | None = None
        self._previous = False
        self._is_async = False

    async def load(self) -> None:
        fn = import_callable(self.config.callable)
        self._fn = fn
        self._previous = wants_previous(fn)
        self._is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None)  # noqa: B004 - async callable objects
        )

    def model_info(self) -> ModelInfo:
        return ModelInfo(family="python", name=self.config.callable, backend="python")

    @property
    def inline(self) -> bool:
        """Whether the runtime may call ``run_inline`` on its event loop (config ``inline: true``)."""
        return self.config.inline and self._fn is not None and not self._is_async

    def run_inline(self, request: StepRequest) -> BackendResult:
        fn = self._fn
        if fn is None:
            raise BackendError("backend not loaded", backend="python")
        value = fn(*self._args(request), **self.config.kwargs)
        if inspect.isawaitable(value):
            close = getattr(value, "close", None)
            if callable(close):
                close()
            raise BackendError(
                f"{self.config.callable} returned an awaitable; drop inline: true", backend="python"
            )
        return to_result(value, spec=self.config.callable)

    def _args(self, request: StepRequest) -> list[Any]:
        args: list[Any] = [request.instruction, dict(request.inputs)]
        if self._previous:
            args.append(request.previous.model_dump() if request.previous is not None else None)
        return args

    async def run(self, request: StepRequest) -> BackendResult:
        fn = self._fn
        if fn is None:
            raise BackendError("backend not loaded", backend="python")
        args = self._args(request)
        kwargs = dict(self.config.kwargs)
        if self._is_async:
            value = await fn(*args, **kwargs)
        elif self.config.inline:
            value = fn(*args, **kwargs)
        else:
            value = await asyncio.to_thread(fn, *args, **kwargs)
            if inspect.isawaitable(value):
                value = await value
        return to_result(value, spec=self.config.callable)

    async def close(self) -> None:
        return None
