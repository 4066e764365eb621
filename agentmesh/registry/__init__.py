"""The capability registry: cards (VCVs) and presence, embedded into one HNSW index per tier."""

from agentmesh.registry.embedder import (
    MINILM_NAME,
    TUNED_MINILM_NAME,
    Embedder,
    HashingEmbedder,
    MiniLMEmbedder,
    TokenEmbedder,
    TokenVectors,
    normalize_rows,
    same_model,
)
from agentmesh.registry.glossary import Glossary
from agentmesh.registry.index import IndexParams, LabelRef, TierIndex
from agentmesh.registry.lexical import LexicalIndex
from agentmesh.registry.store import AgentEntry, AgentState, PreparedCard, Registry, RegistryChange
from agentmesh.registry.text import View, capability_views, terms

__all__ = [
    "MINILM_NAME",
    "TUNED_MINILM_NAME",
    "AgentEntry",
    "AgentState",
    "Embedder",
    "Glossary",
    "HashingEmbedder",
    "IndexParams",
    "LabelRef",
    "LexicalIndex",
    "MiniLMEmbedder",
    "PreparedCard",
    "Registry",
    "RegistryChange",
    "TierIndex",
    "TokenEmbedder",
    "TokenVectors",
    "View",
    "capability_views",
    "normalize_rows",
    "same_model",
    "terms",
]
