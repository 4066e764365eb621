"""The Router service: registry + planning + orchestration bound to MQTT (DESIGN.md sections 3-6).

All task state lives in :class:`~agentmesh.orchestration.Task` objects that are only touched on
the router's event loop, so no locks are needed. Every change is written to the ledger before the
assignment or event it causes goes out; on start the router resumes every unfinished task it finds
there (re-sending in-flight assignments with the same attempt number, which agents deduplicate).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

from agentmesh.directory import Directory
from agentmesh.errors import AgentMeshError, PlanError, ProtocolError
from agentmesh.orchestration import (
    Attempt,
    Ledger,
    Step,
    Task,
    judge,
    start_tier,
    tier_span,
    tiers_above,
    why_not_escalated,
)
from agentmesh.planning import (
    PLANNER_STEP_ID,
    SINGLE_STEP_ID,
    looks_multipart,
    plan_from_output,
    plan_schema,
    planning_instruction,
    request_query,
    single_step_plan,
)
from agentmesh.protocol import (
    MAX_PAYLOAD_BYTES,
    PLAN_TAG,
    TIERS,
    Constraints,
    Plan,
    Presence,
    StepResult,
    TaskEvent,
    TaskRequest,
    TaskResult,
    Tier,
    Topics,
    check_reply_topic,
    decode,
    encode,
    encode_assignment,
    encode_event,
)
from agentmesh.protocol.messages import EventKind
from agentmesh.protocol.messages import TaskStatus as FinalStatus
from agentmesh.registry import Embedder, Glossary, Registry
from agentmesh.router_config import RouterConfig
from agentmesh.routing import Match, Matcher
from agentmesh.transport import BrokerAddress, MqttClient, RawMessage, Subscription, Will

log = logging.getLogger(__name__)

# A crash between committing a finished task and publishing its result would lose the result;
# on start, results of tasks finished this recently are published again (retained, idempotent).
_REPUBLISH_WINDOW_S = 60.0
# At most this many tasks in flight, a handler's assignments are written before its events.
_EAGER_UP_TO = 4
# Waiting steps a freed slot is offered to, oldest first, before the ticker tries them all.
_DRAIN_TRIES = 8


@dataclass(frozen=True)
class _Waiting:
    """A step waiting for an agent with free capacity, and how to send it when one frees up."""

    task_id: str
    step_id: str
    tier: Tier
    kind: EventKind
    prefer_family: str | None
    why: str
    since: float = field(default_factory=time.monotonic)


class Router:
    """Plans submitted tasks, routes their steps to agents, escalates weak steps, publishes results.

    Use as an async context manager::

        async with Router(RouterConfig(router_id="r1"), broker="mqtt://127.0.0.1:1883") as router:
            await router.serve_forever()
    """

    def __init__(
        self,
        config: RouterConfig | None = None,
        *,
        broker: BrokerAddress | str | None = None,
        embedder: Embedder | None = None,
    ) -> None:
        self.config = config or RouterConfig()
        self.broker = (
            broker
            if isinstance(broker, BrokerAddress)
            else BrokerAddress.resolve(broker or self.config.broker)
        )
        self.topics = Topics(self.config.namespace)
        self._reply_to = self.topics.router_results(self.config.router_id)
        self.registry = Registry(embedder, glossary=Glossary.load(self.config.glossaries))
        self.matcher = Matcher(self.registry, self.config.matching)
        self.client = MqttClient(
            self.broker,
            client_id=self.config.router_id,
            will=Will(
                self.topics.router_presence(self.config.router_id),
                encode(Presence(id=self.config.router_id, state="offline")),
            ),
            session_expiry_s=self.config.session_expiry_s,
        )
        self.ledger: Ledger | None = None
        self.directory: Directory | None = None
        self._tasks: dict[str, Task] = {}
        self._waiting: deque[_Waiting] = deque()
        self._dirty: dict[str, Task] = {}
        # (topic, payload or a callable that makes it, retain, is an assignment)
        self._outbox: list[tuple[str, Any, bool, bool]] = []
        # Queries known to be in the embedder's cache: matching them needs no worker thread.
        self._embedded: OrderedDict[str, None] = OrderedDict()
        self._background: set[asyncio.Task[Any]] = set()
        self._submits: Subscription | None = None
        self._results: Subscription | None = None
        self._stopped = asyncio.Event()
        self._last_housekeeping = 0.0
        # Context an agent needs beyond the prompt to write an answer in.
        self._answer_room = min(self.config.max_tokens or 256, 256)

    # ---- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Router:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self.ledger = Ledger(self.config.ledger_path(), background_checkpoint=True, pending_file=True)
        # Subscribed before connecting: results queued in our persistent session while the
        # router was down are delivered right after CONNACK and must have somewhere to land.
        self._results = await self.client.subscribe(self.topics.router_results(self.config.router_id))
        submit_filter = self.topics.submit
        if await self.client.negotiate() and self.config.share_group:
            submit_filter = self.topics.shared_submit(self.config.share_group)
        self._submits = await self.client.subscribe(submit_filter)
        # Load the embedding model and the intent bank now, not on the first card or task: seconds
        # of CPU that would otherwise delay the first routing decision.
        await asyncio.to_thread(self.matcher.prepare_query, "agentmesh router warm-up")
        await self.client.connect()
        self.directory = Directory(self.client, self.topics, self.registry)
        await self.directory.start()
        await self.client.publish(
            self.topics.router_presence(self.config.router_id),
            Presence(id=self.config.router_id, state="online"),
            retain=True,
        )
        self._resume()
        self._flush()
        self._spawn(self._loop("submit", self._submits, self._on_submit))
        self._spawn(self._loop("results", self._results, self._on_result))
        self._spawn(self._ticker())
        log.info(
            "router %s on %s (MQTT %s, submit via %s)",
            self.config.router_id,
            self.broker,
            "5" if self.client.mqtt5 else "3.1.1",
            submit_filter,
        )

    async def stop(self) -> None:
        """Stop without losing a message: every TaskRequest and StepResult the broker delivered is
        in the ledger, and unfinished tasks go on when a router with this id starts again. When
        another router of the share group is online, this one leaves the group first, so that the
        broker gives it all new tasks instead of queuing a share of them in this session."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        with contextlib.suppress(AgentMeshError):
            await self.client.publish(
                self.topics.router_presence(self.config.router_id),
                Presence(id=self.config.router_id, state="offline"),
                retain=True,
                timeout=5,
            )
            sub = self._submits
            if sub is not None and sub.filter.startswith("$share/") and await self._other_routers_online():
                await self.client.unsubscribe(sub, timeout=5)
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        # The loops' unread messages were acknowledged to the broker already: handle them here.
        # What the broker sends after this stays unread and so unacknowledged, and the session
        # delivers it again after the next start.
        self.client.pause_reading()
        for name, sub, handler in (
            ("submit", self._submits, self._on_submit),
            ("results", self._results, self._on_result),
        ):
            for raw in sub.drain() if sub is not None else ():
                self._handle(name, handler, raw)
        self._flush()
        if self.directory is not None:
            await self.directory.stop()
        await self.client.close()
        if self.ledger is not None:
            self.ledger.close()

    async def serve_forever(self) -> None:
        await self._stopped.wait()

    def task(self, task_id: str) -> Task | None:
        """A task's current state (in flight here, or from the ledger)."""
        if task_id in self._tasks:
            return self._tasks[task_id]
        return self.ledger.get(task_id) if self.ledger else None

    @property
    def active_tasks(self) -> int:
        return len(self._tasks)

    # ---- plumbing ----------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        if self._stopped.is_set():
            coro.close()  # stopping: the ledger holds the task, and the next start resumes it
            return

        async def run_then_flush() -> None:
            try:
                await coro
            finally:
                self._flush()

        task = asyncio.create_task(run_then_flush())
        self._background.add(task)
        task.add_done_callback(self._reap)

    def _reap(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("router task crashed", exc_info=task.exception())

    async def _loop(self, name: str, sub: Subscription, handler: Callable[[RawMessage], None]) -> None:
        async for raw in sub:
            self._handle(name, handler, raw)
            try:
                self._flush()
            except Exception:  # the loop lives; what is not flushed goes at the next flush
                log.exception("%s loop: flush failed", name)

    def _handle(self, name: str, handler: Callable[[RawMessage], None], raw: RawMessage) -> None:
        try:
            handler(raw)
        except Exception:
            # One bad message must never stop the loop (DESIGN.md section 4).
            log.exception("%s loop: failed to handle a message on %s", name, raw.topic)

    async def _other_routers_online(self) -> bool:
        try:
            held = await self.client.retained([self.topics.all_router_presence], timeout=2)
        except AgentMeshError:
            return False  # keep the subscription: tasks wait in the session rather than go nowhere
        for raw in held:
            with contextlib.suppress(AgentMeshError):
                presence = decode(Presence, raw.payload, topic=raw.topic)
                assert isinstance(presence, Presence)
                if presence.id != self.config.router_id and presence.state == "online":
                    return True
        return False

    # Write-ahead, batched: a handler marks tasks dirty and queues its messages; _flush() writes
    # every dirty task at once and only then sends the messages. So nothing goes out that the
    # ledger does not hold, and a task costs one write per handler, not one per change.

    def _save(self, task: Task) -> None:
        self._dirty[task.task_id] = task

    def _publish(self, topic: str, message: Any, *, retain: bool = False, assignment: bool = False) -> None:
        self._outbox.append((topic, message, retain, assignment))

    def _flush(self) -> None:
        if self._dirty:
            assert self.ledger is not None
            dirty, self._dirty = self._dirty, {}
            try:
                self.ledger.save_many(dirty.values())
            except (OSError, sqlite3.Error) as exc:
                # Nothing goes out that the ledger does not hold: the states and the messages wait
                # for the next flush (the ticker's, at the latest), and the loop that got here lives.
                self._dirty = dirty
                log.error(
                    "ledger write failed; %d message(s) held until it works: %s", len(self._outbox), exc
                )
                return
        outbox, self._outbox = self._outbox, []
        if len(self._tasks) <= _EAGER_UP_TO:
            # Lightly loaded: assignments go on the wire now, so the agent starts while the events
            # are encoded and sent. Under load everything waits for the one send per loop turn.
            assignments = [item for item in outbox if item[3]]
            if assignments:
                self._send(assignments)
                self.client.flush()
                outbox = [item for item in outbox if not item[3]]
        self._send(outbox)

    def _send(self, outbox: list[tuple[str, Any, bool, bool]]) -> None:
        for topic, message, retain, _ in outbox:
            try:
                self.client.publish_nowait(topic, message() if callable(message) else message, retain=retain)
            except Exception as exc:  # one message that cannot go out must not hold back the others
                log.warning("publish to %s failed: %s", topic[:200], exc)

    def _event(
        self,
        task: Task,
        kind: EventKind,
        step: Step | None = None,
        attempt: Attempt | None = None,
        detail: str = "",
    ) -> None:
        # Encoded when it is sent: when lightly loaded that is after the assignment is on the wire.
        event = partial(
            encode_event,
            task.task_id,
            kind,
            step_id=step.id if step else None,
            agent_id=attempt.agent_id if attempt else None,
            tier=attempt.tier if attempt else None,
            detail=detail,
        )
        self._publish(self.topics.events(task.task_id), event)

    # ---- submit ------------------------------------------------------------------------------

    def _on_submit(self, raw: RawMessage) -> None:
        try:
            request = decode(TaskRequest, raw.payload, topic=raw.topic)
        except ProtocolError as exc:
            log.warning("rejected a malformed TaskRequest: %s", exc)
            self._reject_malformed(raw.payload, exc)
            return
        assert isinstance(request, TaskRequest)
        assert self.ledger is not None
        if request.task_id in self._tasks or self.ledger.exists(request.task_id):
            self._on_duplicate(request)
            return
        task = Task(request=request)
        self._tasks[task.task_id] = task
        self._save(task)
        self._event(task, "accepted", detail=f"router {self.config.router_id}")
        self._plan_or_fail(task)

    def _plan_or_fail(self, task: Task) -> None:
        # A task the planning code cannot handle fails with the reason, rather than staying
        # accepted and unplanned (and failing the same way on every restart).
        try:
            self._plan(task)
        except Exception as exc:
            log.exception("planning task %s failed", task.task_id)
            self._finish(task, "failed", f"the router could not plan it: {type(exc).__name__}: {exc}")

    def _on_duplicate(self, request: TaskRequest) -> None:
        """A task id seen before: the same request again (a redelivery, a client's retry) is
        ignored; a different one is rejected, leaving the first task and its retained result as
        they are. Its sender hears of it through ``reply_to``, and through the task's events when
        the first task is over (while it runs, a ``rejected`` event would end its watchers)."""
        assert self.ledger is not None
        first = self._tasks.get(request.task_id) or self.ledger.get(request.task_id)
        if first is None or _same_request(first.request, request):
            log.debug("duplicate TaskRequest %s ignored", request.task_id)
            return
        reason = (
            f"task_id {request.task_id} is already taken by another task (client {first.request.client_id}, "
            f"{first.status}); give every task a new id"
        )
        log.warning("rejected a TaskRequest: %s", reason)
        if first.finished:
            self._publish(
                self.topics.events(request.task_id),
                TaskEvent(task_id=request.task_id, kind="rejected", detail=reason),
            )
        if request.reply_to and request.reply_to != first.request.reply_to:
            self._publish(
                request.reply_to, TaskResult(task_id=request.task_id, status="rejected", error=reason)
            )

    def _reject_malformed(self, payload: bytes, error: ProtocolError) -> None:
        """Answer a broken TaskRequest where we can tell who sent it; otherwise only log it."""
        try:
            data = json.loads(payload)
        except (ValueError, RecursionError):
            return
        if not isinstance(data, dict) or not isinstance(data.get("task_id"), str):
            return
        task_id = data["task_id"]
        try:
            events, result_topic = self.topics.events(task_id), self.topics.result(task_id)
        except ProtocolError:
            return
        reason = f"invalid TaskRequest: {error.reason}" + (f" (field {error.field})" if error.field else "")
        result = TaskResult(task_id=task_id, status="rejected", error=reason)
        reply_to: str | None = None
        if isinstance(data.get("reply_to"), str):
            with contextlib.suppress(ValueError):
                reply_to = check_reply_topic(data["reply_to"])
        assert self.ledger is not None
        holder = self._tasks.get(task_id) or self.ledger.get(task_id)
        if holder is not None:
            # Another task's topics: its events and retained result are not this request's.
            if reply_to and reply_to != holder.request.reply_to:
                self._publish(reply_to, result)
            return
        self._publish(events, TaskEvent(task_id=task_id, kind="rejected", detail=reason))
        self._publish(result_topic, result, retain=True)
        if reply_to:
            self._publish(reply_to, result)

    # ---- planning ----------------------------------------------------------------------------

    def _plan(self, task: Task) -> None:
        request = task.request
        if request.plan is not None:
            self._use_plan(task, request.plan, "explicit plan")
            return
        wants_llm = request.planner == "llm" or (request.planner == "auto" and looks_multipart(request.text))
        if not wants_llm:
            self._use_single_step(task, "single step")
            return
        step = Step(
            id=PLANNER_STEP_ID,
            instruction=planning_instruction(request.text, max_steps=self.config.max_plan_steps),
            query="plan",
        )
        planner = self._pick_planner(request.constraints, task.prompt_tokens(step) + self._answer_room)
        if planner is None:
            self._use_single_step(task, "single step (no planner agent online with room for the task)")
            return
        task.steps[PLANNER_STEP_ID] = step
        self._assign(task, step, planner, kind="dispatched", detail="planning")

    def _pick_planner(self, constraints: Constraints, tokens: int) -> Match | None:
        """The cheapest routable agent with a capability tagged ``plan`` and a context window of
        ``tokens``, lowest tier first."""
        lo, hi = TIERS.index(constraints.min_tier), TIERS.index(constraints.max_tier)
        best: tuple[tuple[int, float, float], Match] | None = None
        small = self.registry.without_room(tokens)
        for entry in self.registry.agents():
            if not entry.routable or entry.load >= entry.capacity or entry.agent_id in small:
                continue
            tier_i = TIERS.index(entry.tier)
            if not lo <= tier_i <= hi:
                continue
            if constraints.data_class not in entry.vcv.policy.data_classes:
                continue
            for cap in entry.vcv.capabilities:
                if PLAN_TAG in cap.tags:
                    cost = entry.vcv.cost.usd_per_mtok_in + entry.vcv.cost.usd_per_mtok_out
                    key = (tier_i, entry.load / entry.capacity, cost)
                    if best is None or key < best[0]:
                        best = (key, Match(entry.agent_id, entry.tier, cap.name, 1.0, 1.0))
                    break
        return best[1] if best else None

    def _on_plan_result(self, task: Task, step: Step, attempt: Attempt) -> None:
        plan: Plan | None = None
        changes = ""
        reason = attempt.reason or attempt.status
        if attempt.status == "ok":
            try:
                completion = plan_from_output(
                    attempt.output, task.request.text, max_steps=self.config.max_plan_steps
                )
                plan, changes = completion.plan, completion.describe()
            except PlanError as exc:
                reason = str(exc)
                attempt.reason = f"invalid plan: {exc}"
                if step.planner_retries < self.config.plan_retries:
                    step.planner_retries += 1
                    step.instruction = planning_instruction(
                        task.request.text, error=str(exc), max_steps=self.config.max_plan_steps
                    )
                    match = Match(attempt.agent_id, attempt.tier, "plan", 1.0, 1.0)
                    self._assign(
                        task, step, match, kind="reassigned", detail=f"plan invalid, asking again: {exc}"
                    )
                    return
            except Exception as exc:  # a bug in the planning code, not the planner's: one step
                log.exception("completing the plan of task %s failed", task.task_id)
                reason = attempt.reason = f"the router could not use the plan: {type(exc).__name__}: {exc}"
        if plan is None:
            step.status = "failed"
            self._use_plan(task, self._single_step_plan(task), f"single step (planner failed: {reason})")
            return
        step.status = "done"
        step.accepted = len(step.attempts) - 1
        how = f"planned by {attempt.agent_id}" + (f"; {changes}" if changes else "")
        self._use_plan(task, plan, how)

    def _use_plan(self, task: Task, plan: Plan, how: str) -> None:
        if all(ps.query in self._embedded for ps in plan.steps):
            self._set_plan(task, plan, how)
        else:
            self._spawn(self._embed_then_plan(task, plan, how))

    def _use_single_step(self, task: Task, how: str) -> None:
        """``_use_plan(task, self._single_step_plan(task), how)`` without building and validating
        a Plan per task: the request's own validation already guarantees a non-empty text."""
        text = task.request.text
        query = request_query(text)
        if (query or text) not in self._embedded:
            self._use_plan(task, single_step_plan(text, query), how)
            return
        task.steps[SINGLE_STEP_ID] = Step(id=SINGLE_STEP_ID, instruction=text, query=query or text)
        self._steps_set(task, [SINGLE_STEP_ID], how)

    def _single_step_plan(self, task: Task) -> Plan:
        """The task as one step, a long one matched by what it asks for (``request_query``)."""
        return single_step_plan(task.request.text, request_query(task.request.text))

    async def _embed_then_plan(self, task: Task, plan: Plan, how: str) -> None:
        # Embedding a new query takes milliseconds of CPU: do it in a thread so the loop keeps
        # serving; matching afterwards hits the matcher's cache of prepared queries.
        queries = [ps.query for ps in plan.steps]
        try:
            await asyncio.to_thread(self.matcher.prepare_queries, queries)
        except Exception as exc:
            # The task would otherwise stay "planning" here, and after every restart.
            log.exception("embedding the steps of task %s failed", task.task_id)
            self._finish(task, "failed", f"the router could not embed its steps: {type(exc).__name__}: {exc}")
            return
        for q in queries:
            self._embedded[q] = None
        while len(self._embedded) > 4096:
            self._embedded.popitem(last=False)
        if not task.finished:
            self._set_plan(task, plan, how)

    def _set_plan(self, task: Task, plan: Plan, how: str) -> None:
        for ps in plan.steps:
            task.steps[ps.id] = Step(
                id=ps.id,
                instruction=ps.instruction,
                query=ps.query,
                depends_on=list(ps.depends_on),
                tier=ps.tier,
            )
        self._steps_set(task, plan.outputs(), how)

    def _steps_set(self, task: Task, output_ids: list[str], how: str) -> None:
        task.output_ids = output_ids
        task.status = "running"
        for step in task.dag_steps():
            if not step.depends_on:
                continue  # checked when it is routed, right below
            tier = start_tier(step.tier, task.request.constraints)
            if not self._candidates(step.query, task.request.constraints, tier, capability_only=True):
                self._save(task)
                self._finish(
                    task,
                    "rejected",
                    f"no agent can serve step {step.id} ({step.query[:80]!r}) on "
                    + tier_span(tier, task.request.constraints.max_tier),
                )
                return
        self._save(task)
        shape = "; ".join(
            s.id + (" <- " + ",".join(s.depends_on) if s.depends_on else "") for s in task.dag_steps()
        )
        self._event(task, "planned", detail=f"{how}: {shape}")
        self._advance(task)

    # ---- dispatch ----------------------------------------------------------------------------

    def _candidates(
        self,
        query: str,
        constraints: Constraints,
        tier: Tier,
        *,
        exclude: set[str] | None = None,
        prefer_family: str | None = None,
        capability_only: bool = False,
        wait_for_better: bool = True,
    ) -> list[Match]:
        return self.matcher.route(
            query,
            constraints=constraints,
            start_tier=tier,
            exclude=exclude or set(),
            prefer_family=prefer_family,
            allow_busy=capability_only,
            wait_for_better=wait_for_better,
        )

    def _advance(self, task: Task) -> None:
        if task.finished:
            return
        if task.complete():
            self._finish(task, "done")
            return
        for step in task.ready():
            step.status = "dispatched"
            self._route_and_assign(
                task, step, start_tier(step.tier, task.request.constraints), kind="dispatched"
            )

    def _route_and_assign(
        self,
        task: Task,
        step: Step,
        tier: Tier,
        *,
        kind: EventKind,
        prefer_family: str | None = None,
        why: str = "",
    ) -> None:
        waiting = _Waiting(task.task_id, step.id, tier, kind, prefer_family, why)
        if not self._try_assign(waiting):
            # Everyone who can serve it (well) is at capacity: the step waits (in order) for a
            # free slot instead of overloading an agent. Results and ticks drain the queue.
            step.status = "waiting"
            self._waiting.append(waiting)

    def _try_assign(self, w: _Waiting, *, recheck: bool = True) -> bool:
        """Assign a step if an agent has room; False if it must wait. With ``recheck``, a step
        that no agent (busy or not) can serve any more is failed instead of waiting forever."""
        task = self._tasks.get(w.task_id)
        step = task.steps.get(w.step_id) if task else None
        if task is None or step is None or task.finished:
            return True  # nothing left to do for it
        constraints = task.request.constraints
        tried = step.tried_agents()
        # An agent whose model cannot hold the prompt would only fail it: a long document goes
        # straight to an agent with the context for it (DESIGN.md section 4, model.context_window).
        tokens = task.prompt_tokens(step) + self._answer_room
        small = self.registry.without_room(tokens)
        exclude = tried | small
        matches = self._candidates(
            step.query,
            constraints,
            w.tier,
            exclude=exclude,
            prefer_family=w.prefer_family,
            wait_for_better=time.monotonic() - w.since < self.config.wait_for_better_s,
        )
        if matches:
            self._assign(task, step, matches[0], kind=w.kind, detail=w.why)
            return True
        if not recheck or self._candidates(
            step.query, constraints, w.tier, exclude=exclude, capability_only=True
        ):
            return False
        span = tier_span(w.tier, constraints.max_tier)
        windows = self._windows_too_small(step, constraints, w.tier, tried, small)
        if windows:
            why = (
                f"it needs a context window of about {tokens} tokens; the agents for it have less ({windows})"
            )
        elif step.attempts:
            why = f"no other agent on {span} can serve it"
        else:
            why = f"no agent can serve step {step.id} ({step.query[:80]!r}) on {span}"
        if not step.attempts:
            self._finish(task, "rejected", f"step {step.id}: {why}" if windows else why)
            return True
        self._keep_best_or_fail(task, step, why)
        return True

    def _windows_too_small(
        self, step: Step, constraints: Constraints, tier: Tier, tried: set[str], small: set[str]
    ) -> str:
        """The agents that would serve ``step`` but for their context window, as "id: window"."""
        if not small - tried:
            return ""
        matches = self._candidates(step.query, constraints, tier, exclude=tried, capability_only=True)
        return ", ".join(
            f"{m.agent_id}: {entry.context_window}"
            for m in matches
            if m.agent_id in small and (entry := self.registry.get(m.agent_id)) is not None
        )

    def _drain_waiting(self, slots: int | None = None) -> None:
        """Give freed capacity to waiting steps, oldest first. A step that still has to wait keeps
        its place and the next ones are tried: one waiting for a busy agent it needs must not hold
        up a step another agent is free for.

        A result frees one slot, so it tries up to _DRAIN_TRIES steps until one goes out (cheap
        on the hot path); the ticker tries them all and also fails steps whose agents have gone.
        """
        tries = len(self._waiting) if slots is None else min(len(self._waiting), _DRAIN_TRIES)
        kept: list[_Waiting] = []
        try:
            while tries > 0 and self._waiting:
                tries -= 1
                waiting = self._waiting.popleft()
                kept.append(waiting)  # until it is assigned: an error below must not lose it
                if self._try_assign(waiting, recheck=slots is None):
                    kept.pop()
                    if slots is not None:
                        break
        finally:
            self._waiting.extendleft(reversed(kept))

    def _assign(self, task: Task, step: Step, match: Match, *, kind: EventKind, detail: str = "") -> None:
        entry = self.registry.get(match.agent_id)
        planner = step.id == PLANNER_STEP_ID
        timeout = self.config.planner_timeout_s if planner else self.config.step_timeout_s
        deadline = task.request.constraints.deadline_s
        if deadline is not None:
            timeout = max(0.1, min(timeout, task.started_at + deadline - time.time()))
        attempt = Attempt(
            attempt=len(step.attempts) + 1,
            agent_id=match.agent_id,
            tier=match.tier,
            family=entry.family if entry else None,
            deadline_at=time.time() + timeout,
        )
        assignment = self._assignment(task, step, attempt, timeout)
        if len(assignment) > MAX_PAYLOAD_BYTES:
            # No agent could be sent it: fail now rather than wait for a timeout and blame one.
            self._keep_best_or_fail(
                task,
                step,
                f"its assignment (the instruction, the earlier steps' outputs and the previous attempt) "
                f"is {len(assignment)} bytes, over the {MAX_PAYLOAD_BYTES}-byte MQTT payload limit",
            )
            return
        step.attempts.append(attempt)
        step.status = "dispatched"
        if kind == "escalated":
            task.escalations += 1
        self._save(task)
        self.registry.add_inflight(match.agent_id, 1)
        self._publish(self.topics.inbox(attempt.agent_id), assignment, assignment=True)
        self._event(
            task, kind, step, attempt, detail or f"capability {match.capability} (score {match.score:.2f})"
        )

    def _send_assignment(self, task: Task, step: Step, attempt: Attempt, timeout: float) -> None:
        assignment = self._assignment(task, step, attempt, timeout)
        self._publish(self.topics.inbox(attempt.agent_id), assignment, assignment=True)

    def _assignment(self, task: Task, step: Step, attempt: Attempt, timeout: float) -> bytes:
        planner = step.id == PLANNER_STEP_ID
        return encode_assignment(
            task_id=task.task_id,
            step_id=step.id,
            attempt=attempt.attempt,
            router_id=self.config.router_id,
            reply_to=self._reply_to,
            instruction=step.instruction,
            inputs={d: task.steps[d].output for d in step.depends_on if d in task.steps},
            previous=None if planner else step.previous(),
            deadline_s=timeout,
            max_tokens=self.config.max_tokens,
            response_format=plan_schema() if planner else None,
        )

    # ---- results -----------------------------------------------------------------------------

    def _on_result(self, raw: RawMessage) -> None:
        try:
            result = decode(StepResult, raw.payload, topic=raw.topic)
        except ProtocolError as exc:
            log.warning("dropped a malformed StepResult: %s", exc)
            return
        assert isinstance(result, StepResult)
        task = self._tasks.get(result.task_id)
        step = task.steps.get(result.step_id) if task else None
        if task is None or step is None or not 1 <= result.attempt <= len(step.attempts):
            log.debug(
                "StepResult for unknown %s/%s#%d ignored", result.task_id, result.step_id, result.attempt
            )
            return
        attempt = step.attempts[result.attempt - 1]
        if attempt.finished or attempt.agent_id != result.agent_id:
            return  # a duplicate (QoS 1 re-delivery) or an answer after we moved on
        self.registry.add_inflight(attempt.agent_id, -1)
        self._drain_waiting(slots=1)  # the freed slot goes to the oldest waiting step first
        attempt.status = result.status
        attempt.output = result.output
        attempt.confidence = result.confidence
        attempt.usage = result.usage
        if result.error:
            attempt.reason = result.error
        if attempt is not step.attempts[-1] or step.status != "dispatched":
            self._save(task)
            return
        if step.id == PLANNER_STEP_ID:
            self._on_plan_result(task, step, attempt)
            return
        verdict = judge(result, attempt.tier, self.config.escalation)
        if verdict.accept:
            self._accept(task, step, len(step.attempts) - 1)
            return
        attempt.reason = verdict.reason
        self._after_weak(task, step, attempt)

    def _accept(self, task: Task, step: Step, index: int) -> None:
        step.accepted = index
        step.status = "done"
        self._save(task)
        attempt = step.attempts[index]
        conf = f" confidence {attempt.confidence:.2f}" if attempt.confidence is not None else ""
        detail = f"{len(attempt.output)} chars{conf}"
        last = step.attempts[-1]
        if last is not attempt:
            # Otherwise the progress reads as if the lower tier answered after the higher one.
            detail += f"; kept as the best of {len(step.attempts)} attempts ({last.agent_id}: {last.reason})"
        self._event(task, "step_done", step, attempt, detail)
        self._advance(task)

    def _after_weak(self, task: Task, step: Step, attempt: Attempt, *, reassign: bool = False) -> None:
        """A weak answer escalates to the next tier; a lost agent is replaced, same tier first."""
        constraints = task.request.constraints
        attempts_left = len(step.attempts) < self.config.escalation.max_attempts
        spent = task.usage().cost_usd
        budget_left = constraints.max_cost_usd is None or spent < constraints.max_cost_usd
        # A decline says "not mine": with a near tie on its tier the route was a coin toss
        # ("What is 1*7?" between units and calculator), so the other agent gets it first.
        declined = not reassign and attempt.status == "declined"
        sideways = declined and self._near_tie(step, attempt, constraints)
        if reassign or sideways:
            target: Tier | None = attempt.tier
        else:
            above = tiers_above(attempt.tier, constraints)
            target = above[0] if above else None
        if target is None or not attempts_left or not budget_left:
            self._keep_best_or_fail(
                task,
                step,
                why_not_escalated(
                    attempt.tier, constraints, attempts_left=attempts_left, budget_left=budget_left
                ),
            )
            return
        self._save(task)
        self._route_and_assign(
            task,
            step,
            target,
            kind="reassigned" if reassign or sideways else "escalated",
            prefer_family=attempt.family,
            why=f"from {attempt.agent_id} on {attempt.tier}: {attempt.reason}",
        )

    def _near_tie(self, step: Step, attempt: Attempt, constraints: Constraints) -> bool:
        """Whether an agent not yet tried matched ``step`` on ``attempt``'s tier within
        ``decline_margin`` of the agent that made ``attempt``."""
        matches = self.matcher.match(
            step.query, tier=attempt.tier, constraints=constraints, allow_busy=True, k=self.matcher.weights.k
        )
        similarity = {m.agent_id: m.similarity for m in matches}
        declined = similarity.get(attempt.agent_id)
        if declined is None:
            return False
        tried = step.tried_agents()
        margin = self.matcher.weights.decline_margin
        return any(s >= declined - margin for a, s in similarity.items() if a not in tried)

    def _keep_best_or_fail(self, task: Task, step: Step, why: str) -> None:
        best = step.best_ok()
        last = step.current
        if last is not None:
            last.reason = f"{last.reason}; {why}" if last.reason else why
        if best is not None:
            self._accept(task, step, best)
            return
        step.status = "failed"
        self._save(task)
        reason = f"step {step.id} failed: {last.reason if last else why}"
        self._event(task, "step_failed", step, last, reason)
        self._finish(task, "failed", reason)

    # ---- finishing, timeouts, housekeeping ----------------------------------------------------

    def _finish(self, task: Task, status: FinalStatus, error: str | None = None) -> None:
        if task.finished:
            return
        for _step, attempt in task.in_flight():
            attempt.status = "cancelled"
            attempt.reason = f"task {status}"
            self.registry.add_inflight(attempt.agent_id, -1)
        task.status = status
        task.error = error
        task.finished_at = time.time()
        self._save(task)
        # The final event before the result: a client that stops listening when the result
        # arrives has then seen every event.
        self._event(task, status, detail=error or task.outputs()[1][:200])
        self._publish_result(task)
        self._tasks.pop(task.task_id, None)

    def _publish_result(self, task: Task) -> None:
        payload = task.result_payload()  # once for both topics
        # The waiting client's copy first: the broker forwards it before it stores the retained
        # one (a new topic per task in its retained tree), which is then off the task's path.
        if task.request.reply_to:
            self._publish(task.request.reply_to, payload)
        self._publish(self.topics.result(task.task_id), payload, retain=True)

    async def _ticker(self) -> None:
        last_checkpoint = time.monotonic()
        while True:
            await asyncio.sleep(self.config.tick_s)
            try:
                self._tick(time.time())
            except Exception:
                log.exception("router tick failed")
            self._flush()
            assert self.ledger is not None
            try:
                self.ledger.apply_pending()  # off the tasks' path, many of them per transaction
            except (sqlite3.Error, OSError) as exc:  # kept in the pending file; tried again next tick
                log.warning("ledger: moving pending states into SQLite failed: %s", exc)
            if time.monotonic() - last_checkpoint >= 1.0:
                last_checkpoint = time.monotonic()
                try:
                    await asyncio.to_thread(self.ledger.checkpoint)
                except sqlite3.Error as exc:
                    log.warning("ledger checkpoint failed: %s", exc)

    def _tick(self, now: float) -> None:
        for task in list(self._tasks.values()):
            deadline = task.request.constraints.deadline_s
            if deadline is not None and now > task.started_at + deadline:
                self._finish(task, "failed", f"deadline of {deadline:g}s exceeded")
                continue
            for step, attempt in task.in_flight():
                entry = self.registry.get(attempt.agent_id)
                if now > attempt.deadline_at:
                    self._lost(
                        task,
                        step,
                        attempt,
                        "timeout",
                        f"no answer within {attempt.deadline_at - attempt.dispatched_at:.1f}s",
                    )
                elif entry is None or (
                    entry.state == "offline" and now - entry.state_since >= self.config.offline_grace_s
                ):
                    self._lost(task, step, attempt, "offline", f"agent {attempt.agent_id} went offline")
        self._drain_waiting()  # agents that joined, or capacity freed by finished tasks
        if now - self._last_housekeeping > 5.0:
            self._last_housekeeping = now
            self._housekeeping(now)

    def _lost(
        self, task: Task, step: Step, attempt: Attempt, status: Literal["timeout", "offline"], reason: str
    ) -> None:
        attempt.status = status
        attempt.reason = reason
        self.registry.add_inflight(attempt.agent_id, -1)
        self._drain_waiting(slots=1)
        if step.id == PLANNER_STEP_ID:
            step.status = "failed"
            self._use_plan(task, self._single_step_plan(task), f"single step (planner: {reason})")
            return
        self._after_weak(task, step, attempt, reassign=True)

    def _housekeeping(self, now: float) -> None:
        assert self.ledger is not None
        for task_id in self.ledger.results_to_clear(now - self.config.result_ttl_s):
            self._publish(self.topics.result(task_id), b"", retain=True)
            self.ledger.mark_cleared(task_id)
        self.ledger.prune(now - self.config.ledger_keep_s)

    def _resume(self) -> None:
        """Pick up every unfinished task from the ledger (after a crash or restart)."""
        assert self.ledger is not None
        now = time.time()
        resumed = 0
        for task in self.ledger.unfinished():
            self._tasks[task.task_id] = task
            resumed += 1
            if task.status == "planning" and not task.in_flight():
                task.steps.pop(PLANNER_STEP_ID, None)
                self._plan_or_fail(task)
                continue
            for step, attempt in task.in_flight():
                # Same attempt number: an agent that already answered re-sends its cached result.
                timeout = max(1.0, attempt.deadline_at - attempt.dispatched_at)
                attempt.deadline_at = now + timeout
                self.registry.add_inflight(attempt.agent_id, 1)
                self._send_assignment(task, step, attempt, timeout)
            for step in task.dag_steps():
                if step.status == "waiting" or (
                    step.status == "dispatched" and not (step.current and not step.current.finished)
                ):
                    step.status = "pending"  # crashed between choosing and assigning
            self._advance(task)
        if resumed:
            log.info("resumed %d unfinished task(s) from the ledger", resumed)
        for task in self.ledger.finished_since(now - _REPUBLISH_WINDOW_S):
            self._publish_result(task)


def _same_request(a: TaskRequest, b: TaskRequest) -> bool:
    """The same task sent again (its ``sent_at`` may differ)."""
    return a.model_dump(exclude={"sent_at"}) == b.model_dump(exclude={"sent_at"})
