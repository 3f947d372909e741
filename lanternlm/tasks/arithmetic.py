"""Multi-digit arithmetic: addition, subtraction and multiplication, step by step.

The traces follow the way it is done on paper, at three lengths:

* low: the key partial results (column sums, or partial products and their sum);
* medium: column by column with carries (or borrows), or digit by digit for products;
* high: every digit step with its carry (or borrow) in and out written out, the
  digits read back (sums and differences), then a check by the inverse operation.

Equations are written without spaces (``7+5+1=13``): with the GPT-4 split pattern
every space before a number costs a token, and the traces must fit a small context.

Every ``x + y = z`` written in a trace is true (the tests re-evaluate them all).
"""

from __future__ import annotations

import random

from ..errors import LanternError
from .base import Example, Task, check_level, numbers_in

OPS = {"add": "+", "sub": "-", "mul": "*"}
_PLACES = ("ones", "tens", "hundreds", "thousands", "ten-thousands", "hundred-thousands",
           "millions", "ten-millions", "hundred-millions", "billions", "ten-billions",
           "hundred-billions")
_WORDS = {"add": ("+", "plus"), "sub": ("-", "minus"), "mul": ("*", "times", "x")}
_QUESTIONS = ("What is {a} {op} {b}?", "Compute {a} {op} {b}.", "Calculate {a} {op} {b}.",
              "{a} {op} {b} = ?", "What's {a} {op} {b}?")
_SPECIAL_QUESTIONS = {"add": "Add {a} and {b}.", "sub": "Subtract {b} from {a}.",
                      "mul": "Multiply {a} by {b}."}
MAX_DIGITS = 6


def digits(n: int) -> list[int]:
    """Digits of ``n >= 0``, ones first.

    >>> digits(4817)
    [7, 1, 8, 4]
    """
    return [int(c) for c in reversed(str(n))]


def add_columns(numbers: list[int]) -> list[tuple[list[int], int, int]]:
    """Column addition: one ``(column digits, carry in, column sum)`` per column, ones first.

    Shorter numbers contribute 0; a last column holds only the final carry.

    >>> add_columns([4817, 395])
    [([7, 5], 0, 12), ([1, 9], 1, 11), ([8, 3], 1, 12), ([4, 0], 1, 5)]
    >>> add_columns([95, 7])
    [([5, 7], 0, 12), ([9, 0], 1, 10), ([], 1, 1)]
    """
    columns, carry = [], 0
    width = max(len(digits(n)) for n in numbers)
    for k in range(width):
        ds = [digits(n)[k] if k < len(digits(n)) else 0 for n in numbers]
        total = sum(ds) + carry
        columns.append((ds, carry, total))
        carry = total // 10
    if carry:
        columns.append(([], carry, carry))
    return columns


def sub_columns(top: int, bottom: int) -> list[tuple[int, int, int, int, int]]:
    """Column subtraction ``top - bottom`` (top >= bottom), ones first.

    Each column is ``(top digit, bottom digit, borrow in, digit written, borrow out)``.

    >>> sub_columns(502, 67)
    [(2, 7, 0, 5, 1), (0, 6, 1, 3, 1), (5, 0, 1, 4, 0)]
    """
    columns, borrow = [], 0
    bottom_digits = digits(bottom)
    for k, x in enumerate(digits(top)):
        y = bottom_digits[k] if k < len(bottom_digits) else 0
        t = x - borrow
        out = 1 if t < y else 0
        columns.append((x, y, borrow, t + 10 * out - y, out))
        borrow = out
    return columns


def mul_digit_steps(a: int, d: int) -> list[tuple[int, int, int]]:
    """``a * d`` digit by digit: one ``(digit of a, carry in, product + carry)`` per digit.

    >>> mul_digit_steps(4817, 5)
    [(7, 0, 35), (1, 3, 8), (8, 0, 40), (4, 4, 24)]
    """
    steps, carry = [], 0
    for x in digits(a):
        total = x * d + carry
        steps.append((x, carry, total))
        carry = total // 10
    return steps


def _place(k: int) -> str:
    return _PLACES[k] if k < len(_PLACES) else f"column {k + 1}"


def _sum_text(ds: list[int], carry: int, level: str) -> str:
    """A column sum: the carry in is written last, always at ``high``, else when it is 1.

    >>> _sum_text([7, 5], 0, "high"), _sum_text([7, 5], 0, "low"), _sum_text([1, 9], 1, "medium")
    ('7+5+0', '7+5', '1+9+1')
    """
    return "+".join(map(str, ds + ([carry] if carry or level == "high" else [])))


def _column_lines(columns: list[tuple[list[int], int, int]], level: str) -> list[str]:
    """One line per column of :func:`add_columns` (medium and high traces).

    >>> _column_lines(add_columns([95, 7]), "medium")
    ['ones: 5+7=12, write 2, carry 1', 'tens: 9+0+1=10, write 0, carry 1', 'hundreds: carry 1, write 1']
    """
    lines = []
    for k, (ds, c, t) in enumerate(columns):
        if not ds:
            lines.append(f"{_place(k)}: carry {c}, write {c}")
        elif level == "high" or t >= 10:
            lines.append(f"{_place(k)}: {_sum_text(ds, c, level)}={t}, write {t % 10}, carry {t // 10}")
        else:
            lines.append(f"{_place(k)}: {_sum_text(ds, c, level)}={t}, write {t}")
    return lines


def _highest_first(columns: list[tuple[list[int], int, int]]) -> str:
    """The digits written by column addition, highest column first.

    >>> _highest_first(add_columns([95, 7]))
    '1 0 2'
    """
    return " ".join(str(t % 10 if ds else t) for ds, _, t in reversed(columns))


class Arithmetic(Task):
    """``a + b``, ``a - b`` or ``a * b`` on whole numbers; split by the exact problem.

    The defaults (up to 3 digits, multipliers up to 2) keep every level's conversation
    within a 256-token context (the ``tiny`` preset) for a 4,096-token vocabulary:
    measured on 1,000 examples, ``high`` averages 165 tokens and 0.5 % exceed 256.
    """

    name = "arithmetic"
    description = "add, subtract and multiply whole numbers with step-by-step traces"
    held_out = frozenset({"47+385"})  # the quickstart demo's sum is never trained on

    def __init__(self, ops: tuple[str, ...] = ("add", "sub", "mul"), max_digits: int = 3,
                 max_mul_digits: int = 2):
        unknown = set(ops) - set(OPS)
        if unknown or not ops:
            raise LanternError(f"arithmetic: unknown operations {sorted(unknown)}; use {sorted(OPS)}")
        if not (1 <= max_mul_digits <= max_digits <= MAX_DIGITS):
            raise LanternError(f"arithmetic: need 1 <= max_mul_digits <= max_digits <= {MAX_DIGITS}, "
                               f"got {max_mul_digits} and {max_digits}")
        self.ops, self.max_digits, self.max_mul_digits = tuple(ops), max_digits, max_mul_digits

    @property
    def scope(self) -> str:
        """The range, as the evaluation table states it.

        >>> Arithmetic().scope
        '+ and - up to 3 digits, * by up to 2 digits'
        """
        parts = []
        if {"add", "sub"} & set(self.ops):
            signs = " and ".join(OPS[op] for op in ("add", "sub") if op in self.ops)
            parts.append(f"{signs} up to {self.max_digits} digits")
        if "mul" in self.ops:
            parts.append(f"* by up to {self.max_mul_digits} digit{'s' if self.max_mul_digits > 1 else ''}")
        return ", ".join(parts)

    @staticmethod
    def _number(rng: random.Random, max_digits: int) -> int:
        n = rng.randint(1, max_digits)
        return rng.randint(0 if n == 1 else 10 ** (n - 1), 10 ** n - 1)

    def sample(self, rng: random.Random) -> Example:
        op = rng.choice(self.ops)
        a = self._number(rng, self.max_digits)
        b = self._number(rng, self.max_mul_digits if op == "mul" else self.max_digits)
        result = {"add": a + b, "sub": a - b, "mul": a * b}[op]
        if rng.random() < 0.2:
            question = _SPECIAL_QUESTIONS[op].format(a=a, b=b)
        else:
            question = rng.choice(_QUESTIONS).format(a=a, b=b, op=rng.choice(_WORDS[op]))
        return Example(self.name, f"{a}{OPS[op]}{b}", question, str(result),
                       {"a": a, "b": b, "op": op})

    def reply(self, example: Example) -> str:
        f = example.fields
        return f"{f['a']} {OPS[f['op']]} {f['b']} = {example.answer}."

    def parse(self, answer_text: str) -> str | None:
        """The number after the last ``=``, else the last number of the reply.

        >>> Arithmetic().parse("12 * 3 = 36.")
        '36'
        >>> Arithmetic().parse("The answer is -1,204")
        '-1204'
        """
        after = answer_text.rsplit("=", 1)[1] if "=" in answer_text else None
        found = numbers_in(after) if after is not None else []
        if found:
            return str(found[0])
        found = numbers_in(answer_text)
        return str(found[-1]) if found else None

    def restates(self, example: Example, answer_text: str) -> bool:
        """The numbers before the last ``=``, if any, are the two operands in order.

        >>> ex = Arithmetic().generate(1, seed=0)[0]
        >>> Arithmetic().restates(ex, Arithmetic().reply(ex)), Arithmetic().restates(ex, f"1 + 2 = {ex.answer}.")
        (True, False)
        """
        if "=" not in answer_text:
            return True
        found = numbers_in(answer_text.rsplit("=", 1)[0])
        return not found or found == [example.fields["a"], example.fields["b"]]

    def thinking(self, example: Example, level: str) -> str:
        check_level(self.name, level)
        a, b, op = example.fields["a"], example.fields["b"], example.fields["op"]
        return {"add": self._add, "sub": self._sub, "mul": self._mul}[op](a, b, level)

    # ------------------------------------------------------------------ traces

    @staticmethod
    def _add(a: int, b: int, level: str) -> str:
        columns = add_columns([a, b])
        if level == "low":
            steps = " ".join(f"{_sum_text(ds, c, level)}={t}" if ds else f"carry {t}" for ds, c, t in columns)
            return f"{steps}\n{a} + {b} = {a + b}"
        lines = [f"{a} + {b}, ones first, carry in last:"] if level == "high" else []
        lines += _column_lines(columns, level)
        if level == "high":
            lines.append(f"Digits, highest first: {_highest_first(columns)} -> {a + b}")
            lines.append(f"Check: {a + b} - {b} = {a}")
        lines.append(f"{a} + {b} = {a + b}")
        return "\n".join(lines)

    @staticmethod
    def _sub(a: int, b: int, level: str) -> str:
        top, bottom = max(a, b), min(a, b)
        diff = top - bottom
        lines = [f"{a} < {b}, so compute {b} - {a} and negate."] if a < b else []
        columns = sub_columns(top, bottom)
        if level == "low":
            lines.append(" ".join(f"{x + 10 * bout}{'-1' if bin_ else ''}-{y}={r}"
                                  for x, y, bin_, r, bout in columns))
        elif level == "high":
            lines.append(f"{top} - {bottom}, ones first, borrow in first:")
        for k, (x, y, bin_, r, bout) in enumerate(columns):
            minus_borrow = "-1" if bin_ else ""
            if level == "medium" and bout:
                lines.append(f"{_place(k)}: {x}{minus_borrow}<{y}, borrow: "
                             f"{x + 10}{minus_borrow}-{y}={r}, write {r}")
            elif level == "medium":
                lines.append(f"{_place(k)}: {x}{minus_borrow}-{y}={r}, write {r}")
            elif level == "high" and bout:
                lines.append(f"{_place(k)}: {x}-{bin_}={x - bin_}<{y}, borrow: "
                             f"{x - bin_ + 10}-{y}={r}, write {r}, borrow 1")
            elif level == "high":
                lines.append(f"{_place(k)}: {x}-{bin_}={x - bin_}, {x - bin_}-{y}={r}, write {r}, borrow 0")
        if level == "high":
            written = " ".join(str(r) for _, _, _, r, _ in reversed(columns))
            lines.append(f"Digits, highest first: {written} -> {diff}")
            lines.append(f"Check: {diff} + {bottom} = {top}")
        lines.append(f"{a} - {b} = {a - b}")
        return "\n".join(lines)

    @staticmethod
    def _mul(a: int, b: int, level: str) -> str:
        partials = [(k, d, a * d * 10 ** k) for k, d in enumerate(digits(b))]
        lines = []
        for k, d, p in partials:
            shifted = f", times {10 ** k}: {p}" if k else ""
            if level == "low":
                lines.append(f"{a} * {d * 10 ** k} = {p}")
            elif level == "medium":
                steps = ", ".join(f"{x}*{d}+{c}={t}" if c else f"{x}*{d}={t}"
                                  for x, c, t in mul_digit_steps(a, d))
                lines.append(f"{a} * {d}: {steps} -> {a * d}{shifted}")
            else:
                lines.append(f"{a} * {d}, carry in last:")
                steps = mul_digit_steps(a, d)
                for i, (x, c, t) in enumerate(steps):
                    write = f"write {t}" if i == len(steps) - 1 else f"write {t % 10}, carry {t // 10}"
                    lines.append(f"{x}*{d}+{c}={t}, {write}")
                lines.append(f"{a} * {d} = {a * d}{shifted}")
        products = [p for _, _, p in partials]
        if len(products) > 1:
            total = " + ".join(map(str, products))
            lines.append(f"{total} = {a * b}")
        if level == "high":
            lines.append(f"Check: {a * b} / {b} = {a}" if b else "Check: anything times 0 is 0")
        lines.append(f"{a} * {b} = {a * b}")
        return "\n".join(lines)
