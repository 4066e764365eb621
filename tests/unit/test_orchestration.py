"""Step state machine, escalation policy and the ledger (pure logic, SQLite in a temp dir)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agentmesh.errors import ConfigError
from agentmesh.orchestration import (
    Attempt,
    EscalationPolicy,
    Ledger,
    Step,
    Task,
    judge,
    start_tier,
    tier_span,
    tiers_above,
    why_not_escalated,
)
from agentmesh.protocol import Constraints, StepResult, TaskRequest, TaskResult, Usage, encode


def result(
    status: str = "ok", confidence: float | None = None, error: str | None = None, output: str = "an answer"
) -> StepResult:
    return StepResult(
        task_id="t1",
        step_id="s1",
        attempt=1,
        agent_id="a1",
        status=status,  # type: ignore[arg-type]
        confidence=confidence,
        error=error,
        output=output,
    )


def make_task() -> Task:
    task = Task(request=TaskRequest(task_id="t1", client_id="c1", text="x"))
    task.steps = {
        "a": Step(id="a", instruction="A", query="A"),
        "b": Step(id="b", instruction="B", query="B", depends_on=["a"]),
        "c": Step(id="c", instruction="C", query="C", depends_on=["a"]),
        "d": Step(id="d", instruction="D", query="D", depends_on=["b", "c"]),
    }
    task.output_ids = ["d"]
    task.status = "running"
    return task


def test_judge_accepts_confident_and_unscored_answers() -> None:
    policy = EscalationPolicy()
    assert judge(result(confidence=0.9), "device", policy).accept
    assert judge(result(confidence=None), "device", policy).accept
    assert judge(result(confidence=0.1), "cloud", policy).accept  # cloud floor is 0 by default


def test_a_floor_set_for_one_tier_keeps_the_others_defaults() -> None:
    policy = EscalationPolicy.model_validate({"min_confidence": {"device": 0.7}})
    assert policy.min_confidence == {"device": 0.7, "edge": 0.5, "cloud": 0.0}
    assert not judge(result(confidence=0.3), "edge", policy).accept
    with pytest.raises(ValueError, match="less than or equal to 1"):
        EscalationPolicy.model_validate({"min_confidence": {"edge": 50}})


@pytest.mark.parametrize(
    ("res", "fragment"),
    [
        (result("error", error="boom"), "error: boom"),
        (result("declined"), "declined"),
        (result(confidence=0.2), "confidence 0.20 below 0.50 on device"),
        (result(confidence=0.9, output="  "), "empty answer"),
    ],
)
def test_judge_names_why_an_answer_is_weak(res: StepResult, fragment: str) -> None:
    verdict = judge(res, "device", EscalationPolicy())
    assert not verdict.accept
    assert verdict.reason is not None and fragment in verdict.reason


def test_tier_ladder_respects_constraints() -> None:
    assert tiers_above("device", Constraints()) == ["edge", "cloud"]
    assert tiers_above("device", Constraints(max_tier="edge")) == ["edge"]
    assert tiers_above("device", Constraints(max_tier="device")) == []
    assert start_tier(None, Constraints(min_tier="edge")) == "edge"
    assert start_tier("cloud", Constraints()) == "cloud"
    assert start_tier("device", Constraints(min_tier="edge")) == "edge"
    assert start_tier("cloud", Constraints(max_tier="edge")) == "edge"


def test_tier_span() -> None:
    assert tier_span("cloud", "cloud") == "the cloud tier"
    assert tier_span("device", "edge") == "tiers device to edge"


def test_why_not_escalated() -> None:
    c = Constraints(max_tier="device")
    assert "max_tier is device" in why_not_escalated("device", c, attempts_left=True, budget_left=True)
    assert "attempt limit" in why_not_escalated(
        "device", Constraints(), attempts_left=False, budget_left=True
    )
    assert "max_cost_usd" in why_not_escalated("device", Constraints(), attempts_left=True, budget_left=False)


def test_ready_steps_follow_the_dag() -> None:
    task = make_task()
    assert [s.id for s in task.ready()] == ["a"]
    task.steps["a"].status = "done"
    assert [s.id for s in task.ready()] == ["b", "c"]
    task.steps["b"].status = "done"
    assert [s.id for s in task.ready()] == ["c"]
    task.steps["c"].status = "done"
    assert [s.id for s in task.ready()] == ["d"]
    assert not task.complete()
    task.steps["d"].status = "done"
    assert task.complete()


def test_best_ok_prefers_confidence_then_higher_tier() -> None:
    step = Step(id="s", instruction="x", query="x")
    step.attempts = [
        Attempt(attempt=1, agent_id="d1", tier="device", status="ok", confidence=0.3, output="weak"),
        Attempt(attempt=2, agent_id="e1", tier="edge", status="error"),
        Attempt(attempt=3, agent_id="e2", tier="edge", status="ok", confidence=0.4, output="better"),
    ]
    assert step.best_ok() == 2
    step.attempts[2].confidence = 0.3
    assert step.best_ok() == 2  # tie on confidence: the higher tier wins
    step.attempts = step.attempts[:2]
    assert step.best_ok() == 0
    step.attempts = [step.attempts[1]]
    assert step.best_ok() is None


def test_previous_is_the_last_answered_attempt() -> None:
    step = Step(id="s", instruction="x", query="x")
    assert step.previous() is None
    step.attempts = [
        Attempt(attempt=1, agent_id="d1", tier="device", status="ok", output="weak", reason="low"),
        Attempt(attempt=2, agent_id="d2", tier="device", status="timeout"),
    ]
    prev = step.previous()
    assert prev is not None and prev.agent_id == "d1" and prev.output == "weak" and prev.reason == "low"
    # A later attempt that declined has nothing to improve on: the weak answer is still handed on.
    step.attempts.append(Attempt(attempt=3, agent_id="units", tier="device", status="declined", reason="no"))
    prev = step.previous()
    assert prev is not None and prev.agent_id == "d1"
    step.attempts = step.attempts[2:]
    prev = step.previous()
    assert prev is not None and prev.agent_id == "units" and prev.output == ""


def test_result_totals_and_outputs() -> None:
    task = make_task()
    for sid, tier, out in [
        ("a", "device", "A!"),
        ("b", "edge", "B!"),
        ("c", "cloud", "C!"),
        ("d", "device", "D!"),
    ]:
        step = task.steps[sid]
        step.attempts = [
            Attempt(
                attempt=1,
                agent_id="x",
                tier=tier,  # type: ignore[arg-type]
                status="ok",
                output=out,
                usage=Usage(prompt_tokens=1, completion_tokens=2, cost_usd=0.5),
            )
        ]
        step.accepted = 0
        step.status = "done"
    task.status = "done"
    task.finished_at = task.started_at + 1.5
    res = task.result()
    assert res.status == "done"
    assert res.output == "D!"
    assert res.outputs == {"a": "A!", "b": "B!", "c": "C!", "d": "D!"}
    assert res.usage.completion_tokens == 8 and res.usage.cost_usd == pytest.approx(2.0)
    assert res.cloud_steps == 1
    assert res.elapsed_ms == pytest.approx(1500.0)
    assert [s.id for s in res.steps] == ["a", "b", "c", "d"]


def test_in_flight_only_lists_unanswered_attempts() -> None:
    task = make_task()
    a = task.steps["a"]
    a.status = "dispatched"
    a.attempts = [Attempt(attempt=1, agent_id="x", tier="device")]
    assert [s.id for s, _ in task.in_flight()] == ["a"]
    a.attempts[0].status = "ok"
    assert task.in_flight() == []


def test_ledger_round_trip_and_unfinished(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    task = make_task()
    ledger.save(task)
    done = Task(
        request=TaskRequest(task_id="t2", client_id="c1", text="y"), status="done", finished_at=time.time()
    )
    ledger.save(done)
    assert ledger.exists("t1") and ledger.exists("t2") and not ledger.exists("t3")
    assert [t.task_id for t in ledger.unfinished()] == ["t1"]
    loaded = ledger.get("t1")
    assert loaded is not None and loaded.steps["d"].depends_on == ["b", "c"]
    ledger.close()
    # A new process sees the same state (the router restart path).
    again = Ledger(tmp_path / "ledger.sqlite")
    assert [t.task_id for t in again.unfinished()] == ["t1"]


def test_ledger_saves_several_tasks_in_one_transaction(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite")
    tasks = [Task(request=TaskRequest(task_id=f"t{i}", client_id="c", text="y")) for i in range(3)]
    before = ledger._db.total_changes
    ledger.save_many(tasks)
    assert ledger._db.total_changes - before == 3 and not ledger._db.in_transaction
    tasks[1].status = "done"
    tasks[1].finished_at = time.time()
    ledger.save_many(tasks[:2])
    assert [t.task_id for t in ledger.unfinished()] == ["t0", "t2"]
    ledger.save_many([])
    assert not ledger._db.in_transaction


def test_ledger_result_clearing_and_pruning(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite")
    old = Task(request=TaskRequest(task_id="old", client_id="c", text="y"), status="done", finished_at=100.0)
    new = Task(
        request=TaskRequest(task_id="new", client_id="c", text="y"), status="done", finished_at=time.time()
    )
    ledger.save(old)
    ledger.save(new)
    assert ledger.results_to_clear(before=1000.0) == ["old"]
    assert [t.task_id for t in ledger.finished_since(time.time() - 60)] == ["new"]
    assert ledger.prune(before=1000.0) == 0  # not cleared yet: kept
    ledger.mark_cleared("old")
    assert ledger.results_to_clear(before=1000.0) == []
    assert ledger.prune(before=1000.0) == 1
    assert not ledger.exists("old")


def test_ledger_restart_and_housekeeping_queries_use_an_index_not_a_table_scan(tmp_path: Path) -> None:
    # Housekeeping runs every few seconds, and a restart once, over days of finished tasks.
    from agentmesh.orchestration import ledger as ledger_module

    ledger = Ledger(tmp_path / "l.sqlite")
    queries = [
        (ledger_module.UNFINISHED, ()),
        (ledger_module.FINISHED_SINCE, (1.0,)),
        (ledger_module.RESULTS_TO_CLEAR, (1.0,)),
        (ledger_module.PRUNE, (1.0,)),
    ]
    for sql, args in queries:
        plan = " ".join(row[-1] for row in ledger._db.execute("EXPLAIN QUERY PLAN " + sql, args))
        assert "USING INDEX tasks_lifecycle" in plan, (sql, plan)


def test_ledger_background_checkpoint_moves_commits_into_the_database(tmp_path: Path) -> None:
    """With background checkpoints, commits stay in the WAL (still durable: a restarted router
    reads them) until ``checkpoint()`` copies them into the database file itself."""
    path = tmp_path / "l.sqlite"
    ledger = Ledger(path, background_checkpoint=True)
    ledger.checkpoint()  # the schema
    for i in range(600):  # more WAL pages than SQLite's own 1000-page checkpoint would allow
        ledger.save(Task(request=TaskRequest(task_id=f"t{i}", client_id="c", text="x" * 5000)))

    def in_database_file() -> int:
        copy = tmp_path / "copy.sqlite"
        shutil.copyfile(path, copy)  # the main file alone, without its WAL
        db = sqlite3.connect(copy)
        try:
            return int(db.execute("SELECT count(*) FROM tasks").fetchone()[0])
        finally:
            db.close()
            copy.unlink()

    assert in_database_file() == 0
    assert sum(1 for _ in Ledger(path).unfinished()) == 600  # another process sees them via the WAL
    ledger.checkpoint()
    assert in_database_file() == 600
    ledger.close()


def test_ledger_pending_file_holds_saves_until_applied(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    ledger = Ledger(path, pending_file=True)
    task = make_task()
    ledger.save(task)
    task.status = "running"
    ledger.save(task)
    reader = Ledger(path)  # another process, e.g. agentmesh trace
    with pytest.raises(ConfigError, match="in use by another router"):
        Ledger(path, pending_file=True)
    assert ledger._db.execute("SELECT count(*) FROM tasks").fetchone()[0] == 0
    assert ledger.exists("t1") and not reader.exists("t1")
    for seen in (ledger.get("t1"), reader.get("t1")):  # the newest state, from the file
        assert seen is not None and seen.status == "running"
    assert ledger.apply_pending() == 1 and ledger.apply_pending() == 0
    assert Path(ledger.pending_path or "").read_bytes() == b""
    loaded = reader.get("t1")
    assert loaded is not None and loaded.status == "running"
    assert [t.task_id for t in reader.unfinished()] == ["t1"]
    ledger.close()  # the empty file stays (see close())
    assert Path(str(path) + "-pending").read_bytes() == b""


@pytest.mark.parametrize("bits_log2", [26, 3])  # 3: eight bits, so the filter says "maybe" to all
def test_ledger_owner_answers_exists_from_its_id_filter_and_sqlite(tmp_path: Path, bits_log2: int) -> None:
    def task(task_id: str) -> Task:
        return Task(request=TaskRequest(task_id=task_id, client_id="c1", text="x"))

    path = tmp_path / "l.sqlite"
    first = Ledger(path, pending_file=True)
    first.save_many([task("old1"), task("old2")])
    first.close()
    other = Ledger(path)  # a reader's writes reach SQLite without the owner's filter
    other.save(task("by-other"))
    owner = Ledger(path, pending_file=True, id_filter_bits_log2=bits_log2)
    owner.save(task("new1"))
    owner.apply_pending()
    owner.save(task("new2"))
    assert all(owner.exists(t) for t in ("old1", "old2", "by-other", "new1", "new2"))
    assert not any(owner.exists(f"unknown-{i}") for i in range(200))
    owner.close()
    other.close()


def _dies(ledger: Ledger) -> None:
    """What a killed router leaves: its pending file, and no lock on it (the kernel drops it)."""
    assert ledger._pending_fd is not None
    os.close(ledger._pending_fd)


def test_ledger_pending_file_of_a_killed_owner_is_replayed_on_open(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "l.sqlite"
    killed = Ledger(path, pending_file=True)
    killed.save(make_task())
    done = Task(request=TaskRequest(task_id="t2", client_id="c", text="y"), status="done", finished_at=5.0)
    killed.save(done)
    _dies(killed)  # ...without closing the ledger
    # A line that is no saved task, and a last line cut short, are skipped.
    with open(str(path) + "-pending", "ab") as f:
        f.write(b"not a saved task\n")
        f.write(b't3\trunning\t1.0\t\t{"request"')
    with caplog.at_level("WARNING", logger="agentmesh.orchestration.ledger"):
        again = Ledger(path, pending_file=True)
    assert "line 3" in caplog.text and "incomplete last line" in caplog.text
    assert [t.task_id for t in again.unfinished()] == ["t1"]
    assert again.results_to_clear(before=10.0) == ["t2"]
    assert Path(str(path) + "-pending").read_bytes() == b""
    assert again.get("t3") is None


def test_ledger_pending_file_drops_the_half_line_of_a_failed_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from agentmesh.orchestration import ledger as ledger_module

    path = tmp_path / "l.sqlite"
    ledger = Ledger(path, pending_file=True)
    ledger.save(make_task())
    pending = Path(str(path) + "-pending")
    size = pending.stat().st_size
    real_write = os.write
    calls: list[int] = []

    def disk_fills_up(fd: int, data: bytes) -> int:
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ledger_module.os, "write", disk_fills_up)
    with pytest.raises(OSError):
        ledger.save(Task(request=TaskRequest(task_id="t2", client_id="c", text="y")))
    monkeypatch.setattr(ledger_module.os, "write", real_write)
    assert pending.stat().st_size == size and not ledger.exists("t2")
    ledger.save(Task(request=TaskRequest(task_id="t3", client_id="c", text="z")))
    _dies(ledger)
    again = Ledger(path, pending_file=True)
    assert sorted(t.task_id for t in again.unfinished()) == ["t1", "t3"]


def test_router_holds_its_messages_while_the_ledger_cannot_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from agentmesh.orchestration import ledger as ledger_module
    from agentmesh.registry import HashingEmbedder
    from agentmesh.router import Router
    from agentmesh.router_config import RouterConfig

    router = Router(RouterConfig(ledger=str(tmp_path / "r.sqlite")), embedder=HashingEmbedder())
    router.ledger = Ledger(router.config.ledger_path(), pending_file=True)
    task = make_task()
    router._save(task)
    router._publish("agentmesh/v1/tasks/t1/events", b"{}")

    def full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ledger_module.os, "write", full)
    router._flush()  # no exception: the loop that flushes goes on
    assert router._dirty == {"t1": task} and len(router._outbox) == 1  # nothing sent unsaved
    monkeypatch.undo()
    router._flush()  # the disk has room again (the send itself fails: no broker here)
    assert router._dirty == {} and router._outbox == [] and router.ledger.exists("t1")
    router.ledger.close()


def _finished_variants() -> list[Task]:
    running = make_task()
    done = make_task()
    for sid, step in done.steps.items():
        step.status = "done"
        step.attempts = [
            Attempt(attempt=1, agent_id="dev-1", tier="device", status="error", reason="boom", family="f"),
            Attempt(
                attempt=2,
                agent_id="cloud-1",
                tier="cloud",
                status="ok",
                output=f"out {sid} é 😀\n",
                confidence=0.75,
                usage=Usage(prompt_tokens=3, completion_tokens=5, latency_ms=1.5, cost_usd=0.25),
            ),
        ]
        step.accepted = 1
    done.status, done.escalations, done.finished_at = "done", 4, done.started_at + 0.5
    failed = make_task()
    failed.steps["a"].status = "failed"
    failed.steps["a"].attempts = [Attempt(attempt=1, agent_id="x", tier="edge", status="timeout")]
    failed.status, failed.error, failed.finished_at = "failed", "step a failed: timeout", time.time()
    rejected = Task(request=TaskRequest(task_id="t9", client_id="c1", text="x"), status="rejected")
    rejected.error = "no agent can serve step s1"
    return [running, done, failed, rejected]


@pytest.mark.parametrize("task", _finished_variants())
def test_result_payload_is_the_encoded_result(task: Task) -> None:
    sent_at = datetime(2026, 11, 30, 17, 9, 21, 56733, tzinfo=UTC)
    if task.finished_at is None:
        task.finished_at = task.started_at + 0.25  # elapsed_ms must not move between the two
    expected = encode(task.result().model_copy(update={"sent_at": sent_at}))
    assert task.result_payload(sent_at=sent_at) == expected


def test_a_result_over_the_payload_limit_has_its_longest_texts_cut_to_fit() -> None:
    task = _finished_variants()[1]
    for step in task.steps.values():
        step.attempts[0].reason = "r" * 3000  # an agent's long error
        step.attempts[1].output = "o" * 4000
    whole = task.result()
    payload = task.result_payload(limit=8000)
    assert len(payload) <= 8000 < len(task.result_payload())
    cut = TaskResult.model_validate_json(payload)
    assert cut.status == "done" and cut.error is not None
    assert "over the 8000-byte MQTT payload limit" in cut.error
    for step_id, text in cut.outputs.items():
        assert text.endswith("more characters]") and whole.outputs[step_id].startswith(text.split(" [cut")[0])
    assert len(cut.output) < len(whole.output)
    assert [len(s.attempts) for s in cut.steps] == [len(s.attempts) for s in whole.steps]


def test_prompt_tokens_counts_the_instruction_inputs_and_weak_answer() -> None:
    task = make_task()
    framing = task.prompt_tokens(Step(id="x", instruction="", query=""))
    assert task.prompt_tokens(task.steps["b"]) == framing  # one character: no whole token
    task.steps["a"].attempts = [
        Attempt(attempt=1, agent_id="p", tier="device", status="ok", output="o" * 4000)
    ]
    task.steps["a"].accepted = 0
    assert task.prompt_tokens(task.steps["b"]) == framing + 1000
    task.steps["b"].attempts = [
        Attempt(attempt=1, agent_id="p", tier="device", status="ok", output="w" * 400)
    ]
    assert task.prompt_tokens(task.steps["b"]) == framing + 1100
    assert task.prompt_tokens(task.steps["a"]) == framing + 1000  # its own weak answer, not b's
