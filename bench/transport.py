"""QoS 1 publish rate of one MqttClient past paho's in-flight limit.

    python bench/transport.py            # 4 rounds of 20000 messages per variant (~30 s)
    python bench/transport.py --quick    # smoke run

A busy router publishes faster than PUBACKs come back, so more than ``max_inflight`` (1000)
QoS 1 publishes are outstanding and paho queues the rest. On every PUBACK paho then walks all
unacknowledged messages, oldest first, to find a queued one to release: O(in flight) per PUBACK.
The transport keeps its queued publishes in a FIFO instead. This measures one client sending a
burst of QoS 1 messages (yielding to the loop every 200) until the last is acknowledged, with the
transport as shipped and with paho's own ``publish``/``_update_inflight`` put back, in
alternating rounds on one fresh Mosquitto, so both see the same machine.

Prints a table and writes bench/results/transport.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho

from agentmesh.transport import BrokerAddress, MosquittoBroker, MqttClient
from agentmesh.transport.client import _LoopClient

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results" / "transport.json"
VARIANTS = {
    "agentmesh transport": (_LoopClient.publish, _LoopClient._update_inflight),
    "paho's in-flight walk": (paho.Client.publish, paho.Client._update_inflight),
}


async def burst(broker: BrokerAddress, variant: str, n: int) -> tuple[float, float]:
    """(messages/s until the last PUBACK, CPU us per message) for one burst."""
    _LoopClient.publish, _LoopClient._update_inflight = VARIANTS[variant]  # type: ignore[method-assign]
    client = MqttClient(broker, client_id="bench-transport")
    await client.connect()
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        for i in range(n - 1):
            client.publish_nowait("bench/transport", b"x" * 300)
            if i % 200 == 199:
                await asyncio.sleep(0)
        await client.publish("bench/transport", b"end", timeout=120)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        await client.close()
    return n / wall, cpu / n * 1e6


async def main(args: argparse.Namespace) -> dict[str, Any]:
    broker = MosquittoBroker()
    broker.start_sync()
    shipped = VARIANTS["agentmesh transport"]
    rates: dict[str, list[float]] = {v: [] for v in VARIANTS}
    cpus: dict[str, list[float]] = {v: [] for v in VARIANTS}
    try:
        for r in range(args.rounds):
            for variant in VARIANTS:
                rate, cpu = await burst(broker.address, variant, args.messages)
                rates[variant].append(rate)
                cpus[variant].append(cpu)
                print(f"round {r + 1}/{args.rounds} {variant}: {rate:,.0f} msg/s", flush=True)
    finally:
        _LoopClient.publish, _LoopClient._update_inflight = shipped  # type: ignore[method-assign]
        broker.cleanup()
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "messages_per_burst": args.messages,
        "rounds": args.rounds,
        "variants": {
            v: {
                "msg_per_s_median": statistics.median(rates[v]),
                "cpu_us_per_msg_median": statistics.median(cpus[v]),
                "msg_per_s": rates[v],
            }
            for v in VARIANTS
        },
    }


def print_table(report: dict[str, Any]) -> None:
    print(f"\n{'variant':26s} {'msg/s (median)':>15s} {'CPU us/msg':>11s}")
    for name, v in report["variants"].items():
        print(f"{name:26s} {v['msg_per_s_median']:15,.0f} {v['cpu_us_per_msg_median']:11.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20000, help="QoS 1 messages per burst")
    parser.add_argument("--rounds", type=int, default=4, help="bursts per variant, alternating")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 3000 (a smoke run)")
    ns = parser.parse_args()
    if ns.quick:
        ns.messages, ns.rounds = 3000, 2
    result = asyncio.run(main(ns))
    print_table(result)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {RESULTS}")
