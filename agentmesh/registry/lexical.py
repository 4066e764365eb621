"""An incremental BM25 index over capabilities (one document per capability of every agent).

Dense embeddings of short texts blur rare, decisive words ("SQL", "invoice", "Kubernetes"); term
overlap weighted by rarity across the whole mesh brings them back. Only candidates found by the
dense kNN are scored, so the index keeps term statistics and per-document counts, no postings.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Iterable


class LexicalIndex:
    def __init__(self, *, k1: float = 1.2, b: float = 0.75) -> None:
        self.k1 = k1
        self.b = b
        self._docs: dict[Hashable, tuple[Counter[str], int]] = {}
        self._df: Counter[str] = Counter()
        self._total_len = 0

    def __len__(self) -> int:
        return len(self._docs)

    def add(self, key: Hashable, counts: Counter[str]) -> None:
        self.remove(key)
        length = sum(counts.values())
        self._docs[key] = (counts, length)
        self._df.update(counts.keys())
        self._total_len += length

    def remove(self, key: Hashable) -> None:
        old = self._docs.pop(key, None)
        if old is None:
            return
        counts, length = old
        self._df.subtract(counts.keys())
        for term in counts:
            if self._df[term] <= 0:
                del self._df[term]
        self._total_len -= length

    def idf(self, term: str) -> float:
        n = len(self._docs)
        df = self._df.get(term, 0)
        return math.log(1.0 + (n - df + 0.5) / (df + 0.5))

    def scores(self, query_terms: Iterable[str], keys: Iterable[Hashable]) -> dict[Hashable, float]:
        """BM25 of each key for the query, divided by the best any document could reach for the
        query's known terms, so a score is in [0, 1] and comparable across queries."""
        keys = list(keys)
        qterms = [t for t in dict.fromkeys(query_terms) if t in self._df]
        if not qterms or not self._docs:
            return dict.fromkeys(keys, 0.0)
        idfs = [(t, self.idf(t)) for t in qterms]
        k1 = self.k1
        ceiling = sum(idf for _, idf in idfs) * (k1 + 1.0)
        if ceiling <= 0:
            return dict.fromkeys(keys, 0.0)
        scale = 1.0 / ceiling
        slope = self.b / (self._total_len / len(self._docs) or 1.0)
        base = 1.0 - self.b
        docs = self._docs
        out: dict[Hashable, float] = {}
        for key in keys:
            doc = docs.get(key)
            if doc is None:
                out[key] = 0.0
                continue
            counts, length = doc
            norm = k1 * (base + slope * length)
            total = 0.0
            for term, idf in idfs:
                tf = counts.get(term)
                if tf:
                    total += idf * tf * (k1 + 1.0) / (tf + norm)
            out[key] = total * scale
        return out


class DocumentFrequency:
    """How many documents (capabilities) contain each item, for idf weights."""

    def __init__(self) -> None:
        self._df: Counter[str] = Counter()
        self._docs: dict[Hashable, frozenset[str]] = {}

    def __len__(self) -> int:
        return len(self._docs)

    def add(self, key: Hashable, items: Iterable[str]) -> None:
        self.remove(key)
        unique = frozenset(items)
        self._docs[key] = unique
        self._df.update(unique)

    def remove(self, key: Hashable) -> None:
        old = self._docs.pop(key, None)
        if old is None:
            return
        self._df.subtract(old)
        for item in old:
            if self._df[item] <= 0:
                del self._df[item]

    def idf(self, item: str) -> float:
        """Rarer items weigh more; unseen ones weigh most."""
        n = len(self._docs)
        return math.log(1.0 + (n + 0.5) / (self._df.get(item, 0) + 0.5))
