"""The agent's capability card (VCV) and its version.

Routers ignore a card whose version is not higher than the one they hold (DESIGN.md section 3),
so the version must grow whenever the card's content changes, also across restarts and broker
restarts. At start the agent knows two earlier versions:

- the card retained on the broker (read with a plain subscription before publishing), and
- a small state file, ``$AGENTMESH_STATE_DIR/vcv/<namespace>/<agent_id>.json`` (default state dir
  ``~/.local/state/agentmesh``), written after every publish. It is the floor when the broker
  lost its retained messages (a fresh broker, or one without persistence), because routers
  connected elsewhere may still hold the old version.

The newest of the two is the reference: same content -> same version (republishing an identical
card is harmless: routers ignore it); different content -> reference + 1; nothing known -> 1.
"Content" is the card without ``version`` and ``sent_at``, hashed canonically.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

from agentmesh.agent.config import AgentConfig
from agentmesh.protocol.messages import CapabilityVector, ModelInfo, QoS

STATE_ENV = "AGENTMESH_STATE_DIR"


def build_card(config: AgentConfig, model: ModelInfo | None, version: int) -> CapabilityVector:
    if config.model_info is not None and model is not None:
        overrides = config.model_info.model_dump(exclude_none=True)
        model = model.model_copy(update=overrides)
    elif config.model_info is not None and config.model_info.family and config.model_info.name:
        model = ModelInfo(backend=config.backend.kind, **config.model_info.model_dump(exclude_none=True))
    return CapabilityVector(
        agent_id=config.id,
        version=version,
        tier=config.tier,
        capabilities=[c.model_copy() for c in config.capabilities],
        model=model,
        cost=config.cost.model_copy(),
        qos=QoS(
            tokens_per_s=config.qos.tokens_per_s,
            p50_latency_ms=config.qos.p50_latency_ms,
            max_concurrency=config.concurrency,
        ),
        policy=config.policy.model_copy(),
    )


def card_digest(card: CapabilityVector) -> str:
    data = card.model_dump(mode="json", exclude={"version", "sent_at"}, exclude_none=True)
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class KnownVersion:
    version: int
    digest: str


def next_version(digest: str, *known: KnownVersion | None) -> int:
    """The version to publish a card with content ``digest``, given earlier known versions."""
    seen = [k for k in known if k is not None]
    if not seen:
        return 1
    # On equal versions prefer a record with a different digest: then we must move past it.
    ref = max(seen, key=lambda k: (k.version, k.digest != digest))
    return ref.version if ref.digest == digest else ref.version + 1


def state_dir() -> Path:
    root = os.environ.get(STATE_ENV)
    return Path(root).expanduser() if root else Path.home() / ".local" / "state" / "agentmesh"


class VersionStore:
    """The per-agent state file holding the last published (version, digest)."""

    def __init__(self, namespace: str, agent_id: str, root: Path | None = None) -> None:
        safe_ns = re.sub(r"[^A-Za-z0-9._-]+", "_", namespace)
        self.path = (root or state_dir()) / "vcv" / safe_ns / f"{agent_id}.json"

    def load(self) -> KnownVersion | None:
        try:
            data = json.loads(self.path.read_text())
            version, digest = int(data["version"]), str(data["digest"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return KnownVersion(version, digest) if version >= 1 else None

    def save(self, known: KnownVersion) -> None:
        """Atomic (write + rename); a failure is the caller's to log, not fatal."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}")
        try:
            tmp.write_text(json.dumps({"version": known.version, "digest": known.digest}))
            os.replace(tmp, self.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
