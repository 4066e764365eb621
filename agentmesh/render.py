"""Text rendering for the CLI: a task's DAG as a tree (``trace``) and live progress lines (``submit``).

Pure functions of messages and ledger state, so they are unit-tested without a broker.
"""

from __future__ import annotations

from dataclasses import dataclass

from agentmesh.orchestration import Task
from agentmesh.planning import PLANNER_STEP_ID
from agentmesh.protocol import AttemptRecord, TaskEvent, TaskResult


@dataclass(frozen=True)
class StepView:
    id: str
    depends_on: list[str] | None  # None: unknown (only the broker's TaskResult was available)
    status: str
    instruction: str
    attempts: list[AttemptRecord]
    kept: int | None  # attempt number whose answer was kept


def views_from_task(task: Task) -> list[StepView]:
    out = []
    for step in task.steps.values():
        out.append(
            StepView(
                id=step.id,
                depends_on=list(step.depends_on),
                status=step.status,
                instruction=step.instruction if step.id != PLANNER_STEP_ID else "plan the task",
                attempts=[a.record() for a in step.attempts],
                kept=step.attempts[step.accepted].attempt if step.accepted is not None else None,
            )
        )
    return out


def views_from_result(result: TaskResult) -> list[StepView]:
    out = []
    for rec in result.steps:
        kept = None
        if rec.status == "done":
            for a in rec.attempts:
                if a.agent_id == rec.agent_id and a.status == "ok":
                    kept = a.attempt
        out.append(StepView(rec.id, None, rec.status, "", list(rec.attempts), kept))
    return out


def _attempt_line(a: AttemptRecord, kept: bool) -> str:
    conf = f" conf {a.confidence:.2f}" if a.confidence is not None else ""
    why = f"  - {a.reason}" if a.reason else ""
    mark = " *" if kept else ""
    return f"#{a.attempt} {a.status:<9} {a.agent_id} [{a.tier}]{conf}{mark}{why}"


def trace_lines(header: str, views: list[StepView]) -> list[str]:
    """Draw the steps as a tree: each step under its first dependency, roots at the top level."""
    known = {v.id for v in views}
    children: dict[str | None, list[StepView]] = {}
    for v in views:
        parent = v.depends_on[0] if v.depends_on and v.depends_on[0] in known else None
        if v.id != PLANNER_STEP_ID and parent is None and PLANNER_STEP_ID in known:
            parent = PLANNER_STEP_ID if v.depends_on is not None else None
        children.setdefault(parent, []).append(v)
    lines = [header]

    def draw(view: StepView, prefix: str, last: bool) -> None:
        branch = "└─ " if last else "├─ "
        also = ""
        if view.depends_on and len(view.depends_on) > 1:
            also = f" (after {', '.join(view.depends_on)})"
        text = f" {view.instruction[:60]!r}" if view.instruction else ""
        lines.append(f"{prefix}{branch}{view.id} [{view.status}]{also}{text}")
        inner = prefix + ("   " if last else "│  ")
        kids = children.get(view.id, [])
        for a in view.attempts:
            bar = "│  " if kids else "   "
            lines.append(f"{inner}{bar}{_attempt_line(a, a.attempt == view.kept)}")
        for i, kid in enumerate(kids):
            draw(kid, inner, i == len(kids) - 1)

    roots = children.get(None, [])
    for i, root in enumerate(roots):
        draw(root, "", i == len(roots) - 1)
    return lines


def result_header(result: TaskResult, status: str | None = None) -> str:
    """The summary line; ``status`` for a task still running (its result's status is final)."""
    u = result.usage
    steps = len([s for s in result.steps if s.id != PLANNER_STEP_ID])
    secs = result.elapsed_ms / 1000
    when = f"{status} for {secs:.2f}s so far" if status else f"{result.status} in {secs:.2f}s"
    return (
        f"task {result.task_id} {when}: {steps} step(s), "
        f"{result.escalations} escalation(s), {result.cloud_steps} cloud step(s), "
        f"{u.prompt_tokens + u.completion_tokens} tokens, ${u.cost_usd:.4f}"
    )


def event_line(event: TaskEvent, elapsed_s: float) -> str:
    """One progress line for ``submit --wait``."""
    where = ""
    if event.agent_id:
        where = f" {event.agent_id}" + (f" [{event.tier}]" if event.tier else "")
    step = f" {event.step_id}" if event.step_id else ""
    # One line per event: an answer's newlines would break the progress display.
    flat = " ".join(event.detail.split())
    detail = f"  {flat}" if flat else ""
    if len(detail) > 160:
        detail = detail[:157] + "..."
    return f"{elapsed_s:6.2f}s  {event.kind:<11}{step}{where}{detail}"
