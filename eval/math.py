r"""Math answers: the paper's prompt, answer extraction, and grading with math-verify.

Prompt: Table 7 of the paper, the same template for training and evaluation (one
definition, `omniopd.templates.TABLE7_TEMPLATE`, shared with the rollout engines).

Extraction (`extract_answer`): the **final** answer, i.e. the one the response states
last, whichever form it takes. A response states an answer with an `Answer:` marker (the
template's directive: at the start of a line in any case, `**Answer:**`, `Final Answer:`;
inside a line as `Answer:` or `final answer:`) followed by the rest of that line, or with
a `\boxed{...}` (balanced braces). Precedence is by position only: `\boxed{18} ...
Actually Answer: 19` and `Answer: 18 ... \boxed{19}` are both 19. A box inside the
marker's line is that line's answer; a marker with nothing after it, or a box cut off by
truncation, states nothing (the answer before it counts). The answer is cleaned:
surrounding `$`, `\( \)`, `\[ \]`, markdown bold and an inner `\boxed{}` are removed,
and a trailing period. Response rows of the regression file pin revisions and mixed forms.

Grading (`verify_answer`): `math_verify.verify(parse(gold), parse(answer))` — gold
first: math-verify is not symmetric (assignments and interval/relation conversions are
only applied one way). Both strings are parsed as `$...$`. Rules layered on top, each
pinned by rows of `eval/data/math_regressions.jsonl`:

  R1 relation-set: a predicted inequality matches a gold interval (`1<x<2` vs `(1,2)`):
     math-verify only compares sets with relations when the prediction is a set, unless
     `allow_set_relation_comp=True`, which we pass.
  R2 spaced thousands: `1\,000`, `1\ 000`, `1~000`, `1 000` are read as 1000 (math-verify
     parses `1\,000` as `1*0`). Digit groups of exactly three after a separator only.
  R3 "or"-inequalities: `x<-2 \text{ or } x>3` parses as a set of relations; we add
     its union of intervals as an alternative so it matches `(-\infty,-2)\cup(3,\infty)`.
  R4 empty set: `\varnothing` is read as `\emptyset` (math-verify parses it as a symbol).

math-verify's own timeouts use `signal.alarm` (main thread only) and are disabled here
(`parsing_timeout=None`, `timeout_seconds=None`); `MathGrader` runs the comparisons in
an `eval.pool.TimeoutPool`, which kills a stuck comparison from outside. A second,
independent grader (`eval.math_check.simple_equal`) runs beside math-verify; where they
disagree the case is appended to a JSONL file for review (they disagree on purpose in
places, e.g. `10\%` vs `0.1`: the check is deliberately literal).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from eval.math_check import simple_equal
from eval.pool import TimeoutPool
from eval.results import Verdict
from omniopd.templates import TABLE7_TEMPLATE as TABLE7_TEMPLATE  # the one definition, re-exported
from omniopd.templates import table7_prompt

if TYPE_CHECKING:
    from eval.datasets import MathItem


def math_prompt(question: str) -> str:
    """The paper's Table 7 prompt for one problem (the template training uses too)."""
    return table7_prompt(question)


# ------------------------------------------------------------------ extraction

# An `Answer:` marker (the Table 7 directive) starts a line in any case (`answer:`,
# `**Answer:**`, `Final Answer:`), or stands inside a line when written as the template
# writes it (`... so we conclude. Answer: 19`, `the final answer: 19`); a lower-case
# `answer:` inside a sentence ("check the answer: 19 works") is prose, not a marker.
_MARKER_TAIL = r"[ \t]*\**[ \t]*[:：]\**[ \t]*"
_LINE_MARKER = re.compile(r"^[ \t>#*_]*(?:final[ \t]+)?answer" + _MARKER_TAIL, re.I | re.M)
_INLINE_MARKER = re.compile(r"(?<![A-Za-z])(?:[Ff]inal[ \t]+[Aa]nswer|FINAL[ \t]+ANSWER|Answer|ANSWER)" + _MARKER_TAIL)
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*")
_WRAPPERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"), ("**", "**"), ("*", "*"))


@dataclass(frozen=True)
class AnswerSpan:
    """One stated answer: `text[start:end]` holds it, `answer` is its raw (uncleaned) text.
    `kind` is "line" (an `Answer:` marker) or "boxed"."""

    kind: str
    start: int
    end: int
    answer: str


def boxes(text: str) -> list[AnswerSpan]:
    r"""Every complete `\boxed{...}` / `\fbox{...}` in order (balanced braces; escaped
    `\{`, `\}` do not count). A box cut off by truncation is not one; `\boxed 5` (no
    braces) is the next token."""
    out = []
    for match in _BOXED.finditer(text):
        start = match.end()
        if start < len(text) and text[start] == "{":
            depth, i = 0, start
            while i < len(text):
                ch = text[i]
                if ch == "\\":
                    i += 2
                    continue
                if ch == "{":
                    depth += 1
                elif ch == "}":
                    depth -= 1
                    if depth == 0:
                        out.append(AnswerSpan("boxed", match.start(), i + 1, text[start + 1 : i]))
                        break
                i += 1
            continue
        token = re.match(r"[^\s$]+", text[start:])
        if token:
            out.append(AnswerSpan("boxed", match.start(), start + token.end(), token.group(0)))
    return out


def last_boxed(text: str) -> str | None:
    r"""Content of the last complete `\boxed{...}` / `\fbox{...}`, or None (see `boxes`)."""
    found = boxes(text)
    return found[-1].answer if found else None


def answer_markers(text: str) -> list[AnswerSpan]:
    """Every `Answer:` marker in order, with the rest of its line as the answer (or, when
    that is empty, the next non-empty line)."""
    # `**Answer:** 7` matches both patterns (from `**` and from `Answer`): one marker per end.
    by_end: dict[int, re.Match[str]] = {}
    for regex in (_LINE_MARKER, _INLINE_MARKER):
        for m in regex.finditer(text):
            if m.end() not in by_end or m.start() < by_end[m.end()].start():
                by_end[m.end()] = m
    out = []
    for m in sorted(by_end.values(), key=lambda m: m.start()):
        line_end = text.find("\n", m.end())
        line_end = len(text) if line_end < 0 else line_end
        rest, end = text[m.end() : line_end].strip(), line_end
        if not rest:
            for line in re.finditer(r"[^\n]*", text[line_end:]):
                if line.group(0).strip():
                    rest, end = line.group(0).strip(), line_end + line.end()
                    break
        out.append(AnswerSpan("line", m.start(), end, rest))
    return out


def answer_line(response: str) -> str | None:
    """The text after the last `Answer:` marker (or the next non-empty line if it is empty)."""
    found = answer_markers(response)
    return found[-1].answer or None if found else None


def clean_answer(answer: str) -> str:
    r"""Strip math delimiters, markdown bold, an inner `\boxed{}` and a trailing period."""
    s = answer.strip()
    for _ in range(4):  # wrappers can nest: **$\boxed{5}$**.
        before = s
        s = s.rstrip(".").rstrip()
        for left, right in _WRAPPERS:
            inner = s[len(left) : len(s) - len(right)]
            # `$1$ and $2$` starts and ends with `$` but is not one wrapped answer
            if s.startswith(left) and s.endswith(right) and len(s) >= len(left) + len(right) and left not in inner:
                s = inner.strip()
        boxed = last_boxed(s)
        if boxed is not None and s.lstrip().startswith(("\\boxed", "\\fbox")):
            s = boxed.strip()
        if s == before:
            break
    return s


def stated_answers(response: str) -> list[AnswerSpan]:
    r"""The answers a response states, in order of position: `Answer:` markers and boxes.

    A box inside a marker's answer text is that marker's answer (`Answer: so \boxed{5}`
    states 5 once); a marker inside a box (`\boxed{\text{Answer: 5}}`) is the box's text.
    """
    markers, found = answer_markers(response), boxes(response)
    inside = [b for b in found if any(m.start < b.start < m.end for m in markers)]
    spans = [b for b in found if b not in inside]
    for m in markers:
        if any(b.start < m.start < b.end for b in found):
            continue
        within = [b for b in inside if m.start < b.start < m.end]
        spans.append(AnswerSpan("line", m.start, m.end, within[-1].answer if within else m.answer))
    return sorted(spans, key=lambda s: s.start)


def extract_answer(response: str) -> str | None:
    r"""The final answer of a response: the answer stated last, `Answer:` or `\boxed{}`.

    A response that revises itself is graded by its last statement: `Answer: 18 ... Wait,
    ... Answer: 19` and `\boxed{18} ... Actually Answer: 19` are both 19. A marker with
    nothing after it, or a box cut off by truncation, states nothing, so the answer stated
    before it counts. None when nothing is stated (graded wrong with reason `no_answer`).
    """
    for span in reversed(stated_answers(response)):
        cleaned = clean_answer(span.answer)
        if cleaned:
            return cleaned
    return None


# ------------------------------------------------------------------ math-verify with our rules

_SPACED_THOUSANDS = re.compile(r"(?<=\d)(?:\\,|\\ |~|\\;|\\:| )(?=\d{3}(?!\d))")


def _preprocess(s: str) -> str:
    s = s.strip().strip("$").strip()
    s = _SPACED_THOUSANDS.sub("", s)  # R2
    s = s.replace("\\varnothing", "\\emptyset")  # R4
    return f"${s}$"


def _union_alternatives(parsed: list) -> list:
    """R3: a set of one-variable relations (`x<-2 or x>3`) also stands for its union."""
    import sympy
    from sympy.core.relational import Relational

    extra = []
    for e in parsed:
        if isinstance(e, sympy.FiniteSet) and e.args and all(isinstance(a, Relational) for a in e.args):
            symbols = set().union(*(a.free_symbols for a in e.args))
            if len(symbols) == 1:
                # sympy may fail to solve it: then keep the original reading only
                with contextlib.suppress(Exception):
                    extra.append(sympy.Or(*e.args).as_set())
    return extra + parsed


def verify_answer(gold: str, answer: str) -> bool:
    """math-verify `verify(parse(gold), parse(answer))` with rules R1-R4. No timeout:
    run it through `MathGrader` (or another external timeout) on untrusted input."""
    from math_verify import parse, verify

    gold_parsed = parse(_preprocess(gold), parsing_timeout=None)
    answer_parsed = _union_alternatives(parse(_preprocess(answer), parsing_timeout=None))
    return bool(
        verify(gold_parsed, answer_parsed, timeout_seconds=None, allow_set_relation_comp=True)  # R1
    )


def grade_pair(job: tuple[str, str, bool]) -> tuple[bool, bool | None]:
    """Pool job: (gold, extracted answer, run the check) -> (math-verify, check verdict)."""
    gold, answer, check = job
    return verify_answer(gold, answer), (simple_equal(gold, answer) if check else None)


# math-verify logs a warning on every call when its timeouts are disabled; we disabled
# them on purpose (the pool enforces the timeout), so keep that one quiet.
logging.getLogger("math_verify").setLevel(logging.ERROR)


class MathGrader:
    """Grades math responses in worker processes with a per-answer wall-clock timeout.

    `grade(pairs)` takes (item, response) pairs (the grader interface every benchmark
    kind implements); `grade_answers` takes gold strings directly. Disagreements between
    math-verify and the second grader are appended to `disagreements` (JSONL) if given.
    """

    def __init__(
        self,
        *,
        workers: int = 0,
        timeout_s: float = 10.0,
        disagreements: Path | None = None,
        check: bool = True,
    ) -> None:
        self.pool = TimeoutPool(grade_pair, workers=workers, timeout_s=timeout_s, preload=["eval._math_warm"])
        self.disagreements = disagreements
        self.check = check
        self._lock = threading.Lock()  # one map at a time: the pool is not re-entrant

    def __enter__(self) -> MathGrader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.pool.close()

    def grade(self, pairs: Sequence[tuple[MathItem, str]]) -> list[Verdict]:
        return self.grade_answers(
            [item.answer for item, _ in pairs],
            [response for _, response in pairs],
            item_ids=[item.id for item, _ in pairs],
        )

    def grade_answers(
        self, golds: Sequence[str], responses: Sequence[str], *, item_ids: Sequence[str] | None = None
    ) -> list[Verdict]:
        ids = list(item_ids) if item_ids is not None else [""] * len(golds)
        extracted = [extract_answer(r) for r in responses]
        todo = [i for i, a in enumerate(extracted) if a is not None]
        with self._lock:
            outcomes = self.pool.map([(golds[i], extracted[i], self.check) for i in todo])
        verdicts: list[Verdict] = [Verdict(False, "no_answer", None, 0.0) for _ in responses]
        review = []
        for i, out in zip(todo, outcomes, strict=True):
            if out.status == "ok":
                correct, second = out.value
                verdicts[i] = Verdict(correct, "correct" if correct else "wrong", extracted[i], out.seconds)
                if second is not None and second != correct:
                    review.append({"item_id": ids[i], "gold": golds[i], "extracted": extracted[i],
                                   "math_verify": correct, "check": second})
            elif out.status == "timeout":
                verdicts[i] = Verdict(False, "timeout", extracted[i], out.seconds)
            else:
                verdicts[i] = Verdict(False, f"grader_error: {out.error}", extracted[i], out.seconds)
        if review and self.disagreements is not None:
            self._log(review)
        return verdicts

    def _log(self, rows: list[dict]) -> None:
        self.disagreements.parent.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        with self.disagreements.open("a", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps({"time": stamp, **row}, ensure_ascii=False) + "\n")
