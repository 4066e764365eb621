"""Does a plan keep every part of a multi-part task? The demo's LLM planner, alone and completed.

    python bench/planning.py              # every task in bench/data/multipart_tasks.yaml
    python bench/planning.py --show       # and each task's plans
    python bench/planning.py --guess-only # only the auto planner's guess (no model; a second)

The planner is the demo's (agents/planner-smollm2.yaml: SmolLM2-135M through the agent's llama_cpp
backend, output constrained to the plan schema), asked exactly as the router asks it (the same
instruction, one retry with the validation error, then one step with the whole text). Each task
is planned once and judged twice:
- the LLM plan as parsed (`parse_plan_output`), as the router used it before it completed plans;
- the router's plan: the LLM plan completed with the parts it left out (`plan_from_output`), or
  the single-step fallback when the plan stays invalid.

The tasks and their parts were written by an author who saw neither the planner nor the router
(bench/data/multipart_tasks.yaml). A part counts as kept when most of the content words of the
author's phrase for it are in one step's instruction (the single-step fallback keeps every part:
its step is the whole text); a dependent part is wired when its step depends, directly or not, on
the step that keeps the part it needs.

It also scores the guess by which `planner: auto` decides whether a task is worth a planning call
(`looks_multipart`): on the multi-part tasks above, on single-request tasks with material
(bench/data/single_tasks.yaml, which the guess was tuned on), and on a mixed set written later by
another author who saw neither (bench/data/request_count_blind.yaml). Prints the tables and writes
bench/results/planning.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agentmesh.agent.backends.llama_cpp import LlamaCppBackend  # noqa: E402
from agentmesh.agent.config import LlamaCppBackendConfig, load_agent_config  # noqa: E402
from agentmesh.agent.prompt import StepRequest  # noqa: E402
from agentmesh.errors import PlanError  # noqa: E402
from agentmesh.planning import (  # noqa: E402
    looks_multipart,
    parse_plan_output,
    plan_from_output,
    plan_schema,
    planning_instruction,
    single_step_plan,
)
from agentmesh.protocol import Plan  # noqa: E402
from agentmesh.registry.text import terms  # noqa: E402
from agentmesh.router_config import RouterConfig  # noqa: E402

TASKS = ROOT / "bench" / "data" / "multipart_tasks.yaml"
SINGLE = ROOT / "bench" / "data" / "single_tasks.yaml"
MIXED = ROOT / "bench" / "data" / "request_count_blind.yaml"
PLANNER = ROOT / "agents" / "planner-smollm2.yaml"
RESULTS = ROOT / "bench" / "results" / "planning.json"


@dataclass
class Judged:
    kept: int  # parts kept
    wired: int  # dependent parts whose step depends on the step of the part they need
    steps: int


def keeping_step(phrase: str, plan: Plan, whole_text: str) -> str | None:
    """The step whose instruction holds most of the phrase's content words, if any."""
    wanted = set(terms(phrase))
    best: tuple[int, str] | None = None
    for step in plan.steps:
        if step.instruction == whole_text:
            return step.id
        have = len(wanted & set(terms(step.instruction)))
        if 2 * have >= len(wanted) and (best is None or have > best[0]):
            best = (have, step.id)
    return best[1] if best else None


def judge(plan: Plan, task: dict[str, Any]) -> Judged:
    ids = [keeping_step(p["ask"], plan, task["task"]) for p in task["parts"]]
    deps = {s.id: set(s.depends_on) for s in plan.steps}

    def upstream(step_id: str) -> set[str]:
        seen: set[str] = set()
        todo = list(deps.get(step_id, ()))
        while todo:
            d = todo.pop()
            if d not in seen:
                seen.add(d)
                todo.extend(deps.get(d, ()))
        return seen

    wired = 0
    for part, step_id in zip(task["parts"], ids, strict=True):
        need = part.get("needs")
        if need is None or step_id is None:
            continue
        needed = ids[need - 1]
        # One step doing both parts (or the whole text) is wired too.
        if needed is not None and (needed == step_id or needed in upstream(step_id)):
            wired += 1
    return Judged(kept=sum(i is not None for i in ids), wired=wired, steps=len(plan.steps))


def plan_like_the_router(backend: LlamaCppBackend, text: str, config: RouterConfig) -> dict[str, Any]:
    """The router's planning: ask, parse and complete (`plan_from_output`); on a PlanError ask once
    more with it; else one step. Also the LLM's plan as the router used it before it completed
    plans: the first output that parses (`parse_plan_output`), asked again in the same way, else
    one step. The planner is asked again only while one of the two still needs it."""
    llm: Plan | None = None
    router: dict[str, Any] | None = None
    llm_error = router_error = ""
    started = time.perf_counter()
    for attempt in range(1 + config.plan_retries):
        # The retry carries the router's error once the router needs it, else the old parser's.
        error = (router_error if router is None else llm_error) if attempt else None
        request = StepRequest(
            instruction=planning_instruction(text, error=error, max_steps=config.max_plan_steps),
            response_format=plan_schema(),
        )
        out = backend.run_sync(request)
        if llm is None:
            try:
                llm = parse_plan_output(out.output, max_steps=config.max_plan_steps)
            except PlanError as exc:
                llm_error = str(exc)
        if router is None:
            try:
                done = plan_from_output(out.output, text, max_steps=config.max_plan_steps)
                router = {"router": done.plan, "how": done.describe() or "planned", "s": _since(started)}
            except PlanError as exc:
                router_error = str(exc)
        if llm is not None and router is not None:
            break
    if router is None:
        router = {
            "router": single_step_plan(text),
            "how": f"single step ({router_error})",
            "s": _since(started),
        }
    return {"llm": llm or single_step_plan(text), **router}


def _since(started: float) -> float:
    return time.perf_counter() - started


def score_guess() -> dict[str, dict[str, int]]:
    """How often ``looks_multipart`` says "several requests", per set and kind of task."""
    sets = {
        "multipart_tasks": [(t["task"], True) for t in yaml.safe_load(TASKS.read_text())],
        "single_tasks (tuned on)": [(t["task"], False) for t in yaml.safe_load(SINGLE.read_text())],
        "request_count_blind": [(t["task"], t["requests"] > 1) for t in yaml.safe_load(MIXED.read_text())],
    }
    scores = {}
    for name, tasks in sets.items():
        several = [looks_multipart(text) for text, want in tasks if want]
        one = [looks_multipart(text) for text, want in tasks if not want]
        scores[name] = {
            "several_requests": len(several),
            "several_guessed": sum(several),
            "one_request": len(one),
            "one_guessed_several": sum(one),
        }
    print(f"{'auto planner guess':26} {'several requests: planned':>26} {'one request: planned':>21}")
    for name, s in scores.items():
        several = f"{s['several_guessed']}/{s['several_requests']}" if s["several_requests"] else "-"
        one = f"{s['one_guessed_several']}/{s['one_request']}" if s["one_request"] else "-"
        print(f"{name:26} {several:>26} {one:>21}")
    return scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--show", action="store_true", help="print each task's plans")
    parser.add_argument("--guess-only", action="store_true", help="only score the auto planner's guess")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.guess_only:
        score_guess()
        return 0

    tasks = yaml.safe_load(TASKS.read_text())
    agent = load_agent_config(PLANNER)
    assert isinstance(agent.backend, LlamaCppBackendConfig)
    backend = LlamaCppBackend(agent.backend)
    asyncio.run(backend.load())
    config = RouterConfig()

    rows = []
    for n, task in enumerate(tasks, start=1):
        planned = plan_like_the_router(backend, task["task"], config)
        llm, router = judge(planned["llm"], task), judge(planned["router"], task)
        parts, dependent = len(task["parts"]), sum("needs" in p for p in task["parts"])
        rows.append(
            {
                "task": task["task"],
                "parts": parts,
                "dependent": dependent,
                "how": planned["how"],
                "seconds": planned["s"],
                "llm": vars(llm),
                "router": vars(router),
                "llm_plan": [s.model_dump(exclude_none=True) for s in planned["llm"].steps],
                "router_plan": [s.model_dump(exclude_none=True) for s in planned["router"].steps],
            }
        )
        print(f"\r{n}/{len(tasks)} tasks planned", end="", file=sys.stderr, flush=True)
        if args.show:
            print(f"\n{task['task']!r}: {planned['how']}")
            for label, plan in (("llm", planned["llm"]), ("router", planned["router"])):
                for s in plan.steps:
                    print(f"   {label:6} {s.id} <- {','.join(s.depends_on) or '-':6} {s.instruction[:90]!r}")
    print(file=sys.stderr)

    total_parts = sum(r["parts"] for r in rows)
    total_dep = sum(r["dependent"] for r in rows)
    summary = {}
    for which in ("llm", "router"):
        summary[which] = {
            "tasks_all_parts_kept": sum(r[which]["kept"] == r["parts"] for r in rows),
            # A single step keeps every part by definition; these were really planned.
            "tasks_all_parts_kept_in_several_steps": sum(
                r[which]["kept"] == r["parts"] and r[which]["steps"] > 1 for r in rows
            ),
            "parts_kept": sum(r[which]["kept"] for r in rows),
            "dependent_parts_wired": sum(r[which]["wired"] for r in rows),
        }
    summary["tasks"], summary["parts"], summary["dependent_parts"] = len(rows), total_parts, total_dep
    summary["single_step_fallbacks"] = sum(r["how"].startswith("single") for r in rows)
    summary["plans_changed_by_the_router"] = sum(r["how"].startswith("the router") for r in rows)
    summary["plans_made_of_the_task"] = sum(r["how"].startswith("the plan had no steps") for r in rows)
    summary["planning_s_p50"] = statistics.median(r["seconds"] for r in rows)

    print()
    summary["auto_guess"] = score_guess()
    print(f"\n{len(rows)} tasks, {total_parts} parts ({total_dep} needing an earlier part's answer)")
    print(f"{'plan':34} {'tasks whole':>12} {'(in >1 step)':>13} {'parts kept':>11} {'dependent wired':>16}")
    for which, label in (("llm", "LLM plan (SmolLM2) as parsed"), ("router", "router's plan (completed)")):
        s = summary[which]
        print(
            f"{label:34} {s['tasks_all_parts_kept']:>5}/{len(rows):<6} "
            f"{s['tasks_all_parts_kept_in_several_steps']:>6}/{len(rows):<6} "
            f"{s['parts_kept']:>4}/{total_parts:<6} {s['dependent_parts_wired']:>6}/{total_dep:<9}"
        )
    print(
        f"router: changed {summary['plans_changed_by_the_router']} LLM plans, made "
        f"{summary['plans_made_of_the_task']} of the task's requests (the LLM's only copied examples), "
        f"{summary['single_step_fallbacks']} single-step fallbacks; "
        f"planning p50 {summary['planning_s_p50']:.2f} s"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"machine": platform.processor() or platform.machine(), "summary": summary, "tasks": rows},
            indent=1,
        )
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
