"""``agentmesh agents`` and ``agentmesh match`` against a Mosquitto that only holds retained cards
published by a plain paho client (issue 2, must-show 2): nothing else of the mesh runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentmesh.protocol import Topics
from agentmesh.transport import MosquittoBroker
from tests.integration.conftest import PlainClient, presence_payload, vcv_payload

pytestmark = pytest.mark.broker

ROOT = Path(__file__).resolve().parents[2]
CARDS = ROOT / "bench" / "data" / "routing_cards.yaml"
SUBSET = [
    "phone-translate",
    "phone-reminders",
    "edge-summarizer",
    "edge-translator",
    "cloud-coder",
    "cloud-legal",
]


def cli(*args: str, stdin: str | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "AGENTMESH_BROKER"}
    return subprocess.run(
        [sys.executable, "-m", "agentmesh.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )


@pytest.fixture
async def mesh_cards(mosquitto: MosquittoBroker) -> AsyncIterator[str]:
    """Mosquitto holding six retained cards (versions 1..6) and one presence; yields its URL."""
    cards = {c["agent_id"]: c for c in yaml.safe_load(CARDS.read_text())}
    topics = Topics()
    client = await PlainClient(mosquitto.address, "plain-card-publisher").connect()
    for version, agent_id in enumerate(SUBSET, 1):
        card: dict[str, Any] = {k: v for k, v in cards[agent_id].items() if k != "agent_id"}
        await client.publish(
            topics.vcv(agent_id),
            vcv_payload(agent_id, version, card.pop("tier"), card.pop("capabilities"), **card),
        )
    await client.publish(topics.agent_presence("cloud-legal"), presence_payload("cloud-legal", "offline"))
    await client.close()
    yield mosquitto.address.url


async def test_agents_json_lists_retained_cards(mesh_cards: str) -> None:
    proc = cli("--broker", mesh_cards, "agents", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert [row["agent_id"] for row in doc] == [  # by tier, then id
        "phone-reminders",
        "phone-translate",
        "edge-summarizer",
        "edge-translator",
        "cloud-coder",
        "cloud-legal",
    ]
    for row in doc:
        assert set(row) == {"agent_id", "version", "tier", "state", "capabilities"}
    by_id = {row["agent_id"]: row for row in doc}
    assert by_id["phone-reminders"] == {
        "agent_id": "phone-reminders",
        "version": 2,
        "tier": "device",
        "state": "unknown",
        "capabilities": ["set_reminder", "timer"],
    }
    assert by_id["cloud-legal"]["state"] == "offline"


async def test_agents_table_is_human_readable(mesh_cards: str) -> None:
    proc = cli("agents", "--broker", mesh_cards)  # global option after the subcommand works too
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["AGENT", "VERSION", "TIER", "STATE", "LOAD", "MODEL", "CAPABILITIES"]
    assert any(line.startswith("edge-summarizer") and "summarize_document" in line for line in lines)
    # The capabilities whose cards list no example requests are named, on stderr.
    assert "note: 3 of 8 capabilities list no example requests" in proc.stderr
    bare = ["phone-reminders/timer", "edge-translator/translate_document", "cloud-legal/gdpr_compliance"]
    assert all(name in proc.stderr for name in bare)
    assert "set_reminder" not in proc.stderr


async def test_match_json_for_texts_and_stdin(mesh_cards: str) -> None:
    queries = ["how do I say good morning in Portuguese", "turn this meeting transcript into a short summary"]
    proc = cli(
        "--broker",
        mesh_cards,
        "match",
        "refactor this module and add unit tests",
        "-",
        "-k",
        "3",
        "--json",
        stdin="\n".join(queries) + "\n\n",
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert [entry["query"] for entry in doc] == ["refactor this module and add unit tests", *queries]
    for entry in doc:
        assert 1 <= len(entry["matches"]) <= 3
        for m in entry["matches"]:
            assert set(m) == {"agent_id", "tier", "capability", "similarity", "score"}
    firsts = [(e["matches"][0]["agent_id"], e["matches"][0]["capability"]) for e in doc]
    assert firsts == [
        ("cloud-coder", "software_engineering"),
        ("phone-translate", "phrase_translate"),
        ("edge-summarizer", "summarize_document"),
    ]
    # the offline agent is never offered
    assert all(m["agent_id"] != "cloud-legal" for e in doc for m in e["matches"])


async def test_match_table_names_the_intents_a_query_was_bridged_with(mesh_cards: str) -> None:
    proc = cli("--broker", mesh_cards, "match", "remind me to call the dentist at 4pm", "-k", "2")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "query: remind me to call the dentist at 4pm"
    assert lines[1].startswith("  intents: Set reminders for tasks and events (")
    assert lines[2].split() == ["#", "AGENT", "TIER", "CAPABILITY", "SIMILARITY", "SCORE"]
    assert lines[3].split()[:4] == ["1", "phone-reminders", "device", "set_reminder"]


async def test_match_table_names_the_acronyms_it_spelled_out(mesh_cards: str) -> None:
    proc = cli("--broker", mesh_cards, "match", "remind me to send the NDA to HR", "-k", "1")
    assert proc.returncode == 0, proc.stderr
    assert (
        "  acronyms: NDA = non disclosure agreement / new drug application; HR = human resources"
        in proc.stdout.splitlines()
    )


async def test_match_takes_a_router_configs_matching_settings(mesh_cards: str, tmp_path: Path) -> None:
    ours = tmp_path / "acronyms.yaml"
    ours.write_text("NDA: nightly data archive\nZQV: zone quality verification\n")
    config = tmp_path / "router.yaml"
    config.write_text(yaml.safe_dump({"glossaries": ["builtin", str(ours)], "matching": {"k": 1}}))
    text = "send the NDA and the ZQV to HR"
    proc = cli("--broker", mesh_cards, "match", text, "--config", str(config))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert (
        "  acronyms: NDA = nightly data archive; ZQV = zone quality verification; HR = human resources"
        in lines
    )
    rows = [line.split()[0] for line in lines if line.startswith("  ") and line.split()[0].isdigit()]
    assert rows == ["1"]  # the config's matching.k
    proc = cli("--broker", mesh_cards, "match", text, "--config", str(config), "-k", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)[0]["matches"]) == 2  # -k wins over the config


async def test_match_one_tier_and_exit_codes(mesh_cards: str) -> None:
    proc = cli(
        "--broker", mesh_cards, "match", "translate this letter into German", "--tier", "edge", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    (entry,) = json.loads(proc.stdout)
    assert {m["tier"] for m in entry["matches"]} == {"edge"}
    assert entry["matches"][0]["agent_id"] == "edge-translator"

    # nothing registered under another namespace: nothing matched -> exit 1, still valid JSON
    proc = cli("--broker", mesh_cards, "--namespace", "other/ns", "match", "anything at all", "--json")
    assert proc.returncode == 1
    assert json.loads(proc.stdout) == [{"query": "anything at all", "matches": []}]


def test_bad_input_is_one_line_and_exit_2() -> None:
    for args in (
        ["--broker", "http://nope", "agents"],
        ["match", "x", "-k", "0"],
        ["match", "x", "-k", "101"],
        ["match", "-"],
        ["match", "x", "--config", "/nonexistent/router.yaml"],
        ["submit", "What is 2+2?", "--planner", "explicit", "--wait"],
        ["submit", "hi", "--timeout", "-5", "--wait"],
    ):
        proc = cli(*args, stdin="")
        assert proc.returncode == 2, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    proc = cli("agents", "--bogus")
    assert proc.returncode == 2  # argparse usage error


def test_unreachable_broker_is_one_line_and_exit_1() -> None:
    proc = cli("--broker", "mqtt://127.0.0.1:9", "--connect-timeout", "3", "agents", "--json")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "cannot connect" in proc.stderr
    assert proc.stdout == ""
