"""How long a full garbage collection stops a router, with its startup heap frozen and without.

    python bench/gc_pause.py

Starts a real Mosquitto and a Router (in this process, as `agentmesh router` runs it: MiniLM and
the intent bank loaded at start), then times `gc.collect()` (a full collection: what Python runs
on its own every so often as objects survive) several times; then freezes the heap as the CLI's
processes do after startup (`agentmesh.freeze_startup_heap`) and times it again. While a
collection runs, the router's event loop, and so every task in flight, waits.
Prints a table and writes bench/results/gc_pause.json.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from agentmesh import Router, RouterConfig, freeze_startup_heap
from agentmesh.transport import MosquittoBroker

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results" / "gc_pause.json"
RUNS = 7


def full_collections() -> list[float]:
    out = []
    for _ in range(RUNS):
        t = time.perf_counter()
        gc.collect()
        out.append((time.perf_counter() - t) * 1000)
    return out


async def measure() -> dict[str, Any]:
    broker = MosquittoBroker()
    broker.start_sync()
    try:
        with tempfile.TemporaryDirectory(prefix="agentmesh-gc-") as tmp:
            config = RouterConfig(router_id="gc-bench", ledger=str(Path(tmp) / "ledger.sqlite"))
            async with Router(config, broker=broker.address):
                tracked = len(gc.get_objects())
                before = full_collections()
                freeze_startup_heap()
                try:
                    after = full_collections()
                    left = len(gc.get_objects())
                finally:
                    gc.unfreeze()
    finally:
        broker.stop_sync()
    return {
        "objects_tracked": tracked,
        "objects_tracked_after_freeze": left,
        "full_collection_ms": {"p50": statistics.median(before), "max": max(before), "n": RUNS},
        "frozen_full_collection_ms": {"p50": statistics.median(after), "max": max(after), "n": RUNS},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    print("starting Mosquitto and a router (loads MiniLM)...", flush=True)
    r = asyncio.run(measure())
    r["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    print(f"\n{'a full collection in the router':36} {'objects walked':>14} {'p50 ms':>8} {'max ms':>8}")
    for label, key, objects in (
        ("as started", "full_collection_ms", r["objects_tracked"]),
        ("startup heap frozen", "frozen_full_collection_ms", r["objects_tracked_after_freeze"]),
    ):
        print(f"{label:36} {objects:>14} {r[key]['p50']:8.2f} {r[key]['max']:8.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(r, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
