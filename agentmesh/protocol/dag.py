"""Structural checks of a plan's DAG, shared by the Plan model and the planners."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agentmesh.protocol.messages import Plan


def dag_problem(plan: Plan) -> str | None:
    """Return a sentence naming the first structural problem of ``plan``, or None if it is a DAG."""
    ids = [s.id for s in plan.steps]
    seen: set[str] = set()
    for sid in ids:
        if sid in seen:
            return f"step id {sid!r} is used twice"
        seen.add(sid)
    for step in plan.steps:
        for dep in step.depends_on:
            if dep not in seen:
                return f"step {step.id!r} depends on unknown step {dep!r}"
            if dep == step.id:
                return f"step {step.id!r} depends on itself"
    for out in plan.output:
        if out not in seen:
            return f"output names unknown step {out!r}"
    cycle = find_cycle({s.id: list(s.depends_on) for s in plan.steps})
    if cycle:
        return "steps form a cycle: " + " -> ".join(cycle)
    return None


def find_cycle(deps: dict[str, list[str]]) -> list[str] | None:
    """A cycle in the dependency graph as a list of ids (first repeated at the end), or None."""
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(deps, white)
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        color[node] = grey
        stack.append(node)
        for dep in deps.get(node, []):
            if color.get(dep, black) == grey:
                return [*stack[stack.index(dep) :], dep]
            if color.get(dep) == white:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        color[node] = black
        return None

    for node in deps:
        if color[node] == white:
            found = visit(node)
            if found:
                return found
    return None


def topological_order(deps: dict[str, list[str]]) -> list[str]:
    """Ids ordered so each comes after its dependencies (stable w.r.t. the input order)."""
    done: set[str] = set()
    order: list[str] = []
    pending = list(deps)
    while pending:
        progressed = False
        for sid in list(pending):
            if all(d in done for d in deps[sid]):
                order.append(sid)
                done.add(sid)
                pending.remove(sid)
                progressed = True
        if not progressed:
            raise ValueError("cycle in dependencies")
    return order
