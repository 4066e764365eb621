"""MeshClient: submit tasks, stream their events, await their results.

The client listens for results on a reply topic of its own (``{ns}/clients/{client_id}/results``,
named in every TaskRequest's ``reply_to``), so it needs one subscription however many tasks it
runs. Events are only subscribed to when asked for, because they are not retained: a client that
wants them must listen before it submits.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agentmesh.errors import ProtocolError, TaskError, TaskTimeout, TransportError
from agentmesh.protocol import (
    DEFAULT_NAMESPACE,
    Constraints,
    Plan,
    TaskEvent,
    TaskRequest,
    TaskResult,
    Topics,
    decode,
)
from agentmesh.protocol.codec import protocol_error
from agentmesh.protocol.messages import PlannerKind
from agentmesh.transport import BrokerAddress, MqttClient, RawMessage, Subscription

_FINAL = ("done", "failed", "rejected")


class TaskHandle:
    """A submitted task: its id, its events (if subscribed) and its result."""

    def __init__(self, client: MeshClient, task_id: str, events: Subscription | None) -> None:
        self.task_id = task_id
        self._client = client
        self._events = events
        self._result: asyncio.Future[TaskResult] = client._future(task_id)

    async def events(self) -> AsyncIterator[TaskEvent]:
        """Every event of the task until it is done, failed or rejected."""
        if self._events is None:
            raise TaskError("submit(..., events=True) to stream events", task_id=self.task_id)
        get: asyncio.Future[Any] | None = None
        try:
            while True:
                get = asyncio.ensure_future(self._events.get())
                waiters: set[asyncio.Future[Any]] = {get, self._result}
                done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                if get not in done:
                    get.cancel()
                    # The result can overtake the last events; drain what is already here.
                    while self._events.pending():
                        event = self._parse_event(await self._events.get())
                        if event:
                            yield event
                    return
                event = self._parse_event(get.result())
                if event is None:
                    continue
                yield event
                if event.kind in _FINAL:
                    return
        finally:
            if get is not None:
                get.cancel()  # a reader cancelled while waiting: nobody would see its error
            await self._events.close()

    def _parse_event(self, raw: RawMessage) -> TaskEvent | None:
        try:
            event = decode(TaskEvent, raw.payload, topic=raw.topic)
        except ProtocolError:
            return None
        assert isinstance(event, TaskEvent)
        return event

    async def result(self, timeout: float | None = None) -> TaskResult:
        """The TaskResult; raises TaskTimeout if none arrives within ``timeout`` seconds."""
        try:
            return await asyncio.wait_for(asyncio.shield(self._result), timeout)
        except TimeoutError:
            raise TaskTimeout(task_id=self.task_id, timeout_s=timeout or 0.0) from None


class MeshClient:
    """Async client of the mesh. ``async with MeshClient(broker) as mesh: r = await mesh.run("...")``."""

    def __init__(
        self,
        broker: BrokerAddress | str | None = None,
        *,
        client_id: str | None = None,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> None:
        self.client_id = client_id or f"client-{uuid.uuid4().hex[:12]}"
        self.topics = Topics(namespace)
        self.reply_topic = f"{namespace}/clients/{self.client_id}/results"
        self.mqtt = MqttClient(broker, client_id=self.client_id)
        self._results: dict[str, asyncio.Future[TaskResult]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> MeshClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        await self.mqtt.connect()
        replies = await self.mqtt.subscribe(self.reply_topic)
        self._reader = asyncio.create_task(self._read_results(replies))

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        for fut in self._results.values():
            if not fut.done():
                fut.cancel()
        await self.mqtt.close()

    def _future(self, task_id: str) -> asyncio.Future[TaskResult]:
        if task_id not in self._results:
            self._results[task_id] = asyncio.get_running_loop().create_future()
        return self._results[task_id]

    async def _read_results(self, sub: Subscription) -> None:
        async for raw in sub:
            self._deliver(raw)

    def _deliver(self, raw: RawMessage) -> None:
        try:
            result = decode(TaskResult, raw.payload, topic=raw.topic)
        except ProtocolError:
            return
        assert isinstance(result, TaskResult)
        fut = self._results.get(result.task_id)
        if fut is not None and not fut.done():
            fut.set_result(result)

    async def submit(
        self,
        text: str = "",
        *,
        plan: Plan | dict[str, Any] | None = None,
        planner: PlannerKind = "auto",
        constraints: Constraints | None = None,
        task_id: str | None = None,
        events: bool = False,
        **constraint_fields: Any,
    ) -> TaskHandle:
        """Publish a TaskRequest. Extra keywords (min_tier, max_tier, max_cost_usd, deadline_s, ...)
        build the constraints when ``constraints`` is not given."""
        try:
            if constraints is None:
                constraints = (
                    Constraints.model_validate(constraint_fields) if constraint_fields else Constraints()
                )
            if isinstance(plan, dict):
                plan = Plan.model_validate(plan)
            request = TaskRequest(
                task_id=task_id or uuid.uuid4().hex,
                client_id=self.client_id,
                text=text,
                plan=plan,
                planner="explicit" if plan is not None and planner == "auto" else planner,
                constraints=constraints,
                reply_to=self.reply_topic,
            )
        except ValidationError as exc:
            raise protocol_error(exc) from None  # e.g. planner "explicit" without a plan
        sub = await self.mqtt.subscribe(self.topics.events(request.task_id)) if events else None
        handle = TaskHandle(self, request.task_id, sub)
        try:
            await self.mqtt.publish(self.topics.submit, request)
        except TransportError:
            if sub is not None:
                await sub.close()
            raise
        return handle

    async def run(self, text: str = "", *, timeout: float | None = 300.0, **kwargs: Any) -> TaskResult:
        """Submit and wait for the result."""
        handle = await self.submit(text, **kwargs)
        try:
            return await handle.result(timeout)
        finally:
            self._results.pop(handle.task_id, None)

    async def fetch_result(self, task_id: str, timeout: float = 5.0) -> TaskResult | None:
        """The retained TaskResult of a task, if the broker still holds it."""
        for raw in await self.mqtt.retained([self.topics.result(task_id)], timeout=timeout):
            try:
                result = decode(TaskResult, raw.payload, topic=raw.topic)
            except ProtocolError:
                continue
            assert isinstance(result, TaskResult)
            return result
        return None


def run_task(
    text: str,
    *,
    broker: str | None = None,
    timeout: float = 300.0,
    plan_file: str | Path | None = None,
    **kwargs: Any,
) -> TaskResult:
    """Blocking helper for scripts: submit ``text`` and return its TaskResult."""

    async def go() -> TaskResult:
        plan = None
        if plan_file is not None:
            from agentmesh.config import load_yaml

            plan = Plan.model_validate(load_yaml(plan_file))
        async with MeshClient(broker) as mesh:
            return await mesh.run(text, timeout=timeout, plan=plan, **kwargs)

    return asyncio.run(go())
