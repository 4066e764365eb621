"""Deduplication ledger (agent/dedup.py)."""

from __future__ import annotations

from agentmesh.agent.dedup import StepLedger
from agentmesh.protocol import StepResult


def result(step: str) -> StepResult:
    return StepResult(task_id="t", step_id=step, attempt=1, agent_id="a", status="ok", output=step)


def test_new_running_done() -> None:
    ledger = StepLedger()
    key = ("t", "s1", 1)
    assert ledger.begin(key) == ("new", None)
    assert ledger.begin(key) == ("running", None)
    ledger.finish(key, result("s1"))
    seen, cached = ledger.begin(key)
    assert seen == "done" and cached is not None and cached.output == "s1"
    assert ledger.begin(("t", "s1", 2))[0] == "new"  # another attempt is another key


def test_bounded_and_never_evicts_running() -> None:
    ledger = StepLedger(capacity=3)
    ledger.begin(("t", "run", 1))
    for i in range(10):
        key = ("t", f"s{i}", 1)
        ledger.begin(key)
        ledger.finish(key, result(f"s{i}"))
    assert len(ledger) == 4  # the running step plus the 3 newest finished ones
    assert ledger.begin(("t", "run", 1))[0] == "running"
    assert ledger.begin(("t", "s9", 1))[0] == "done"
    assert ledger.begin(("t", "s0", 1))[0] == "new"  # forgotten long ago
