"""A step's confidence in 0..1 from the log-probabilities of the tokens the model generated.

For generated tokens t_1..t_n with chosen-token log-probabilities l_i = log p(t_i | t_<i) and,
per position, the two most likely alternatives p1_i >= p2_i:

- ``mean_prob`` (default): exp(mean_i l_i), the geometric mean of the chosen tokens'
  probabilities (the inverse of the per-token perplexity). Length-neutral; one unsure token
  among many confident ones lowers it only a little.
- ``min_prob``: exp(min_i l_i), the probability of the least certain token. Strict: a single
  guess anywhere shows.
- ``margin``: mean_i (p1_i - p2_i), how far ahead the favourite was at each position (0 when
  the model was split between two tokens, 1 when it had no doubt). Needs top-2 log-probs.
- ``none``: no confidence is reported.

No tokens (empty output) gives None: the router then treats the step as having no confidence
rather than as certain. Values are clamped to [0, 1] against rounding.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from agentmesh.agent.prompt import StepRequest

Method = Literal["mean_prob", "min_prob", "margin", "none"]


@dataclass(frozen=True)
class TokenLogprob:
    """One generated position: the chosen token's log-prob and the top alternatives (desc)."""

    logprob: float
    top: tuple[float, ...] = field(default_factory=tuple)


def confidence(tokens: Sequence[TokenLogprob], method: Method = "mean_prob") -> float | None:
    if method == "none" or not tokens:
        return None
    if method == "mean_prob":
        value = math.exp(sum(_finite(t.logprob) for t in tokens) / len(tokens))
    elif method == "min_prob":
        value = math.exp(min(_finite(t.logprob) for t in tokens))
    elif method == "margin":
        value = sum(_margin(t) for t in tokens) / len(tokens)
    else:
        raise ValueError(f"unknown confidence method {method!r}")
    return min(1.0, max(0.0, value))


# A model caught in a loop ("Answer:\nAnswer:\n..." until max_tokens) is sure of every next token,
# so its log-probabilities say "certain"; so is one copying its input. What it says is then worth
# no more than this.
LOOP_CONFIDENCE = 0.05


_ENUMERATOR = re.compile(r"\d{1,9}[.):]?")
# A request whose answer may well be its own material, word for word.
_ASKS_FOR_COPY = re.compile(
    r"\b(?:repeat|echo|copy|quote|extract|verbatim|proofread|correct|fix|check)\w*", re.IGNORECASE
)


def looping(text: str) -> bool:
    """Whether ``text`` is a degenerate repetition: at least 4 lines of which one line makes up
    half or more, at least 20 words of which under a fifth are distinct, or a long count: 40
    words or more, four fifths of them bare numbers going up by one ("1. 2. 3. ... 124.", an
    empty list the model cannot stop; "count to 30" is answered in fewer)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) >= 4 and max(lines.count(line) for line in set(lines)) * 2 >= len(lines):
        return True
    words = text.lower().split()
    if len(words) < 20:
        return False
    if len(set(words)) * 5 < len(words):
        return True
    runs = _runs(words, 6)
    if len(set(runs)) * 2 <= len(runs):
        return True  # one passage over and over ("<paragraph>\nAnswer: <paragraph>\nAnswer: ...")
    if len(words) < 40:
        return False
    numbers = [int(w.rstrip(".):")) for w in words if _ENUMERATOR.fullmatch(w)]
    counting = sum(1 for a, b in itertools.pairwise(numbers) if b == a + 1)
    return counting * 5 >= len(words) * 4


def copied(text: str, request: StepRequest) -> bool:
    """Whether ``text`` is, for nine tenths of its 8-word runs, a copy of what the step gave the
    model (its instruction, earlier results, a previous attempt) while the step asked for
    something else: SmolLM2 "summarises" a report by writing it out again, sure of every token.
    Short answers (under 25 words) and steps that ask for a copy or a proofreading are exempt."""
    words = text.lower().split()
    if len(words) < 25 or _ASKS_FOR_COPY.search(request.instruction[:160]):
        return False
    given = [request.instruction, *request.inputs.values()]
    if request.previous is not None:
        given.append(request.previous.output)
    source = {run for part in given for run in _runs(part.lower().split(), 8)}
    runs = _runs(words, 8)
    return sum(run in source for run in runs) * 10 >= len(runs) * 9


def loop_checked(
    text: str, value: float | None, *, looped: bool = False, request: StepRequest | None = None
) -> float | None:
    """``value``, capped at LOOP_CONFIDENCE when ``text`` loops, generation was stopped in a loop
    (``looped``), or ``text`` copies what ``request`` gave the model (``copied``)."""
    if value is not None and (looped or looping(text) or (request is not None and copied(text, request))):
        return min(value, LOOP_CONFIDENCE)
    return value


def _runs(words: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


def _finite(logprob: float) -> float:
    # -inf happens when a grammar forced a token the model gave zero mass; keep exp() defined.
    if math.isnan(logprob):
        return -50.0
    return max(logprob, -50.0)


def _margin(token: TokenLogprob) -> float:
    top = sorted((_finite(x) for x in token.top), reverse=True)
    if not top:
        top = [_finite(token.logprob)]
    p1 = math.exp(top[0])
    p2 = math.exp(top[1]) if len(top) > 1 else 0.0
    return p1 - p2


def from_openai_logprobs(content: Sequence[Any] | None) -> list[TokenLogprob]:
    """Tokens from an OpenAI chat ``choice.logprobs.content`` (objects or dicts)."""
    out: list[TokenLogprob] = []
    for item in content or []:
        lp = _get(item, "logprob")
        if lp is None:
            continue
        tops = [_get(t, "logprob") for t in (_get(item, "top_logprobs") or [])]
        top = tuple(sorted((float(x) for x in tops if x is not None), reverse=True))
        out.append(TokenLogprob(float(lp), top))
    return out


def from_completion_logprobs(logprobs: Any) -> list[TokenLogprob]:
    """Tokens from a legacy completions-style ``logprobs`` ({token_logprobs, top_logprobs})."""
    if not logprobs:
        return []
    chosen = _get(logprobs, "token_logprobs") or []
    tops = _get(logprobs, "top_logprobs") or [None] * len(chosen)
    out: list[TokenLogprob] = []
    for lp, top in zip(chosen, tops, strict=False):
        if lp is None:
            continue
        alts = tuple(sorted((float(v) for v in (top or {}).values()), reverse=True))
        out.append(TokenLogprob(float(lp), alts))
    return out


def _get(obj: Any, name: str) -> Any:
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)
