"""Confidence formulas (agent/confidence.py)."""

from __future__ import annotations

import math

import pytest

from agentmesh.agent.confidence import (
    LOOP_CONFIDENCE,
    TokenLogprob,
    confidence,
    copied,
    from_completion_logprobs,
    from_openai_logprobs,
    loop_checked,
    looping,
)
from agentmesh.agent.prompt import StepRequest
from agentmesh.protocol import PreviousAttempt


def toks(*probs: float) -> list[TokenLogprob]:
    return [TokenLogprob(math.log(p)) for p in probs]


def test_mean_prob_is_the_geometric_mean() -> None:
    value = confidence(toks(0.5, 0.8, 1.0), "mean_prob")
    assert value == pytest.approx((0.5 * 0.8 * 1.0) ** (1 / 3))


def test_min_prob_is_the_weakest_token() -> None:
    assert confidence(toks(0.9, 0.2, 0.99), "min_prob") == pytest.approx(0.2)


def test_margin_uses_top_two() -> None:
    tokens = [
        TokenLogprob(math.log(0.6), (math.log(0.6), math.log(0.3))),
        TokenLogprob(math.log(0.9), (math.log(0.9), math.log(0.05))),
    ]
    assert confidence(tokens, "margin") == pytest.approx(((0.6 - 0.3) + (0.9 - 0.05)) / 2)


def test_margin_without_alternatives_counts_the_runner_up_as_zero() -> None:
    assert confidence([TokenLogprob(math.log(0.7))], "margin") == pytest.approx(0.7)


def test_certain_and_uncertain_order() -> None:
    sure = confidence(toks(0.99, 0.98, 0.97))
    unsure = confidence(toks(0.4, 0.3, 0.5))
    assert sure is not None and unsure is not None
    assert 0.0 <= unsure < sure <= 1.0


def test_empty_and_none() -> None:
    assert confidence([], "mean_prob") is None
    assert confidence(toks(0.5), "none") is None


def test_minus_infinity_stays_in_range() -> None:
    value = confidence([TokenLogprob(-math.inf), TokenLogprob(0.0)], "mean_prob")
    assert value is not None and 0.0 <= value < 1e-6


def test_openai_shapes() -> None:
    content = [
        {
            "token": "Li",
            "logprob": -0.1,
            "top_logprobs": [{"token": "Li", "logprob": -0.1}, {"token": "X", "logprob": -2.5}],
        },
        {"token": "ma", "logprob": -0.2, "top_logprobs": []},
    ]
    tokens = from_openai_logprobs(content)
    assert [t.logprob for t in tokens] == [-0.1, -0.2]
    assert tokens[0].top == (-0.1, -2.5)
    assert from_openai_logprobs(None) == []


def test_completion_shapes() -> None:
    lp = {"token_logprobs": [-0.5, None, -0.1], "top_logprobs": [{"a": -0.5, "b": -1.0}, None, {"c": -0.1}]}
    tokens = from_completion_logprobs(lp)
    assert [t.logprob for t in tokens] == [-0.5, -0.1]
    assert tokens[0].top == (-0.5, -1.0)


@pytest.mark.parametrize(
    "text",
    [
        "Answer:\nAnswer:\nAnswer:\nAnswer:\nAnswer",  # seen from Gemma 3 270M on a trivia question
        "Paris\nParis\nThe capital is Paris.\nParis",
        "the the the the the the the the the the the the the the the the the the the the",
        "I am sorry. " * 12,
        " ".join(f"{n}." for n in range(1, 125)),  # SmolLM2 asked to summarise a paragraph
        "Summary:\n" + "\n".join(f"{n})" for n in range(1, 50)),
    ],
)
def test_a_looping_answer_is_worth_little_whatever_its_logprobs(text: str) -> None:
    assert looping(text)
    assert loop_checked(text, 0.98) == LOOP_CONFIDENCE
    assert loop_checked(text, 0.01) == 0.01  # never raised
    assert loop_checked(text, None) is None


def test_a_generation_stopped_in_a_loop_is_capped_even_when_the_text_looks_fine() -> None:
    text = "I cannot answer that without more context about the farm."
    assert not looping(text)
    assert loop_checked(text, 0.9, looped=True) == LOOP_CONFIDENCE


@pytest.mark.parametrize(
    "text",
    [
        "Alexander Fleming discovered penicillin in 1928.",
        "1. Preheat the oven.\n2. Mix the flour and eggs.\n3. Bake for 20 minutes.\n4. Let it cool.",
        '{\n  "steps": [\n    {"id": "s1", "instruction": "Convert 5 km to miles"},\n'
        '    {"id": "s2", "instruction": "Compute 12*12"}\n  ]\n}',
        "yes\nyes\nno",  # too short to call a loop
        "The quick brown fox jumps over the lazy dog while the cat watches the dog and the fox.",
    ],
)
def test_ordinary_answers_keep_their_confidence(text: str) -> None:
    assert not looping(text)
    assert loop_checked(text, 0.9) == 0.9


@pytest.mark.parametrize(
    "text",
    [
        "The first primes are 2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61 and 67.",
        "\n".join(f"{n}. Add spice {n}, called spice{n}, then wait." for n in range(1, 30)),
        " ".join(str(n) for n in range(1, 31)),  # "count to 30"
        "1" * 5000 + " " + " ".join(f"word{i}" for i in range(40)),  # past int()'s 4300 digits
    ],
)
def test_numbers_and_numbered_lists_are_not_loops(text: str) -> None:
    assert not looping(text)


REPORT = (
    "The city council met on Tuesday to discuss the new bike lanes on Main Street. Shop owners "
    "worried about losing parking spaces, while cyclists said the lanes would make the street "
    "safer. The council voted 5 to 2 to build the lanes next spring."
)


def test_a_passage_written_out_again_and_again_is_a_loop() -> None:
    # Gemma 3 270M asked for a summary: the report, then "Answer:" and the report again, twice.
    text = f"{REPORT}\nAnswer: {REPORT}\nAnswer: {REPORT[:150]}"
    assert looping(text)
    assert not looping(f"{REPORT} In short: lanes next spring, 5 to 2, parking lost.")


def test_an_answer_that_copies_its_material_is_worth_little() -> None:
    ask = StepRequest(instruction=f"Summarize this: {REPORT}")
    assert copied(REPORT, ask)  # SmolLM2-135M's "summary", at confidence 0.84
    assert loop_checked(REPORT, 0.84, request=ask) == LOOP_CONFIDENCE
    assert copied("Summary: " + REPORT, ask)
    summary = (
        "On Tuesday the council voted 5 to 2 for bike lanes on Main Street, to be built next spring: "
        "cyclists said the lanes would make the street safer, shop owners feared losing parking."
    )
    assert not copied(summary, ask)
    assert loop_checked(summary, 0.84, request=ask) == 0.84
    assert not copied("The council voted 5 to 2 to build the lanes next spring.", ask)  # too short


def test_a_copy_of_an_earlier_result_or_attempt_is_caught_too() -> None:
    after = StepRequest(instruction="Summarize the earlier result.", inputs={"s1": REPORT})
    assert copied(REPORT, after)
    retry = StepRequest(
        instruction="Summarize the minutes.",
        previous=PreviousAttempt(agent_id="phone-1", tier="device", output=REPORT, reason="low"),
    )
    assert copied(REPORT, retry)


@pytest.mark.parametrize("instruction", ["Repeat this back: ", "Fix the grammar: ", "Proofread: ", "Quote "])
def test_a_step_that_asks_for_its_material_back_may_get_it(instruction: str) -> None:
    assert not copied(REPORT, StepRequest(instruction=instruction + REPORT))
