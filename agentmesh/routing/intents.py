"""The intent bank: a bridge from what a request says to what a capability card says.

A small bi-encoder matches texts of the same level well and texts of different levels badly: "who
wrote Don Quixote?" is close to "who painted the Mona Lisa?" but far from "Answer short
general-knowledge questions" (cosine 0.07), which is how a card describes the skill. The bank holds
generic intents, each a card-like description with example requests, written for no particular
mesh (``agentmesh/data/intents.yaml``). A query finds its nearest examples (request to request);
their intents' descriptions are close to the cards that serve them (description to description).
So the query vector gets those descriptions added, weighted by how near their examples are, before
it is matched. A query near no example is left as it is.

A matcher's ``intent_banks`` name the banks it uses: ``builtin`` and YAML files of a team's own
intents, which are added to it (or replace it, without ``builtin``). The built-in bank's vectors
for the tuned all-MiniLM-L6-v2 (routing/tuning.py) ship beside it (``intents.minilm.npz``), so a
router or ``agentmesh match`` does not spend seconds embedding 1000 texts at start; any other
embedder, or another bank, is embedded on load. ``python -m agentmesh.routing.intents`` rewrites
the shipped vectors after the bank or the tuning changes (a test fails while they are stale).
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from agentmesh.config import parse_yaml
from agentmesh.errors import ConfigError
from agentmesh.registry.embedder import (
    TUNED_MINILM_NAME,
    TUNED_MINILM_PARAMS,
    Embedder,
    Vectors,
    normalize_rows,
    same_model,
)

DATA = Path(__file__).resolve().parents[1] / "data"
BUILTIN = "builtin"  # the name of the shipped bank among a matcher's intent_banks
BUILTIN_BANK = DATA / "intents.yaml"
BUILTIN_VECTORS = DATA / "intents.minilm.npz"


@dataclass(frozen=True)
class IntentBank:
    descriptions: tuple[str, ...]
    description_vectors: Vectors  # one unit row per intent
    example_vectors: Vectors  # unit rows, each intent's examples contiguous
    starts: npt.NDArray[np.intp]  # first example row of each intent

    @classmethod
    def load(cls, embedder: Embedder, sources: Sequence[str] = (BUILTIN,)) -> IntentBank:
        """The intents of every source, in order, embedded with ``embedder``: ``"builtin"`` for
        the shipped bank, any other string for the path of a YAML bank file."""
        descriptions: list[str] = []
        groups: list[list[str]] = []
        description_parts: list[Vectors] = []
        example_parts: list[Vectors] = []
        for source in sources:
            path = BUILTIN_BANK if source == BUILTIN else Path(source).expanduser()
            try:
                raw = path.read_bytes()
            except OSError as exc:
                raise ConfigError(f"cannot read the intent bank: {exc}", path=str(path)) from None
            texts, examples = parse_bank(raw, path)
            stored = _stored_vectors(raw) if same_model(embedder.model_name, TUNED_MINILM_NAME) else None
            if stored is None:
                vectors = embedder.embed(list(texts) + [e for group in examples for e in group])
                stored = vectors[: len(texts)], vectors[len(texts) :]
            descriptions += texts
            groups += examples
            description_parts.append(stored[0])
            example_parts.append(stored[1])
        dim = embedder.dim
        starts = np.cumsum([0] + [len(group) for group in groups[:-1]]).astype(np.intp)
        return cls(
            tuple(descriptions),
            normalize_rows(np.vstack(description_parts) if description_parts else np.empty((0, dim))),
            normalize_rows(np.vstack(example_parts) if example_parts else np.empty((0, dim))),
            starts,
        )

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
    data = parse_yaml(raw, path=source)
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


def _tuning_digest() -> str:
    try:
        return _digest(TUNED_MINILM_PARAMS.read_bytes())
    except OSError:
        return ""


def _stored_vectors(raw: bytes) -> tuple[Vectors, Vectors] | None:
    """The shipped vectors of the built-in bank, if ``raw`` is its very text and they were made with
    the shipped tuning of MiniLM (so a bank file of one's own, an edited copy or a retrained model
    is embedded instead)."""
    try:
        with np.load(BUILTIN_VECTORS) as npz:
            if str(npz["sha256"]) != _digest(raw) or str(npz["tuning_sha256"]) != _tuning_digest():
                return None
            return npz["descriptions"].astype(np.float32), npz["examples"].astype(np.float32)
    except (OSError, KeyError, ValueError):
        return None


def write_builtin_vectors(embedder: Embedder) -> Path:
    """Embed the built-in bank with ``embedder`` (the tuned MiniLM) and store the vectors beside it."""
    raw = BUILTIN_BANK.read_bytes()
    descriptions, examples = parse_bank(raw, BUILTIN_BANK)
    vectors = embedder.embed(list(descriptions) + [e for group in examples for e in group])
    np.savez(
        BUILTIN_VECTORS,
        sha256=np.array(_digest(raw)),
        tuning_sha256=np.array(_tuning_digest()),
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
