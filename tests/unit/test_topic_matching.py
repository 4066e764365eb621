"""The transport's topic matching agrees with paho's reference implementation."""

from __future__ import annotations

import paho.mqtt.client as paho
from hypothesis import given
from hypothesis import strategies as st

from agentmesh.transport.client import topic_matches

LEVELS = ["a", "b", "", "$SYS", "agentmesh"]
topics = st.lists(st.sampled_from(LEVELS), min_size=1, max_size=5).map("/".join)
filters = st.lists(st.sampled_from([*LEVELS, "+"]), min_size=1, max_size=5).flatmap(
    lambda levels: st.sampled_from(["/".join(levels), "/".join([*levels, "#"]), "#"])
)


@given(filters, topics)
def test_agrees_with_paho(topic_filter: str, topic: str) -> None:
    assert topic_matches(topic_filter, topic) == paho.topic_matches_sub(topic_filter, topic)


def test_known_cases() -> None:
    assert topic_matches("agentmesh/v1/agents/+/vcv", "agentmesh/v1/agents/e-1/vcv")
    assert not topic_matches("agentmesh/v1/agents/+/vcv", "agentmesh/v1/agents/e-1/presence")
    assert topic_matches("a/#", "a")
    assert topic_matches("a/#", "a/b/c")
    assert not topic_matches("#", "$SYS/broker/uptime")
    assert not topic_matches("+/broker", "$SYS/broker")
    assert topic_matches("$SYS/#", "$SYS/broker")
    assert not topic_matches("a/+", "a/b/c")
