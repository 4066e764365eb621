"""Helpers for tests that run a real mesh: agent configs, an in-process router, a client.

Agent processes are tests.agent_fixtures.AgentProcess."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from agentmesh import MeshClient, Router, RouterConfig
from agentmesh.protocol import TaskEvent, TaskResult

NS = "agentmesh/v1"


def agent_config(
    agent_id: str,
    *,
    tier: str = "device",
    tool: str = "echo",
    kwargs: dict[str, Any] | None = None,
    capability: str = "echo",
    description: str = "Repeat the given text back, together with the inputs of earlier steps.",
    tags: list[str] | None = None,
    concurrency: int = 2,
    region: str | None = None,
    context_window: int | None = None,
) -> dict[str, Any]:
    policy: dict[str, Any] = {"data_classes": ["public", "internal", "personal"]}
    if region:
        policy["region"] = region
    config: dict[str, Any] = {
        "id": agent_id,
        "tier": tier,
        "capabilities": [
            {"name": capability, "description": description, "tags": tags or [capability]},
        ],
        "backend": {"kind": "python", "callable": f"agentmesh.agent.tools:{tool}", "kwargs": kwargs or {}},
        "concurrency": concurrency,
        "policy": policy,
    }
    if context_window is not None:
        config["model_info"] = {"context_window": context_window}
    return config


async def eventually(check: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    """Poll ``check`` until it holds; the timeout only guards against a hang."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def wait_registered(router: Router, *agent_ids: str, timeout: float = 60.0) -> None:
    def ok() -> bool:
        return all((e := router.registry.get(a)) is not None and e.routable for a in agent_ids)

    await eventually(ok, timeout, f"agents {agent_ids} in the router's registry")


def router_config(tmp: Path, **overrides: Any) -> RouterConfig:
    data: dict[str, Any] = {"router_id": "router-t", "ledger": str(tmp / "ledger.sqlite"), "tick_s": 0.1}
    data.update(overrides)
    return RouterConfig.model_validate(data)


async def run_collecting(
    client: MeshClient,
    text: str = "",
    *,
    timeout: float = 60.0,
    on_event: Callable[[TaskEvent], Awaitable[None]] | None = None,
    **kwargs: Any,
) -> tuple[TaskResult, list[TaskEvent]]:
    """Submit, collect every event until the task ends, return (result, events)."""
    handle = await client.submit(text, events=True, **kwargs)
    events: list[TaskEvent] = []

    async def collect() -> None:
        async for ev in handle.events():
            events.append(ev)
            if on_event is not None:
                await on_event(ev)

    await asyncio.wait_for(collect(), timeout)
    return await handle.result(timeout), events
