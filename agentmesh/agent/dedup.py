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
    """Running keys (unbounded: each is a step the agent holds) and an LRU of finished results."""

    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        self._running: set[StepKey] = set()
        self._done: OrderedDict[StepKey, StepResult] = OrderedDict()

    def begin(self, key: StepKey) -> tuple[Seen, StepResult | None]:
        """Register ``key``; say whether it is new, still running, or done (with its result)."""
        if key in self._running:
            return "running", None
        result = self._done.get(key)
        if result is not None:
            self._done.move_to_end(key)
            return "done", result
        self._running.add(key)
        return "new", None

    def finish(self, key: StepKey, result: StepResult) -> None:
        self._running.discard(key)
        self._done[key] = result
        self._done.move_to_end(key)
        while len(self._done) > self.capacity:
            self._done.popitem(last=False)

    def forget(self, key: StepKey) -> None:
        self._running.discard(key)
        self._done.pop(key, None)

    def running(self) -> int:
        return len(self._running)

    def __len__(self) -> int:
        return len(self._running) + len(self._done)
