"""Assignments are deduplicated by (task_id, step_id, attempt): QoS 1 may deliver twice, and a
router may resend after a reconnect. A duplicate of a finished step gets the cached result again
(the first reply may have been lost); a duplicate of a running step is ignored (its result is on
the way). Memory is bounded: the oldest finished entries are forgotten first."""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal

from agentmesh.protocol.messages import StepResult

StepKey = tuple[str, str, int]
Seen = Literal["new", "running", "done"]


class StepLedger:
    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[StepKey, StepResult | None] = OrderedDict()

    def begin(self, key: StepKey) -> tuple[Seen, StepResult | None]:
        """Register ``key``; say whether it is new, still running, or done (with its result)."""
        if key in self._entries:
            result = self._entries[key]
            self._entries.move_to_end(key)
            return ("running", None) if result is None else ("done", result)
        self._entries[key] = None
        self._evict()
        return "new", None

    def finish(self, key: StepKey, result: StepResult) -> None:
        self._entries[key] = result
        self._entries.move_to_end(key)
        self._evict()

    def forget(self, key: StepKey) -> None:
        self._entries.pop(key, None)

    def running(self) -> int:
        return sum(1 for v in self._entries.values() if v is None)

    def __len__(self) -> int:
        return len(self._entries)

    def _evict(self) -> None:
        while len(self._entries) > self.capacity:
            # The oldest finished entry; never a running one (its duplicate would run it twice).
            victim = next((k for k, v in self._entries.items() if v is not None), None)
            if victim is None:
                return
            del self._entries[victim]
