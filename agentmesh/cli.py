"""The ``agentmesh`` command (DESIGN.md section 9).

Every subcommand is one ``Command`` in ``COMMANDS``: a name, a help line, a function that adds its
arguments and a function that runs it and returns the exit code (0 ok, 1 failed / nothing matched,
2 bad usage or input). Errors the runtime raises on purpose (AgentMeshError) print one line on
stderr, never a traceback. ``--json`` output is one JSON document on stdout; logs go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO, TypeVar

from agentmesh.errors import AgentMeshError, ConfigError, ProtocolError
from agentmesh.protocol import DEFAULT_NAMESPACE, TIERS, Topics
from agentmesh.transport import BROKER_ENV, DEFAULT_BROKER, BrokerAddress

log = logging.getLogger("agentmesh.cli")

T = TypeVar("T")


class UsageError(AgentMeshError):
    """Bad command-line input found after parsing (exit code 2)."""


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# ---- helpers ---------------------------------------------------------------------------------


def broker_of(args: argparse.Namespace) -> BrokerAddress:
    return BrokerAddress.resolve(args.broker)


def topics_of(args: argparse.Namespace) -> Topics:
    try:
        return Topics(args.namespace)
    except ProtocolError as exc:
        raise UsageError(f"--namespace: {exc}") from None


def run_async(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


async def connected_client(args: argparse.Namespace, role: str) -> Any:
    """A connected MqttClient for a one-shot command (plain session, unique id)."""
    from agentmesh.transport import MqttClient

    client = MqttClient(broker_of(args), client_id=f"agentmesh-{role}-{uuid.uuid4().hex[:10]}")
    await client.connect(timeout=args.connect_timeout)
    return client


def print_json(document: Any, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    json.dump(document, out, indent=2)
    out.write("\n")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], *, indent: str = "") -> list[str]:
    """Left-aligned columns (numbers right-aligned), two spaces apart."""
    cells = [[str(c) for c in headers], *[[_cell(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    numeric = [all(isinstance(row[i], int | float) for row in rows) and rows for i in range(len(headers))]
    lines = []
    for r in cells:
        parts = [
            c.rjust(w) if numeric[i] else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        lines.append(indent + "  ".join(parts).rstrip())
    return lines


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


# ---- agentmesh broker --------------------------------------------------------------------------


def configure_broker(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, default=1883, help="TCP port to listen on (default 1883)")
    p.add_argument(
        "--kind",
        choices=["auto", "mosquitto", "amqtt"],
        default="auto",
        help="auto: Mosquitto if installed, else the embedded amqtt broker",
    )


def run_broker(args: argparse.Namespace) -> int:
    from agentmesh.transport import start_broker

    async def serve() -> int:
        broker = await start_broker(args.port, prefer=args.kind)
        print(
            f"agentmesh: {broker.kind} broker listening on {broker.address} (Ctrl-C to stop)", file=sys.stderr
        )
        try:
            await wait_for_signal()
        finally:
            await broker.stop()
        return 0

    return run_async(serve())


async def wait_for_signal() -> None:
    """Until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)


# ---- agentmesh agent ---------------------------------------------------------------------------


def configure_agent(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", type=Path, metavar="CONFIG.yaml", help="agent config (DESIGN.md section 10)")


def run_agent(args: argparse.Namespace) -> int:
    from agentmesh.agent.command import run_agent as run  # heavy (model backends): only when asked

    return run_async(run(config_path=args.config, broker=broker_of(args), namespace=args.namespace))


# ---- agentmesh agents --------------------------------------------------------------------------


def configure_agents(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON document")


def run_agents(args: argparse.Namespace) -> int:
    from agentmesh.directory import snapshot
    from agentmesh.registry import Registry

    async def load() -> Registry:
        registry = Registry(indexed=False)  # listing needs no model
        client = await connected_client(args, "agents")
        try:
            await snapshot(client, topics_of(args), registry, timeout=args.connect_timeout)
        finally:
            await client.close()
        return registry

    registry = run_async(load())
    entries = registry.agents()
    if args.json:
        print_json(
            [
                {
                    "agent_id": e.agent_id,
                    "version": e.version,
                    "tier": e.tier,
                    "state": e.state,
                    "capabilities": e.capability_names,
                }
                for e in entries
            ]
        )
        return 0
    if not entries:
        print("no agents registered", file=sys.stderr)
        return 0
    rows = [
        (
            e.agent_id,
            e.version,
            e.tier,
            e.state,
            f"{e.load}/{e.capacity}",
            e.vcv.model.name if e.vcv.model else "-",
            ", ".join(e.capability_names),
        )
        for e in entries
    ]
    for line in table(["AGENT", "VERSION", "TIER", "STATE", "LOAD", "MODEL", "CAPABILITIES"], rows):
        print(line)
    return 0


# ---- agentmesh match ---------------------------------------------------------------------------


def configure_match(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "texts", nargs="+", metavar="TEXT", help="step texts to match; '-' reads one per line from stdin"
    )
    p.add_argument("--tier", choices=TIERS, help="match on this tier only (default: the tier ladder)")
    p.add_argument("-k", type=int, default=5, help="matches per text (default 5)")
    p.add_argument("--json", action="store_true", help="print one JSON document")


def read_queries(texts: Sequence[str], stdin: TextIO) -> list[str]:
    out: list[str] = []
    for text in texts:
        if text == "-":
            out.extend(line.strip() for line in stdin if line.strip())
        elif text.strip():
            out.append(text.strip())
    return out


def run_match(args: argparse.Namespace) -> int:
    from agentmesh.directory import snapshot
    from agentmesh.registry import Registry
    from agentmesh.routing import Match, Matcher, MatchWeights

    if args.k < 1:
        raise UsageError("-k must be at least 1")
    queries = read_queries(args.texts, sys.stdin)
    if not queries:
        raise UsageError("no query text given")

    async def compute() -> list[list[Match]]:
        registry = Registry()
        client = await connected_client(args, "match")
        try:
            await snapshot(client, topics_of(args), registry, timeout=args.connect_timeout)
        finally:
            await client.close()
        matcher = Matcher(registry, MatchWeights(k=args.k))
        if not len(registry):
            return [[] for _ in queries]
        await asyncio.to_thread(matcher.embed_queries, queries)  # one batch; matching hits the cache
        if args.tier:
            return [matcher.match(q, tier=args.tier, k=args.k) for q in queries]
        return [matcher.explain(q, k=args.k).ranked(args.k) for q in queries]

    results = run_async(compute())
    if args.json:
        print_json(
            [
                {"query": q, "matches": [m.to_json() for m in ms]}
                for q, ms in zip(queries, results, strict=True)
            ]
        )
    else:
        for i, (q, ms) in enumerate(zip(queries, results, strict=True)):
            if i:
                print()
            print(f"query: {q}")
            if not ms:
                print("  (no agent matches)")
                continue
            rows = [(n, m.agent_id, m.tier, m.capability, m.similarity, m.score) for n, m in enumerate(ms, 1)]
            for line in table(["#", "AGENT", "TIER", "CAPABILITY", "SIMILARITY", "SCORE"], rows, indent="  "):
                print(line)
    return 0 if all(results) else 1


# ---- the parser ----------------------------------------------------------------------------------

COMMANDS: tuple[Command, ...] = (
    Command(
        "broker", "run an MQTT broker (Mosquitto if installed, else embedded)", configure_broker, run_broker
    ),
    Command("agent", "run one agent until SIGINT/SIGTERM", configure_agent, run_agent),
    Command(
        "agents", "the registry: id, version, tier, presence, capabilities", configure_agents, run_agents
    ),
    Command(
        "match", "which agents steps with these texts would go to, with scores", configure_match, run_match
    ),
)


def _global_options(p: argparse.ArgumentParser, *, suppress: bool) -> None:
    # On the subcommands the defaults are suppressed, so `agentmesh agents --broker X` and
    # `agentmesh --broker X agents` both work without one overwriting the other.
    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    p.add_argument(
        "--broker",
        default=default(None),
        metavar="URL",
        help=f"mqtt://host:port or mqtts://host:port (else ${BROKER_ENV}, else {DEFAULT_BROKER})",
    )
    p.add_argument(
        "--namespace", default=default(DEFAULT_NAMESPACE), help=f"topic prefix (default {DEFAULT_NAMESPACE})"
    )
    p.add_argument(
        "-v", "--verbose", action="count", default=default(0), help="more logs on stderr (-vv: debug)"
    )
    p.add_argument(
        "--connect-timeout",
        type=float,
        default=default(10.0),
        metavar="S",
        help="seconds to wait for the broker (default 10)",
    )


def build_parser(commands: Sequence[Command] = COMMANDS) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentmesh", description="LLM agents on devices, edge boxes and clouds as one mesh over MQTT."
    )
    _global_options(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in commands:
        p = sub.add_parser(command.name, help=command.help, description=command.help)
        _global_options(p, suppress=True)
        command.configure(p)
        p.set_defaults(_run=command.run)
    return parser


def setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    if verbosity < 2:
        # amqtt and transformers are chatty at INFO.
        for noisy in ("amqtt", "transitions", "sentence_transformers", "transformers"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        return int(args._run(args))
    except (UsageError, ConfigError) as exc:
        print(f"agentmesh {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except AgentMeshError as exc:
        print(f"agentmesh {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # stdout closed early (e.g. piped into `head`): not an error of ours.
        with contextlib.suppress(OSError):
            sys.stdout = open("/dev/null", "w")  # noqa: SIM115 - silence the flush at exit
        return 0


if __name__ == "__main__":
    sys.exit(main())
