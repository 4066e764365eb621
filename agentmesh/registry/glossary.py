"""Acronyms spelled out before a text is embedded or cut into terms.

all-MiniLM-L6-v2 knows common words but not what most trade acronyms stand for: to it "Drafts RFPs
and IFBs" says little, and nothing near "write the solicitation for the janitorial contract". So the
registry writes each known acronym's expansion after its first use, in card text ("RFPs (request
for proposals)") and in requests alike, before either is embedded or indexed for lexical matching.
The acronym itself stays, so a request that uses it still meets the card that does.

The built-in glossary (``agentmesh/data/glossary.yaml``, about 2,500 acronyms across sectors) was
written for no particular mesh; a team adds its own with ``matching.glossaries`` (YAML mappings
``ACRONYM: expansion``; a later file's entry wins). Only acronyms written in capitals are spelled
out, with an optional plural ``s``; a text mostly in capitals is left alone (it is shouting, and
its words are not acronyms).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agentmesh.config import load_yaml
from agentmesh.errors import ConfigError
from agentmesh.protocol import Capability

BUILTIN = "builtin"  # the name of the shipped glossary among matching.glossaries
BUILTIN_GLOSSARY = Path(__file__).resolve().parents[1] / "data" / "glossary.yaml"

_KEY = re.compile(r"[A-Z0-9&]*[A-Z][A-Z0-9&]*")
_CANDIDATE = re.compile(r"\b([A-Z0-9][A-Z0-9&]*[A-Z0-9])(s?)\b")


class Glossary:
    """Acronym -> expansion, applied by ``expand`` to texts before they are embedded."""

    def __init__(self, entries: Mapping[str, str] | None = None) -> None:
        self.entries: dict[str, str] = dict(entries or {})

    @classmethod
    def load(cls, sources: Sequence[str] = (BUILTIN,)) -> Glossary:
        """The entries of every source, in order: ``"builtin"`` for the shipped glossary, any
        other string for the path of a YAML file."""
        entries: dict[str, str] = {}
        for source in sources:
            path = BUILTIN_GLOSSARY if source == BUILTIN else Path(source).expanduser()
            entries.update(parse_glossary(load_yaml(path), path))
        return cls(entries)

    def __len__(self) -> int:
        return len(self.entries)

    def found(self, text: str) -> list[tuple[str, str]]:
        """The (acronym, expansion) pairs ``expand`` spells out in ``text``, in order."""
        if not self.entries or _shouting(text):
            return []
        out: list[tuple[str, str]] = []
        for m in _CANDIDATE.finditer(text):
            key = m.group(1)
            expansion = self.entries.get(key)
            if expansion is not None and all(k != key for k, _ in out) and not _spelled(text, expansion):
                out.append((key, expansion))
        return out

    def expand(self, text: str) -> str:
        """``text`` with each known acronym's expansion after its first use."""
        found = dict(self.found(text))
        if not found:
            return text

        def spell(m: re.Match[str]) -> str:
            expansion = found.pop(m.group(1), None)
            return m.group(0) if expansion is None else f"{m.group(0)} ({expansion}{m.group(2)})"

        return _CANDIDATE.sub(spell, text)

    def expand_capability(self, cap: Capability) -> Capability:
        """The capability with its description and examples spelled out (name and tags are
        identifiers); itself when there is nothing to spell out."""
        description = self.expand(cap.description)
        examples = [self.expand(e) for e in cap.examples]
        if description == cap.description and examples == cap.examples:
            return cap
        return cap.model_copy(update={"description": description, "examples": examples})


def parse_glossary(data: Any, source: Path) -> dict[str, str]:
    """A glossary file's entries from its YAML: a mapping of acronyms in capitals to expansions."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("a glossary is a mapping of ACRONYM: expansion", path=str(source))
    entries: dict[str, str] = {}
    for key, value in data.items():
        if not isinstance(key, str) or len(key) < 2 or not _KEY.fullmatch(key):
            raise ConfigError(
                "an acronym is two or more capitals and digits (with at least one letter)",
                path=str(source),
                field=str(key),
            )
        if not isinstance(value, str) or not value.strip():
            raise ConfigError("the expansion must be a non-empty string", path=str(source), field=key)
        entries[key] = " ".join(value.split())
    return entries


def _shouting(text: str) -> bool:
    letters = [c for c in text if c.isalpha()]
    return len(letters) >= 12 and sum(c.isupper() for c in letters) > 0.6 * len(letters)


def _spelled(text: str, expansion: str) -> bool:
    """Whether the text already says what the acronym stands for (its first sense)."""
    return expansion.split(" / ")[0].lower() in text.lower()
