"""The quick-start task: chained arithmetic solved step by step, ending in an `Answer:` line.

    Compute 7 + 3 - 2.          ->   7 + 3 = 10
                                     10 - 2 = 8
                                     Answer: 8

The student is pretrained on solutions in which every intermediate result is off by one
with probability `error_rate`, and later steps continue from the wrong value, as a model
that has half-learned a skill does. Its uncertainty therefore sits at the result tokens —
exactly the "forks" that peak-entropy chunk selection (Eq. 7) audits — and one wrong
result makes the final answer wrong, so Pass@1 starts well below the teacher's.

The teacher is a scripted expert (`expert_continuation`): given any prefix of an answer it
continues correctly from the state the prefix reached, like a strong model asked to go on
from a student's partial work. It never needs the student's tokenizer; it reads and writes
text (Remark 4.5).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

_QUESTION = re.compile(r"Compute (\d+(?: [+-] \d+)+)\.")
_STEP = re.compile(r"^\s*(\d+) ([+-]) (\d+) = (\d+)\s*$")
_OPEN_STEP = re.compile(r"^\s*(\d+) ([+-]) (\d+) =( ?)(\d*)$")


@dataclass(frozen=True)
class DemoProblem:
    """`start` followed by `ops` (sign, operand); every running value stays in [0, 25]."""

    id: str
    start: int
    ops: tuple[tuple[str, int], ...]

    @property
    def question(self) -> str:
        return "Compute " + " ".join([str(self.start), *(f"{s} {b}" for s, b in self.ops)]) + "."

    @property
    def answer(self) -> int:
        return apply_ops(self.start, self.ops)


def apply_ops(value: int, ops) -> int:
    for sign, b in ops:
        value = value + b if sign == "+" else value - b
    return value


def make_problems(n: int, seed: int, id_prefix: str) -> list[DemoProblem]:
    """`n` random problems of 2 or 3 steps with operands 1-3 and values in [0, 25]."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        value = rng.randint(1, 19)
        start, ops = value, []
        for _ in range(rng.choice((2, 3))):
            b = rng.randint(1, 3)
            sign = rng.choice("+-")
            if value - b < 0:
                sign = "+"
            elif value + b > 25:
                sign = "-"
            value = value + b if sign == "+" else value - b
            ops.append((sign, b))
        out.append(DemoProblem(f"{id_prefix}{i}", start, tuple(ops)))
    return out


def solution_text(problem: DemoProblem, rng: random.Random | None = None, error_rate: float = 0.0) -> str:
    """The step-by-step solution; with `rng`, each result is off by one w.p. `error_rate`."""
    lines, value = [], problem.start
    for sign, b in problem.ops:
        result = apply_ops(value, [(sign, b)])
        if rng is not None and rng.random() < error_rate:
            result = max(result + rng.choice((-1, 1)), 0)
        lines.append(f"{value} {sign} {b} = {result}")
        value = result
    lines.append(f"Answer: {value}")
    return "\n".join(lines)


def parse_question(text: str) -> tuple[int, tuple[tuple[str, int], ...]] | None:
    """(start, ops) of the first `Compute ...` question in `text`, or None."""
    match = _QUESTION.search(text)
    if not match:
        return None
    tokens = match.group(1).split()
    ops = tuple((tokens[i], int(tokens[i + 1])) for i in range(1, len(tokens), 2))
    return int(tokens[0]), ops


def expert_continuation(start: int, ops: tuple[tuple[str, int], ...], prefix: str) -> str:
    """The correct continuation of `prefix`, computed from the state the prefix reached.

    Complete step lines are taken as written (a wrong result is carried on, as a teacher
    continuing someone else's work would); the open last line is finished correctly from
    its own operands; the remaining steps and the answer line follow.
    """
    lines = prefix.split("\n")
    done, partial = lines[:-1], lines[-1]
    value, steps = start, 0
    for line in done:
        step = _STEP.match(line)
        if step:
            value, steps = int(step.group(4)), steps + 1
    rest = []
    open_step = _OPEN_STEP.match(partial)
    if partial.startswith("Answer:"):
        head = f"Answer: {value}"
        # A wrong answer already written: the expert writes the right one on a new line.
        return head[len(partial) :] if head.startswith(partial) else "\n" + head
    if open_step:
        a, sign, b = int(open_step.group(1)), open_step.group(2), int(open_step.group(3))
        result = str(apply_ops(a, [(sign, b)]))
        written = open_step.group(5)
        if result.startswith(written):  # finish the number
            head = ("" if open_step.group(4) else " ") + result[len(written) :]
            value = int(result)
        else:  # a complete wrong result: carry it on, like a complete line
            head, value = "", int(written)
        steps += 1
    else:
        expected = f"{value} {ops[steps][0]} {ops[steps][1]} = " if steps < len(ops) else "Answer: "
        head = expected[len(partial) :] if expected.startswith(partial) else ("\n" if partial else "")
        if head and head != "\n" and steps < len(ops):
            sign, b = ops[steps]
            value = apply_ops(value, [(sign, b)])
            head += str(value)
            steps += 1
        elif head and steps >= len(ops):
            return head + str(value)
    for sign, b in ops[steps:]:
        new = apply_ops(value, [(sign, b)])
        rest.append(f"{value} {sign} {b} = {new}")
        value = new
    rest.append(f"Answer: {value}")
    return head + "\n" + "\n".join(rest)


_OPEN_LINE = re.compile(r"(\d+) ([+-]) (\d+) =\s*$")
_FIRST_NUMBER = re.compile(r"\s*(\d+)")


def chunk_result_is_right(before: str, chunk: str) -> bool | None:
    """Whether a chunk that opens with the result of an open step line (`... 7 + 3 =` before
    it, ` 10...` in it) writes that result right; None for any other chunk."""
    line = _OPEN_LINE.search(before.split("\n")[-1])
    number = _FIRST_NUMBER.match(chunk)
    if line is None or number is None:
        return None
    return int(number.group(1)) == apply_ops(int(line.group(1)), [(line.group(2), int(line.group(3)))])
