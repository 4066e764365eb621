"""Exact arithmetic on rational numbers, without eval().

The expression is parsed with :mod:`ast` and only numbers, + - * / // % ** (integer exponents),
unary +/- and parentheses are evaluated, on :class:`fractions.Fraction`, so 0.1 + 0.2 is exactly
0.3 and 1/3 stays 1/3. Sizes are bounded so a hostile expression cannot exhaust memory or CPU.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction

MAX_EXPRESSION_CHARS = 500
MAX_EXPONENT = 1000
MAX_DIGITS = 2000


class ArithmeticError_(ValueError):
    """The expression is not arithmetic we evaluate (the message says why)."""


# Typographic operators people paste: multiplication sign, middle dot, division sign, minus sign.
_SYMBOLS = {"\u00d7": "*", "\u00b7": "*", "\u00f7": "/", "\u2212": "-", "^": "**"}
_OPS = "+\\-*/%^\u00d7\u00f7\u00b7\u2212"  # for character classes

_BINOPS: dict[type[ast.operator], Callable[[Fraction, Fraction], Fraction]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
}


def evaluate(expression: str) -> Fraction:
    text = normalize(expression)
    if not text:
        raise ArithmeticError_("empty expression")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ArithmeticError_(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise ArithmeticError_(f"not an arithmetic expression: {expression.strip()!r}") from None
    return _eval(tree.body)


def normalize(expression: str) -> str:
    text = expression.strip().rstrip("=?.").strip()
    for symbol, ascii_op in _SYMBOLS.items():
        text = text.replace(symbol, ascii_op)
    # "15% of 80" and "15 %" -> a fraction of a hundred
    text = re.sub(r"(\d+(?:\.\d+)?)\s*%\s*of\s*", r"(\1/100)*", text, flags=re.IGNORECASE)
    text = re.sub(r"(\d+(?:\.\d+)?)\s*%(?!\s*[\d(])", r"(\1/100)", text)
    return re.sub(r"(?<=\d)\s+x\s+(?=\d)", "*", text)


def _eval(node: ast.AST) -> Fraction:
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, int | float)
        and not isinstance(node.value, bool)
    ):
        if isinstance(node.value, float):
            # The literal as written (repr round-trips), not the binary float: 0.1 is 1/10.
            return Fraction(Decimal(repr(node.value)))
        return Fraction(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.UAdd | ast.USub):
        value = _eval(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp):
        left, right = _eval(node.left), _eval(node.right)
        op = type(node.op)
        if op in _BINOPS:
            return _check(_BINOPS[op](left, right))
        if op in (ast.Div, ast.FloorDiv, ast.Mod):
            if right == 0:
                raise ArithmeticError_("division by zero")
            if op is ast.Div:
                return _check(left / right)
            return _check(Fraction(left // right) if op is ast.FloorDiv else left % right)
        if op is ast.Pow:
            return _power(left, right)
    raise ArithmeticError_(f"unsupported element {type(node).__name__}: only numbers and + - * / // % ** ( )")


def _power(base: Fraction, exponent: Fraction) -> Fraction:
    if exponent.denominator != 1:
        raise ArithmeticError_("only integer exponents are exact")
    n = int(exponent)
    if abs(n) > MAX_EXPONENT:
        raise ArithmeticError_(f"exponent {n} is over the limit of {MAX_EXPONENT}")
    if base == 0 and n < 0:
        raise ArithmeticError_("division by zero")
    # Estimate the size first: |n| * digits(base) bounds the result's digits.
    digits = max(len(str(abs(base.numerator))), len(str(base.denominator)))
    if digits * abs(n) > MAX_DIGITS * 2:
        raise ArithmeticError_("result too large")
    return _check(base**n)


def _check(value: Fraction) -> Fraction:
    if len(str(abs(value.numerator))) > MAX_DIGITS or len(str(value.denominator)) > MAX_DIGITS:
        raise ArithmeticError_(f"result has more than {MAX_DIGITS} digits")
    return value


def format_number(value: Fraction, *, digits: int = 12) -> str:
    """Integers and terminating decimals exactly; other fractions as ``p/q ≈ decimal``."""
    if value.denominator == 1:
        return str(value.numerator)
    den = value.denominator
    for p in (2, 5):
        while den % p == 0:
            den //= p
    if den == 1:  # terminating decimal: exact
        text = format(Decimal(value.numerator) / Decimal(value.denominator), "f")
        return text.rstrip("0").rstrip(".") if "." in text else text
    approx = format(Decimal(value.numerator) / Decimal(value.denominator), f".{digits}g")
    return f"{value.numerator}/{value.denominator} ≈ {approx}"


_CANDIDATE = re.compile(rf"[-+(]*\s*\d[\d\s.(){_OPS}x]*(?:of\s*[\d\s.(){_OPS}x]+)?", re.IGNORECASE)
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_DIGIT_COMMA = re.compile(r"\d+,\d+")
_HAS_OP = re.compile(rf"[{_OPS}]|\bx\b|\bof\b")


_NUM = r"([-+]?\d+(?:\.\d+)?|\([^()]*\))"  # a number or a parenthesised group
_OPERAND = r"([-+(]*\d(?:[\d.()+\-*/^% ]*[\d)])?)"  # "12", "6*7", "(2 + 3)"
# Arithmetic said in words, rewritten to symbols before the expression is looked for; "the sum of"
# and "the product of" first, so "add 5 to the product of 2 and 3" is 5+(2*3). The (?<!\s) keeps
# the patterns that start with spaces linear on long runs of them.
_WORDS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), repl)
    for pattern, repl in (
        (rf"\b(?:the\s+)?sum\s+of\s+{_NUM}\s+and\s+{_NUM}", r"(\1+\2)"),
        (rf"\b(?:the\s+)?product\s+of\s+{_NUM}\s+and\s+{_NUM}", r"(\1*\2)"),
        (rf"\bmultiply\s+{_OPERAND}\s+(?:by|and|with)\s+{_NUM}", r"(\1)*\2"),
        (rf"\bdivide\s+{_OPERAND}\s+by\s+{_NUM}", r"(\1)/\2"),
        (rf"\b(?:add|sum)\s+{_NUM}\s+(?:to|and|plus)\s+{_OPERAND}", r"\1+(\2)"),
        (rf"\bsubtract\s+{_NUM}\s+from\s+{_OPERAND}", r"(\2)-\1"),
        (r"(?<!\s)\s*\bto\s+the\s+power\s+of\s+", "**"),
        (r"(?<!\s)\s*\bsquared\b", "**2"),
        (r"(?<!\s)\s*\bcubed\b", "**3"),
        (r"(?<!\s)\s+(?:times|multiplied\s+by)\s+(?=[-+(]?\d)", "*"),
        (r"(?<!\s)\s+divided\s+by\s+(?=[-+(]?\d)", "/"),
        (r"(?<!\s)\s+plus\s+(?=[-+(]?\d)", "+"),
        (r"(?<!\s)\s+minus\s+(?=[-+(]?\d)", "-"),
    )
)


def extract_expression(text: str) -> str | None:
    """The arithmetic inside a sentence ("What is 12 * (3 + 4)?" -> "12 * (3 + 4)"; "multiply 12
    by 3" -> "12*3"; "10,000 * 2" -> "10000 * 2")."""
    text = strip_thousands(text)
    for pattern, repl in _WORDS:
        text = pattern.sub(repl, text)
    best: str | None = None
    for match in _CANDIDATE.finditer(text):
        cand = match.group(0).strip().rstrip(".").strip()
        cand = _balance(cand)
        if not re.search(r"\d", cand):
            continue
        score = (has_operator(cand), len(cand))
        if best is None or score > (has_operator(best), len(best)):
            best = cand
    return best


def strip_thousands(text: str) -> str:
    """``text`` without thousands separators: "10,000 * 2" -> "10000 * 2"."""
    return _THOUSANDS.sub("", text)


def ambiguous_comma(text: str) -> str | None:
    """A number whose comma is not a thousands separator ("1,5": a decimal comma, or "1,2" a
    list?), which the expression would misread."""
    match = _DIGIT_COMMA.search(strip_thousands(text))
    return match.group(0) if match else None


def has_operator(expression: str) -> bool:
    """Whether an extracted expression does any arithmetic (a sign in front does not count)."""
    return bool(_HAS_OP.search(expression[1:] if expression[:1] in "+-" else expression))


def _balance(text: str) -> str:
    """Drop unmatched parentheses at the ends (sentence punctuation around the expression)."""
    while text.endswith(")") and text.count(")") > text.count("("):
        text = text[:-1].rstrip()
    while text.startswith("(") and text.count("(") > text.count(")"):
        text = text[1:].lstrip()
    return text
