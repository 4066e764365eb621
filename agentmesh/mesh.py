"""``agentmesh up``: a whole mesh in one process (broker if none answers, router, agents).

The mesh file lists agent config files (relative to the mesh file); an agent may name environment
variables it needs, and is skipped with a note when they are unset (the cloud agent without an
OpenAI-compatible endpoint, for instance).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from agentmesh.agent.config import AgentConfig, load_agent_config
from agentmesh.agent.runtime import Agent
from agentmesh.config import load_config
from agentmesh.heap import freeze_startup_heap
from agentmesh.router import Router
from agentmesh.router_config import RouterConfig
from agentmesh.transport import BrokerAddress, RunningBroker, port_answers, start_broker

log = logging.getLogger(__name__)


class AgentEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    config: str = Field(description="agent YAML, relative to the mesh file")
    requires_env: list[str] = Field(default_factory=list, description="skip this agent unless these are set")


class MeshConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    broker: str | None = Field(
        None, description="mqtt://host:port; a broker is started there if none answers"
    )
    router: RouterConfig = Field(default_factory=RouterConfig)
    agents: list[AgentEntry] = Field(default_factory=list)


def default_mesh_file() -> Path:
    checkout = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
    return checkout


class Mesh:
    """Everything ``up`` starts, stopped in reverse order."""

    def __init__(
        self,
        config: MeshConfig,
        *,
        base_dir: Path,
        broker: str | None = None,
        say: Callable[[str], None] = print,
    ) -> None:
        self.config = config
        self.base_dir = base_dir
        self.address = BrokerAddress.resolve(broker or config.broker)
        self.say = say
        self.broker: RunningBroker | None = None
        self.router: Router | None = None
        self.agents: list[Agent] = []

    def agent_configs(self) -> list[AgentConfig]:
        out = []
        for entry in self.config.agents:
            missing = [name for name in entry.requires_env if not os.environ.get(name)]
            if missing:
                self.say(f"  skipping {entry.config}: set {', '.join(missing)} to enable it")
                continue
            out.append(load_agent_config(self.base_dir / entry.config))
        return out

    async def start(self) -> None:
        configs = self.agent_configs()  # config errors before anything starts
        if port_answers(self.address.host, self.address.port):
            self.say(f"  broker: using the one answering at {self.address}")
        else:
            t = time.monotonic()
            self.broker = await start_broker(self.address.port)
            self.say(f"  broker: started {self.broker.kind} on {self.address} ({time.monotonic() - t:.1f}s)")
        t = time.monotonic()
        self.router = Router(self.config.router, broker=self.address)
        await self.router.start()
        self.say(f"  router: {self.config.router.router_id} ready ({time.monotonic() - t:.1f}s)")
        for cfg in configs:
            t = time.monotonic()
            self.say(f"  agent:  {cfg.id} [{cfg.tier}] {cfg.backend.kind} starting...")
            agent = Agent(cfg, broker=self.address, namespace=self.config.router.namespace)
            await agent.start()
            self.agents.append(agent)
            self.say(f"  agent:  {cfg.id} ready ({time.monotonic() - t:.1f}s)")
        await self._routable([cfg.id for cfg in configs])

    async def _routable(self, agent_ids: list[str], timeout: float = 30.0) -> None:
        """Until the router's registry holds every agent we started (cards travel via the broker)."""
        assert self.router is not None
        registry = self.router.registry
        deadline = time.monotonic() + timeout
        while not all((e := registry.get(a)) is not None and e.routable for a in agent_ids):
            if time.monotonic() > deadline:
                missing = [a for a in agent_ids if registry.get(a) is None]
                self.say(f"  warning: the router has not seen {', '.join(missing)} yet")
                return
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        for agent in reversed(self.agents):
            with contextlib.suppress(Exception):
                await agent.stop()
        if self.router is not None:
            await self.router.stop()
        if self.broker is not None:
            await self.broker.stop()


def load_mesh(path: Path) -> MeshConfig:
    return load_config(MeshConfig, path)


async def run_mesh(path: Path, *, broker: str | None = None) -> int:
    config = load_mesh(path)
    say = _stderr
    mesh = Mesh(config, base_dir=path.parent, broker=broker, say=say)
    say(f"agentmesh up: {path}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await mesh.start()
        freeze_startup_heap()
        url = mesh.address.url
        flag = "" if url == "mqtt://127.0.0.1:1883" else f" --broker {url}"
        say(
            "\nThe mesh is up. In another terminal try:\n"
            f"  agentmesh{flag} agents\n"
            f"  agentmesh{flag} match 'convert 5 km to miles'\n"
            f"  agentmesh{flag} submit 'Convert 5 km to miles. Then compute 12*12.' --wait\n"
            f"  agentmesh{flag} trace TASK_ID\n"
            "Ctrl-C stops everything."
        )
        await stop.wait()
        say("stopping: draining agents...")
    finally:
        await mesh.stop()
    return 0


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
