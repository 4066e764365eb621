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
    bare = [f"{e.agent_id}/{c.name}" for e in entries for c in e.vcv.capabilities if not c.examples]
    if bare:
        total = sum(len(e.vcv.capabilities) for e in entries)
        # Examples are what the matcher relies on most for requests worded unlike the card
        # (BENCHMARKS.md: on a mesh nobody tuned on, 8 per capability took top-1 from 0.76 to 0.94).
        print(
            f"note: {len(bare)} of {total} capabilities list no example requests ({', '.join(bare)}); "
            "requests reach a capability far more reliably when its card lists a few",
            file=sys.stderr,
        )
    return 0


# ---- agentmesh match ---------------------------------------------------------------------------


def configure_match(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "texts", nargs="+", metavar="TEXT", help="step texts to match; '-' reads one per line from stdin"
    )
    p.add_argument("--tier", choices=TIERS, help="match on this tier only (default: the tier ladder)")
    p.add_argument("-k", type=int, help="matches per text (default: the config's matching.k, 5)")
    p.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="a router config: match as that router would (its matching settings and glossaries)",
    )
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
    from agentmesh.registry import Glossary, Registry
    from agentmesh.router_config import RouterConfig
    from agentmesh.routing import Match, Matcher, PreparedQuery

    if args.k is not None and not 1 <= args.k <= 100:
        raise UsageError("-k must be between 1 and 100")
    queries = read_queries(args.texts, sys.stdin)
    if not queries:
        raise UsageError("no query text given")

    config = RouterConfig.load(args.config)
    weights = config.matching.model_copy(update={"k": args.k or config.matching.k})
    registry = Registry(glossary=Glossary.load(config.glossaries))

    async def compute() -> list[tuple[PreparedQuery | None, list[Match]]]:
        client = await connected_client(args, "match")
        try:
            await snapshot(client, topics_of(args), registry, timeout=args.connect_timeout)
        finally:
            await client.close()
        matcher = Matcher(registry, weights)
        if not len(registry):
            return [(None, []) for _ in queries]
        prepared = await asyncio.to_thread(matcher.prepare_queries, queries)
        if args.tier:
            return [(pq, matcher.match(pq, tier=args.tier, k=weights.k)) for pq in prepared]
        return [(pq, matcher.explain(pq, k=weights.k).ranked(weights.k)) for pq in prepared]

    answers = run_async(compute())
    results = [ms for _, ms in answers]
    if args.json:
        print_json(
            [
                {"query": q, "matches": [m.to_json() for m in ms]}
                for q, ms in zip(queries, results, strict=True)
            ]
        )
    else:
        for i, (q, (pq, ms)) in enumerate(zip(queries, answers, strict=True)):
            if i:
                print()
            print(f"query: {q}")
            # Which of the intent bank's descriptions the query was bridged with, and how much:
            # the answer to "why did it go there?" when the card shares no words with the query.
            bridges = [f"{text} ({share:.2f})" for text, share in (pq.intents if pq else ()) if share >= 0.1]
            if bridges:
                print("  intents: " + "; ".join(bridges))
            spelled = registry.glossary.found(q)
            if spelled:
                print("  acronyms: " + "; ".join(f"{a} = {e}" for a, e in spelled))
            if not ms:
                print("  (no agent matches)")
                continue
            rows = [(n, m.agent_id, m.tier, m.capability, m.similarity, m.score) for n, m in enumerate(ms, 1)]
            for line in table(["#", "AGENT", "TIER", "CAPABILITY", "SIMILARITY", "SCORE"], rows, indent="  "):
                print(line)
    return 0 if all(results) else 1


# ---- agentmesh router --------------------------------------------------------------------------


def configure_router(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config", type=Path, metavar="FILE", help="router YAML (configs/router.yaml lists every knob)"
    )
    p.add_argument("--router-id", help="override router_id from the config")


def run_router(args: argparse.Namespace) -> int:
    import os

    from agentmesh.heap import freeze_startup_heap
    from agentmesh.router import Router
    from agentmesh.router_config import RouterConfig

    config = RouterConfig.load(args.config)
    if args.router_id:
        config = RouterConfig.model_validate({**config.model_dump(), "router_id": args.router_id})
    if args.namespace != DEFAULT_NAMESPACE:
        config = RouterConfig.model_validate({**config.model_dump(), "namespace": args.namespace})
    # --broker, else $AGENTMESH_BROKER, else the config file, else the default.
    broker = BrokerAddress.resolve(args.broker or os.environ.get(BROKER_ENV) or config.broker)

    async def serve() -> int:
        async with Router(config, broker=broker) as router:
            freeze_startup_heap()
            print(
                f"agentmesh: router {config.router_id} on {broker}, ledger {config.ledger_path()} "
                f"({router.active_tasks} unfinished task(s) resumed); Ctrl-C stops it",
                file=sys.stderr,
            )
            await wait_for_signal()
        return 0

    return run_async(serve())


# ---- agentmesh submit --------------------------------------------------------------------------


def configure_submit(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "text",
        metavar="TEXT",
        nargs="?",
        default="",
        help="what to do ('-' reads it from stdin; optional with --plan)",
    )
    p.add_argument("--wait", action="store_true", help="wait for the result, showing progress on stderr")
    p.add_argument("--timeout", type=float, default=300.0, metavar="S", help="seconds to wait (default 300)")
    p.add_argument(
        "--plan",
        type=Path,
        metavar="FILE",
        help="an explicit plan: YAML/JSON {steps: [{id, instruction, depends_on}]}",
    )
    p.add_argument(
        "--planner", choices=["auto", "llm", "single", "explicit"], default="auto", help="default auto"
    )
    p.add_argument("--min-tier", choices=TIERS, default="device")
    p.add_argument("--max-tier", choices=TIERS, default="cloud")
    p.add_argument(
        "--max-cost-usd", type=float, metavar="USD", help="stop escalating once the task cost this much"
    )
    p.add_argument("--deadline-s", type=float, metavar="S", help="fail the task after this many seconds")
    p.add_argument("--region", help="only agents in this region")
    p.add_argument("--data-class", choices=["public", "internal", "personal"], help="default public")
    p.add_argument("--tag", action="append", default=[], help="required capability tag (repeatable)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    p.add_argument(
        "--json", action="store_true", help="print the TaskResult (or with no --wait the task id) as JSON"
    )


def _constraints(args: argparse.Namespace) -> Any:
    from pydantic import ValidationError

    from agentmesh.protocol import Constraints

    fields: dict[str, Any] = {"min_tier": args.min_tier, "max_tier": args.max_tier, "tags": args.tag}
    for name in ("max_cost_usd", "deadline_s", "region", "data_class"):
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    try:
        return Constraints.model_validate(fields)
    except ValidationError as exc:
        raise UsageError(exc.errors()[0]["msg"].removeprefix("Value error, ")) from None


def run_submit(args: argparse.Namespace) -> int:
    import time

    from agentmesh.client import MeshClient
    from agentmesh.config import load_yaml
    from agentmesh.errors import PlanError, TaskTimeout
    from agentmesh.planning import validate_plan
    from agentmesh.render import event_line

    text = sys.stdin.read().strip() if args.text == "-" else args.text
    try:
        plan = validate_plan(load_yaml(args.plan)) if args.plan else None
    except PlanError as exc:
        raise UsageError(f"{args.plan}: {exc}") from None
    if not text.strip() and plan is None:
        raise UsageError("TEXT is empty (give a task, or --plan FILE)")
    constraints = _constraints(args)

    if args.planner == "explicit" and plan is None:
        raise UsageError("--planner explicit needs --plan FILE")
    if args.timeout <= 0:
        raise UsageError(f"--timeout must be above 0 seconds, not {args.timeout:g}")

    async def submit() -> int:
        async with MeshClient(broker_of(args), namespace=args.namespace) as mesh:
            handle = await mesh.submit(
                text, plan=plan, planner=args.planner, constraints=constraints, events=args.wait
            )
            if not args.wait:
                if args.json:
                    print_json({"task_id": handle.task_id})
                else:
                    print(handle.task_id)
                return 0
            started = time.monotonic()
            if not args.quiet:
                print(f"task {handle.task_id}", file=sys.stderr)

            async def progress() -> None:
                async for event in handle.events():
                    if not args.quiet:
                        print(event_line(event, time.monotonic() - started), file=sys.stderr, flush=True)

            try:
                await asyncio.wait_for(progress(), args.timeout)
                result = await handle.result(timeout=max(1.0, args.timeout - (time.monotonic() - started)))
            except TimeoutError:
                raise TaskTimeout(task_id=handle.task_id, timeout_s=args.timeout) from None
        if args.json:
            print_json(result.model_dump(mode="json", exclude_none=True))
        elif result.status == "done":
            print(result.output)
            if not args.quiet:
                print(
                    f"done in {result.elapsed_ms / 1000:.2f}s, {result.escalations} escalation(s), "
                    f"{result.cloud_steps} cloud step(s); `agentmesh trace {result.task_id}` shows the DAG",
                    file=sys.stderr,
                )
        else:
            print(f"task {result.task_id} {result.status}: {result.error}", file=sys.stderr)
        return 0 if result.status == "done" else 1

    return run_async(submit())


# ---- agentmesh trace ---------------------------------------------------------------------------


def configure_trace(p: argparse.ArgumentParser) -> None:
    p.add_argument("task_id", metavar="TASK_ID")
    p.add_argument(
        "--ledger",
        type=Path,
        metavar="FILE",
        help="router ledger to read (default: every *.sqlite in ~/.local/state/agentmesh, then the broker)",
    )
    p.add_argument(
        "--json", action="store_true", help="print the task's state (ledger) or TaskResult (broker)"
    )


def _ledger_files(explicit: Path | None) -> list[Path]:
    if explicit is not None:
        if not explicit.is_file():
            raise UsageError(f"ledger {explicit} does not exist")
        return [explicit]
    state = Path("~/.local/state/agentmesh").expanduser()
    return sorted(state.glob("*.sqlite")) if state.is_dir() else []


def run_trace(args: argparse.Namespace) -> int:
    from agentmesh.client import MeshClient
    from agentmesh.orchestration import Ledger
    from agentmesh.render import result_header, trace_lines, views_from_result, views_from_task

    for path in _ledger_files(args.ledger):
        ledger = Ledger(path)
        try:
            task = ledger.get(args.task_id)
        finally:
            ledger.close()
        if task is None:
            continue
        if args.json:
            print_json(task.model_dump(mode="json", exclude_none=True))
        else:
            running = None if task.finished else task.status
            header = f"{result_header(task.result(), running)}  (ledger {path})"
            print("\n".join(trace_lines(header, views_from_task(task))))
        return 1 if task.status in ("failed", "rejected") else 0

    async def fetch() -> Any:
        async with MeshClient(broker_of(args), namespace=args.namespace) as mesh:
            return await mesh.fetch_result(args.task_id, timeout=args.connect_timeout)

    result = run_async(fetch())
    if result is None:
        print(
            f"task {args.task_id}: not in a router ledger here, and the broker holds no result for it",
            file=sys.stderr,
        )
        if args.json:
            print_json(None)  # still one JSON document for a script
        return 1
    if args.json:
        print_json(result.model_dump(mode="json", exclude_none=True))
    else:
        header = f"{result_header(result)}  (broker; run on the router's machine for dependencies)"
        print("\n".join(trace_lines(header, views_from_result(result))))
    return 0 if result.status == "done" else 1


# ---- agentmesh up ------------------------------------------------------------------------------


def configure_up(p: argparse.ArgumentParser) -> None:
    p.add_argument("mesh", nargs="?", type=Path, metavar="MESH.yaml", help="default configs/demo.yaml")


def run_up(args: argparse.Namespace) -> int:
    from agentmesh.mesh import default_mesh_file, run_mesh

    path = args.mesh or default_mesh_file()
    if not path.is_file():
        raise UsageError(f"mesh file {path} not found")
    return run_async(run_mesh(path, broker=args.broker))


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
    Command("router", "run a router until SIGINT/SIGTERM", configure_router, run_router),
    Command(
        "submit", "submit a task; --wait shows progress and prints the answer", configure_submit, run_submit
    ),
    Command("trace", "a task's DAG: steps, agents, tiers, attempts, escalations", configure_trace, run_trace),
    Command("up", "demo: broker if none answers, router and agents in one process", configure_up, run_up),
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
        p.set_defaults(_run=command.run, _parser=p)
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
    args, extra = parser.parse_known_args(argv)
    if extra:  # argparse would name them under the top-level usage, not the command's
        args._parser.error(f"unrecognized arguments: {' '.join(extra)}")
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
