"""Helpers for tests that run a real mesh: agent processes, an in-process router, a client."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml

from agentmesh import MeshClient, Router, RouterConfig
from agentmesh.protocol import TaskEvent, TaskResult
from agentmesh.transport import BrokerAddress

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
) -> dict[str, Any]:
    policy: dict[str, Any] = {"data_classes": ["public", "internal", "personal"]}
    if region:
        policy["region"] = region
    return {
        "id": agent_id,
        "tier": tier,
        "capabilities": [
            {"name": capability, "description": description, "tags": tags or [capability]},
        ],
        "backend": {"kind": "python", "callable": f"agentmesh.agent.tools:{tool}", "kwargs": kwargs or {}},
        "concurrency": concurrency,
        "policy": policy,
    }


class AgentProcess:
    """``python -m agentmesh.agent CONFIG`` as a child process."""

    def __init__(self, config: dict[str, Any], broker: BrokerAddress, workdir: Path) -> None:
        self.id = config["id"]
        self.path = workdir / f"{self.id}.yaml"
        self.path.write_text(yaml.safe_dump(config))
        self.log = workdir / f"{self.id}.log"
        env = dict(os.environ, AGENTMESH_STATE_DIR=str(workdir / "state"))
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agentmesh.agent",
                str(self.path),
                "--broker",
                broker.url,
                "--namespace",
                NS,
            ],
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("wb"),
            env=env,
        )

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


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
