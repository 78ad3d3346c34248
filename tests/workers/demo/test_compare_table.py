"""The `--compare` table and plot from arm results (no processes): one row per method in
Table 1's shape, intervals, change from base, teacher tokens and spend as each arm has them."""

from __future__ import annotations

import math

from workers.demo.compare import ArmResult, _base, compare_table, plot_compare


def arm(name: str, before: float, after: float, tokens: int, spend: float | None, curve=()) -> ArmResult:
    result = {"pass_before": before, "ci_before": None if math.isnan(before) else [before - 0.04, before + 0.04],
              "pass_after": after, "ci_after": [after - 0.05, after + 0.05], "steps": 100}
    return ArmResult(name, result, wall_s=330.0, teacher_tokens=tokens, spend_usd=spend, curve=list(curve))


def test_the_table_has_base_and_every_arm_with_intervals_changes_tokens_and_spend():
    results = [arm("sft", 0.386, 0.70, 140_500, 0.2145), arm("opd", math.nan, 0.75, 52_000, None),
               arm("grpo", math.nan, 0.45, 0, 0.0), arm("omniopd", math.nan, 0.62, 1_234_567, 0.9)]
    base = _base(results)
    assert base == {"pass": 0.386, "ci": [0.386 - 0.04, 0.386 + 0.04]}  # measured once, in the first arm
    lines = compare_table(results, base).splitlines()
    assert lines[0].startswith("| method | teacher access | Pass@1 (95% CI) | change from base |")
    assert lines[2] == "| base | - | 38.6% [34.6, 42.6] | - | 0 | 0 | - | - |"
    assert lines[3] == ("| SFT (teacher's solutions) | full solutions, offline | 70.0% [65.0, 75.0] | +31.4 pts | 100 | "
                        "140.5k | $0.214 | 5.5 min |")
    assert "| OPD (white-box) | logits (weights) | 75.0% [70.0, 80.0] | +36.4 pts | 100 | 52.0k | n/a (weights) |" in lines[4]
    assert "| GRPO | none (rule-based reward) | 45.0% [40.0, 50.0] | +6.4 pts | 100 | 0 | $0.000 |" in lines[5]
    assert "| OmniOPD | text (black-box API) | 62.0% [57.0, 67.0] | +23.4 pts | 100 | 1.23M | $0.900 |" in lines[6]


def test_the_plot_is_a_png_with_each_arms_curve(tmp_path):
    results = [arm("sft", 0.386, 0.70, 1, 0.1, curve=[(25, 0.5, 0.4, 0.6), (50, 0.6, 0.5, 0.7)]),
               arm("grpo", math.nan, 0.45, 0, 0.0)]
    out = plot_compare(results, _base(results), tmp_path / "compare.png", seed=0)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
