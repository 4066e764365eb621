"""``python -m agentmesh.agent CONFIG.yaml [--broker URL] [--namespace NS]``: run one agent."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from agentmesh.agent.command import EXIT_USAGE, run_agent
from agentmesh.errors import ConfigError
from agentmesh.protocol import DEFAULT_NAMESPACE
from agentmesh.transport import BrokerAddress


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agentmesh.agent", description="Run one agentmesh agent.")
    parser.add_argument("config", type=Path, help="agent config (YAML)")
    parser.add_argument(
        "--broker", help="mqtt://host:port (default: $AGENTMESH_BROKER or mqtt://127.0.0.1:1883)"
    )
    parser.add_argument(
        "--namespace", default=DEFAULT_NAMESPACE, help=f"topic namespace (default {DEFAULT_NAMESPACE})"
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        broker = BrokerAddress.resolve(args.broker)
    except ConfigError as exc:
        print(f"agentmesh agent: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return asyncio.run(run_agent(args.config, broker, args.namespace))


if __name__ == "__main__":
    sys.exit(main())
