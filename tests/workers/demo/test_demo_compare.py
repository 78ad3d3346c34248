"""`omniopd demo --compare --smoke` through the real processes: base, SFT on the teacher's
solutions, white-box OPD and GRPO on one prepared student, one seed and one number of learner
steps, then the Table 1-shaped table and the plot. The assertions are ones a broken
comparison fails: every arm trained the same steps from the same base; SFT trained on the
teacher's solutions only (no rollout batch, each trained text is a solution from the file)
and its tokens are that file's; OPD and GRPO asked no teacher anything; the table shows them.

The OmniOPD arm is left out here to keep CI short: it is `omniopd demo --teacher model`, whose
smoke run through vLLM is tests/workers/demo/test_model_teacher.py; the arms' table code is
tests/workers/demo/test_compare_table.py."""

from __future__ import annotations

import json

import pytest

from tests.workers.demo.finished_demo import finished_demo

pytestmark = [pytest.mark.slow]


def store_rows(run_dir, *columns):
    from sqlalchemy import select

    from db.session import make_engine, make_session_factory

    engine = make_engine(f"sqlite:///{run_dir / 'omniopd.db'}")
    try:
        with make_session_factory(engine, read_only=True).begin() as s:
            return s.execute(select(*columns)).all()
    finally:
        engine.dispose()


@pytest.mark.long_running(seconds=150)
@pytest.mark.timeout(1200)
def test_compare_runs_every_arm_on_the_same_steps_and_writes_the_table_and_the_plot(tmp_path):
    result = finished_demo("--compare", "--smoke", "--arms", "sft,opd,grpo", "--workdir", str(tmp_path), timeout=1100,
                           columns=200)
    from db.models import RolloutBatch, TeacherCall, Trajectory

    root = tmp_path / "smoke-compare-s0"
    summary = json.loads((root / "compare.json").read_text())
    arms = {a["arm"]: a for a in summary["arms"]}
    assert list(arms) == ["sft", "opd", "grpo"]
    assert all(a["result"]["steps"] == 4 for a in arms.values())  # the compare smoke's 4 learner steps, every arm
    assert 0 <= summary["base"]["pass"] <= 1 and summary["base"]["ci"]
    assert all(a["result"]["ci_after"] for a in arms.values())

    # SFT: trained on the teacher's solutions only, priced from that one pass.
    solutions_file = tmp_path / "smoke-prepared-s0" / "teacher-student-tokenizer" / "solutions.jsonl"
    solutions = {json.loads(line)["completion"] for line in solutions_file.read_text().splitlines()}
    sft_dir = root / "sft" / "smoke-sft-s0"
    trained = store_rows(sft_dir, Trajectory.completion_text, Trajectory.state)
    assert trained and all(text in solutions for text, _ in trained)
    assert sum(state == "consumed" for _, state in trained) == 4 * 8  # 4 steps of 8
    assert not store_rows(sft_dir, RolloutBatch.id) and not store_rows(sft_dir, TeacherCall.id)
    manifest = json.loads(solutions_file.with_suffix(".json").read_text())["result"]
    assert arms["sft"]["teacher_tokens"] == manifest["input_tokens"] + manifest["output_tokens"] > 0
    assert arms["sft"]["spend_usd"] > 0

    # OPD and GRPO: no teacher call; OPD's teacher read every trained sequence (no price).
    for arm in ("opd", "grpo"):
        assert not store_rows(root / arm / f"smoke-{arm}-s0", TeacherCall.id)
    assert arms["opd"]["spend_usd"] is None and arms["opd"]["teacher_tokens"] > 0
    assert arms["grpo"]["teacher_tokens"] == 0 and arms["grpo"]["spend_usd"] == 0

    table = (root / "compare.md").read_text()
    for label in ("| base |", "| SFT (teacher's solutions) |", "| OPD (white-box) |", "| GRPO |"):
        assert label in table and label in result.stdout
    assert "n/a (weights)" in table
    assert (root / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
