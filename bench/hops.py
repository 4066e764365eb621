"""Where a single-step task's time goes, hop by hop, against the floor's same four hops.

    python bench/hops.py                  # 1200 single-step tasks and 1200 floor round trips
    python bench/hops.py --latency-n 300  # quicker

Runs bench/dispatch.py with every process traced: a sitecustomize.py on PYTHONPATH wraps paho's
socket send and the MQTT client's read callback (and, in the router and agents, a few handlers)
to log CLOCK_MONOTONIC timestamps, which all processes on one machine share. A task's timeline is
then stitched across processes: the client's submit, the router waking and sending the
assignment, the agent waking and sending its result, the router waking and sending the reply,
the client waking. The floor's relays get the same treatment, so each segment of the mesh sits
next to the floor's. The tracing itself adds a few microseconds per probe to both.

Prints the segment table (p50, microseconds) and the handler probes inside each process's
segment, and writes bench/results/hops.json.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "hops.json"

# Loaded by every Python process of the run (PYTHONPATH); only traces when AGENTMESH_HOPS is set.
SITECUSTOMIZE = r"""
import os, sys, time
_dir = os.environ.get("AGENTMESH_HOPS")
if _dir:
    if "--relay" in sys.argv:
        role = "relay-" + sys.argv[sys.argv.index("--relay") + 1]
    elif "router" in sys.argv:
        role = "router"
    elif "agent" in sys.argv:
        role = "agent"
    else:
        role = "client"
    _out = open(os.path.join(_dir, f"{role}-{os.getpid()}.log"), "w", buffering=1 << 16)
    import atexit
    atexit.register(_out.flush)
    _now = time.perf_counter_ns
    import paho.mqtt.client as _pc
    import agentmesh.transport.client as _tc

    _send = _pc.Client._sock_send
    def _sock_send(self, buf):
        t = _now()
        r = _send(self, buf)
        b = bytes(buf)
        kinds = "".join(k for k, marks in (("A", (b"/inbox",)), ("R", (b"/clients/", b"raw/reply")),
                                           ("T", (b"/results",)), ("Q", (b"/submit",)), ("r", (b"raw/",)))
                        if any(m in b for m in marks))
        _out.write(f"send {kinds or '-'} {t} {_now()} {len(b)}\n")
        return r
    _pc.Client._sock_send = _sock_send

    def _probe(owner, name, label):
        orig = getattr(owner, name)
        def probed(*a, **k):
            t = _now()
            try:
                return orig(*a, **k)
            finally:
                _out.write(f"probe {label} {t} {_now()}\n")
        setattr(owner, name, probed)

    _read = _tc.MqttClient._on_readable
    _wakes = [0]
    def _on_readable(self):
        t = _now()
        _read(self)
        _out.write(f"wake - {t} {_now()}\n")
        _wakes[0] += 1
        if _wakes[0] % 64 == 0:  # the relays are killed, not stopped: no atexit
            _out.flush()
    _tc.MqttClient._on_readable = _on_readable
    _probe(_pc.Client, "_handle_publish", "paho handle_publish")
    if role in ("router", "agent"):
        import agentmesh.router as _r, agentmesh.agent.runtime as _a
        import agentmesh.orchestration.ledger as _l, agentmesh.routing.matcher as _m
        for owner, name in ((_r.Router, "_on_submit"), (_r.Router, "_on_result"), (_r.Router, "_send"),
                            (_l.Ledger, "save_many"), (_m.Matcher, "route"), (_a.Agent, "_on_message"),
                            (_a.Agent, "_answer_inline")):
            _probe(owner, name, f"{owner.__name__}.{name}")
        for mod in (_r, _a):
            _probe(mod, "decode", "decode")
"""

SEGMENTS = [
    "client: submit send",
    "hop 1: broker to router",
    "router: submit (wake -> assignment sent)",
    "hop 2: broker to agent",
    "agent: step (wake -> result sent)",
    "hop 3: broker to router",
    "router: result (wake -> reply sent)",
    "hop 4: broker to client",
    "total (submit -> client wakes)",
]


def load(trace_dir: Path) -> tuple[dict[str, list[tuple[str, str, int, int, int]]], dict[str, list[Any]]]:
    """Per role, the sends and wakes in time order, and the probes. The busiest process of a role
    stands for it (the bench runs two echo agents; one gets the one-at-a-time tasks)."""
    events: dict[str, list[tuple[str, str, int, int, int]]] = {}
    probes: dict[str, list[Any]] = {}
    for path in trace_dir.glob("*.log"):
        role = path.stem.rsplit("-", 1)[0]
        evs, prs = [], []
        for line in path.read_text().splitlines():
            parts = line.split()
            try:
                if parts[0] == "probe":
                    prs.append((" ".join(parts[1:-2]), int(parts[-2]), int(parts[-1])))
                else:
                    size = int(parts[4]) if len(parts) > 4 else 0
                    evs.append((parts[0], parts[1], int(parts[2]), int(parts[3]), size))
            except (IndexError, ValueError):
                continue  # the last line of a killed process, cut short
        if len(evs) > len(events.get(role, [])):
            events[role] = sorted(evs, key=lambda e: e[2])
            probes[role] = prs
    return events, probes


def timelines(events: dict[str, list[Any]], mesh: bool) -> list[list[int]]:
    """Per task: (router wake, assignment sent, agent wake, result sent, router wake, reply sent,
    segments...). The floor's topics start with raw/; each submit is followed to the next matching
    send of the next process."""
    router, agent = ("router", "agent") if mesh else ("relay-router", "relay-agent")
    client = events["client"]

    starts = {role: [e[2] for e in evs] for role, evs in events.items()}

    def after(role: str, kind: str, t: int, exclude: str = "") -> Any:
        evs = events[role]
        for e in evs[bisect.bisect_left(starts[role], t) :]:
            if e[0] == "send" and kind in e[1] and not (exclude and exclude in e[1]):
                return e
        return None

    def last_wake(role: str, lo: int, hi: int) -> Any:
        evs = events[role]
        for e in reversed(evs[bisect.bisect_left(starts[role], lo) : bisect.bisect_right(starts[role], hi)]):
            if e[0] == "wake":
                return e
        return None

    out = []
    submits = [e for e in client if e[0] == "send" and "Q" in e[1] and ("r" in e[1]) != mesh]
    for q in submits[20:]:  # past the warm-up
        a = after(router, "A", q[2])
        t = after(agent, "T", a[3]) if a else None
        r = after(router, "R", t[3], exclude="A") if t else None
        if not (a and t and r):
            continue
        w1, w2, w3 = (
            last_wake(router, q[2], a[2]),
            last_wake(agent, a[2], t[2]),
            last_wake(router, t[2], r[2]),
        )
        w4 = next((e for e in client[bisect.bisect_left(starts["client"], r[3]) :] if e[0] == "wake"), None)
        if not (w1 and w2 and w3 and w4) or w4[2] - q[2] > 50_000_000:
            continue
        stamps = [q[2], q[3], w1[2], a[3], w2[2], t[3], w3[2], r[3], w4[2]]
        segs = [b - a_ for a_, b in itertools.pairwise(stamps)] + [w4[2] - q[2]]
        out.append([w1[2], a[3], w2[2], t[3], w3[2], r[3], *segs])
    return out


def inside(probes: list[Any], spans: list[tuple[int, int]]) -> dict[str, dict[str, float]]:
    """p50 start (from the span's start) and p50 total duration of each probe within the spans."""
    starts: dict[str, list[int]] = defaultdict(list)
    totals: dict[str, list[int]] = defaultdict(list)
    ordered = sorted(probes, key=lambda p: p[1])
    begins = [p[1] for p in ordered]
    for lo, hi in spans:
        seen: dict[str, int] = {}
        for label, t0, t1 in ordered[bisect.bisect_left(begins, lo) : bisect.bisect_right(begins, hi)]:
            if t1 <= hi:
                if label not in seen:
                    starts[label].append(t0 - lo)
                seen[label] = seen.get(label, 0) + t1 - t0
        for label, total in seen.items():
            totals[label].append(total)
    return {
        label: {
            "start_us": statistics.median(starts[label]) / 1000,
            "dur_us": statistics.median(totals[label]) / 1000,
        }
        for label in sorted(starts, key=lambda k: statistics.median(starts[k]))
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--latency-n", type=int, default=1200, help="single-step tasks (and floor round trips)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="agentmesh-hops-") as tmp:
        site, logs = Path(tmp) / "site", Path(tmp) / "logs"
        site.mkdir()
        logs.mkdir()
        (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
        env = {**os.environ, "PYTHONPATH": str(site), "AGENTMESH_HOPS": str(logs)}
        cmd = [
            sys.executable,
            str(ROOT / "bench" / "dispatch.py"),
            "--latency-n",
            str(args.latency_n),
            "--dag-n",
            "5",
            "--tasks",
            "50",
            "--out",
            str(Path(tmp) / "dispatch.json"),
        ]
        print("running", " ".join(cmd[1:]), "with every process traced...", flush=True)
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
        events, probes = load(logs)
    mesh, floor = timelines(events, mesh=True), timelines(events, mesh=False)
    if not mesh or not floor:
        print("no complete task timelines in the traces", file=sys.stderr)
        return 1

    def p50(rows: list[list[int]], i: int) -> float:
        return statistics.median(r[6 + i] for r in rows) / 1000

    print(f"\n{'segment (p50, us)':42} {'mesh':>8} {'floor':>8}")
    table = {}
    for i, name in enumerate(SEGMENTS):
        table[name] = {"mesh_us": p50(mesh, i), "floor_us": p50(floor, i)}
        print(f"{name:42} {table[name]['mesh_us']:8.1f} {table[name]['floor_us']:8.1f}")
    print(f"({len(mesh)} tasks, {len(floor)} floor round trips)")
    inner = {}
    for label, role, lo, hi in (
        ("router: submit", "router", 0, 1),
        ("agent: step", "agent", 2, 3),
        ("router: result", "router", 4, 5),
    ):
        inner[label] = inside(probes.get(role, []), [(r[lo], r[hi]) for r in mesh])
        print(f"\n{label}: probe p50 start / duration (us)")
        for probe, v in inner[label].items():
            print(f"  {probe:28} {v['start_us']:7.1f} {v['dur_us']:7.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"segments": table, "probes": inner, "tasks": len(mesh)}, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
