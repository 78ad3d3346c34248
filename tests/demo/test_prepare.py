"""The demo's data files: held-out problems distinct from each other and from training, labelled by split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from omniopd.demo.prepare import PrepareSpec, write_data


@pytest.mark.parametrize("spec", [PrepareSpec(), PrepareSpec(seed=0, train_problems=300, eval_problems=50)],
                         ids=["demo", "smoke"])
def test_held_out_prompts_are_distinct_unseen_and_labelled_eval(spec: PrepareSpec, tmp_path: Path) -> None:
    write_data(spec, tmp_path / "train.jsonl", tmp_path / "eval")
    train = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    held_out = [json.loads(line) for line in (tmp_path / "eval" / "demo.jsonl").read_text().splitlines()]
    assert len(train) == spec.train_problems and len(held_out) == spec.eval_problems
    prompts = [row["prompt"] for row in held_out]
    assert len(set(prompts)) == len(prompts)  # the default demo had 7 duplicates in 200
    assert not set(prompts) & {row["prompt"] for row in train}
    assert {row["split"] for row in train} == {"train"}
    assert {row["split"] for row in held_out} == {"eval"}
    assert len({row["id"] for row in train + held_out}) == len(train) + len(held_out)
