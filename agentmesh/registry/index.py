"""One hnswlib index (inner product over unit vectors = cosine) for one tier.

Every label is one embedded view of one capability of one agent. A new card version replaces that
agent's labels: the old ones are marked deleted and their slots are reused by later inserts
(``allow_replace_deleted``); the index grows with ``resize_index``; nothing is ever rebuilt from
scratch (DESIGN.md section 5).

Not thread-safe: the registry calls it from one thread (the event loop); embedding, the slow part,
happens before.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import hnswlib
import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from agentmesh.registry.embedder import Vectors

Labels = npt.NDArray[np.uint64]
Sims = npt.NDArray[np.float32]


class IndexParams(BaseModel):
    """HNSW construction parameters (search-time ``ef`` is a matching weight)."""

    model_config = ConfigDict(extra="forbid")

    m: int = Field(16, ge=4, le=128, description="graph degree")
    ef_construction: int = Field(200, ge=16, le=2000)
    initial_capacity: int = Field(1024, ge=16)
    max_examples: int = Field(8, ge=0, le=64, description="example requests embedded per capability")


@dataclass(frozen=True)
class LabelRef:
    """What one label stands for: view ``view`` of capability ``cap`` of ``agent_id``."""

    agent_id: str
    cap: int
    view: int
    views: int = 1  # how many views (labels) the capability has


class TierIndex:
    def __init__(self, dim: int, params: IndexParams | None = None) -> None:
        self.dim = dim
        self.params = params or IndexParams()
        self._index = hnswlib.Index(space="ip", dim=dim)
        self._index.init_index(
            max_elements=self.params.initial_capacity,
            ef_construction=self.params.ef_construction,
            M=self.params.m,
            allow_replace_deleted=True,
        )
        self._ef = 0
        self._next_label = 0
        self._refs: dict[int, LabelRef] = {}
        self._by_agent: dict[str, list[int]] = {}
        self._deleted = 0  # slots marked deleted and not yet reused
        self.resizes = 0

    def __len__(self) -> int:
        """Live labels (deleted ones excluded)."""
        return len(self._refs)

    @property
    def capacity(self) -> int:
        return int(self._index.get_max_elements())

    def agents(self) -> list[str]:
        return list(self._by_agent)

    def labels_of(self, agent_id: str) -> list[int]:
        return list(self._by_agent.get(agent_id, ()))

    def ref(self, label: int) -> LabelRef:
        return self._refs[label]

    def refs(self, labels: list[int]) -> list[LabelRef]:
        """The refs of live ``labels``, in order (every label kNN returns is live)."""
        return [self._refs[label] for label in labels]

    def set_agent(self, agent_id: str, vectors: Vectors, refs: list[tuple[int, int]]) -> list[int]:
        """Replace ``agent_id``'s labels by ``vectors`` (one row per (cap, view) in ``refs``)."""
        return self.set_agents([(agent_id, vectors, refs)])[agent_id]

    def set_agents(
        self, items: list[tuple[str, Vectors, list[tuple[int, int]]]], *, num_threads: int = 1
    ) -> dict[str, list[int]]:
        """Replace several agents' labels with one insertion (``num_threads`` > 1 builds in parallel)."""
        out: dict[str, list[int]] = {}
        batches: list[Vectors] = []
        new_refs: list[LabelRef] = []
        for agent_id, vectors, refs in items:
            if len(vectors) != len(refs):
                raise ValueError("one (cap, view) pair per vector")
            self.remove_agent(agent_id)
            labels = list(range(self._next_label, self._next_label + len(refs)))
            self._next_label += len(refs)
            out[agent_id] = labels
            if labels:
                self._by_agent[agent_id] = labels
                batches.append(vectors)
                views: dict[int, int] = {}
                for cap, _ in refs:
                    views[cap] = views.get(cap, 0) + 1
                new_refs.extend(LabelRef(agent_id, cap, view, views[cap]) for cap, view in refs)
        if not new_refs:
            return out
        all_labels = [label for labels in out.values() for label in labels]
        self._reserve(len(all_labels))
        self._deleted -= min(self._deleted, len(all_labels))
        self._index.add_items(
            np.ascontiguousarray(np.vstack(batches), dtype=np.float32),
            np.asarray(all_labels, dtype=np.uint64),
            num_threads=num_threads,
            replace_deleted=True,
        )
        self._refs.update(zip(all_labels, new_refs, strict=True))
        return out

    def remove_agent(self, agent_id: str) -> int:
        labels = self._by_agent.pop(agent_id, [])
        for label in labels:
            self._index.mark_deleted(label)
            del self._refs[label]
        self._deleted += len(labels)
        return len(labels)

    def _reserve(self, n: int) -> None:
        # Deleted slots are reused first, so the element count only grows when they run out.
        needed = int(self._index.get_current_count()) + max(0, n - self._deleted)
        capacity = self.capacity
        if needed > capacity:
            self._index.resize_index(max(needed, capacity * 2))
            self.resizes += 1

    def knn(
        self,
        vector: Vectors,
        k: int,
        *,
        ef: int = 64,
        allowed: Callable[[int], bool] | None = None,
    ) -> tuple[Labels, Sims]:
        """The ``k`` labels nearest to ``vector`` that pass ``allowed``, with cosine similarities.

        May return fewer than ``k`` when the filter leaves too few reachable labels.
        """
        k = min(k, len(self._refs))
        if k <= 0:
            return np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.float32)
        ef = max(ef, k)
        if ef != self._ef:
            self._index.set_ef(ef)
            self._ef = ef
        query = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, -1)
        while True:
            try:
                labels, dists = self._index.knn_query(query, k=k, num_threads=1, filter=allowed)
                break
            except RuntimeError:
                # hnswlib raises when it finds fewer than k labels passing the filter.
                if k == 1:
                    return np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.float32)
                k = max(1, k // 2)
        return labels[0], (1.0 - dists[0]).astype(np.float32)

    def memory_bytes(self) -> int:
        """Rough size of the graph and vectors (hnswlib does not report it)."""
        per_element = self.dim * 4 + self.params.m * 2 * 4 + 8 + 4
        return self.capacity * per_element
