"""``agentmesh agent CONFIG.yaml``: run one agent until SIGINT/SIGTERM (DESIGN.md section 9)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

from agentmesh.agent.config import load_agent_config
from agentmesh.agent.runtime import Agent
from agentmesh.errors import ConfigError, ModelError, TransportError
from agentmesh.heap import freeze_startup_heap
from agentmesh.protocol import DEFAULT_NAMESPACE
from agentmesh.transport import BrokerAddress

log = logging.getLogger("agentmesh.agent")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _fail(message: str) -> None:
    print(f"agentmesh agent: error: {message}", file=sys.stderr, flush=True)


async def run_agent(config_path: Path, broker: BrokerAddress, namespace: str = DEFAULT_NAMESPACE) -> int:
    """Run the agent of ``config_path`` until SIGINT/SIGTERM; the process exit code.

    0 after a clean drain; 2 when the config (or the model/callable it names) is invalid, with a
    one-line error naming the file and key on stderr; 1 when the broker cannot be reached.
    """
    path = str(config_path)
    try:
        config = load_agent_config(config_path)
    except ConfigError as exc:
        _fail(str(exc))
        return EXIT_USAGE
    bare = [c.name for c in config.capabilities if not c.examples]
    if bare:
        # Requests are worded like requests, not like cards: examples are what routes them here.
        log.warning(
            "%s: capabilities without examples: %s; requests reach a capability far more reliably "
            "when it lists a few typical ones (agents/README.md)",
            path,
            ", ".join(bare),
        )
    agent = Agent(config, broker, namespace=namespace)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            log.warning("already draining (signal %d again); SIGKILL ends the agent at once", signum)
            return
        log.info("signal %d: draining", signum)
        stop.set()

    installed: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal, int(sig))
            installed.append(sig)
    try:
        try:
            await agent.start()
        except ConfigError as exc:
            _fail(str(ConfigError(exc.reason, path=exc.path or path, field=exc.field)))
            return EXIT_USAGE
        except ModelError as exc:
            _fail(f"{path}:backend.model: {exc}")
            return EXIT_USAGE
        except TransportError as exc:
            _fail(str(exc))
            await agent.backend.close()
            return EXIT_FAILED
        freeze_startup_heap()
        caps = ", ".join(c.name for c in config.capabilities)
        print(
            f"agentmesh: agent {config.id} ({config.tier}: {caps}) online on {broker}; Ctrl-C stops it",
            file=sys.stderr,
            flush=True,
        )
        await stop.wait()
        await agent.stop()
        return EXIT_OK
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
