"""The acronym glossary: what is spelled out, where, and what a glossary file may hold."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentmesh.errors import ConfigError
from agentmesh.protocol import Capability, CapabilityVector
from agentmesh.registry import Glossary, HashingEmbedder, Registry, terms
from agentmesh.router import Router
from agentmesh.router_config import RouterConfig
from agentmesh.routing import Matcher

G = Glossary(
    {
        "RFP": "request for proposal",
        "PO": "purchase order",
        "ER": "emergency room / employee relations",
        "P&L": "profit and loss",
        "3PL": "third party logistics",
    }
)


def test_each_acronym_spelled_out_after_its_first_use() -> None:
    assert G.expand("Drafts RFPs, and an RFP a day") == "Drafts RFPs (request for proposal), and an RFP a day"
    assert G.expand("PO status; P&L for Q3; 3PL rates") == (
        "PO (purchase order) status; P&L (profit and loss) for Q3; 3PL (third party logistics) rates"
    )
    assert G.expand("ER wait times") == "ER (emergency room / employee relations) wait times"
    assert G.expand("the RFP.") == "the RFP (request for proposal)."


def test_a_text_made_mostly_of_acronyms_is_not_taken_for_shouting() -> None:
    assert G.found("RFP, PO and P&L for 3PL") == [
        ("RFP", "request for proposal"),
        ("PO", "purchase order"),
        ("P&L", "profit and loss"),
        ("3PL", "third party logistics"),
    ]
    assert G.expand("PLEASE SEND THE PO STATUS TODAY") == "PLEASE SEND THE PO STATUS TODAY"


def test_what_is_left_alone() -> None:
    for text in (
        "send the po to finance",  # not in capitals
        "the POS terminal",  # another word that starts like one
        "a request for proposal (RFP) for the roof",  # already said in words
        "Drafts RFPs (requests for proposals)",  # said in words, plural
        "PLEASE SEND THE PO STATUS TODAY",  # shouting: its words are not acronyms
        "see https://example.com/RFP/v1 and v2.RFP",  # paths, URLs, versions
        "order PO-5512",  # an ID
        "run `grep RFP file` first",  # code
        "",
    ):
        assert G.expand(text) == text, text
    assert G.found("PO and PO and RFP") == [("PO", "purchase order"), ("RFP", "request for proposal")]
    assert G.expand("`RFP` then RFP") == "`RFP` then RFP (request for proposal)"
    assert Glossary().expand("PO") == "PO"


def test_capability_description_and_examples_spelled_out() -> None:
    cap = Capability(
        name="rfp_drafting", description="Drafts RFPs", tags=["RFP"], examples=["an RFP for paving"]
    )
    out = G.expand_capability(cap)
    assert out.description == "Drafts RFPs (request for proposal)"
    assert out.examples == ["an RFP (request for proposal) for paving"]
    assert out.name == cap.name and out.tags == ["RFP"]
    plain = Capability(name="chat", description="Small talk")
    assert G.expand_capability(plain) is plain


def test_builtin_glossary_loads_and_a_team_file_overrides_it(tmp_path: Path) -> None:
    builtin = Glossary.load()
    assert len(builtin) > 2000
    assert builtin.entries["RFP"] == "request for proposal"
    own = tmp_path / "ours.yaml"
    own.write_text("RFP: regional freight plan\nZZQ: our in-house thing\nHR: null\n")
    merged = Glossary.load(["builtin", str(own)])
    assert merged.entries["RFP"] == "regional freight plan" and merged.entries["ZZQ"] == "our in-house thing"
    assert "HR" in builtin.entries and "HR" not in merged.entries  # null drops a built-in entry
    assert len(merged) == len(builtin)


@pytest.mark.parametrize(
    ("content", "field"),
    [
        ("rfp: lower case\n", "rfp"),
        ("'1099': digits only\n", "1099"),
        ("R: one letter\n", "R"),
        ("RFP: ''\n", "RFP"),
        ("A&: a trailing ampersand\n", "A&"),
        ("NO: nitric oxide\n", "False"),
        ("RFP: [a, b]\n", "RFP"),
    ],
)
def test_a_bad_entry_is_refused_with_its_file_and_key(tmp_path: Path, content: str, field: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError) as err:
        Glossary.load([str(path)])
    assert err.value.path == str(path) and err.value.field == field


@pytest.mark.parametrize("content", ["- a list\n", "RFP: [unclosed\n"])
def test_a_file_that_is_no_mapping_is_refused(tmp_path: Path, content: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError) as err:
        Glossary.load([str(path)])
    assert err.value.path == str(path)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        Glossary.load([str(tmp_path / "nope.yaml")])


def test_registry_and_matcher_spell_out_cards_and_requests_alike() -> None:
    """The lexical index holds the expansion's words, and a request's terms hold them too, so a
    request in plain words meets a card that only names the acronym."""
    vcv = CapabilityVector(
        agent_id="buyer",
        version=1,
        tier="edge",
        capabilities=[Capability(name="drafting", description="Drafts RFPs")],
    )
    key = ("buyer", 0)
    scores = {}
    for name, glossary in (("with", G), ("without", Glossary())):
        registry = Registry(HashingEmbedder(), glossary=glossary)
        registry.apply_vcv("buyer", vcv)
        entry = registry.get("buyer")
        assert entry is not None and entry.vcv.capabilities[0].description == "Drafts RFPs"  # as sent
        scores[name] = registry.lexical.scores(terms("proposal"), [key]).get(key, 0.0)
        prepared = Matcher(registry).prepare_query("need an RFP for paving")
        assert prepared.text == "need an RFP for paving"
        assert ("proposal" in prepared.terms) == (name == "with")
    assert scores["with"] > 0 == scores["without"]


def test_the_router_builds_its_registry_with_its_configs_glossaries(tmp_path: Path) -> None:
    own = tmp_path / "ours.yaml"
    own.write_text("ZZQ: zone quality check\n")
    router = Router(
        RouterConfig(glossaries=["builtin", str(own)], ledger=":memory:"), embedder=HashingEmbedder()
    )
    assert router.registry.glossary.entries["ZZQ"] == "zone quality check"
    assert "RFP" in router.registry.glossary.entries
    with pytest.raises(ConfigError):
        Router(RouterConfig(glossaries=[str(tmp_path / "missing.yaml")]), embedder=HashingEmbedder())


def test_a_query_with_its_own_vector_gets_spelled_out_terms() -> None:
    registry = Registry(HashingEmbedder(), glossary=G)
    matcher = Matcher(registry)
    vector = HashingEmbedder().embed(["x"])[0]
    assert "proposal" in matcher.prepare_query("an RFP", vector).terms
    first, again = matcher.prepare_queries(["an RFP", "an RFP"])
    assert "proposal" in first.terms and again is first  # one preparation for a repeated text
