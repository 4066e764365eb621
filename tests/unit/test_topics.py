"""Topic builders and parsers for every topic of DESIGN.md section 3."""

from __future__ import annotations

import paho.mqtt.client as paho
import pytest

from agentmesh.errors import ProtocolError
from agentmesh.protocol import DEFAULT_NAMESPACE, TopicKind, TopicRef, Topics

T = Topics()
NS = "agentmesh/v1"

BUILT = [
    (T.vcv("e-1"), f"{NS}/agents/e-1/vcv", TopicRef(TopicKind.VCV, "e-1")),
    (
        T.agent_presence("e-1"),
        f"{NS}/agents/e-1/presence",
        TopicRef(TopicKind.AGENT_PRESENCE, "e-1"),
    ),
    (T.inbox("e-1"), f"{NS}/agents/e-1/inbox", TopicRef(TopicKind.INBOX, "e-1")),
    (T.submit, f"{NS}/tasks/submit", TopicRef(TopicKind.SUBMIT, None)),
    (T.events("Task-9f"), f"{NS}/tasks/Task-9f/events", TopicRef(TopicKind.EVENTS, "Task-9f")),
    (T.result("Task-9f"), f"{NS}/tasks/Task-9f/result", TopicRef(TopicKind.RESULT, "Task-9f")),
    (T.router_results("r-1"), f"{NS}/routers/r-1/results", TopicRef(TopicKind.ROUTER_RESULTS, "r-1")),
    (T.router_presence("r-1"), f"{NS}/routers/r-1/presence", TopicRef(TopicKind.ROUTER_PRESENCE, "r-1")),
]


def test_default_namespace() -> None:
    assert DEFAULT_NAMESPACE == NS == T.ns


@pytest.mark.parametrize(("built", "expected", "ref"), BUILT)
def test_builders_match_the_design_and_parse_back(built: str, expected: str, ref: TopicRef) -> None:
    assert built == expected
    assert T.parse(built) == ref


def test_every_topic_kind_has_a_builder() -> None:
    assert {ref.kind for _, _, ref in BUILT} == set(TopicKind)


def test_subscription_filters_match_exactly_their_kind() -> None:
    every = [built for built, _, _ in BUILT] + [T.vcv("b-2"), T.agent_presence("b-2"), T.events("t2")]
    for topic_filter, kind in [
        (T.all_vcvs, TopicKind.VCV),
        (T.all_agent_presence, TopicKind.AGENT_PRESENCE),
        (T.all_events, TopicKind.EVENTS),
    ]:
        matched = {t for t in every if paho.topic_matches_sub(topic_filter, t)}
        assert matched == {t for t in every if T.parse(t).kind == kind}
        assert len(matched) == 2


def test_shared_submit_filter() -> None:
    assert T.shared_submit("routers") == f"$share/routers/{NS}/tasks/submit"
    for group in ["", "a/b", "a+", "#"]:
        with pytest.raises(ProtocolError):
            T.shared_submit(group)


@pytest.mark.parametrize("bad", ["", "A", "-a", "a" * 65, "a/b", "a+", "a#", "a b", "é"])
def test_builders_reject_invalid_agent_and_router_ids(bad: str) -> None:
    for build in (T.vcv, T.agent_presence, T.inbox, T.router_results, T.router_presence):
        with pytest.raises(ProtocolError) as info:
            build(bad)
        assert info.value.field == "agent_id"


@pytest.mark.parametrize("bad", ["", "a/b", "+", "#", "a b", "x" * 65, "-x"])
def test_builders_reject_invalid_task_ids(bad: str) -> None:
    for build in (T.events, T.result):
        with pytest.raises(ProtocolError) as info:
            build(bad)
        assert info.value.field == "task_id"


@pytest.mark.parametrize(
    "topic",
    [
        f"{NS}/agents/Edge-1/vcv",  # agent ids are lower case
        f"{NS}/agents/-x/presence",
        f"{NS}/agents/{'a' * 65}/inbox",
        f"{NS}/routers/R/results",
        f"{NS}/tasks/ /events",
        f"{NS}/agents//vcv",
        f"{NS}/agents/+/vcv",  # a filter is not a topic
        f"{NS}/tasks/#/result",
    ],
)
def test_parse_rejects_invalid_ids(topic: str) -> None:
    with pytest.raises(ProtocolError, match="invalid id") as info:
        T.parse(topic)
    assert info.value.topic == topic


@pytest.mark.parametrize(
    "topic",
    [
        f"{NS}/agents/a/config",
        f"{NS}/agents/a/results",
        f"{NS}/routers/r/vcv",
        f"{NS}/routers/r/inbox",
        f"{NS}/tasks/t/vcv",
        f"{NS}/tasks/submit/now",
        f"{NS}/tasks",
        f"{NS}/tasks/submit/",
        f"{NS}/agents/a",
        f"{NS}/agents/a/vcv/extra",
        f"{NS}/agents/a/_sync",
        f"{NS}/",
        f"{NS}/foo/a/vcv",
    ],
)
def test_parse_rejects_unknown_leaves_and_shapes(topic: str) -> None:
    with pytest.raises(ProtocolError, match="unknown topic"):
        T.parse(topic)


@pytest.mark.parametrize(
    "topic",
    [
        "agentmesh/v2/agents/a/vcv",
        "agentmesh/agents/a/vcv",
        "other/v1/tasks/submit",
        "agentmesh/v1",
        "agentmesh/v1x/tasks/submit",
        "/agentmesh/v1/tasks/submit",
        "$share/g/agentmesh/v1/tasks/submit",
        "",
    ],
)
def test_parse_rejects_topics_outside_the_namespace(topic: str) -> None:
    with pytest.raises(ProtocolError, match="outside the namespace"):
        T.parse(topic)


def test_custom_namespace() -> None:
    acme = Topics("acme/prod/mesh")
    assert acme.vcv("a") == "acme/prod/mesh/agents/a/vcv"
    assert acme.parse("acme/prod/mesh/tasks/submit") == TopicRef(TopicKind.SUBMIT)
    with pytest.raises(ProtocolError):
        acme.parse(T.submit)
    with pytest.raises(ProtocolError):
        T.parse(acme.submit)


@pytest.mark.parametrize("ns", ["", "/a", "a/", "a/+", "a/#/b", "$SYS", "$share/x", "a\x00b"])
def test_invalid_namespaces_are_rejected(ns: str) -> None:
    with pytest.raises(ProtocolError):
        Topics(ns)


def test_topic_kinds_are_stable_strings() -> None:
    # Other modules and logs use these values; they are part of the public API.
    assert [k.value for k in TopicKind] == [
        "vcv",
        "agent_presence",
        "inbox",
        "submit",
        "events",
        "result",
        "router_results",
        "router_presence",
    ]
