r"""A second, deliberately simple math grader, used only to flag math-verify verdicts for review.

`simple_equal(gold, answer)` normalises both strings (delimiters, spacing, `\dfrac`,
degree signs, `\text{}` units, thousands separators, a leading `x=`), then compares
them as strings, as numbers (a safe evaluator for a small LaTeX subset: fractions,
roots, powers, pi; no `eval`), or element-wise as comma-separated lists (ordered inside
parentheses, unordered otherwise). It knows nothing of intervals, inequalities, sets
of relations or symbolic algebra, so it says "different" where math-verify can prove
equality; a disagreement is a prompt to look, not a verdict.
"""

from __future__ import annotations

import ast
import math
import operator
import re

_DROP = ("\\left", "\\right", "\\!", "\\,", "\\;", "\\:", "\\quad", "\\qquad", "~", "\\displaystyle")
_UNIT = re.compile(r"(?<=[\d}])\s*\\(?:text|mbox|mathrm)\{\s*[a-zA-Z][a-zA-Z .^{}0-9]*\}(\^\d)?$")
_TEXT = re.compile(r"\\(?:text|mbox|mathrm|textbf)\{([^{}]*)\}")
_ASSIGN = re.compile(r"^[a-zA-Z]\s*=\s*(?=[^=])")
_THOUSANDS = re.compile(r"^-?\d{1,3}(,\d{3})+(\.\d+)?$")


def normalise(s: str) -> str:
    s = s.strip().strip("$").strip()
    for token in _DROP:
        s = s.replace(token, "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = re.sub(r"\^\s*\{?\\circ\}?|°", "", s)
    s = s.replace("\\%", "%").rstrip("%")
    s = s.replace("\\$", "")
    s = _UNIT.sub("", s)
    s = _TEXT.sub(r"\1", s)
    s = _ASSIGN.sub("", s)
    s = re.sub(r"\s+", "", s).rstrip(".")
    s = re.sub(r"^\(([A-Za-z])\)$", r"\1", s)  # (C) -> C
    if _THOUSANDS.match(s):
        s = s.replace(",", "")
    return re.sub(r"(?<![\d.,])0+(?=\d)", "", s)  # 033 -> 33 (AIME answers)


def _latex_to_expr(s: str) -> str:
    s = re.sub(r"(\d)\\frac\{(\d+)\}\{(\d+)\}", r"(\1+\2/\3)", s)  # mixed number 4\frac{1}{2}
    for _ in range(10):  # innermost first, so nested fractions unwrap level by level
        new = re.sub(r"\\frac\{([^{}]*)\}\{([^{}]*)\}", r"((\1)/(\2))", s)
        new = re.sub(r"\\frac(\d)(\d)", r"(\1/\2)", new)
        new = re.sub(r"\\sqrt\{([^{}]*)\}", r"sqrt(\1)", new)
        new = re.sub(r"\\sqrt(\d+)", r"sqrt(\1)", new)
        if new == s:
            break
        s = new
    s = s.replace("\\pi", "pi").replace("\\cdot", "*").replace("\\times", "*").replace("^", "**")
    s = s.replace("{", "(").replace("}", ")")
    # implicit products: 2pi, 2sqrt(2), 3(4), )(
    return re.sub(r"(?<=[\d)])(?=[a-z(])", "*", s)


_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv, ast.Pow: operator.pow}


def _eval(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return float(node.value)
    if isinstance(node, ast.Name) and node.id in ("pi", "e"):
        return math.pi if node.id == "pi" else math.e
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _eval(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and (abs(right) > 64 or abs(left) > 1e6):
            raise ValueError("power too large for a quick check")
        return _BINOPS[type(node.op)](left, right)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "sqrt" and len(node.args) == 1:
        return math.sqrt(_eval(node.args[0]))
    raise ValueError(f"unsupported: {ast.dump(node)[:40]}")


def to_number(s: str) -> float | None:
    """The value of a normalised answer that is a plain number expression, else None."""
    if not s or len(s) > 200:
        return None
    try:
        value = _eval(ast.parse(_latex_to_expr(s), mode="eval").body)
    except (SyntaxError, ValueError, ZeroDivisionError, OverflowError, TypeError, RecursionError):
        return None
    return value if math.isfinite(value) else None


def _split_top(s: str) -> list[str]:
    parts, depth, cur = [], 0, []
    for ch in s:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def _unwrap(s: str) -> str:
    if s[:1] == "(" and s[-1:] == ")":
        return s[1:-1]
    if s.startswith("\\{") and s.endswith("\\}"):
        return s[2:-2]
    return s


def _equal_normalised(g: str, a: str) -> bool:
    if g == a or (g.lower() == a.lower() and "\\" not in g):
        return True
    gv, av = to_number(g), to_number(a)
    if gv is not None and av is not None:
        return math.isclose(gv, av, rel_tol=1e-6, abs_tol=1e-9)
    ordered = g[:1] == "(" and g[-1:] == ")"
    g_in, a_in = _unwrap(g), _unwrap(a)
    gl, al = _split_top(g_in), _split_top(a_in)
    if len(gl) < 2 or len(gl) != len(al):
        return False
    if ordered:
        return all(_equal_normalised(x, y) for x, y in zip(gl, al, strict=True))
    remaining = list(al)
    for x in gl:
        match = next((y for y in remaining if _equal_normalised(x, y)), None)
        if match is None:
            return False
        remaining.remove(match)
    return True


def simple_equal(gold: str, answer: str) -> bool:
    """True when `answer` equals `gold` by normalised string, number or list comparison."""
    return _equal_normalised(normalise(gold), normalise(answer))
