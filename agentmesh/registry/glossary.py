"""Acronyms spelled out before a text is embedded or cut into terms.

all-MiniLM-L6-v2 knows common words but not what most trade acronyms stand for: to it "Drafts RFPs
and IFBs" says little, and nothing near "write the solicitation for the janitorial contract". So the
registry writes each known acronym's expansion after its first use, in card text ("RFPs (request
for proposal)") and in requests alike, before either is embedded or indexed for lexical matching.
The acronym itself stays, so a request that uses it still meets the card that does.

The built-in glossary (``agentmesh/data/glossary.yaml``, about 2,500 acronyms across sectors) was
written for no particular mesh; a team adds its own with ``glossaries`` in the router config (YAML
mappings ``ACRONYM: expansion``; a later file's entry wins). Only acronyms written in capitals are
spelled out (a plural ``s`` after one is fine), not inside code, paths, URLs or IDs, not when the
text already says them in words, and not in a text whose other words are mostly in capitals too
(it is shouting, and its words are not acronyms).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agentmesh.config import load_yaml
from agentmesh.errors import ConfigError
from agentmesh.protocol import Capability
from agentmesh.registry.text import terms

BUILTIN = "builtin"  # the name of the shipped glossary among a router's glossaries
BUILTIN_GLOSSARY = Path(__file__).resolve().parents[1] / "data" / "glossary.yaml"

_KEY = re.compile(r"[A-Z0-9][A-Z0-9&]*[A-Z0-9]")
# An acronym in running text: not a piece of a path, URL, version, e-mail or ID ("v2.API",
# "/API/", "PO-5512"), where spelling it out would only add noise.
_CANDIDATE = re.compile(r"(?<![./:\\@#$-])\b([A-Z0-9][A-Z0-9&]*[A-Z0-9])s?\b(?![./:\\@-]\w)")
_CODE = re.compile(r"`[^`]*`")
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9&]+")


class Glossary:
    """Acronym -> expansion, applied by ``expand`` to texts before they are embedded."""

    def __init__(self, entries: Mapping[str, str] | None = None) -> None:
        self.entries: dict[str, str] = dict(entries or {})

    @classmethod
    def load(cls, sources: Sequence[str] = (BUILTIN,)) -> Glossary:
        """The entries of every source, in order: ``"builtin"`` for the shipped glossary, any
        other string for the path of a YAML file. A later file's entry wins; ``KEY: null``
        drops an earlier one."""
        entries: dict[str, str] = {}
        for source in sources:
            path = BUILTIN_GLOSSARY if source == BUILTIN else Path(source).expanduser()
            for key, value in parse_glossary(load_yaml(path), path).items():
                if value is None:
                    entries.pop(key, None)
                else:
                    entries[key] = value
        return cls(entries)

    def __len__(self) -> int:
        return len(self.entries)

    def found(self, text: str) -> list[tuple[str, str]]:
        """The (acronym, expansion) pairs ``expand`` spells out in ``text``, in order."""
        return [(m.group(1), self.entries[m.group(1)]) for m in self._first_uses(text)]

    def expand(self, text: str) -> str:
        """``text`` with each known acronym's expansion after its first use."""
        parts: list[str] = []
        last = 0
        for m in self._first_uses(text):
            parts += [text[last : m.end()], f" ({self.entries[m.group(1)]})"]
            last = m.end()
        return "".join(parts) + text[last:] if parts else text

    def expand_capability(self, cap: Capability) -> Capability:
        """The capability with its description and examples spelled out (name and tags are
        identifiers); itself when there is nothing to spell out."""
        description = self.expand(cap.description)
        examples = [self.expand(e) for e in cap.examples]
        if description == cap.description and examples == cap.examples:
            return cap
        return cap.model_copy(update={"description": description, "examples": examples})

    def _first_uses(self, text: str) -> list[re.Match[str]]:
        if not self.entries:
            return []
        code = [m.span() for m in _CODE.finditer(text)] if "`" in text else []
        seen: set[str] = set()
        uses: list[re.Match[str]] = []
        text_terms: set[str] | None = None
        for m in _CANDIDATE.finditer(text):
            key = m.group(1)
            if key in seen or key not in self.entries or any(a <= m.start() < b for a, b in code):
                continue
            seen.add(key)
            if text_terms is None:
                text_terms = set(terms(text))
            # Already said in words ("a request for proposals (RFP)"): once is enough.
            said = terms(self.entries[key].split(" / ")[0])
            if not said or not set(said) <= text_terms:
                uses.append(m)
        return [] if uses and self._shouting(text) else uses

    def _shouting(self, text: str) -> bool:
        """Whether most words that are not acronyms are in capitals: then none of them are."""
        words = [
            w
            for w in _WORD.findall(text)
            if w not in self.entries and w.removesuffix("s") not in self.entries
        ]
        return len(words) >= 3 and sum(w.isupper() for w in words) > 0.6 * len(words)


def parse_glossary(data: Any, source: Path) -> dict[str, str | None]:
    """A glossary file's entries from its YAML: a mapping of acronyms in capitals to expansions
    (None: drop the entry)."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("a glossary is a mapping of ACRONYM: expansion", path=str(source))
    entries: dict[str, str | None] = {}
    for key, value in data.items():
        if isinstance(key, bool):
            raise ConfigError(
                "YAML reads NO, YES, ON and OFF as true/false: quote such a key ('NO': ...)",
                path=str(source),
                field=str(key),
            )
        if not isinstance(key, str) or not _KEY.fullmatch(key) or not any(c.isalpha() for c in key):
            raise ConfigError(
                "an acronym is two or more capitals, digits and '&', with a letter, as written",
                path=str(source),
                field=str(key),
            )
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ConfigError(
                "the expansion must be a non-empty string (or null to drop the entry)",
                path=str(source),
                field=key,
            )
        entries[key] = " ".join(value.split()) if value is not None else None
    return entries
