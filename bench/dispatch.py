"""Task latency and throughput through one router, against the raw broker floor in the same run.

    python bench/dispatch.py                 # full run (a few minutes)
    python bench/dispatch.py --quick         # smoke run

What runs (all on this machine, a fresh Mosquitto with broker/mosquitto.conf: set_tcp_nodelay true):
- floor: the same four broker hops a single-step task makes (client -> router -> agent -> router
  -> client), done by two relay processes that only forward bytes (QoS 1, TCP_NODELAY clients);
- mesh: `agentmesh router` and python echo agents (`agentmesh.agent.tools:echo`) as processes,
  and a MeshClient here submitting tasks:
  * single-step latency (one task at a time), p50/p99, measured in rounds that alternate with
    rounds of the floor, so both see the same machine;
  * 5-step DAG latency (s1 -> s2,s3,s4 -> s5), p50/p99;
  * throughput: N single-step tasks with a window of W in flight; tasks/s and tasks lost.
Task texts repeat, so the router's query embedding comes from its cache; the cost of embedding
a new text is measured separately and reported (it is the same MiniLM call `agentmesh match` makes).
Prints a table and writes bench/results/dispatch.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from agentmesh import MeshClient
from agentmesh.protocol import TaskResult
from agentmesh.transport import BrokerAddress, MosquittoBroker, MqttClient

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "dispatch.json"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


# ---- the raw floor ---------------------------------------------------------------------------


async def relay(broker: str, role: str) -> None:
    """A process that forwards: 'router' role raw/submit->raw/inbox and raw/results->raw/reply;
    'agent' role raw/inbox->raw/results."""
    routes = (
        {"raw/submit": "raw/inbox", "raw/results": "raw/reply"}
        if role == "router"
        else {"raw/inbox": "raw/results"}
    )
    async with MqttClient(broker, client_id=f"relay-{role}-{os.getpid()}") as client:
        subs = [await client.subscribe(t) for t in routes]
        print("ready", flush=True)

        async def pump(sub: Any) -> None:
            async for msg in sub:
                client.publish_nowait(routes[msg.topic], msg.payload)

        await asyncio.gather(*(pump(s) for s in subs))


class Floor:
    """The two relay processes and a client that times round trips through them."""

    def __init__(self, broker: BrokerAddress) -> None:
        self.broker = broker
        self.procs: list[subprocess.Popen[str]] = []
        self.client = MqttClient(broker, client_id="floor-client")

    async def __aenter__(self) -> Floor:
        self.procs = [
            subprocess.Popen(
                [sys.executable, __file__, "--relay", role, "--broker", self.broker.url],
                stdout=subprocess.PIPE,
                text=True,
            )
            for role in ("router", "agent")
        ]
        for p in self.procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        await self.client.connect()
        self.replies = await self.client.subscribe("raw/reply")
        await self.measure(20)  # warm-up
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.close()
        for p in self.procs:
            p.kill()
            p.wait()

    async def measure(self, n: int) -> list[float]:
        lat = []
        for _ in range(n):
            t = time.perf_counter()
            await self.client.publish("raw/submit", b"x" * 200)
            await self.replies.get(timeout=10)
            lat.append((time.perf_counter() - t) * 1000)
        return lat


# ---- the mesh --------------------------------------------------------------------------------


def start_mesh(
    broker: BrokerAddress, workdir: Path, agents: int, concurrency: int
) -> list[subprocess.Popen[bytes]]:
    router_cfg = workdir / "router.yaml"
    router_cfg.write_text(
        yaml.safe_dump(
            {"router_id": "bench-router", "ledger": str(workdir / "ledger.sqlite"), "result_ttl_s": 3600}
        )
    )
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agentmesh",
                "--broker",
                broker.url,
                "router",
                "--config",
                str(router_cfg),
            ],
            stderr=(workdir / "router.log").open("wb"),
        )
    ]
    for i in range(agents):
        cfg = {
            "id": f"echo-{i}",
            "tier": "device",
            "capabilities": [
                {"name": "echo", "description": "Repeat the given text back.", "tags": ["echo", "test"]}
            ],
            "backend": {"kind": "python", "callable": "agentmesh.agent.tools:echo", "inline": True},
            "concurrency": concurrency,
        }
        path = workdir / f"echo-{i}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "agentmesh", "--broker", broker.url, "agent", str(path)],
                stderr=(workdir / f"echo-{i}.log").open("wb"),
                env=dict(os.environ, AGENTMESH_STATE_DIR=str(workdir / "state")),
            )
        )
    return procs


async def wait_ready(mesh: MeshClient, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = await mesh.run("echo ready", timeout=10)
            if result.status == "done":
                return
        except Exception:
            await asyncio.sleep(0.5)
    raise RuntimeError("the mesh did not come up")


DAG = {
    "steps": [
        {"id": "s1", "instruction": "echo one"},
        {"id": "s2", "instruction": "echo two", "depends_on": ["s1"]},
        {"id": "s3", "instruction": "echo three", "depends_on": ["s1"]},
        {"id": "s4", "instruction": "echo four", "depends_on": ["s1"]},
        {"id": "s5", "instruction": "echo five", "depends_on": ["s2", "s3", "s4"]},
    ]
}


async def latency(mesh: MeshClient, n: int, **kwargs: Any) -> list[float]:
    lat = []
    for _ in range(n):
        t = time.perf_counter()
        result = await mesh.run("echo ping", timeout=30, **kwargs)
        assert result.status == "done", result.error
        lat.append((time.perf_counter() - t) * 1000)
    return lat


async def throughput(mesh: MeshClient, n: int, window: int) -> dict[str, float]:
    sem = asyncio.Semaphore(window)
    results: list[TaskResult | None] = []

    async def one() -> None:
        async with sem:
            handle = await mesh.submit("echo ping")
        try:
            results.append(await handle.result(timeout=120))
        except Exception:
            results.append(None)

    t = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    elapsed = time.perf_counter() - t
    done = sum(1 for r in results if r is not None and r.status == "done")
    return {
        "tasks": n,
        "window": window,
        "seconds": elapsed,
        "tasks_per_s": n / elapsed,
        "done": done,
        "lost": n - done,
    }


def embed_cost_ms() -> float:
    from agentmesh.registry import MiniLMEmbedder

    emb = MiniLMEmbedder()
    emb.embed(["warm up"])
    t = time.perf_counter()
    for i in range(50):
        emb.embed([f"translate sentence number {i} into French"])
    return (time.perf_counter() - t) / 50 * 1000


async def main(args: argparse.Namespace) -> dict[str, Any]:
    broker = MosquittoBroker()
    broker.start_sync()
    workdir = Path(tempfile.mkdtemp(prefix="agentmesh-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        print(f"broker {broker.address}", flush=True)
        procs = start_mesh(broker.address, workdir, args.agents, args.concurrency)
        async with MeshClient(broker.address, client_id="bench-client") as mesh, Floor(broker.address) as raw:
            print("waiting for the router and agents...", flush=True)
            await wait_ready(mesh)
            await latency(mesh, 20)  # warm-up
            # Interleaved in small rounds, so the floor and the tasks see the same (shared, noisy)
            # machine rather than whatever each phase happened to get.
            rounds = max(1, args.latency_n // 25)
            print(
                f"single-step latency and the floor ({args.latency_n} of each, one at a time, "
                f"interleaved in {rounds} rounds)...",
                flush=True,
            )
            floor: list[float] = []
            single: list[float] = []
            for i in range(rounds):
                n = args.latency_n // rounds + (1 if i < args.latency_n % rounds else 0)
                floor += await raw.measure(n)
                single += await latency(mesh, n)
            print(f"5-step DAG latency ({args.dag_n} tasks)...", flush=True)
            dag = await latency(mesh, args.dag_n, plan=DAG)
            print(f"throughput ({args.tasks} tasks, window {args.window})...", flush=True)
            tput = await throughput(mesh, args.tasks, args.window)
        embed_ms = embed_cost_ms()
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        broker.cleanup()
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "floor_4_hops_ms": {"p50": pct(floor, 50), "p99": pct(floor, 99), "n": len(floor)},
        "single_step_ms": {"p50": pct(single, 50), "p99": pct(single, 99), "n": len(single)},
        "dag_5_steps_ms": {"p50": pct(dag, 50), "p99": pct(dag, 99), "n": len(dag)},
        "single_over_floor_p50": pct(single, 50) / pct(floor, 50),
        "throughput": tput,
        "embed_new_text_ms": embed_ms,
        "agents": args.agents,
        "agent_concurrency": args.concurrency,
        "mean_single_ms": statistics.fmean(single),
    }
    return report


def print_table(r: dict[str, Any]) -> None:
    rows = [
        ("raw 4 broker hops (floor)", r["floor_4_hops_ms"]),
        ("single-step task", r["single_step_ms"]),
        ("5-step DAG task", r["dag_5_steps_ms"]),
    ]
    print(f"\n{'what':<28}{'p50 ms':>10}{'p99 ms':>10}{'n':>7}")
    for name, v in rows:
        print(f"{name:<28}{v['p50']:>10.2f}{v['p99']:>10.2f}{v['n']:>7}")
    t = r["throughput"]
    print(f"\nsingle-step p50 / floor p50: {r['single_over_floor_p50']:.2f}x (goal <= 2x)")
    print(
        f"throughput: {t['tasks_per_s']:.0f} tasks/s ({t['tasks']} tasks, window {t['window']}, "
        f"{t['seconds']:.1f}s); done {t['done']}, lost {t['lost']} (goal >= 300/s, 0 lost)"
    )
    print(f"embedding a new task text (MiniLM, CPU): {r['embed_new_text_ms']:.1f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small counts for a smoke run")
    parser.add_argument("--latency-n", type=int, default=300)
    parser.add_argument("--dag-n", type=int, default=100)
    parser.add_argument("--tasks", type=int, default=3000)
    parser.add_argument("--window", type=int, default=200)
    parser.add_argument("--agents", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--relay", choices=["router", "agent"], help=argparse.SUPPRESS)
    parser.add_argument("--broker", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.relay:
        asyncio.run(relay(args.broker, args.relay))
        sys.exit(0)
    if args.quick:
        args.latency_n, args.dag_n, args.tasks = 50, 20, 300
    report = asyncio.run(main(args))
    print_table(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {args.out}")
