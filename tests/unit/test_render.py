"""The trace tree and progress lines (pure formatting)."""

from __future__ import annotations

from agentmesh.orchestration import Attempt, Step, Task
from agentmesh.protocol import AttemptRecord, StepRecord, TaskEvent, TaskRequest, TaskResult
from agentmesh.render import event_line, result_header, trace_lines, views_from_result, views_from_task


def diamond() -> Task:
    task = Task(request=TaskRequest(task_id="t1", client_id="c", text="x"), status="done")
    task.steps = {
        "planner": Step(id="planner", instruction="plan", query="plan", status="done"),
        "a": Step(id="a", instruction="first", query="first", status="done"),
        "b": Step(id="b", instruction="second", query="second", depends_on=["a"], status="done"),
        "c": Step(id="c", instruction="third", query="third", depends_on=["a"], status="done"),
        "d": Step(id="d", instruction="join", query="join", depends_on=["b", "c"], status="done"),
    }
    task.steps["planner"].attempts = [Attempt(attempt=1, agent_id="gemma", tier="edge", status="ok")]
    task.steps["planner"].accepted = 0
    for sid in "acd":
        task.steps[sid].attempts = [Attempt(attempt=1, agent_id="calc", tier="device", status="ok")]
        task.steps[sid].accepted = 0
    task.steps["b"].attempts = [
        Attempt(
            attempt=1, agent_id="phone", tier="device", status="ok", confidence=0.2, reason="confidence low"
        ),
        Attempt(attempt=2, agent_id="gemma", tier="edge", status="ok", confidence=0.8),
    ]
    task.steps["b"].accepted = 1
    return task


def test_trace_draws_the_dag_under_the_planner_with_every_attempt() -> None:
    lines = trace_lines("HEADER", views_from_task(diamond()))
    text = "\n".join(lines)
    assert lines[0] == "HEADER"
    assert lines[1].startswith("└─ planner [done]")
    # a is under the planner; b and c under a; d under b (its first dependency), noting c.
    order = [ln.strip("│ ├└─") for ln in lines if "[done]" in ln]
    assert [o.split(" ")[0] for o in order] == ["planner", "a", "b", "d", "c"]
    assert "d [done] (after b, c)" in text
    assert "#1 ok        phone [device] conf 0.20  - confidence low" in text
    assert "#2 ok        gemma [edge] conf 0.80 *" in text


def test_trace_from_a_broker_result_lists_steps_flat() -> None:
    result = TaskResult(
        task_id="t1",
        status="done",
        steps=[
            StepRecord(
                id="s1",
                status="done",
                agent_id="e1",
                tier="edge",
                attempts=[
                    AttemptRecord(attempt=1, agent_id="d1", tier="device", status="error", reason="boom"),
                    AttemptRecord(attempt=2, agent_id="e1", tier="edge", status="ok"),
                ],
            ),
            StepRecord(id="s2", status="done", agent_id="d1", tier="device"),
        ],
        escalations=1,
        elapsed_ms=1234.0,
    )
    lines = trace_lines(result_header(result), views_from_result(result))
    assert lines[0].startswith("task t1 done in 1.23s: 2 step(s), 1 escalation(s)")
    assert lines[1].startswith("├─ s1 [done]") and lines[-1].startswith("└─ s2 [done]")
    assert any("#2 ok        e1 [edge] *" in ln for ln in lines)


def test_event_line() -> None:
    ev = TaskEvent(task_id="t", kind="escalated", step_id="s1", agent_id="e1", tier="edge", detail="low")
    assert event_line(ev, 1.5) == "  1.50s  escalated   s1 e1 [edge]  low"
    multi = TaskEvent(task_id="t", kind="done", detail="5 km = 3.1 mi\n\n144")
    assert event_line(multi, 0).endswith("done         5 km = 3.1 mi 144")
    long = TaskEvent(task_id="t", kind="done", detail="x" * 500)
    assert event_line(long, 0).endswith("...") and len(event_line(long, 0)) < 200


def test_the_header_of_a_running_task_says_how_far_it_is_not_failed() -> None:
    task = diamond()
    task.status = "running"
    header = result_header(task.result(), task.status)
    assert header.startswith("task t1 running for ")
    assert "so far: 4 step(s)" in header
    assert "failed" not in header
