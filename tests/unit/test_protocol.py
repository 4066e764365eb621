"""The wire contract of DESIGN.md sections 3 and 4: round trips, strictness, limits, plan rules."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from agentmesh.errors import PayloadTooLarge, ProtocolError
from agentmesh.protocol import (
    MAX_PAYLOAD_BYTES,
    CapabilityVector,
    Plan,
    PlanStep,
    Presence,
    PreviousAttempt,
    StepAssignment,
    StepResult,
    TaskEvent,
    TaskRequest,
    TaskResult,
    TopicKind,
    Topics,
    Usage,
    dag_problem,
    decode,
    encode,
    encode_assignment,
    encode_event,
    parse,
    topological_order,
)
from tests.unit.test_protocol_samples import MODEL, SENT_AT, sample, topic_for

T = Topics()
KINDS = list(TopicKind)
RETAINED = [TopicKind.VCV, TopicKind.AGENT_PRESENCE, TopicKind.RESULT, TopicKind.ROUTER_PRESENCE]
NOT_RETAINED = [k for k in KINDS if k not in RETAINED]
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z$")


def raw(data: Any) -> bytes:
    return json.dumps(data).encode()


def contains(whole: Any, part: Any) -> bool:
    """Whether ``whole`` holds everything ``part`` says (dicts may add keys, e.g. spelled-out defaults)."""
    if isinstance(part, dict):
        return isinstance(whole, dict) and all(k in whole and contains(whole[k], v) for k, v in part.items())
    if isinstance(part, list):
        return isinstance(whole, list) and len(whole) == len(part) and all(map(contains, whole, part))
    # A JSON int sent for a float field comes back as a float; any other type change is a bug.
    same_kind = type(whole) is type(part) or (type(part) is int and type(whole) is float)
    return bool(whole == part and same_kind)


def parse_dict(kind: TopicKind, data: dict[str, Any], topic: str | None = None) -> Any:
    return parse(topic or topic_for(kind, data), raw(data))


def error_of(kind: TopicKind, data: dict[str, Any], topic: str | None = None) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse_dict(kind, data, topic)
    return info.value


# ---- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_full_message_round_trips_with_every_field(kind: TopicKind) -> None:
    data = sample(kind)
    message = parse_dict(kind, data)
    assert isinstance(message, MODEL[kind])
    wire = encode(message)
    # Nothing set by the sender is lost or altered on the way through.
    assert contains(json.loads(wire), data)
    assert set(json.loads(wire)) == set(data)
    again = parse(topic_for(kind, data), wire)
    assert again == message
    assert encode(again) == wire


@pytest.mark.parametrize("kind", KINDS)
def test_minimal_message_round_trips_and_gets_the_defaults(kind: TopicKind) -> None:
    data = sample(kind, full=False)
    message = parse_dict(kind, data)
    assert isinstance(message, MODEL[kind])
    again = parse(topic_for(kind, data), encode(message))
    assert again == message
    # Encoding spells out every default, so other implementations need not know them.
    decoded = json.loads(encode(message))
    assert contains(decoded, data)
    defaults = {
        n for n, f in MODEL[kind].model_fields.items() if not f.is_required() and f.default is not None
    }
    assert defaults <= set(decoded)


@pytest.mark.parametrize("kind", KINDS)
def test_messages_built_in_python_round_trip(kind: TopicKind) -> None:
    data = sample(kind)
    built = MODEL[kind].model_validate_json(json.dumps(data))
    assert parse(topic_for(kind, data), encode(built)) == built


def test_defaults_follow_the_design() -> None:
    vcv = parse_dict(TopicKind.VCV, sample(TopicKind.VCV, full=False))
    assert isinstance(vcv, CapabilityVector)
    assert vcv.capabilities[0].tags == [] and vcv.capabilities[0].examples == []
    assert (vcv.cost.usd_per_mtok_in, vcv.cost.usd_per_mtok_out) == (0, 0)
    assert vcv.qos.max_concurrency == 1 and vcv.qos.tokens_per_s is None and vcv.qos.p50_latency_ms is None
    assert vcv.policy.data_classes == ["public"] and vcv.policy.region is None
    assert vcv.model is None and vcv.embedding is None

    presence = parse_dict(TopicKind.AGENT_PRESENCE, sample(TopicKind.AGENT_PRESENCE, full=False))
    assert isinstance(presence, Presence)
    assert (presence.load, presence.capacity) == (0, 1)

    task = parse_dict(TopicKind.SUBMIT, sample(TopicKind.SUBMIT, full=False))
    assert isinstance(task, TaskRequest)
    assert task.planner == "auto" and task.plan is None and task.reply_to is None
    c = task.constraints
    assert (c.min_tier, c.max_tier, c.data_class, c.tags) == ("device", "cloud", "public", [])
    assert c.max_cost_usd is None and c.region is None and c.deadline_s is None

    assign = parse_dict(TopicKind.INBOX, sample(TopicKind.INBOX, full=False))
    assert isinstance(assign, StepAssignment)
    assert assign.inputs == {} and assign.previous is None and assign.max_tokens is None
    assert assign.response_format is None

    result = parse_dict(TopicKind.ROUTER_RESULTS, sample(TopicKind.ROUTER_RESULTS, full=False))
    assert isinstance(result, StepResult)
    assert result.output == "" and result.confidence is None and result.error is None
    assert result.usage == Usage(prompt_tokens=0, completion_tokens=0, latency_ms=0, cost_usd=0)

    event = parse_dict(TopicKind.EVENTS, sample(TopicKind.EVENTS, full=False))
    assert isinstance(event, TaskEvent)
    assert event.detail == "" and event.step_id is None and event.agent_id is None and event.tier is None

    final = parse_dict(TopicKind.RESULT, sample(TopicKind.RESULT, full=False))
    assert isinstance(final, TaskResult)
    assert (final.output, final.outputs, final.steps, final.error) == ("", {}, [], None)
    assert (final.cloud_steps, final.escalations, final.elapsed_ms) == (0, 0, 0)


def test_optional_fields_accept_null_as_absent() -> None:
    data = sample(TopicKind.ROUTER_RESULTS, full=False) | {"confidence": None, "error": None}
    message = parse_dict(TopicKind.ROUTER_RESULTS, data)
    assert isinstance(message, StepResult) and message.confidence is None
    assert "confidence" not in json.loads(encode(message))


def test_decode_validates_against_a_given_model() -> None:
    message = decode(TaskEvent, raw(sample(TopicKind.EVENTS)))
    assert isinstance(message, TaskEvent) and message.kind == "escalated"
    with pytest.raises(ProtocolError) as info:
        decode(TaskEvent, raw(sample(TopicKind.RESULT)))
    assert info.value.field == "type"


# ---- sent_at -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_sent_at_is_iso_8601_utc_with_z(kind: TopicKind) -> None:
    built = MODEL[kind].model_validate_json(json.dumps(sample(kind, full=False)))
    stamp = json.loads(encode(built))["sent_at"]
    assert ISO_Z.match(stamp), stamp
    assert abs(datetime.fromisoformat(stamp) - datetime.now(UTC)) < timedelta(minutes=5)
    assert json.loads(encode(parse_dict(kind, sample(kind))))["sent_at"] == SENT_AT


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        ("2025-03-04T05:06:07+00:00", "2025-03-04T05:06:07Z"),
        ("2025-03-04T07:06:07+02:00", "2025-03-04T05:06:07Z"),
        ("2025-03-04T00:06:07.5-05:00", "2025-03-04T05:06:07.500000Z"),
        ("2025-03-04T05:06:07", "2025-03-04T05:06:07Z"),  # no zone: taken as UTC
        ("2025-03-04T05:06:07z", "2025-03-04T05:06:07Z"),
    ],
)
def test_sent_at_from_third_party_clients_is_normalised_to_utc(sent: str, expected: str) -> None:
    message = parse_dict(TopicKind.EVENTS, sample(TopicKind.EVENTS) | {"sent_at": sent})
    assert message.sent_at.utcoffset() == timedelta(0)
    assert json.loads(encode(message))["sent_at"] == expected


def test_sent_at_may_be_omitted_and_is_then_the_receive_time() -> None:
    data = sample(TopicKind.EVENTS)
    del data["sent_at"]
    before = datetime.now(UTC)
    message = parse_dict(TopicKind.EVENTS, data)
    assert before <= message.sent_at <= datetime.now(UTC)


@pytest.mark.parametrize("bad", ["yesterday", 1700000000, None, "2025-13-01T00:00:00Z", ""])
def test_sent_at_that_is_not_a_timestamp_is_rejected(bad: Any) -> None:
    error = error_of(TopicKind.EVENTS, sample(TopicKind.EVENTS) | {"sent_at": bad})
    assert error.field == "sent_at"


# ---- strictness -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "path"),
    [
        (TopicKind.VCV, ()),
        (TopicKind.VCV, ("capabilities", 0)),
        (TopicKind.VCV, ("model",)),
        (TopicKind.VCV, ("cost",)),
        (TopicKind.VCV, ("qos",)),
        (TopicKind.VCV, ("policy",)),
        (TopicKind.VCV, ("embedding",)),
        (TopicKind.AGENT_PRESENCE, ()),
        (TopicKind.SUBMIT, ()),
        (TopicKind.SUBMIT, ("plan",)),
        (TopicKind.SUBMIT, ("plan", "steps", 1)),
        (TopicKind.SUBMIT, ("constraints",)),
        (TopicKind.INBOX, ()),
        (TopicKind.INBOX, ("previous",)),
        (TopicKind.ROUTER_RESULTS, ()),
        (TopicKind.ROUTER_RESULTS, ("usage",)),
        (TopicKind.EVENTS, ()),
        (TopicKind.RESULT, ()),
        (TopicKind.RESULT, ("steps", 0)),
        (TopicKind.RESULT, ("steps", 0, "attempts", 1)),
        (TopicKind.RESULT, ("usage",)),
        (TopicKind.ROUTER_PRESENCE, ()),
    ],
)
def test_unknown_fields_are_rejected_naming_the_field(kind: TopicKind, path: tuple[Any, ...]) -> None:
    data = sample(kind)
    target: Any = data
    for step in path:
        target = target[step]
    target["colour"] = "blue"
    error = error_of(kind, data)
    assert error.field == ".".join(str(p) for p in (*path, "colour"))
    assert "colour" in str(error)


@pytest.mark.parametrize(
    ("kind", "field", "value"),
    [
        (TopicKind.VCV, "version", "1"),  # a string for an int
        (TopicKind.VCV, "version", 1.0),  # a float for an int
        (TopicKind.VCV, "version", True),  # a bool for an int
        (TopicKind.VCV, "version", 0),  # out of range
        (TopicKind.VCV, "tier", "Cloud"),
        (TopicKind.VCV, "tier", "fog"),
        (TopicKind.VCV, "capabilities", []),
        (TopicKind.VCV, "capabilities", {"name": "x"}),
        (TopicKind.AGENT_PRESENCE, "load", "0"),
        (TopicKind.AGENT_PRESENCE, "load", -1),
        (TopicKind.AGENT_PRESENCE, "capacity", 0),
        (TopicKind.AGENT_PRESENCE, "state", "away"),
        (TopicKind.SUBMIT, "text", 5),
        (TopicKind.SUBMIT, "planner", "magic"),
        (TopicKind.SUBMIT, "client_id", None),
        (TopicKind.INBOX, "attempt", "2"),
        (TopicKind.INBOX, "attempt", 0),
        (TopicKind.INBOX, "deadline_s", "30"),
        (TopicKind.INBOX, "deadline_s", 0),
        (TopicKind.INBOX, "max_tokens", 0),
        (TopicKind.INBOX, "inputs", {"a": 1}),
        (TopicKind.INBOX, "response_format", "json"),
        (TopicKind.ROUTER_RESULTS, "confidence", "0.5"),
        (TopicKind.ROUTER_RESULTS, "confidence", 1.5),
        (TopicKind.ROUTER_RESULTS, "confidence", -0.1),
        (TopicKind.ROUTER_RESULTS, "status", "fine"),
        (TopicKind.ROUTER_RESULTS, "output", None),
        (TopicKind.EVENTS, "kind", "started"),
        (TopicKind.EVENTS, "tier", "CLOUD"),
        (TopicKind.RESULT, "status", "ok"),
        (TopicKind.RESULT, "cloud_steps", -1),
        (TopicKind.RESULT, "elapsed_ms", "12"),
        (TopicKind.RESULT, "outputs", ["a"]),
    ],
)
def test_values_of_the_wrong_type_are_rejected_not_coerced(kind: TopicKind, field: str, value: Any) -> None:
    error = error_of(kind, sample(kind) | {field: value})
    assert error.field is not None and error.field.split(".")[0] == field


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("cost", "usd_per_mtok_in"), 1),
        (("qos", "p50_latency_ms"), 200),
        (("model", "params_b"), 7),
    ],
)
def test_json_integers_are_accepted_for_float_fields(path: tuple[str, str], value: int) -> None:
    data = sample(TopicKind.VCV)
    data[path[0]][path[1]] = value
    message = parse_dict(TopicKind.VCV, data)
    got = getattr(getattr(message, path[0]), path[1])
    assert got == value and isinstance(got, float)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers_are_rejected(literal: str) -> None:
    # JSON has no NaN/Infinity; Python's json module accepts them, and they could not be encoded back.
    text = json.dumps(sample(TopicKind.INBOX)).replace('"deadline_s": 30.5', f'"deadline_s": {literal}')
    with pytest.raises(ProtocolError) as info:
        parse(T.inbox("edge-summarizer.1"), text.encode())
    assert info.value.field == "deadline_s"


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers_inside_free_form_json_are_rejected(literal: str) -> None:
    # response_format is any JSON schema: the same rule holds at any depth (found by the fuzz test).
    data = sample(TopicKind.INBOX)
    data["response_format"]["properties"]["summary"]["maxLength"] = [1, {"x": 0.5}]
    text = json.dumps(data).replace('{"x": 0.5}', f'{{"x": {literal}}}')
    with pytest.raises(ProtocolError) as info:
        parse(T.inbox("edge-summarizer.1"), text.encode())
    assert info.value.field == "response_format"
    parse(T.inbox("edge-summarizer.1"), json.dumps(data).encode())  # finite numbers pass


def test_the_type_tag_must_match_the_topic() -> None:
    # A TaskRequest on an inbox topic, and every other wrong pairing.
    for topic_kind in KINDS:
        for message_kind in KINDS:
            if MODEL[topic_kind] is MODEL[message_kind]:
                continue
            error = error_of(topic_kind, sample(message_kind), topic_for(topic_kind))
            assert error.field == "type", (topic_kind, message_kind)
            assert error.topic == topic_for(topic_kind)


@pytest.mark.parametrize("tag", [None, "agentmesh.task/2", 1, ["agentmesh.task/1"], {"v": 1}])
def test_a_missing_or_wrong_type_tag_is_rejected(tag: Any) -> None:
    data = sample(TopicKind.SUBMIT)
    if tag is None:
        del data["type"]
    else:
        data["type"] = tag
    assert error_of(TopicKind.SUBMIT, data).field == "type"


# ---- ids and topic/payload agreement ---------------------------------------------------------

VALID_IDS = ["a", "0", "a" * 64, "edge-1", "phone.eu_west-2", "9lives"]
INVALID_IDS = ["", "A", "Agent", "-a", ".a", "_a", "a" * 65, "a b", "a/b", "a+b", "a#b", "ä", "a\nb"]


@pytest.mark.parametrize("value", VALID_IDS)
def test_valid_ids(value: str) -> None:
    vcv = sample(TopicKind.VCV) | {"agent_id": value}
    assert parse(T.vcv(value), raw(vcv)) is not None
    assert parse_dict(TopicKind.SUBMIT, sample(TopicKind.SUBMIT) | {"client_id": value}) is not None
    assert parse_dict(TopicKind.INBOX, sample(TopicKind.INBOX) | {"router_id": value}) is not None


@pytest.mark.parametrize("value", INVALID_IDS)
@pytest.mark.parametrize(
    ("kind", "field"),
    [
        (TopicKind.SUBMIT, "client_id"),
        (TopicKind.INBOX, "router_id"),
        (TopicKind.ROUTER_RESULTS, "agent_id"),
    ],
)
def test_invalid_ids_are_rejected_naming_the_field(kind: TopicKind, field: str, value: str) -> None:
    assert error_of(kind, sample(kind) | {field: value}).field == field


@pytest.mark.parametrize("value", INVALID_IDS)
def test_invalid_agent_ids_are_rejected_in_cards_and_presence(value: str) -> None:
    topic = T.vcv("phone-1")  # the payload's id is checked before it is compared with the topic's
    assert error_of(TopicKind.VCV, sample(TopicKind.VCV) | {"agent_id": value}, topic).field == "agent_id"
    topic = T.agent_presence("phone-1")
    presence = sample(TopicKind.AGENT_PRESENCE) | {"id": value}
    assert error_of(TopicKind.AGENT_PRESENCE, presence, topic).field == "id"


@pytest.mark.parametrize("value", ["", "a b", "a/b", "-a", "x" * 65])
def test_task_and_step_ids_are_single_topic_levels(value: str) -> None:
    task = sample(TopicKind.SUBMIT) | {"task_id": value}
    assert error_of(TopicKind.SUBMIT, task, T.submit).field == "task_id"
    assert error_of(TopicKind.INBOX, sample(TopicKind.INBOX) | {"step_id": value}).field == "step_id"


def test_task_ids_may_be_uuid_hex_and_mixed_case() -> None:
    for task_id in ["5f1c9a7e2b3d4c6a8e9f0a1b2c3d4e5f", "Task-42.B"]:
        message = parse_dict(TopicKind.SUBMIT, sample(TopicKind.SUBMIT) | {"task_id": task_id})
        assert isinstance(message, TaskRequest) and message.task_id == task_id


@pytest.mark.parametrize(
    ("kind", "topic", "field"),
    [
        (TopicKind.VCV, T.vcv("someone-else"), "agent_id"),
        (TopicKind.AGENT_PRESENCE, T.agent_presence("someone-else"), "id"),
        (TopicKind.ROUTER_PRESENCE, T.router_presence("router-b"), "id"),
        (TopicKind.EVENTS, T.events("other-task"), "task_id"),
        (TopicKind.RESULT, T.result("other-task"), "task_id"),
    ],
)
def test_an_id_that_differs_from_the_topic_is_rejected(kind: TopicKind, topic: str, field: str) -> None:
    error = error_of(kind, sample(kind), topic)
    assert error.field == field and error.topic == topic
    assert "someone-else" in str(error) or "other-task" in str(error) or "router-b" in str(error)


@pytest.mark.parametrize("reply_to", ["", "a/+/b", "a/#", "$SYS/x", "a\x00b", "a/" * 128 + "a"])
@pytest.mark.parametrize("kind", [TopicKind.SUBMIT, TopicKind.INBOX])
def test_reply_to_must_be_a_publishable_topic(kind: TopicKind, reply_to: str) -> None:
    assert error_of(kind, sample(kind) | {"reply_to": reply_to}).field == "reply_to"


# ---- empty payloads and garbage -------------------------------------------------------------


@pytest.mark.parametrize("kind", RETAINED)
def test_empty_payload_on_a_retained_topic_means_cleared(kind: TopicKind) -> None:
    assert parse(topic_for(kind), b"") is None


@pytest.mark.parametrize("kind", NOT_RETAINED)
def test_empty_payload_elsewhere_is_an_error(kind: TopicKind) -> None:
    with pytest.raises(ProtocolError) as info:
        parse(topic_for(kind), b"")
    assert info.value.topic == topic_for(kind)


@pytest.mark.parametrize(
    "payload",
    [b"\xff\xfe\x00", b"not json", b"{", b"[]", b"null", b'"text"', b"42", b"{}", b"\xef\xbb\xbf{}", b" "],
)
@pytest.mark.parametrize("kind", KINDS)
def test_garbage_is_a_protocol_error(kind: TopicKind, payload: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        parse(topic_for(kind), payload)
    assert info.value.topic == topic_for(kind)


def test_deeply_nested_json_is_a_protocol_error() -> None:
    for depth in (500, 5000, 100_000):
        with pytest.raises(ProtocolError):
            parse(T.submit, b'{"type": "agentmesh.task/1", "x": ' + b"[" * depth + b"]" * depth + b"}")
        with pytest.raises(ProtocolError):
            parse(T.submit, b'{"type": ' + b"[" * depth + b"]" * depth + b"}")


def test_unknown_topics_are_protocol_errors() -> None:
    with pytest.raises(ProtocolError):
        parse("elsewhere/agents/a/vcv", raw(sample(TopicKind.VCV)))
    with pytest.raises(ProtocolError):
        parse(T.ns + "/agents/a/config", raw(sample(TopicKind.VCV)))


def test_parse_uses_the_given_namespace() -> None:
    acme = Topics("acme/mesh")
    data = sample(TopicKind.VCV)
    assert parse(acme.vcv("edge-summarizer.1"), raw(data), topics=acme) is not None
    with pytest.raises(ProtocolError):
        parse(acme.vcv("edge-summarizer.1"), raw(data))


# ---- size limit -------------------------------------------------------------------------------


def _padded(kind: TopicKind, size: int) -> bytes:
    """A valid payload of exactly ``size`` bytes (JSON whitespace does not change its meaning)."""
    body = raw(sample(kind))
    assert len(body) < size
    return body[:-1] + b" " * (size - len(body)) + b"}"


def test_payload_at_the_limit_parses_and_one_byte_more_does_not() -> None:
    topic = topic_for(TopicKind.SUBMIT)
    assert parse(topic, _padded(TopicKind.SUBMIT, MAX_PAYLOAD_BYTES)) is not None
    with pytest.raises(PayloadTooLarge) as info:
        parse(topic, _padded(TopicKind.SUBMIT, MAX_PAYLOAD_BYTES + 1))
    too_large = info.value
    assert (too_large.size, too_large.limit, too_large.topic) == (
        MAX_PAYLOAD_BYTES + 1,
        MAX_PAYLOAD_BYTES,
        topic,
    )
    assert isinstance(info.value, ProtocolError)


def test_size_limit_is_configurable() -> None:
    payload = _padded(TopicKind.EVENTS, 2000)
    assert parse(topic_for(TopicKind.EVENTS), payload, limit=2000) is not None
    with pytest.raises(PayloadTooLarge):
        parse(topic_for(TopicKind.EVENTS), payload, limit=1999)
    with pytest.raises(PayloadTooLarge):
        decode(TaskEvent, payload, limit=100)


def test_default_limit_is_256_kib() -> None:
    assert MAX_PAYLOAD_BYTES == 256 * 1024


# ---- cross-field rules ------------------------------------------------------------------------


def test_vcv_embedding_needs_one_vector_per_capability() -> None:
    data = sample(TopicKind.VCV)
    data["embedding"]["vectors"] = [[0.1, 0.2, 0.3]]
    assert error_of(TopicKind.VCV, data).field == "embedding"
    data["embedding"]["vectors"] = [[0.1, 0.2, 0.3], [0.1]]
    assert error_of(TopicKind.VCV, data).field == "embedding.vectors"
    data["embedding"]["vectors"] = [[], []]
    assert error_of(TopicKind.VCV, data).field == "embedding.vectors"


def test_vcv_limits() -> None:
    data = sample(TopicKind.VCV)
    data["capabilities"] = [{"name": f"c{i}", "description": "d"} for i in range(65)]
    del data["embedding"]
    assert error_of(TopicKind.VCV, data).field == "capabilities"
    data["capabilities"] = data["capabilities"][:64]
    assert parse_dict(TopicKind.VCV, data) is not None
    for field, value in [("name", ""), ("name", "n" * 65), ("description", ""), ("description", "d" * 2001)]:
        data = sample(TopicKind.VCV)
        data["capabilities"][0][field] = value
        assert error_of(TopicKind.VCV, data).field == f"capabilities.0.{field}"
    data = sample(TopicKind.VCV)
    data["cost"]["usd_per_mtok_out"] = -0.01
    assert error_of(TopicKind.VCV, data).field == "cost.usd_per_mtok_out"
    data = sample(TopicKind.VCV)
    data["policy"]["data_classes"] = ["secret"]
    assert error_of(TopicKind.VCV, data).field == "policy.data_classes.0"
    data = sample(TopicKind.VCV)
    data["model"]["backend"] = "torch"
    assert error_of(TopicKind.VCV, data).field == "model.backend"
    for path, value in [
        (("model", "params_b"), 0),
        (("model", "context_window"), 0),
        (("qos", "tokens_per_s"), -5.0),
        (("qos", "p50_latency_ms"), -1),
        (("qos", "max_concurrency"), 0),
    ]:
        data = sample(TopicKind.VCV)
        data[path[0]][path[1]] = value
        assert error_of(TopicKind.VCV, data).field == ".".join(path)


def test_task_request_rules() -> None:
    data = sample(TopicKind.SUBMIT, full=False) | {"text": "   "}
    assert error_of(TopicKind.SUBMIT, data).field == "text"
    data = sample(TopicKind.SUBMIT, full=False) | {"planner": "explicit"}
    assert error_of(TopicKind.SUBMIT, data).field == "plan"
    data = sample(TopicKind.SUBMIT, full=False) | {"constraints": {"min_tier": "cloud", "max_tier": "edge"}}
    assert error_of(TopicKind.SUBMIT, data).field == "constraints.min_tier"
    # A plan without text is fine: the steps carry the instructions.
    data = sample(TopicKind.SUBMIT) | {"text": ""}
    assert parse_dict(TopicKind.SUBMIT, data) is not None
    for field, value in [("max_cost_usd", -1), ("deadline_s", 0), ("data_class", "secret")]:
        data = sample(TopicKind.SUBMIT)
        data["constraints"][field] = value
        assert error_of(TopicKind.SUBMIT, data).field == f"constraints.{field}"


# ---- plans --------------------------------------------------------------------------------------


def _plan(*steps: tuple[str, list[str]], output: list[str] | None = None) -> dict[str, Any]:
    plan: dict[str, Any] = {"steps": [{"id": s, "instruction": f"do {s}", "depends_on": d} for s, d in steps]}
    if output is not None:
        plan["output"] = output
    return plan


def _plan_error(plan: dict[str, Any]) -> ProtocolError:
    return error_of(TopicKind.SUBMIT, sample(TopicKind.SUBMIT, full=False) | {"plan": plan})


@pytest.mark.parametrize(
    ("plan", "field", "words"),
    [
        (_plan(("a", []), ("a", [])), "plan.steps", "used twice"),
        (_plan(("a", ["ghost"])), "plan.steps", "unknown step 'ghost'"),
        (_plan(("a", ["a"])), "plan.steps", "depends on itself"),
        (_plan(("a", ["b"]), ("b", ["a"])), "plan.steps", "cycle"),
        (_plan(("a", []), ("b", ["a", "d"]), ("c", ["b"]), ("d", ["c"])), "plan.steps", "cycle"),
        (_plan(("a", []), output=["zzz"]), "plan.output", "unknown step 'zzz'"),
        ({"steps": []}, "plan.steps", ""),
        (_plan(*[(f"s{i}", []) for i in range(33)]), "plan.steps", ""),
        (_plan(("bad id", [])), "plan.steps.0.id", ""),
        ({"steps": [{"id": "a", "instruction": ""}]}, "plan.steps.0.instruction", ""),
        ({"steps": [{"id": "a", "instruction": "x", "tier": "mars"}]}, "plan.steps.0.tier", ""),
    ],
)
def test_invalid_plans_are_rejected_naming_the_problem(plan: dict[str, Any], field: str, words: str) -> None:
    error = _plan_error(plan)
    assert error.field == field
    assert words in str(error)


def test_plan_of_32_steps_is_accepted() -> None:
    chain = [(f"s{i}", [f"s{i - 1}"] if i else []) for i in range(32)]
    message = parse_dict(TopicKind.SUBMIT, sample(TopicKind.SUBMIT, full=False) | {"plan": _plan(*chain)})
    assert isinstance(message, TaskRequest) and message.plan is not None
    assert message.plan.outputs() == ["s31"]


def test_plan_rules_hold_for_python_built_plans_too() -> None:
    with pytest.raises(ValidationError, match="cycle"):
        Plan(
            steps=[
                PlanStep(id="a", instruction="x", depends_on=["b"]),
                PlanStep(id="b", instruction="y", depends_on=["a"]),
            ]
        )


def test_plan_outputs_default_to_the_sinks() -> None:
    plan = Plan.model_validate(_plan(("a", []), ("b", ["a"]), ("c", ["a"]), ("d", [])))
    assert plan.sinks() == ["b", "c", "d"]
    assert plan.outputs() == ["b", "c", "d"]
    explicit = Plan.model_validate(_plan(("a", []), ("b", ["a"]), output=["a"]))
    assert explicit.outputs() == ["a"]
    assert explicit.steps[0].query == "do a"
    assert PlanStep(id="x", instruction="long words", capability="summarize").query == "summarize"


def test_dag_helpers() -> None:
    plan = Plan.model_validate(_plan(("a", []), ("b", ["a"]), ("c", ["a", "b"])))
    assert dag_problem(plan) is None
    deps = {"c": ["a", "b"], "b": ["a"], "a": []}
    order = topological_order(deps)
    assert order.index("a") < order.index("b") < order.index("c")
    assert topological_order({"x": [], "y": [], "z": ["x"]}) == ["x", "y", "z"]
    with pytest.raises(ValueError, match="cycle"):
        topological_order({"a": ["b"], "b": ["a"]})


@pytest.mark.parametrize(
    "fields",
    [
        {"kind": "accepted", "detail": "router r1"},
        {"kind": "dispatched", "step_id": "s1", "agent_id": "echo-0", "tier": "device", "detail": "x"},
        {"kind": "step_done", "step_id": "a.b_c-1", "agent_id": "a", "tier": "cloud"},
        {"kind": "done", "detail": 'quote " backslash \\ newline \n control \x01 é € 😀 \u2028 end'},
    ],
)
@pytest.mark.parametrize("microsecond", [0, 1, 500000, 56733])
def test_encode_event_writes_what_encoding_the_model_writes(fields: dict[str, Any], microsecond: int) -> None:
    sent_at = datetime(2026, 11, 30, 17, 9, 21, microsecond, tzinfo=UTC)
    model = TaskEvent(task_id="0123abcd", sent_at=sent_at, **fields)
    assert encode_event("0123abcd", sent_at=sent_at, **fields) == encode(model)


@pytest.mark.parametrize(
    "fields",
    [
        {"inputs": {}, "previous": None, "deadline_s": 120.0, "max_tokens": 512, "response_format": None},
        {
            "inputs": {"a": "out é\n", "b": ""},
            "previous": None,
            "deadline_s": 0.5,
            "max_tokens": None,
            "response_format": {"type": "object", "properties": {"steps": {"type": "array", "maxItems": 8}}},
        },
        {
            "inputs": {},
            "deadline_s": 60.0,
            "max_tokens": 1,
            "previous": {"agent_id": "dev-1", "tier": "device", "output": "weak 😀", "reason": "low"},
            "response_format": None,
        },
    ],
)
def test_encode_assignment_writes_what_encoding_the_model_writes(fields: dict[str, Any]) -> None:
    sent_at = datetime(2026, 11, 30, 17, 9, 21, 500000, tzinfo=UTC)
    common = {
        "task_id": "t1",
        "step_id": "s1",
        "attempt": 2,
        "router_id": "r1",
        "reply_to": "ns/routers/r1/results",
        "instruction": 'do "it"\n',
    }
    model = StepAssignment(sent_at=sent_at, **common, **fields)
    previous = PreviousAttempt(**fields["previous"]) if fields["previous"] else None
    assert encode_assignment(sent_at=sent_at, **common, **{**fields, "previous": previous}) == encode(model)
