"""Property tests: whatever arrives on any topic, ``parse`` returns a message (or None) or raises
ProtocolError, never anything else. And whatever it accepts survives encode -> parse unchanged."""

from __future__ import annotations

import contextlib
import copy
import json
import os
from collections.abc import Iterator
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentmesh.errors import ProtocolError
from agentmesh.protocol import TopicKind, Topics, encode, parse
from tests.unit.test_protocol_samples import FULL, MINIMAL, topic_for

# AGENTMESH_FUZZ_EXAMPLES=5000 for a longer hunt; the default keeps the suite fast.
EXAMPLES = int(os.environ.get("AGENTMESH_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KINDS = list(TopicKind)

kinds = st.sampled_from(KINDS)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
    | st.sampled_from(["", "1", "0.5", "agentmesh.task/1", "edge", "ok", "$SYS/x", "a/#", "A", "x" * 70])
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=25,
)


def check(topic: str, payload: bytes) -> None:
    """The property itself."""
    try:
        message = parse(topic, payload)
    except ProtocolError:
        return
    if message is None:
        assert payload == b""
        return
    wire = encode(message)
    assert parse(topic, wire) == message
    assert encode(parse(topic, wire)) == wire  # type: ignore[arg-type]


@FUZZ
@given(kind=kinds, payload=st.binary(max_size=400))
def test_arbitrary_bytes(kind: TopicKind, payload: bytes) -> None:
    check(topic_for(kind), payload)


@FUZZ
@given(kind=kinds, value=json_values)
def test_arbitrary_json(kind: TopicKind, value: Any) -> None:
    check(topic_for(kind), json.dumps(value).encode())


@FUZZ
@given(kind=kinds, fields=st.dictionaries(st.text(max_size=12), json_values, max_size=6))
def test_arbitrary_objects_with_the_right_type_tag(kind: TopicKind, fields: dict[str, Any]) -> None:
    check(topic_for(kind), json.dumps({**fields, "type": FULL[kind]["type"]}).encode())


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            yield from _paths(value, (*prefix, i))


def _mutate(doc: Any, path: tuple[Any, ...], op: str, value: Any) -> Any:
    """``doc`` with one change at ``path``."""
    if not path:
        return value if op == "replace" else doc
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if op == "delete":
        del parent[last]
    elif op == "replace":
        parent[last] = value
    elif op == "add" and isinstance(parent[last], dict):
        parent[last]["extra" if not isinstance(value, str) or not value else value] = value
    elif op == "stringify":
        parent[last] = json.dumps(parent[last])
    elif op == "listify":
        parent[last] = [parent[last]]
    elif op == "duplicate" and isinstance(parent, list):
        parent.append(copy.deepcopy(parent[last]))
    return doc


@st.composite
def near_misses(draw: st.DrawFn) -> tuple[str, Any]:
    """A real message shape (full or minimal) with one to three random mutations, and its topic."""
    kind = draw(kinds)
    original = draw(st.sampled_from([FULL[kind], MINIMAL[kind]]))
    doc = copy.deepcopy(original)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(_paths(doc))))
        op = draw(st.sampled_from(["delete", "replace", "add", "stringify", "listify", "duplicate"]))
        doc = _mutate(doc, path, op, draw(json_values))
    return topic_for(kind, original), doc


@FUZZ
@given(case=near_misses())
def test_almost_right_messages(case: tuple[str, Any]) -> None:
    topic, doc = case
    check(topic, json.dumps(doc).encode())


@FUZZ
@given(case=near_misses(), other=kinds)
def test_almost_right_messages_on_the_wrong_topic(case: tuple[str, Any], other: TopicKind) -> None:
    check(topic_for(other), json.dumps(case[1]).encode())


@FUZZ
@given(case=near_misses(), junk=st.binary(max_size=8), cut=st.integers(0, 4000))
def test_truncated_and_spliced_messages(case: tuple[str, Any], junk: bytes, cut: int) -> None:
    topic, doc = case
    wire = json.dumps(doc).encode()
    check(topic, wire[:cut] + junk + wire[cut:])


@FUZZ
@given(topic=st.text(max_size=80), payload=st.sampled_from([b"", json.dumps(FULL[TopicKind.VCV]).encode()]))
def test_arbitrary_topics(topic: str, payload: bytes) -> None:
    check(topic, payload)
    with contextlib.suppress(ProtocolError):
        Topics().parse(topic)
