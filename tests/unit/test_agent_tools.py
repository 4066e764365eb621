"""The python-backend tools: exact arithmetic without eval, unit conversion, test helpers."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from agentmesh.agent import tools
from agentmesh.agent.tools.arith import ArithmeticError_, evaluate, extract_expression, format_number
from agentmesh.agent.tools.units import UnitError, convert, find_unit, parse_query


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("What is 12 * (3 + 4)?", "84"),
        ("Compute 0.1 + 0.2", "0.3"),
        ("1/3", "1/3 ≈ 0.333333333333"),
        ("What is 15% of 80?", "12"),
        ("2^10 - 1", "1023"),
        ("How much is 3 x 4?", "12"),
        ("what is -5 + 2?", "-3"),
        ("7 // 2 and then?", "3"),
        ("10 % 4", "2"),
        ("12 \u00d7 (3 \u2212 4)", "-12"),  # multiplication sign, minus sign
        ("123456789123456789 * 987654321987654321", str(123456789123456789 * 987654321987654321)),
        # said in words
        ("What is 2 to the power of 10?", "1024"),
        ("Multiply 12 by 3", "36"),
        ("divide 12 by 4", "3"),
        ("Add 5 to 12", "17"),
        ("subtract 3 from 10", "7"),
        ("what is 7 times 6", "42"),
        ("What is 144 divided by 12?", "12"),
        ("What is 12 squared?", "144"),
        ("the sum of 2 and 3", "5"),
        ("Multiply 6*7 by 2.", "84"),  # a planner's rewrite of "6*7, then multiply the result by 2"
        ("divide 6 by (1+2)", "2"),
        ("multiply (1+2) by (3+4)", "21"),
        ("add 5 to the product of 2 and 3", "11"),
        ("7 times -2", "-14"),
        ("subtract 2 from (3 + 4)", "5"),
        ("10,000 * 2", "20000"),  # once "0": "000 * 2" was the longest expression
        ("add 1,234 and 5", "1239"),
    ],
)
def test_calculate(text: str, expected: str) -> None:
    result = tools.calculate(text, {})
    assert result == {"output": expected, "confidence": 1.0}


@pytest.mark.parametrize(
    "text",
    [
        "hello there",
        "__import__('os').system('echo hi')",
        "Calculate 10 / 0",
        "compute 2**100000",
        "9**9**9**9",
        # a number is not a sum: these once came back "12" and "2" with confidence 1.0
        "Convert 12 kg to pounds.",
        "Is 2 a prime number?",
        "What is 1,5 * 2?",  # a decimal comma, or a list?
    ],
)
def test_calculate_declines_what_it_cannot_do(text: str) -> None:
    result = tools.calculate(text, {})
    assert result["status"] == "declined"
    assert result["reason"]


def test_evaluator_rejects_names_calls_and_attributes() -> None:
    for expr in ["x + 1", "abs(-1)", "(1).real", "[1, 2]", "1 if 1 else 2", "'a' * 3"]:
        with pytest.raises(ArithmeticError_):
            evaluate(expr)


def test_exactness() -> None:
    assert evaluate("0.1 + 0.2") == Fraction(3, 10)
    assert evaluate("2 ** -2") == Fraction(1, 4)
    assert format_number(Fraction(7, 8)) == "0.875"
    assert format_number(Fraction(-5)) == "-5"
    with pytest.raises(ArithmeticError_):
        evaluate("2 ** 0.5")


def test_extract_expression() -> None:
    assert extract_expression("Please add 2 + 2, thanks") == "2 + 2"
    assert extract_expression("no numbers") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("convert 5 km to miles", "5 km = 3.106855961 mi"),
        ("100 F in C", "100 °F = 37.77777778 °C"),
        ("how many ounces is 2 lb", "2 lb = 32 oz"),
        ("Convert 1 GiB to MB", "1 GiB = 1073.741824 MB"),
        ("1 mile in km", "1 mi = 1.609344 km"),
        ("0 celsius to kelvin", "0 °C = 273.15 K"),
        ("-40 C to F", "-40 °C = -40 °F"),
        ("90 km/h in m/s", "90 km/h = 25 m/s"),
        ("How long is 10,000 seconds in hours?", "10000 s = 2.777777778 h"),
        ("Convert 1,5 km to m", "1.5 km = 1500 m"),
        # The quantity an instruction talks about before "convert that/it"
        (
            "I'm flying to New York, which is about 5,570 km. Convert that to miles.",
            "5570 km = 3461.037541 mi",
        ),
        ("My room is 20 square meters. Convert that to square feet.", "20 m2 = 215.2782083 ft2"),
        ("It is 30 C outside. Convert it to F.", "30 °C = 86 °F"),
        ("It weighs 12 kg and costs 30 dollars; convert it to lb", "12 kg = 26.45547146 lb"),
    ],
)
def test_convert_units(text: str, expected: str) -> None:
    assert tools.convert_units(text, {}) == {"output": expected, "confidence": 1.0}


@pytest.mark.parametrize(
    "text",
    [
        "5 km to kg",
        "10 parsecs to m",
        "what is love",
        # Which quantity is "that"?
        "He is 5 ft 10 in tall. Convert that to cm.",
        "3 kg of apples and 2 kg of pears. Convert that to pounds.",
        "I drive 42 km to work. What's the round trip? Convert that to miles.",
    ],
)
def test_convert_units_declines(text: str) -> None:
    assert tools.convert_units(text, {})["status"] == "declined"


@pytest.mark.parametrize(
    ("tool", "instruction", "inputs", "expected"),
    [
        (
            tools.convert_units,
            "Convert the result from kg to pounds.",
            {"s1": "12"},
            "12 kg = 26.45547146 lb",
        ),
        (
            tools.convert_units,
            "Convert it to feet",
            {"s1": "5 km = 3.106855961 mi"},
            "3.106855961 mi = 16404.19947 ft",
        ),
        (tools.calculate, "Multiply the result by 3", {"s1": "12"}, "36"),
        (tools.calculate, "Then add 1 to that", {"s1": "5 km = 3.1 mi"}, "4.1"),
        # the answer's last number, the exact form of the calculator's own answer, thousands
        (tools.calculate, "Multiply the result by 2", {"s1": "15% of 80 is 12."}, "24"),
        (tools.calculate, "Multiply the result by 3", {"s1": "1/3 \u2248 0.333333333333"}, "1"),
        (tools.calculate, "Divide the result by 7", {"s1": "1,234,562"}, "176366"),
        # the definite reference, not the first "that"
        (tools.calculate, "Is that right? Multiply the result by 2", {"s1": "21"}, "42"),
        (tools.calculate, "Multiply that number by 2", {"s1": "21"}, "42"),
        # the value keeps its precedence; the number that the answer says, not its explanation
        (tools.calculate, "Divide 6 by the result", {"s1": "1/3 \u2248 0.333333333333"}, "18"),
        (
            tools.calculate,
            "Subtract the result from 1",
            {"s1": "1/3 \u2248 0.333333333333"},
            "2/3 \u2248 0.666666666667",
        ),
        (tools.calculate, "Multiply the result by 2", {"s1": "12 (15% of 80)"}, "24"),
        (
            tools.calculate,
            "Multiply the result by 2",
            {"s1": "The answer is 42. I computed 6 times 7."},
            "84",
        ),
    ],
)
def test_tools_use_the_earlier_answer_a_step_refers_to(
    tool: Any, instruction: str, inputs: dict[str, str], expected: str
) -> None:
    assert tool(instruction, inputs) == {"output": expected, "confidence": 1.0}


def test_an_instruction_without_one_numeric_input_is_left_alone() -> None:
    assert tools.with_inputs("Convert it to feet", {}) == "Convert it to feet"
    assert tools.with_inputs("Convert it to feet", {"s1": "no number"}) == "Convert it to feet"
    assert tools.with_inputs("Add it to that", {"s1": "1", "s2": "2"}) == "Add it to that"


def test_unit_table() -> None:
    assert convert(Fraction(1), find_unit("inch"), find_unit("cm")) == Fraction(254, 100)
    with pytest.raises(UnitError):
        find_unit("furlongs per fortnight")
    value, src, dst = parse_query("convert 3.5 kg into pounds")
    assert (value, src.symbol, dst.symbol) == (Fraction(7, 2), "kg", "lb")


def test_echo_logs_each_call(tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    out = tools.echo("hi", {"a": "1"}, log_file=str(log))
    assert out == "hi\n[a] 1"
    tools.echo("again", {}, log_file=str(log))
    assert len(log.read_text().splitlines()) == 2
    assert tools.echo("x", {}, confidence=0.3) == {"output": "x", "confidence": 0.3}


def test_helpers() -> None:
    assert tools.low_confidence("q", {}, confidence=0.05)["confidence"] == 0.05
    assert tools.decline("q", {})["status"] == "declined"
    with pytest.raises(RuntimeError, match="boom"):
        tools.fail("q", {}, message="boom")
