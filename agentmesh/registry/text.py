"""What text of a capability gets embedded, and how text is cut into terms for lexical matching.

A capability is embedded as several *views*, each one label in the tier's index: the card (name,
description and tags together), each example request, the name with its tags, and the bare
description. A user's request
often reads like one of the examples far more than like the description, so matching the views
separately and blending them beats one vector for the whole card.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Literal

from agentmesh.protocol import Capability

ViewKind = Literal["card", "example", "name", "description"]
# Views whose word pieces feed token late interaction (the name and bare description add no words).
TOKEN_VIEWS: frozenset[ViewKind] = frozenset({"card", "example"})

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SPLIT = re.compile(r"[^a-z0-9]+")
_BRITISH = re.compile(r"(?<=.{3})is(e|ed|es|ing|ation|ations)$")

# Function words carry no routing signal; drop them so lexical overlap means shared content words.
STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have
    having he her here hers herself him himself his how i if in into is it its itself just me more most my
    myself no nor not now of off on once only or other our ours ourselves out over own please same she
    should so some such than that the their theirs them themselves then there these they this those through
    to too under until up very was we were what when where which while who whom why will with would you
    your yours yourself yourselves can't cannot could'nt let lets us get got want need needs make like one
    also into using use used via e g eg ie etc thing things something anything kind sort bit""".split()  # noqa: SIM905
)


@dataclass(frozen=True)
class View:
    kind: ViewKind
    text: str


def humanize(name: str) -> str:
    """``summarize_text`` / ``summarizeText`` / ``summarize-text`` -> ``summarize text``."""
    spaced = _CAMEL.sub(" ", name)
    return " ".join(w for w in re.split(r"[^A-Za-z0-9]+", spaced) if w).lower()


def card_text(cap: Capability) -> str:
    text = f"{humanize(cap.name)}: {cap.description.strip()}"
    if cap.tags:
        text += " (" + ", ".join(cap.tags) + ")"
    return text


def capability_views(cap: Capability, *, max_examples: int = 8) -> list[View]:
    views = [View("card", card_text(cap))]
    seen = {views[0].text}
    for example in cap.examples[:max_examples]:
        text = example.strip()
        if text and text not in seen:
            seen.add(text)
            views.append(View("example", text))
    name = humanize(cap.name)
    if cap.tags:
        name += ": " + ", ".join(humanize(t) for t in cap.tags)
    if name and name not in seen:
        seen.add(name)
        views.append(View("name", name))
    description = cap.description.strip()
    if description not in seen:
        views.append(View("description", description))
    return views


def token_text(cap: Capability, *, max_examples: int = 8) -> str:
    """The capability as one text for token-level matching: card and examples, each word read in
    the context of the others."""
    return " ".join([card_text(cap), *(e.strip() for e in cap.examples[:max_examples])])


def stem(word: str) -> str:
    """A deliberately small suffix stripper: enough to meet ``summaries``/``summary``,
    ``translating``/``translate``, ``bugs``/``bug`` without a dependency."""
    if len(word) <= 3 or word.isdigit():
        return word
    word = _BRITISH.sub(r"iz\1", word)  # summarise -> summarize
    for suffix, repl, min_stem in (
        ("ational", "ate", 3),
        ("ization", "ize", 3),
        ("isation", "ize", 3),
        ("ations", "ate", 3),
        ("ation", "ate", 3),
        ("ies", "y", 2),
        ("ied", "y", 2),
        ("ing", "", 3),
        ("ers", "", 3),
        ("er", "", 3),
        ("ed", "", 3),
        ("es", "", 3),
        ("s", "", 3),
        ("ly", "", 3),
    ):
        if word.endswith(suffix) and len(word) - len(suffix) >= min_stem:
            if suffix == "s" and word.endswith(("ss", "us", "is")):
                return word
            if suffix == "es" and not word.endswith(("ches", "shes", "sses", "xes", "zes")):
                # "notes" -> "note", not "not"
                return _strip_e(word[:-1])
            base = word[: len(word) - len(suffix)] + repl
            return _undouble(base) if suffix in ("ing", "ed", "er", "ers") else _strip_e(base)
    return _strip_e(word)


def _undouble(base: str) -> str:
    if len(base) >= 3 and base[-1] == base[-2] and base[-1] not in "lsz":
        base = base[:-1]
    return _strip_e(base)


def _strip_e(word: str) -> str:
    # "translate" and "translat(ing)" meet at "translat".
    return word[:-1] if len(word) > 4 and word.endswith("e") else word


def terms(text: str) -> list[str]:
    """Lower-cased, stemmed content words of ``text`` (identifiers split at _ - . and camelCase)."""
    spaced = _CAMEL.sub(" ", text).lower()
    return [stem(w) for w in _SPLIT.split(spaced) if w and w not in STOPWORDS and len(w) > 1]


def capability_terms(cap: Capability, *, name_weight: int = 3, tag_weight: int = 2) -> Counter[str]:
    """Weighted term counts of a capability: the name and tags say what it is, so they count more."""
    counts: Counter[str] = Counter()
    for term in terms(humanize(cap.name)):
        counts[term] += name_weight
    for tag in cap.tags:
        for term in terms(humanize(tag)):
            counts[term] += tag_weight
    for term in terms(cap.description):
        counts[term] += 1
    for example in cap.examples:
        for term in terms(example):
            counts[term] += 1
    return counts
