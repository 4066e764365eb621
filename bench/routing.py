"""Matching speed and accuracy of the HNSW registry at 1k, 10k and 100k capabilities.

For each size, all capabilities sit in one tier shard (the worst case: a step searches one shard),
10 per agent, with 5% of the agents offline so every query runs the *filtered* kNN. Per size:

- build: capabilities applied per second (cards carrying their vectors, as agents may publish them)
- update: capabilities re-applied per second when agents publish new card versions (labels
  replaced via mark_deleted + slot reuse, never a rebuild)
- memory: resident-set growth of the process while building the registry
- match p50/p99: the whole ``Matcher.match`` (filtered kNN, exact rescoring of the candidates,
  BM25, collapse to agents, score) for one query vector
- kNN p50: the filtered HNSW query alone
- brute force p50: exact numpy search over the same allowed vectors (matrix-vector product + top-k)
- recall@5: the matcher's kNN top-5 labels against the exact top-5 over the same vectors

Vectors: real all-MiniLM-L6-v2 embeddings of generated capability texts (10k) and queries; at 100k
the remaining 90k are stand-ins, reported twice: random unit vectors, and perturbed copies of the
real vectors (dense neighbourhoods, the harder case for HNSW).

    python bench/routing.py            # ~3-4 minutes on 2 cores
    python bench/routing.py --quick    # 1k only, a smoke run

Writes bench/results/routing.json.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import hashlib
import itertools
import json
import os
import platform
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# One thread for numpy's BLAS too: the matcher answers a query on one thread, and a fair brute
# force does the same (a multithreaded BLAS on 2 busy cores is slower and noisier anyway).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agentmesh.protocol import CapabilityVector, Presence  # noqa: E402
from agentmesh.registry import TUNED_MINILM_NAME, MiniLMEmbedder, Registry, normalize_rows  # noqa: E402
from agentmesh.registry.text import terms  # noqa: E402
from agentmesh.routing import Matcher, MatchWeights  # noqa: E402
from agentmesh.routing.matcher import PreparedQuery  # noqa: E402

RESULTS = ROOT / "bench" / "results"
CAPS_PER_AGENT = 10
OFFLINE_FRACTION = 0.05

VERBS = [
    ("summarize", "give me the gist of"),
    ("translate", "put into another language"),
    ("classify", "sort into categories"),
    ("extract key fields from", "pull the important fields out of"),
    ("proofread", "check for mistakes in"),
    ("answer questions about", "tell me about"),
    ("draft", "write a first version of"),
    ("review", "look over"),
    ("search", "find things in"),
    ("analyse", "dig into"),
    ("forecast trends in", "predict what happens with"),
    ("detect anomalies in", "spot anything odd in"),
    ("generate charts from", "plot"),
    ("convert", "change the format of"),
    ("audit", "check the compliance of"),
    ("index", "catalogue"),
    ("redact personal data from", "remove private details from"),
    ("compare", "contrast"),
    ("explain", "help me understand"),
    ("monitor", "keep an eye on"),
]
OBJECTS = [
    "legal contracts",
    "meeting transcripts",
    "customer emails",
    "sales reports",
    "source code",
    "medical records",
    "product reviews",
    "invoices",
    "research papers",
    "support tickets",
    "security camera footage",
    "sensor readings",
    "bank statements",
    "job applications",
    "news articles",
    "chat logs",
    "warehouse inventory",
    "social media posts",
    "tax forms",
    "shipping manifests",
    "server logs",
    "marketing copy",
    "lecture notes",
    "recipes",
    "travel itineraries",
]
CONTEXTS = [
    "for small businesses",
    "for hospitals",
    "in German",
    "in Japanese",
    "for a retail chain",
    "for software teams",
    "for students",
    "for insurance claims",
    "for a law firm",
    "at a factory",
    "for a newsroom",
    "for a bank",
    "in real time",
    "overnight in bulk",
    "for a city council",
    "on a phone",
    "at the edge",
    "for an online shop",
    "for researchers",
    "for a call centre",
]


def capability_texts(n: int, seed: int = 0) -> list[str]:
    combos = list(itertools.product(range(len(VERBS)), range(len(OBJECTS)), range(len(CONTEXTS))))
    random.Random(seed).shuffle(combos)
    return [f"{VERBS[v][0].capitalize()} {OBJECTS[o]} {CONTEXTS[c]}." for v, o, c in combos[:n]]


def query_texts(n: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        v, o, c = rng.randrange(len(VERBS)), rng.randrange(len(OBJECTS)), rng.randrange(len(CONTEXTS))
        out.append(f"Could you {VERBS[v][1]} these {OBJECTS[o]} {CONTEXTS[c]}?")
    return out


def cached_embeddings(embedder: MiniLMEmbedder, texts: list[str], cache: Path) -> np.ndarray:
    """MiniLM embeddings of ``texts``; the slow part of the first run, so kept on disk."""
    digest = hashlib.sha256("\n".join([embedder.model_name, *texts]).encode()).hexdigest()[:16]
    path = cache / f"minilm-{len(texts)}-{digest}.npy"
    if path.is_file():
        return np.load(path)
    vectors = embedder.embed(texts)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


def rss_bytes() -> int:
    """Resident set size, after handing freed heap back to the OS (so a previous size's registry
    does not hide this one's growth)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@dataclass
class Dataset:
    name: str
    vectors: np.ndarray
    texts: list[str]


def cards_for(vectors: np.ndarray, texts: list[str], version: int = 1) -> list[CapabilityVector]:
    cards = []
    for a in range(len(vectors) // CAPS_PER_AGENT):
        lo = a * CAPS_PER_AGENT
        caps = [{"name": f"cap{c}", "description": texts[lo + c]} for c in range(CAPS_PER_AGENT)]
        cards.append(
            CapabilityVector.model_validate(
                {
                    "agent_id": f"agent-{a:05d}",
                    "version": version,
                    "tier": "cloud",
                    "capabilities": caps,
                    "embedding": {
                        "model": TUNED_MINILM_NAME,  # MiniLMEmbedder() is the tuned model
                        "vectors": vectors[lo : lo + CAPS_PER_AGENT].tolist(),
                    },
                }
            )
        )
    return cards


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000.0, q))  # ms


def run_size(
    data: Dataset,
    queries: np.ndarray,
    query_texts_: list[str],
    embedder: MiniLMEmbedder,
    weights: MatchWeights,
) -> dict[str, Any]:
    n = len(data.vectors)
    cards = cards_for(data.vectors, data.texts)
    rss0 = rss_bytes()
    registry = Registry(embedder)
    threads = os.cpu_count() or 1
    t0 = time.perf_counter()
    registry.apply_many(registry.prepare_many(cards), num_threads=threads)
    build_s = time.perf_counter() - t0
    memory = rss_bytes() - rss0

    # New card versions for 10% of the agents (at most 1000 capabilities): labels replaced in place.
    n_update = max(1, min(len(cards) // 10, 100))
    updated = cards_for(data.vectors[: n_update * CAPS_PER_AGENT], data.texts, version=2)
    t0 = time.perf_counter()
    for card in updated:  # one by one, as card updates arrive
        registry.apply_vcv(card.agent_id, card)
    update_s = time.perf_counter() - t0

    rng = np.random.default_rng(0)
    offline = rng.choice(len(cards), size=max(1, int(len(cards) * OFFLINE_FRACTION)), replace=False)
    for a in offline:
        agent_id = f"agent-{a:05d}"
        registry.apply_presence(agent_id, Presence(id=agent_id, state="offline"))

    matcher = Matcher(registry, weights)
    index = registry.index("cloud")
    k = 5
    fetch = max(k * weights.oversample, weights.min_fetch)
    # The exact reference: every allowed label's vector, in label order.
    allowed_rows: list[int] = []
    labels: list[int] = []
    vectors: list[np.ndarray] = []
    for entry in registry.agents():
        entry_labels = index.labels_of(entry.agent_id)
        stacked = np.vstack(entry.vectors)
        for i, label in enumerate(entry_labels):
            labels.append(label)
            vectors.append(stacked[i])
            if entry.routable:
                allowed_rows.append(len(labels) - 1)
    matrix = np.ascontiguousarray(np.vstack(vectors)[allowed_rows], dtype=np.float32)
    allowed_labels = np.asarray(labels)[allowed_rows]
    blocked = set(labels) - set(allowed_labels.tolist())

    def allowed(label: int) -> bool:
        return label not in blocked

    # Sentence vector and lexical terms, as the router prepares a query (cards that bring their own
    # vectors have no token vectors, so late interaction does not apply here).
    prepared_queries = [
        PreparedQuery(t, q, None, terms(registry.glossary.expand(t)))
        for t, q in zip(query_texts_, queries, strict=True)
    ]
    for pq in prepared_queries[:20]:  # warm caches (filter, BLAS, lexical)
        matcher.match(pq, tier="cloud", k=k)

    # Each method in its own loop: brute force streams the whole matrix through the caches, which
    # would otherwise leave the next method's data cold.
    match_t, knn_t, brute_t = [], [], []
    recall_hits = 0
    for _ in range(3):
        for pq in prepared_queries:
            t0 = time.perf_counter()
            matcher.match(pq, tier="cloud", k=k)
            match_t.append(time.perf_counter() - t0)
    knn_labels = []
    for rep in range(3):
        for pq in prepared_queries:
            t0 = time.perf_counter()
            got, _ = index.knn(pq.vector, fetch, ef=max(weights.ef_search, fetch), allowed=allowed)
            knn_t.append(time.perf_counter() - t0)
            if rep == 0:
                knn_labels.append(set(got[:k].tolist()))
    for rep in range(3):
        for i, pq in enumerate(prepared_queries):
            t0 = time.perf_counter()
            sims = matrix @ pq.vector
            top = np.argpartition(-sims, k)[:k]
            top = top[np.argsort(-sims[top])]
            brute_t.append(time.perf_counter() - t0)
            if rep == 0:
                recall_hits += len(set(allowed_labels[top].tolist()) & knn_labels[i])
    recall = recall_hits / (k * len(prepared_queries))
    return {
        "dataset": data.name,
        "capabilities": n,
        "agents": len(cards),
        "offline_agents": len(offline),
        "build_caps_per_s": n / build_s,
        "update_caps_per_s": n_update * CAPS_PER_AGENT / update_s,
        "memory_mb": memory / 2**20,
        "index_resizes": index.resizes,
        "match_p50_ms": pct(match_t, 50),
        "match_p99_ms": pct(match_t, 99),
        "knn_p50_ms": pct(knn_t, 50),
        "brute_p50_ms": pct(brute_t, 50),
        "brute_p99_ms": pct(brute_t, 99),
        "speedup_match_vs_brute": pct(brute_t, 50) / pct(match_t, 50),
        "speedup_knn_vs_brute": pct(brute_t, 50) / pct(knn_t, 50),
        "recall_at_5": recall,
        "ef_search": weights.ef_search,
        "queries": len(prepared_queries),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1k capabilities only, 100 queries")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--out", type=Path, default=RESULTS / "routing.json")
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "agentmesh-bench",
        help="where MiniLM embeddings of the generated texts are kept between runs",
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a MatchWeights field"
    )
    parser.add_argument("--sizes", default="1k,10k,100k", help="comma-separated subset of 1k,10k,100k")
    args = parser.parse_args(argv)
    weights = MatchWeights.model_validate(
        {**MatchWeights().model_dump(), **dict(i.split("=", 1) for i in args.set)}
    )
    sizes = set(args.sizes.split(","))

    embedder = MiniLMEmbedder()
    n_real = 1_000 if args.quick else 10_000
    n_queries = 100 if args.quick else args.queries
    t0 = time.perf_counter()
    texts = capability_texts(n_real)
    real = cached_embeddings(embedder, texts, args.cache)
    qtexts = query_texts(n_queries)
    queries = cached_embeddings(embedder, qtexts, args.cache)
    embed_s = time.perf_counter() - t0
    print(f"{n_real} capability texts and {n_queries} queries embedded in {embed_s:.1f}s", file=sys.stderr)

    sets = [Dataset("MiniLM", real[:1_000], texts[:1_000])] if "1k" in sizes or args.quick else []
    if not args.quick and "10k" in sizes:
        sets.append(Dataset("MiniLM", real, texts))
    if not args.quick and "100k" in sizes:
        rng = np.random.default_rng(42)
        extra = 100_000 - n_real
        filler_texts = [f"Synthetic capability number {i}." for i in range(extra)]
        random_unit = normalize_rows(rng.normal(size=(extra, real.shape[1])))
        sets.append(Dataset("10k MiniLM + 90k random", np.vstack([real, random_unit]), texts + filler_texts))
        base = real[rng.integers(0, n_real, size=extra)]
        perturbed = normalize_rows(
            base + rng.normal(scale=0.35 / np.sqrt(real.shape[1]) * 4, size=base.shape)
        )
        sets.append(Dataset("10k MiniLM + 90k perturbed", np.vstack([real, perturbed]), texts + filler_texts))

    rows = []
    for data in sets:
        print(f"running {data.name} x {len(data.vectors)} ...", file=sys.stderr)
        rows.append(run_size(data, queries, qtexts, embedder, weights))

    header = (
        f"{'capabilities':>12} {'vectors':<28} {'match p50':>9} {'p99':>7} {'kNN p50':>8} {'brute p50':>9} "
        f"{'speedup':>7} {'recall@5':>8} {'build/s':>8} {'update/s':>8} {'memory':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['capabilities']:>12,} {r['dataset']:<28} "
            f"{r['match_p50_ms']:>7.3f}ms {r['match_p99_ms']:>5.2f}ms "
            f"{r['knn_p50_ms']:>6.3f}ms {r['brute_p50_ms']:>7.3f}ms {r['speedup_match_vs_brute']:>6.1f}x "
            f"{r['recall_at_5']:>8.3f} {r['build_caps_per_s']:>8,.0f} {r['update_caps_per_s']:>8,.0f} "
            f"{r['memory_mb']:>6.0f}MB"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": "routing",
        "command": " ".join(["python bench/routing.py", *(sys.argv[1:] if argv is None else argv)]),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "embedding_s": embed_s,
        "weights": weights.model_dump(),
        "results": rows,
    }
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nwrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
