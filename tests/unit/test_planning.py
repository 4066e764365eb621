"""Plan validation, the multi-part heuristic and the LLM planner's parser (no I/O)."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentmesh.errors import PlanError
from agentmesh.planning import (
    complete_plan,
    looks_multipart,
    parse_plan_output,
    plan_from_output,
    plan_schema,
    planning_instruction,
    request_query,
    single_step_plan,
    task_parts,
    validate_plan,
)


def test_single_step_plan_has_one_output_step() -> None:
    plan = single_step_plan("What is the capital of Peru?")
    assert [s.id for s in plan.steps] == ["s1"]
    assert plan.outputs() == ["s1"]


@pytest.mark.parametrize(
    ("data", "fragment", "step_id"),
    [
        ({"steps": [{"id": "a", "instruction": "x"}, {"id": "a", "instruction": "y"}]}, "used twice", None),
        ({"steps": [{"id": "a", "instruction": "x", "depends_on": ["zz"]}]}, "unknown step 'zz'", None),
        ({"steps": [{"id": "a", "instruction": "x", "depends_on": ["a"]}]}, "itself", None),
        (
            {
                "steps": [
                    {"id": "a", "instruction": "x", "depends_on": ["b"]},
                    {"id": "b", "instruction": "y", "depends_on": ["a"]},
                ]
            },
            "cycle",
            None,
        ),
        ({"steps": []}, "at least 1", None),
        ({"steps": [{"id": "a", "instruction": ""}]}, "at least 1 character", "a"),
        ({"steps": [{"id": "a", "instruction": "x"}], "output": ["b"]}, "unknown step 'b'", None),
        ({"steps": [{"id": f"s{i}", "instruction": "x"} for i in range(33)]}, "at most 32", None),
    ],
)
def test_validate_plan_names_the_problem(data: dict[str, object], fragment: str, step_id: str | None) -> None:
    with pytest.raises(PlanError) as info:
        validate_plan(data)
    assert fragment in str(info.value)
    assert info.value.step_id == step_id


def test_validate_plan_accepts_a_diamond() -> None:
    plan = validate_plan(
        {
            "steps": [
                {"id": "a", "instruction": "x"},
                {"id": "b", "instruction": "y", "depends_on": ["a"]},
                {"id": "c", "instruction": "z", "depends_on": ["a"]},
                {"id": "d", "instruction": "w", "depends_on": ["b", "c"]},
            ]
        }
    )
    assert plan.outputs() == ["d"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("What is the capital of Peru?", False),
        ("Convert 5 km to miles", False),
        ("hi", False),
        ("Translate 'good morning' into French and then summarise the result in one line.", True),
        ("What is 17*23? What is the capital of Peru?", True),
        ("Do these:\n1. convert 3 km to m\n2. add 2 and 3", True),
        ("Compute 2+2; then explain why.", True),
        ("what's 17% of 2340, and how many km is 26.2 miles", True),
        (
            "Kindly convert 1.5 TB into GB. Additionally, please explain how RAM and disk differ.",
            True,
        ),
        # One request with its material: what follows "...this:" is the text, quotes are material,
        # the scene before a question is not a request, a list of data is data.
        ("Summarize this: MQTT is a protocol. It is light. Then it spread to phones; also to cars.", False),
        ("Translate into German: 'Where is the station? What time does the last train leave?'", False),
        ("I need to feed 6 people. The recipe serves 4. How much flour should I use?", False),
        ("Which plan is cheapest per month?\n- Plan A: $120 per year\n- Plan B: $11 per month", False),
        ("Put these in order:\n- Boil the water\n- Add the tea", False),
        ("it worked for months, then last week i changed my router. why does the plug drop off?", False),
        ('Fix the grammar: "Me and him goes to the store." Then translate the result into German.', True),
        ("x" * 16_001 + ". What is 2+2? What is 3+3?", False),
        ("Say 'Where is it? Then go home.' in French.", False),  # a quote is one part
        ("Quick ones:\n- Question 1: what is 2+2?\n- Question 2: what is 3+3?", True),
        ("I want to convert 5 km to miles. Then compute 3*3.", True),
        ("translate hello to French; summarize this: the cat sat on the mat all day.", True),
        ("Hi hello there. What is 2+2?", False),  # a greeting is no request
        ("What is 2+2? Answer in French, thanks.", False),
    ],
)
def test_looks_multipart(text: str, expected: bool) -> None:
    assert looks_multipart(text) is expected


def test_parse_plan_output_normalises_ids_and_dependencies() -> None:
    out = json.dumps(
        {
            "steps": [
                {"id": "first", "instruction": "Compute 17*23", "depends_on": []},
                {"id": "second", "instruction": "Capital of Peru", "depends_on": []},
                {"id": "third", "instruction": "Combine", "depends_on": ["first", "2"]},
            ]
        }
    )
    plan = parse_plan_output("Here is the plan:\n```json\n" + out + "\n```")
    assert [s.id for s in plan.steps] == ["s1", "s2", "s3"]
    assert plan.steps[2].depends_on == ["s1", "s2"]
    assert plan.outputs() == ["s3"]


def test_parse_plan_output_drops_self_dependencies() -> None:
    plan = parse_plan_output('{"steps":[{"id":"s1","instruction":"x","depends_on":["s1"]}]}')
    assert plan.steps[0].depends_on == []


@pytest.mark.parametrize(
    ("output", "fragment"),
    [
        ("no json here", "no JSON"),
        ('{"steps": "nope"}', "'steps' list"),
        ('{"steps": []}', "no steps"),
        ('{"steps": [{"id": "s1", "instruction": ""}]}', "no instruction"),
        ('{"steps": [{"id": "s1", "instruction": "x", "depends_on": ["ghost"]}]}', "unknown step 'ghost'"),
        (
            '{"steps": [{"id": "a", "instruction": "x", "depends_on": ["b"]},'
            ' {"id": "b", "instruction": "y", "depends_on": ["a"]}]}',
            "cycle",
        ),
        ('{"steps": [{"id": "a" "instruction": "x"}]}', "not valid JSON"),
    ],
)
def test_parse_plan_output_errors(output: str, fragment: str) -> None:
    with pytest.raises(PlanError) as info:
        parse_plan_output(output)
    assert fragment in str(info.value)


def test_plan_from_output_plans_the_task_when_the_planner_only_copied_its_examples() -> None:
    copies = json.dumps(
        {
            "steps": [
                {"id": "s1", "instruction": "What is 2+3?", "depends_on": []},
                {"id": "s2", "instruction": "Write a haiku about the result.", "depends_on": ["s1"]},
            ]
        }
    )
    done = plan_from_output(copies, "Write a birthday message for Anna, then translate it into Italian.")
    assert [(s.id, s.instruction, s.depends_on) for s in done.plan.steps] == [
        ("s1", "Write a birthday message for Anna", []),
        ("s2", "Translate it into Italian.", ["s1"]),
    ]
    assert done.added == ["s1", "s2"]
    # The material of a request cannot be a step of its own: the router falls back as for any
    # invalid plan.
    with pytest.raises(PlanError, match="leaves out part of the task"):
        plan_from_output(copies, "My flight leaves at 9 and the drive takes 40 minutes. When should I leave?")


@pytest.mark.parametrize(
    ("text", "steps"),
    [
        # The same words twice are still two requests.
        (
            "Convert 5 km to miles, then convert 5 miles to km.",
            [("Convert 5 km to miles", []), ("Convert 5 miles to km.", [])],
        ),
        # A request's material goes with it into its step.
        (
            "Proofread the following email:\nHi Mark, thanks for you're reply.\nThe budget are due.\n"
            "Then translate the corrected email into French.",
            [
                ("Proofread the following email: Hi Mark, thanks for you're reply. The budget are due.", []),
                ("Translate the corrected email into French.", ["s1"]),
            ],
        ),
    ],
)
def test_a_plan_made_of_the_task_keeps_every_request_and_its_material(
    text: str, steps: list[tuple[str, list[str]]]
) -> None:
    copies = json.dumps({"steps": [{"id": "s1", "instruction": "What is 2+3?", "depends_on": []}]})
    done = plan_from_output(copies, text)
    assert [(s.instruction, s.depends_on) for s in done.plan.steps] == steps


def test_a_task_holding_the_quote_placeholders_characters_is_parsed() -> None:
    text = "Compute 2+2; then say \ue0007\ue001 twice. Also say 'hi' in French."
    assert looks_multipart(text) is True
    assert [p.text for p in task_parts(text)] == [
        "Compute 2+2",
        "say \ue0007\ue001 twice.",
        "say 'hi' in French.",
    ]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from("ab 1,.;:?!'\"\u2018\u2019\u201c\u201d\n-\ue000\ue001\ue0029")))
def test_any_text_is_parsed_or_gets_a_plan_error(text: str) -> None:
    # Private-use characters are the quote placeholders' own: a task holding them once crashed
    # the router, and again on every restart.
    assert isinstance(looks_multipart(text), bool)
    for part in task_parts(text):
        assert part.text.strip()
    copies = json.dumps({"steps": [{"id": "s1", "instruction": "What is 2+3?", "depends_on": []}]})
    with contextlib.suppress(PlanError):
        plan_from_output(copies, text)


def test_parse_plan_output_limits_steps() -> None:
    steps = [{"id": str(i), "instruction": f"part {i}", "depends_on": []} for i in range(10)]
    with pytest.raises(PlanError, match="at most 8"):
        parse_plan_output(json.dumps({"steps": steps}), max_steps=8)


def test_planning_instruction_carries_the_error_on_retry() -> None:
    first = planning_instruction("do A then B")
    retry = planning_instruction("do A then B", error="step 's2' depends on unknown step 'x'")
    assert "do A then B" in first and "invalid" not in first
    assert "unknown step 'x'" in retry


def test_plan_schema_is_json_schema_for_steps() -> None:
    schema = plan_schema()
    assert schema["required"] == ["steps"]
    assert schema["properties"]["steps"]["items"]["required"] == ["id", "instruction", "depends_on"]


def test_parse_plan_output_drops_copies_of_the_examples_and_repeats() -> None:
    out = json.dumps(
        {
            "steps": [
                {"id": "s1", "instruction": "What is the capital of Peru?", "depends_on": []},
                {"id": "s2", "instruction": "Convert 10 kg to pounds.", "depends_on": []},
                {"id": "s3", "instruction": "what is the capital of peru?", "depends_on": []},
                {"id": "s4", "instruction": "Convert 100 F to C.", "depends_on": ["s2"]},
            ]
        }
    )
    plan = parse_plan_output(out)
    assert [(s.id, s.instruction, s.depends_on) for s in plan.steps] == [
        ("s1", "What is the capital of Peru?", []),
        ("s2", "Convert 100 F to C.", []),
    ]
    with pytest.raises(PlanError, match="only copies"):
        parse_plan_output(
            '{"steps":[{"id":"s1","instruction":"Write a haiku about the result.","depends_on":[]}]}'
        )


def _plan(*instructions: str) -> object:
    return validate_plan(
        {"steps": [{"id": f"s{n}", "instruction": text} for n, text in enumerate(instructions, start=1)]}
    )


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        (
            "What is the capital of France? Also, translate 'good morning' into Spanish.",
            [("What is the capital of France?", False), ("translate 'good morning' into Spanish.", False)],
        ),
        (
            "Convert 3 miles to km; compute 45+67; name the largest planet.",
            [("Convert 3 miles to km", False), ("compute 45+67", False), ("name the largest planet.", False)],
        ),
        (
            "Write a haiku about rain, then count its words.",
            [("Write a haiku about rain", False), ("count its words.", False)],
        ),
        (
            "Convert 20 liters to gallons and compute 9*9.",
            [("Convert 20 liters to gallons", False), ("compute 9*9.", False)],
        ),
        # "and" between parts of one thing is not a new part; a list item is.
        ("Compare apples and oranges for a snack.", [("Compare apples and oranges for a snack.", False)]),
        (
            "Do these:\n1. Convert 2 h to minutes\n2. Compute 3*3",
            [("Convert 2 h to minutes", False), ("Compute 3*3", False)],
        ),
        ("Next week I fly to Oslo.", [("Next week I fly to Oslo.", False)]),
        # "the haiku" is what "Write a haiku" made; "the capital" was not made by a request.
        (
            "Write a haiku about rain and translate the haiku into Spanish.",
            [("Write a haiku about rain", False), ("translate the haiku into Spanish.", True)],
        ),
        (
            "What is the capital of France? Also, what is the capital of Spain?",
            [("What is the capital of France?", False), ("what is the capital of Spain?", False)],
        ),
        (
            "Write a poem about Paris. Then tell me the population of Paris.",
            [("Write a poem about Paris.", False), ("tell me the population of Paris.", False)],
        ),
        (
            "First, compute 15% of 80. Then name the first president.",
            [("compute 15% of 80.", False), ("name the first president.", False)],
        ),
    ],
)
def test_task_parts(text: str, parts: list[tuple[str, bool]]) -> None:
    assert [(p.text, p.follows) for p in task_parts(text)] == parts


def test_task_parts_keep_quotes_and_material_whole() -> None:
    text = (
        "Proofread this email: hi Mark. Thanks for you're reply; next, the budget. "
        "Then translate the corrected email into French. Also say 'Hello. Then bye.' in Spanish, don't you?"
    )
    assert [(p.text, p.asks, p.joined) for p in task_parts(text)] == [
        ("Proofread this email: hi Mark.", True, False),
        ("translate the corrected email into French.", True, True),
        ("say 'Hello. Then bye.' in Spanish, don't you?", True, True),
    ]


def test_task_parts_tell_requests_from_material() -> None:
    text = (
        "I'm baking tomorrow. The recipe needs 250 g of flour. How much for 12 people?\n"
        "- 2 cups in ml\nThen turn it into a shopping list; also tell me a joke."
    )
    assert [(p.text, p.asks) for p in task_parts(text)] == [
        ("I'm baking tomorrow.", False),
        ("The recipe needs 250 g of flour.", False),
        ("How much for 12 people?", True),
        ("2 cups in ml", True),
        ("turn it into a shopping list", True),
        ("tell me a joke.", True),
    ]


# The plans below are what the demo's SmolLM2-135M planner answered to these tasks: it copied the
# first part and stopped.
@pytest.mark.parametrize(
    ("text", "plan", "added"),
    [
        (
            "What is the capital of France? Also, translate 'good morning' into Spanish.",
            ["What is the capital of France?"],
            [("s2", "Translate 'good morning' into Spanish.", [])],
        ),
        (
            "Convert 3 miles to km; compute 45+67; name the largest planet.",
            ["Convert 3 miles to km."],
            [("s2", "Compute 45+67", []), ("s3", "Name the largest planet.", [])],
        ),
        (
            "Convert 20 liters to gallons and compute 9*9.",
            ["Convert 20 liters to gallons."],
            [("s2", "Compute 9*9.", [])],
        ),
        (
            "First compute 15% of 80. Then convert the result from kg to pounds.",
            ["First compute 15% of 80."],
            [("s2", "Convert the result from kg to pounds.", ["s1"])],
        ),
        (
            "Convert 10 miles to km. Then convert it to meters.",
            ["Convert 10 miles to km."],
            [("s2", "Convert it to meters.", ["s1"])],
        ),
        # Greetings and thanks are not parts; scene-setting the plan kept is covered.
        (
            "I'm flying to Lisbon on Friday. What should I pack? Also convert 200 euros to dollars. Thanks!",
            ["What should I pack for flying to Lisbon on Friday?"],
            [("s2", "Convert 200 euros to dollars.", [])],
        ),
    ],
)
def test_complete_plan_adds_the_parts_a_planner_left_out(
    text: str, plan: list[str], added: list[tuple[str, str, list[str]]]
) -> None:
    done = complete_plan(_plan(*plan), text)  # type: ignore[arg-type]
    completed = done.plan
    assert done.added == [a[0] for a in added] and done.dropped == done.wired == []
    assert [(s.id, s.instruction, s.depends_on) for s in completed.steps[len(plan) :]] == added
    # Every part's answer is in the task's output, also one a later step works on.
    assert completed.outputs() == [s.id for s in completed.steps]


@pytest.mark.parametrize(
    ("text", "plan"),
    [
        # Manners, thanks and follow-ups too short to stand alone are not parts to add.
        ("Compute 6*7. Answer in French. Thanks a lot!", ["Compute 6*7."]),
        ("Explain recursion simply. Give an example.", ["Explain recursion simply with an example."]),
        ("What is the capital of France? And of Germany?", ["What is the capital of France?"]),
        ("Convert 5 km to miles. Then compute 12*12.", ["Convert 5 km to miles.", "Compute 12*12."]),
        # Paraphrase and merged steps still cover the task.
        ("Convert 5 kilometres to miles", ["Convert five kilometers to miles"]),
        ("Translate the memo and then summarize it.", ["Translate the memo and summarize it."]),
    ],
)
def test_complete_plan_keeps_a_plan_that_covers_the_task(text: str, plan: list[str]) -> None:
    original = _plan(*plan)
    done = complete_plan(original, text)  # type: ignore[arg-type]
    assert done.describe() == "" and done.plan.steps == original.steps  # type: ignore[attr-defined]
    assert done.plan.outputs() == [s.id for s in done.plan.steps]  # every step's answer


@pytest.mark.parametrize(
    ("text", "plan"),
    [
        # A step that joins a question with the scene before it is the question's.
        (
            "A train travels 120 km. It takes 2 hours. What is its average speed? Also, what is 2+2?",
            ["Calculate the average speed of a train traveling 120 km in 2 hours", "What is 2+2?"],
        ),
        # A step another depends on stays, however it is worded.
        (
            "What's 15% of 80? Then multiply the result by 2.",
            ["Calculate 15 percent of 80 now", "Multiply it by 2"],
        ),
    ],
)
def test_complete_plan_keeps_steps_from_a_question_and_its_scene(text: str, plan: list[str]) -> None:
    original = validate_plan(
        {
            "steps": [
                {"id": f"s{n}", "instruction": t, "depends_on": [f"s{n - 1}"] if "it" in t.split() else []}
                for n, t in enumerate(plan, start=1)
            ]
        }
    )
    done = complete_plan(original, text)
    assert done.dropped == [] and [s.instruction for s in done.plan.steps] == plan


@pytest.mark.parametrize(
    ("text", "plan", "kept"),
    [
        # SmolLM2's plans in the demo: the second step fuses the two parts.
        (
            "What's 15% of 80 and what is the capital of Italy?",
            ["What's 15% of 80?", "What's 15% of Italy?"],
            [("What's 15% of 80?", []), ("What is the capital of Italy?", [])],
        ),
        (
            "Compute 6*7, then multiply the result by 2. Also convert 5 km to miles.",
            ["Compute 6*7", "Multiply 5 km by 2", "Convert 5 km to miles."],
            [("Compute 6*7", []), ("Convert 5 km to miles.", []), ("Multiply the result by 2.", ["s1"])],
        ),
    ],
)
def test_complete_plan_drops_steps_that_fuse_parts(
    text: str, plan: list[str], kept: list[tuple[str, list[str]]]
) -> None:
    done = complete_plan(_plan(*plan), text)  # type: ignore[arg-type]
    assert done.dropped == ["s2"]
    assert [(s.instruction, s.depends_on) for s in done.plan.steps] == kept


def test_complete_plan_drops_made_up_steps_and_wires_back_references() -> None:
    # What SmolLM2 planned for these (bench/data/multipart_tasks.yaml): a step made up from the
    # prompt's example ("Convert 10 kg to pounds."), and a step on an earlier answer without the
    # dependency.
    done = complete_plan(
        _plan(
            "What's the floor area of a 4.2 m by 3.6 m room in square meters?",
            "Convert 10 kg to square feet.",
        ),  # type: ignore[arg-type]
        "My room is 4.2 m by 3.6 m. What's the floor area in square meters? Convert it to square feet too.",
    )
    assert (done.dropped, done.added, done.wired) == (["s2"], ["s3"], [])
    assert [(s.id, s.instruction, s.depends_on) for s in done.plan.steps][1:] == [
        ("s3", "Convert it to square feet too.", ["s1"])
    ]
    assert done.describe() == (
        "the router dropped s2 (not from any one part of the task); "
        "added s3 for what the plan left out of the task"
    )
    done = complete_plan(
        _plan("What is 12.5% of 480?", "What is 480 minus that?", "Translate the summary into German."),  # type: ignore[arg-type]
        "What is 12.5% of 480? What is 480 minus that? Also translate the summary into German.",
    )
    assert [s.depends_on for s in done.plan.steps] == [[], ["s1"], ["s2"]] and done.wired == ["s2", "s3"]


@pytest.mark.parametrize(
    ("text", "plan", "expected"),
    [
        # A dropped step's part comes back, however short.
        (
            "What is the capital of France? Also, what is 2+2?",
            ["What is the capital of France?", "What is 2 + 2? (Answer: 4)"],
            [("s1", "What is the capital of France?", []), ("s3", "What is 2+2?", [])],
        ),
        (
            "Write a poem about the sea. Then summarize it.",
            ["Write a poem about the sea.", "Summarize the poem in 1 line."],
            [("s1", "Write a poem about the sea.", []), ("s3", "Summarize it.", ["s1"])],
        ),
        # Numbered steps are not made up; a step is not wired to an answer the plan dropped.
        (
            "Compute 6*7. Convert ten km to miles and round the result to one decimal.",
            ["1. Compute 6*7.", "Convert 10 km to miles.", "Round the result to one decimal."],
            [
                ("s1", "1. Compute 6*7.", []),
                ("s3", "Round the result to one decimal.", []),
                ("s4", "Convert ten km to miles", []),
            ],
        ),
        # Short parts after "then"/"also" are parts.
        (
            "Compute 6*7. Then double it.",
            ["Compute 6*7."],
            [("s1", "Compute 6*7.", []), ("s2", "Double it.", ["s1"])],
        ),
    ],
)
def test_complete_plan_edge_cases(
    text: str, plan: list[str], expected: list[tuple[str, str, list[str]]]
) -> None:
    done = complete_plan(_plan(*plan), text)  # type: ignore[arg-type]
    assert [(s.id, s.instruction, s.depends_on) for s in done.plan.steps] == expected


def test_complete_plan_never_wires_a_cycle() -> None:
    plan = validate_plan(
        {
            "steps": [
                {"id": "s1", "instruction": "Write a haiku about the result.", "depends_on": ["s2"]},
                {"id": "s2", "instruction": "Convert 10 kg to pounds and round the result."},
            ]
        }
    )
    done = complete_plan(
        plan, "Convert 10 kg to pounds and round the result, then write a haiku about the result."
    )
    assert done.wired == [] and done.plan.steps[1].depends_on == []


@pytest.mark.parametrize(
    ("text", "plan", "left_out"),
    [
        # The scene a request needs, or the material it works on, only stays with it in the whole
        # text: the router asks again and then falls back to one step.
        (
            "I'm flying to Lisbon on Friday. What should I pack?",
            ["What should I pack?"],
            "I'm flying to Lisbon on Friday.",
        ),
        (
            "Here is my draft:\nThe meeting moved to Monday. Bring the budget figures.\n"
            "Fix the grammar, then translate it into French.",
            ["Fix the grammar.", "Translate it into French."],
            "The meeting moved to Monday.",
        ),
    ],
)
def test_complete_plan_rejects_a_plan_that_drops_what_is_not_a_request(
    text: str, plan: list[str], left_out: str
) -> None:
    with pytest.raises(PlanError, match="leaves out part of the task") as info:
        complete_plan(_plan(*plan), text)  # type: ignore[arg-type]
    assert left_out in str(info.value)


def test_complete_plan_raises_when_there_is_no_room() -> None:
    with pytest.raises(PlanError, match="more parts of the task than fit in 2 steps"):
        complete_plan(
            _plan("Convert 3 miles to km."),
            "Convert 3 miles to km; compute 45+67; name the largest planet.",
            max_steps=2,
        )  # type: ignore[arg-type]


def test_complete_plan_leaves_a_long_document_to_one_step() -> None:
    text = "Summarize this report. " + "The plant ran at full load all week. " * 500
    with pytest.raises(PlanError, match="characters long"):
        complete_plan(_plan("Summarize the report."), text)  # type: ignore[arg-type]


def test_a_long_task_is_matched_by_the_parts_at_its_ends_that_ask() -> None:
    material = "Revenue grew 12% to 4.5 million while costs rose 3% and margins held at 18%. " * 60
    assert request_query("What is 2+2?") is None  # short: the text itself
    assert request_query(material + "Summarize this report in three sentences.") == (
        "Summarize this report in three sentences."
    )
    essay = "Please proofread my essay below.\n\n" + material
    assert request_query(essay) == "Please proofread my essay below."
    assert request_query(material) is None  # nothing asks: the text itself
    long = request_query(material + " ".join(f"What is {n} + {n}?" for n in range(200)))
    assert long is not None and len(long) <= 1000
