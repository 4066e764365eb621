"""Inbox checks and the answers to malformed assignments (agent/inbox.py)."""

from __future__ import annotations

import json

from agentmesh.agent.inbox import rejection, reply_topic_problem, salvage_reply

GOOD = {"task_id": "t1", "step_id": "s1", "attempt": 2, "reply_to": "agentmesh/v1/routers/r1/results"}


def test_reply_topic_problems() -> None:
    assert reply_topic_problem("agentmesh/v1/routers/r1/results") is None
    for bad in ["", "a/+/b", "a/#", "$SYS/x", None, 3]:
        assert reply_topic_problem(bad) is not None


def test_salvage_finds_the_reply_fields() -> None:
    payload = json.dumps({**GOOD, "type": "agentmesh.assign/1", "deadline_s": "soon"}).encode()
    assert salvage_reply(payload, max_bytes=1000) == ("t1", "s1", 2, "agentmesh/v1/routers/r1/results")


def test_salvage_gives_up_without_them() -> None:
    assert salvage_reply(b"not json", max_bytes=1000) is None
    assert salvage_reply(b"[1, 2]", max_bytes=1000) is None
    assert salvage_reply(json.dumps({**GOOD, "attempt": 0}).encode(), max_bytes=1000) is None
    assert salvage_reply(json.dumps({**GOOD, "attempt": True}).encode(), max_bytes=1000) is None
    assert salvage_reply(json.dumps({**GOOD, "reply_to": "x/#"}).encode(), max_bytes=1000) is None
    assert salvage_reply(json.dumps({**GOOD, "task_id": "a b"}).encode(), max_bytes=1000) is None
    assert salvage_reply(b"\xff\xfe", max_bytes=1000) is None
    assert salvage_reply(b"x" * 5000, max_bytes=1000) is None


def test_rejection_names_the_reason() -> None:
    res = rejection(("t1", "s1", 2, "r"), "agent-1", "field 'deadline_s': Input should be a valid number")
    assert res.status == "error" and res.attempt == 2 and res.agent_id == "agent-1"
    assert res.error is not None and "deadline_s" in res.error
