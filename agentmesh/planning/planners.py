"""Choosing a planner and talking to an LLM planner: the prompt out, the plan back.

The LLM planner is an agent whose capability has the tag ``plan``; the router sends it one step
whose output is constrained to ``plan_schema()``. Small models get ids and dependency names wrong
in many small ways, so ``parse_plan_output`` repairs what it safely can (ids, missing lists,
references by position) before validating; what it cannot repair becomes a PlanError, whose
text is sent back once in a retry.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from agentmesh.errors import PlanError
from agentmesh.planning.plan import validate_plan
from agentmesh.protocol import Plan, PlanStep
from agentmesh.protocol.dag import find_cycle
from agentmesh.registry.text import terms

PLANNER_STEP_ID = "planner"


def looks_multipart(text: str) -> bool:
    """A guess whether a task has more than one request worth an LLM planning call: two parts of
    it (see ``task_parts``) ask for something and stand alone. Material around one request ("Summarize
    this: ...", a quoted email, the scene before a question) is not a second request."""
    if len(text) > MAX_SPLIT_CHARS:
        return False  # complete_plan would run it as one step anyway
    if not _MAY_SPLIT.search(text):
        return False  # one clause: the common short task skips the parsing below
    asking = (p for p in _iter_parts(text) if p.asks and _stands_alone(p, _words(p.text)))
    return next(asking, None) is not None and next(asking, None) is not None


LONG_REQUEST_CHARS = 1000  # about what MiniLM reads of a text (256 word pieces)


def request_query(text: str, window: int = 2000) -> str | None:
    """What a long task is matched by: the parts at its two ends that ask for something ("<ten
    pages> Summarize this report in three sentences." is matched as its last sentence), or None
    to match the text itself. The embedder reads only a text's first 256 word pieces, and the
    material's topic (or its numbers) would otherwise pick the agent."""
    if len(text) <= LONG_REQUEST_CHARS:
        return None
    ends = [text] if len(text) <= 2 * window else [text[:window], text[-window:]]
    asking = dict.fromkeys(p.text for end in ends for p in _iter_parts(end) if p.asks)
    query = " ".join(asking)[:LONG_REQUEST_CHARS].strip()
    return query or None


# Tiny planners (SmolLM2-135M) cannot follow an abstract description of the format, but they copy
# a pattern well: two worked examples (one parallel, one dependent) make their plans usable. They
# also copy the examples' steps verbatim now and then; parse_plan_output drops those.
_EXAMPLES: tuple[tuple[str, tuple[tuple[str, tuple[str, ...]], ...]], ...] = (
    (
        'What is 2+3? Then translate "cat" into French.',
        (("What is 2+3?", ()), ('Translate "cat" into French.', ())),
    ),
    (
        "Convert 10 kg to pounds and then write a haiku about the result.",
        (("Convert 10 kg to pounds.", ()), ("Write a haiku about the result.", ("s1",))),
    ),
)
_EXAMPLE_INSTRUCTIONS = frozenset(i.lower() for _, steps in _EXAMPLES for i, _ in steps)


def _example_lines() -> list[str]:
    lines = []
    for task, steps in _EXAMPLES:
        plan = {
            "steps": [
                {"id": f"s{n}", "instruction": instruction, "depends_on": list(deps)}
                for n, (instruction, deps) in enumerate(steps, start=1)
            ]
        }
        lines += [f"Task: {task}", "Plan: " + json.dumps(plan, separators=(",", ":"))]
    return lines


def planning_instruction(text: str, error: str | None = None, max_steps: int = 8) -> str:
    """The planning step's instruction: the format by example, then the task."""
    lines = [
        "Split a task into steps. Copy each part of the task into its own self-contained step.",
        f"Steps that need another step's answer list its id in depends_on; use at most {max_steps} steps.",
        *_example_lines(),
        f"Task: {text.strip()}",
    ]
    if error:
        lines.append(f"(A previous plan was invalid: {error}. Answer with a valid plan.)")
    lines.append("Plan:")
    return "\n".join(lines)


def _extract_json(output: str) -> Any:
    text = output.strip()
    fence = re.search(r"```(?:json)?\s*(.*?)```", text, re.DOTALL)
    if fence:
        text = fence.group(1).strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    start = text.find("{")
    end = text.rfind("}")
    if start != -1 and end > start:
        try:
            return json.loads(text[start : end + 1])
        except json.JSONDecodeError as exc:
            raise PlanError(f"output is not valid JSON: {exc.msg} at position {exc.pos}") from None
    raise PlanError("output contains no JSON object")


def parse_plan_output(output: str, max_steps: int = 32) -> Plan:
    """Parse and repair a planner's output into a valid Plan; ids are normalised to s1..sN."""
    steps = _plan_steps(output, max_steps)
    if not steps:
        raise PlanError("the plan has no steps of its own (only copies of the examples)", field="steps")
    return validate_plan({"steps": steps})


def plan_from_output(output: str, text: str, max_steps: int = 32) -> Completion:
    """The router's plan for the task ``text`` from its planner's ``output``: parsed, repaired and
    completed (``complete_plan``). A plan whose every step copies the prompt's examples is
    completed from nothing: the task's requests are its steps."""
    steps = _plan_steps(output, max_steps)
    return complete_plan(validate_plan({"steps": steps}) if steps else None, text, max_steps)


def _plan_steps(output: str, max_steps: int) -> list[dict[str, Any]]:
    """The planner's steps, repaired (ids s1..sN, dependencies by position, copies of the examples
    dropped) but not yet validated as a DAG; empty when every step was a copy."""
    data = _extract_json(output)
    if isinstance(data, list):
        data = {"steps": data}
    if not isinstance(data, dict) or not isinstance(data.get("steps"), list):
        raise PlanError("expected an object with a 'steps' list", field="steps")
    raw_steps = [s for s in data["steps"] if isinstance(s, dict)]
    kept = _drop_copies(raw_steps)
    dropped = {str(s.get("id", "")).strip() for s in raw_steps if s not in kept}
    raw_steps = kept
    if len(raw_steps) > max_steps:
        raise PlanError(
            f"the plan has {len(raw_steps)} steps; at most {max_steps} are allowed", field="steps"
        )
    old_to_new: dict[str, str] = {}
    for i, step in enumerate(raw_steps, start=1):
        old = str(step.get("id", i)).strip()
        old_to_new.setdefault(old, f"s{i}")
        old_to_new.setdefault(str(i), f"s{i}")
    steps: list[dict[str, Any]] = []
    for i, step in enumerate(raw_steps, start=1):
        instruction = str(
            step.get("instruction") or step.get("task") or step.get("description") or ""
        ).strip()
        if not instruction:
            raise PlanError("step has no instruction", step_id=f"s{i}")
        deps_raw = step.get("depends_on") or []
        if not isinstance(deps_raw, list):
            deps_raw = [deps_raw]
        deps: list[str] = []
        for dep in deps_raw:
            if str(dep).strip() in dropped:
                continue
            new = old_to_new.get(str(dep).strip())
            if new is None:
                raise PlanError(f"depends on unknown step {dep!r}", step_id=f"s{i}")
            if new != f"s{i}" and new not in deps:
                deps.append(new)
        steps.append({"id": f"s{i}", "instruction": instruction, "depends_on": deps})
    return steps


def _drop_copies(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Steps that copy the prompt's examples, or repeat an earlier step, are not part of the plan."""
    seen: set[str] = set()
    kept = []
    for step in steps:
        text = str(step.get("instruction") or "").strip().lower()
        if text in _EXAMPLE_INSTRUCTIONS or (text and text in seen):
            continue
        seen.add(text)
        kept.append(step)
    return kept


# ---- coverage: a plan must not drop part of the task ---------------------------------------------
# Tiny planners often copy the first part of a task and stop ("What is 2**10? Also convert 2 h to
# minutes" -> one step), make up a step from the prompt's examples ("Convert 10 kg to square
# feet"), or leave out that a step works on an earlier one's answer ("What is 480 minus that?").
# The task would then finish "done" with half an answer. So the router cuts the task into parts
# itself, drops made-up steps, adds the parts no step mentions, and wires up back-references.

_LINES = re.compile(r"\n+")
# Quoted spans (see _mask_quotes) are Unicode private-use placeholders while a task is cut up. A
# single quote opens only after a non-letter and closes only before one ("don't" is no quote).
_QUOTE_OPEN, _QUOTE_CLOSE, _QUOTE_END = "\ue000", "\ue001", "\ue002"
# Linear on any input: a curly quote does not span another opener, and an apostrophe inside a
# single-quoted span must sit between letters ("it's").
_QUOTED = re.compile(
    r"\"[^\"\n]*\"|\u201c[^\u201c\u201d\n]*\u201d"
    r"|(?<!\w)['\u2018](?=\S)(?:[^'\u2018\u2019\n]|(?<=\w)['\u2019](?=\w)){0,1000}?(?<=\S)['\u2019](?!\w)"
)
_PRIVATE_USE = re.compile("[\ue000-\ue002]")
_PLACEHOLDER = re.compile(f"{_QUOTE_OPEN}(\\d+){_QUOTE_CLOSE}{_QUOTE_END}?")
_CLAUSE_END = re.compile(rf"(?:(?<=[.?!])|(?<=[.?!]\))|(?<={_QUOTE_END})(?=\s+[A-Z]))\s+|;")
# A request that ends with a colon before plain text ("Summarize this: ...", "Proofread the email
# below:") is followed by its material, not by more requests; a quote after the colon is the
# whole material, and a question or request after it ("Question 1: what is ...?") is no material.
_INTRODUCES = re.compile(rf":(?:\s*$|\s+(?!{_QUOTE_OPEN}))")
# "Translate the haiku" works on the answer of "Write a haiku about rain".
_AFTER_HEAD = re.compile(r"\s+(?:about|after|and|at|by|for|from|in|into|of|on|that|to|which|with)\b", re.I)
_INDEFINITE = re.compile(r"\b(?:a|an)\s+((?:[\w'-]+\s+){0,2}[\w'-]+)", re.IGNORECASE)
_DEFINITE = re.compile(r"\b(?:the|that|this)\s+((?:[\w'-]+\s+){0,2}[\w'-]+)", re.IGNORECASE)
# "Hotel: €420", "Monday: gym at 7am": a label and its value.
_LABEL = re.compile(r"^[^\s:]+(?:\s+[^\s:]+){0,3}:\s")
_SEQUENCE = r"(?:then|after that|afterwards|finally|lastly|next(?=\s*,)|also|additionally|in addition)\b"
# Where task_parts may cut a text: without any of these it is one part.
_MAY_SPLIT = re.compile(rf"[\n;]|[.?!)][\"'\u201d\u2019]?\s|\band\b|\b{_SEQUENCE}", re.IGNORECASE)
_CONNECTIVE = re.compile(
    rf"^\s*(?:(?:and|but)\s+)?({_SEQUENCE}|first\b(?=\s*,|\s+\w))[\s,:]*|^\s*(and|but)\s+", re.IGNORECASE
)
# Inside a sentence "then" starts a part; "also" and "finally" only after a comma or "and" ("I
# finally finished my essay" is one part). The lookbehind keeps the split linear on long runs of
# spaces or commas.
_BEFORE_CONNECTIVE = re.compile(
    r"(?<![\s,])(?:[\s,]+(?=(?:and\s+)?(?:then|after that|afterwards)\b)"
    r"|(?:\s*,\s*(?:and\s+)?|\s+and\s+)(?=(?:also|additionally|finally|lastly)\b))",
    re.IGNORECASE,
)
_LIST_MARK = re.compile(r"^\s*(?:\d+[.)]|[-*])\s+")
# How a request starts: an imperative, a question word, or a way of asking.
_IMPERATIVES = (
    r"add|analy[sz]e|answer|apply|arrange|book|brainstorm|calculate|check|classify|compare|compute|"
    r"convert|correct|count|create|define|describe|determine|divide|draft|email|estimate|evaluate|"
    r"explain|extract|find|fix|format|generate|give|help|identify|list|look|make|multiply|name|"
    r"outline|paraphrase|plan|predict|proofread|provide|put|rank|recommend|remind|repeat|rephrase|review|"
    r"rewrite|round|say|"
    r"schedule|search|send|show|solve|sort|subtract|suggest|summari[sz]e|take|tell|translate|turn|"
    r"work out|write"
)
_ASKING = (
    rf"(?:(?:please|kindly)\s+)?(?:{_IMPERATIVES}|what|what's|whats|which|who|when|where|why|how|"
    r"can you|could you|would you|let me know"
    # "I need a title" and "I'd like to book a table" ask; "I need to feed 6 people" is the scene.
    rf"|(?:i need|i want|i'd like)"
    rf"(?:\s+to\s+(?:{_IMPERATIVES}|know|learn|find out|understand|see)|(?!\s+to\b)))\b"
)
_REQUEST = re.compile(_ASKING, re.IGNORECASE)
# "X and Y" is two parts only when Y starts like a request of its own ("... and compute 9*9").
_AND = re.compile(rf"(?<![\s,]),?\s+and\s+(?={_ASKING})", re.IGNORECASE)
# Words by which a step works on an earlier answer ("minus that", "the result", "convert it").
_REFERS_BACK = re.compile(
    r"\bthe\s+(?:result|answer|summary|translation|corrected|same)\b|\bthat\s+(?:many|much|amount|"
    r"number|value|distance|total|sentence|text)\b|\b(?:of|from|by|minus|plus|times|into|convert|"
    r"translate|rewrite|multiply|divide|round|turn|double|summari[sz]e|proofread)\s+(?:it|that|them)\b"
    r"|\bthat\s*[?.!]*$",
    re.IGNORECASE,
)
_NUMBER = re.compile(r"\d+")
MAX_SPLIT_CHARS = 16_000
_ENUMERATOR = re.compile(r"^\s*(?:step\s*)?\d+\s*[.):]\s*", re.IGNORECASE)  # "1. ", "Step 2: "
_COURTESY = frozenset(
    {"thank", "thanks", "thx", "hi", "hello", "hey", "cheer", "ok", "okay", "great", "pleas"}
)


# A greeting that a request works on ("translate hello to French", "say thanks in Japanese").
_GREETING_OBJECT = re.compile(
    r"^\W*(\w+)\s+[\"']?(hello|hi|hey|thanks|thank\s+you|goodbye|good\s*bye)\b", re.IGNORECASE
)


def _words(text: str) -> set[str]:
    """Content words, stemmed, and every number ("compute 9*9" is about 9). A greeting or thanks is
    no content, unless it is what the request works on."""
    words = {*terms(text), *_NUMBER.findall(text)} - _COURTESY
    said = _GREETING_OBJECT.match(text)
    if said and not set(terms(said.group(1))) & _COURTESY:
        words |= set(terms(said.group(2)))
    return words


@dataclass(frozen=True)
class TaskPart:
    text: str  # without its leading connective ("then", "also")
    follows: bool  # it works on the answer of the part before ("... the result", "minus that")
    # It asks for something (a question, an imperative, a list item, a clause after "then" or
    # "also"), rather than giving the material or the scene for a request.
    asks: bool
    joined: bool = False  # it came after "then", "also", "finally"... (not a bare "and")
    material: str = ""  # what a request ending in a colon works on ("Summarize this: <material>")


def task_parts(text: str) -> list[TaskPart]:
    """The parts of a task a plan must cover, in order: sentences, ``;``-clauses, list items, and
    clauses introduced by "then"/"also"/"finally", and "X and Y" where Y starts like a request of its
    own ("compare apples and oranges" stays one part). A bare greeting or thanks is not a part."""
    return list(_iter_parts(text))


def _iter_parts(text: str) -> Iterator[TaskPart]:
    masked, quotes = _mask_quotes(text)
    pending: TaskPart | None = None
    material: list[str] | None = None  # after "Summarize this:", the text to summarise
    made: set[str] = set()  # what earlier requests asked for: "Write a haiku" -> "the haiku"
    for line in _LINES.split(masked):
        item = _LIST_MARK.match(line) is not None
        for clause in _CLAUSE_END.split(_LIST_MARK.sub("", line)):
            for piece in _BEFORE_CONNECTIVE.split(clause):
                connective = _CONNECTIVE.match(piece)
                body = piece[connective.end() :] if connective else piece
                for n, side in enumerate(_split_and(body.strip())):
                    side = side.strip().rstrip(",")
                    plain = _unmask(side, quotes)
                    if not _words(plain):
                        continue
                    joined = n == 0 and connective is not None and connective.group(1) is not None
                    request = bool(_REQUEST.match(side))
                    if material is not None and not (joined and request):
                        material.append(plain)
                        continue
                    follows = bool(_REFERS_BACK.search(side) or _heads(_DEFINITE, side) & made)
                    if item:
                        # "- Hotel: €420" is data; "- Question 1: what is ...?" is not.
                        label = _LABEL.match(side)
                        value = side[label.end() :] if label else side
                        asks = label is None or side.endswith("?") or bool(_REQUEST.match(value))
                    else:
                        number = _NUMBER.search(_PLACEHOLDER.sub(" ", side)) is not None
                        asks = request or side.endswith("?") or (joined and (follows or number))
                    if pending is not None:
                        yield _with_material(pending, material)
                    pending = TaskPart(plain, follows=follows, asks=asks, joined=joined)
                    intro = _INTRODUCES.search(side) if asks and not side.endswith("?") else None
                    material = [] if intro and not _REQUEST.match(side[intro.end() :]) else None
                    if asks:
                        made |= _heads(_INDEFINITE, side)
    if pending is not None:
        yield _with_material(pending, material)


def _with_material(part: TaskPart, material: list[str] | None) -> TaskPart:
    return replace(part, material=" ".join(material)) if material else part


def _heads(article: re.Pattern[str], text: str) -> set[str]:
    """The head nouns (stemmed) of the noun phrases after ``article`` in ``text``: "a two-line
    slogan for a shop" -> slogan; "the population of Paris" -> population."""
    heads = set()
    for m in article.finditer(text):
        words = terms(_AFTER_HEAD.split(m.group(1), maxsplit=1)[0])
        if words:
            heads.add(words[-1])
    return heads


def _mask_quotes(text: str) -> tuple[str, list[str]]:
    """``text`` with each quoted span replaced by a placeholder, and the spans: a quote is material
    ("Translate 'Where is it? What time is it?'" is one request), never split into parts."""
    quotes: list[str] = []
    if _PRIVATE_USE.search(text):
        return text, quotes  # the placeholders' own characters: no masking, rather than a wrong one

    def hide(m: re.Match[str]) -> str:
        quotes.append(m.group(0))
        # A quote that ends a sentence ends the placeholder's sentence too.
        end = _QUOTE_END if m.group(0)[-2:-1] in ".?!" else ""
        return f"{_QUOTE_OPEN}{len(quotes) - 1}{_QUOTE_CLOSE}{end}"

    return _QUOTED.sub(hide, text), quotes


def _unmask(text: str, quotes: list[str]) -> str:
    if not quotes:
        return text
    return _PLACEHOLDER.sub(lambda m: quotes[int(m.group(1))], text)


def _split_and(text: str) -> list[str]:
    out: list[str] = []
    for side in _AND.split(text):
        if out and len(_words(out[-1])) < 2:
            out[-1] += " and " + side  # "Translate it and send it": one part
        else:
            out.append(side)
    return out


def _from_one_part(instruction: str, contexts: list[set[str]]) -> bool:
    """Whether a planner's step comes from one part of the task (with the scene before it): all
    its numbers, and most of its words, are in there. SmolLM2 makes up steps from its prompt's
    examples ("Convert 10 kg to square feet") and fuses parts ("Multiply 5 km by 2" from "multiply
    the result by 2" and "convert 5 km to miles"; "What's 15% of Italy?")."""
    words = _words(instruction)
    numbers = {w for w in words if w.isdigit()}
    return any(numbers <= part and _covered(words, part, {w[:5] for w in part}) for part in contexts)


def _stands_alone(part: TaskPart, wanted: set[str]) -> bool:
    """Whether ``part`` (content words ``wanted``) is a part of its own rather than a manner or a
    follow-up of another ("Answer in French.", "Give an example.", "And of Germany?")."""
    if len(wanted) >= 3 or part.joined or _NUMBER.search(part.text):
        return True
    return len(wanted) == 2 and (part.follows or part.text.endswith("?"))


def _covered(wanted: set[str], words: set[str], prefixes: set[str]) -> bool:
    """Most of a part's content words (stemmed, or their first five letters) are in ``words``."""
    found = sum(1 for w in wanted if w in words or w[:5] in prefixes)
    return 2 * found > len(wanted)


@dataclass(frozen=True)
class Completion:
    """What ``complete_plan`` changed in a plan (step ids)."""

    plan: Plan
    added: list[str]  # a step for a part the plan left out
    dropped: list[str]  # steps from no one part of the task (made up, copied from the examples, fused)
    wired: list[str]  # steps that refer to an earlier answer, now depending on the step before

    def describe(self) -> str:
        """For the ``planned`` event: "" when nothing changed."""
        if self.added and len(self.added) == len(self.plan.steps) and not self.dropped:
            made = ", ".join(self.added)
            return f"the plan had no steps of its own; the router made {made} of the task's requests"
        said = []
        if self.dropped:
            said.append(f"dropped {', '.join(self.dropped)} (not from any one part of the task)")
        if self.added:
            said.append(f"added {', '.join(self.added)} for what the plan left out of the task")
        if self.wired:
            said.append(f"made {', '.join(self.wired)} wait for the answer it refers to")
        return "the router " + "; ".join(said) if said else ""


def complete_plan(plan: Plan | None, text: str, max_steps: int = 32) -> Completion:
    """An LLM's ``plan`` made whole for the task ``text``: steps that do not come from one part of
    the task (its numbers and most of its words) are dropped; a step that refers to an earlier
    answer ("minus that") and depends on nothing depends on the step before it; every request in
    ``text`` that no step covers gets a step of its own, depending on the step of the part before
    when it works on its answer ("the result"). A ``plan`` of None (the LLM had no steps of its
    own) gets a step for every request. Parts too short to stand alone ("Answer in French.", "Keep
    it short.") are left to the plan, unless they came after "then"/"also", ask a question or were
    a dropped step's. The plan's output is every step: each answers a part the task asked for.

    Raises PlanError when the plan leaves out a part that is not a request (the material or the
    scene a request needs: only the whole text keeps it with the request), when the steps would
    exceed ``max_steps``, or when ``text`` is longer than ``MAX_SPLIT_CHARS``."""
    if len(text) > MAX_SPLIT_CHARS:
        # Judging every sentence of a long document would hold the router's loop, and no plan's
        # steps can carry such material: the whole text goes as one step.
        raise PlanError(
            f"the task is {len(text)} characters long; above {MAX_SPLIT_CHARS} it runs as one step"
        )
    planned_steps = plan.steps if plan is not None else []
    parts = task_parts(text)
    # A question goes with the scene just before it ("I weigh 165 lbs. What is that in kg?" ->
    # "Convert 165 lbs to kg").
    contexts: list[set[str]] = []
    scene: set[str] = set()
    for part in parts:
        words = _words(f"{part.text} {part.material}")
        contexts.append(scene | words if part.asks else words)
        scene = set() if part.asks else scene | words
    # A step others depend on stays: dropping it would cut their chain.
    depended_on = {d for s in planned_steps for d in s.depends_on}
    dropped = [
        s.id
        for s in planned_steps
        if s.id not in depended_on and not _from_one_part(_ENUMERATOR.sub("", s.instruction), contexts)
    ]
    deps = {s.id: list(s.depends_on) for s in planned_steps}
    steps: list[PlanStep] = []
    wired: list[str] = []
    for n, step in enumerate(planned_steps):
        if step.id in dropped:
            continue
        depends_on = [d for d in step.depends_on if d not in dropped]
        before = planned_steps[n - 1].id if n else None
        if (
            not depends_on
            and before is not None
            and before not in dropped  # not on an answer the plan no longer has
            and _REFERS_BACK.search(step.instruction)
            and find_cycle({**deps, step.id: [before]}) is None
        ):
            depends_on = [before]
            wired.append(step.id)
        steps.append(step.model_copy(update={"depends_on": depends_on}))
    step_words = [_words(s.instruction) for s in steps]
    planned: set[str] = set().union(*step_words)
    prefixes = {w[:5] for w in planned}
    dropped_words = {w for s in planned_steps if s.id in dropped for w in _words(s.instruction)}
    dropped_prefixes = {w[:5] for w in dropped_words}
    last: str | None = None  # the step that covers the part before
    added: list[str] = []
    for part in parts:
        wanted = _words(part.text)
        if _covered(wanted, planned, prefixes):
            last = steps[max(range(len(steps)), key=lambda i: len(wanted & step_words[i]))].id
            continue
        if not _stands_alone(part, wanted) and not _covered(wanted, dropped_words, dropped_prefixes):
            # "Answer in French.", "Give an example.", "Thanks a lot!", "And of Germany?": a manner
            # or a follow-up of the plan's steps rather than a part of its own.
            continue
        if not part.asks:
            raise PlanError(f"the plan leaves out part of the task: {part.text[:80]!r}", field="steps")
        if len(steps) >= max_steps:
            raise PlanError(
                f"the plan leaves out more parts of the task than fit in {max_steps} steps", field="steps"
            )
        ids = {s.id for s in steps} | set(dropped)
        step_id = next(f"s{n}" for n in itertools.count(1) if f"s{n}" not in ids)
        depends_on = [last] if part.follows and last else []
        instruction = f"{part.text} {part.material}".strip()
        steps.append(
            PlanStep(id=step_id, instruction=instruction[:1].upper() + instruction[1:], depends_on=depends_on)
        )
        # Only the plan's own steps cover parts: "convert 5 km to miles, then convert 5 miles to
        # km" has the same words twice and two requests.
        step_words.append(wanted)
        last = step_id
        added.append(step_id)
    if not steps:
        what = "no step from one part of the task" if dropped else "no steps of its own"
        raise PlanError(f"the plan has {what}, and the task no request to make a step of", field="steps")
    # The answer to every step, not only the last ones ("Write a haiku, then count its words": the
    # haiku and the count).
    data = {"steps": [s.model_dump(exclude_none=True) for s in steps], "output": [s.id for s in steps]}
    if plan is not None and not (added or dropped or wired) and plan.output == data["output"]:
        return Completion(plan, [], [], [])
    return Completion(validate_plan(data), added, dropped, wired)
