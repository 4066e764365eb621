"""The intent bank: a bridge from what a request says to what a capability card says.

A small bi-encoder matches texts of the same level well and texts of different levels badly: "who
wrote Don Quixote?" is close to "who painted the Mona Lisa?" but far from "Answer short
general-knowledge questions" (cosine 0.07), which is how a card describes the skill. The bank holds
generic intents, each a card-like description with example requests, written for no particular
mesh (``agentmesh/data/intents.yaml``). A query finds its nearest examples (request to request);
their intents' descriptions are close to the cards that serve them (description to description).
So the query vector gets those descriptions added, weighted by how near their examples are, before
it is matched. A query near no example is left as it is.

The built-in bank's vectors for all-MiniLM-L6-v2 ship beside it (``intents.minilm.npz``), so a
router or ``agentmesh match`` does not spend seconds embedding 1000 texts at start; any other
embedder, or another bank, is embedded on load. ``python -m agentmesh.routing.intents`` rewrites
the shipped vectors after the bank changes (a test fails while they are stale).
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import yaml

from agentmesh.errors import ConfigError
from agentmesh.registry.embedder import MINILM_NAME, Embedder, Vectors, normalize_rows, same_model

DATA = Path(__file__).resolve().parents[1] / "data"
BUILTIN_BANK = DATA / "intents.yaml"
BUILTIN_VECTORS = DATA / "intents.minilm.npz"


@dataclass(frozen=True)
class IntentBank:
    descriptions: tuple[str, ...]
    description_vectors: Vectors  # one unit row per intent
    example_vectors: Vectors  # unit rows, each intent's examples contiguous
    starts: npt.NDArray[np.intp]  # first example row of each intent

    @classmethod
    def load(cls, embedder: Embedder, path: Path | str | None = None) -> IntentBank:
        """The bank at ``path`` (the built-in one by default), embedded with ``embedder``."""
        source = Path(path) if path is not None else BUILTIN_BANK
        try:
            raw = source.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read the intent bank: {exc}", path=str(source)) from None
        descriptions, examples = parse_bank(raw, source)
        builtin_for_minilm = path is None and same_model(embedder.model_name, MINILM_NAME)
        stored = _stored_vectors(raw) if builtin_for_minilm else None
        if stored is not None:
            description_vectors, example_vectors = stored
        else:
            flat = [e for group in examples for e in group]
            vectors = embedder.embed(list(descriptions) + flat)
            description_vectors, example_vectors = vectors[: len(descriptions)], vectors[len(descriptions) :]
        starts = np.cumsum([0] + [len(group) for group in examples[:-1]]).astype(np.intp)
        return cls(descriptions, normalize_rows(description_vectors), normalize_rows(example_vectors), starts)

    def nearest(
        self, vector: Vectors, *, floor: float, top: int, temperature: float
    ) -> list[tuple[int, float]]:
        """The ``top`` intents nearest ``vector`` (an intent is as near as its nearest example) with
        softmax weights over their nearness, best first; none when no example is ``floor`` near."""
        if not self.descriptions:
            return []
        nearness = np.maximum.reduceat(self.example_vectors @ vector, self.starts)
        top = min(top, len(nearness))
        best = np.argpartition(-nearness, top - 1)[:top]
        best = best[np.argsort(-nearness[best])]
        if float(nearness[best[0]]) < floor:
            return []
        w = np.exp((nearness[best] - nearness[best[0]]) / temperature)
        return list(zip(best.tolist(), (w / w.sum()).tolist(), strict=True))

    def expand(self, vector: Vectors, nearest: list[tuple[int, float]], weight: float) -> Vectors:
        """``vector`` plus the descriptions of its ``nearest`` intents by their weights, unit length
        again; unchanged when there are none."""
        if weight <= 0 or not nearest:
            return vector
        rows, shares = zip(*nearest, strict=True)
        bridge = np.asarray(shares, dtype=np.float32) @ self.description_vectors[list(rows)]
        out: Vectors = (vector + weight * bridge).astype(np.float32)
        return out / np.linalg.norm(out)


def parse_bank(raw: bytes, source: Path) -> tuple[tuple[str, ...], list[list[str]]]:
    """Descriptions and their example lists from a bank's YAML: ``[{intent: str, examples: [str]}]``."""
    try:
        # libyaml's loader when built in: the pure-Python one takes 0.1 s on the built-in bank.
        data = yaml.load(raw, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        raise ConfigError(f"the intent bank is not valid YAML: {exc}", path=str(source)) from None
    if not isinstance(data, list) or not data:
        raise ConfigError("the intent bank must be a non-empty list of {intent, examples}", path=str(source))
    descriptions: list[str] = []
    examples: list[list[str]] = []
    for i, item in enumerate(data):
        ok = (
            isinstance(item, dict)
            and isinstance(item.get("intent"), str)
            and isinstance(item.get("examples"), list)
            and item["examples"]
            and all(isinstance(e, str) and e.strip() for e in item["examples"])
        )
        if not ok:
            raise ConfigError(
                f"entry {i} needs an 'intent' text and a non-empty list of 'examples' texts",
                path=str(source),
            )
        descriptions.append(item["intent"])
        examples.append(list(item["examples"]))
    return tuple(descriptions), examples


def _digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def _stored_vectors(raw: bytes) -> tuple[Vectors, Vectors] | None:
    """The shipped MiniLM vectors of the built-in bank, if they were made from this very text."""
    try:
        with np.load(BUILTIN_VECTORS) as npz:
            if str(npz["sha256"]) != _digest(raw):
                return None
            return npz["descriptions"].astype(np.float32), npz["examples"].astype(np.float32)
    except (OSError, KeyError, ValueError):
        return None


def write_builtin_vectors(embedder: Embedder) -> Path:
    """Embed the built-in bank with ``embedder`` (all-MiniLM-L6-v2) and store the vectors beside it."""
    raw = BUILTIN_BANK.read_bytes()
    descriptions, examples = parse_bank(raw, BUILTIN_BANK)
    vectors = embedder.embed(list(descriptions) + [e for group in examples for e in group])
    np.savez(
        BUILTIN_VECTORS,
        sha256=np.array(_digest(raw)),
        descriptions=vectors[: len(descriptions)].astype(np.float16),
        examples=vectors[len(descriptions) :].astype(np.float16),
    )
    return BUILTIN_VECTORS


def main() -> int:
    from agentmesh.registry.embedder import MiniLMEmbedder

    path = write_builtin_vectors(MiniLMEmbedder())
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
