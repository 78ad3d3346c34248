"""`omniopd study estimator` end to end on tiny offline models: student chunks, the oracle,
samples from the oracle served here through the teacher client, the ledger, the outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_study_command_writes_the_table_and_ledgers_every_call(tiny_model_dir, tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"Compute {i} + 2.", "answer": str(i + 2)}) + "\n" for i in range(40)))
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump({
        "run": {"name": "tiny-study", "seed": 0, "output_dir": str(tmp_path / "run")},
        "student": {"path": tiny_model_dir, "device": "cpu"},
        "rollout": {"backend": "hf", "max_new_tokens": 16, "max_prompt_tokens": 64, "batch_problems": 8},
        "chunking": {"m": 2, "c": 4},
        "estimator": {"n": 4, "alpha": 1.0, "phi": "exact", "cut": "chars"},
        "data": {"train": str(train), "prompt_template": "none"},
        "teachers": {"t": {"kind": "openai_compat", "model": "tiny-teacher", "base_url": "http://127.0.0.1:9/v1",
                           "continuation": "raw", "chat_template_from": tiny_model_dir, "temperature": 1.0,
                           "budget_usd": 1.0, "prices": {"input": 1.0, "cached_input": 0.1, "cache_write": 1.0,
                                                         "output": 2.0}}},
        "audit": {"teacher": "t", "budget_usd": 1.0},
    }))
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "omniopd", "study", "estimator", "-c", str(config), "--chunks", "12", "--n", "2,4",
         "--phi", "exact,edit", "--serve", "hf", "--out", str(out), "--resamples", "100"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads((out / "results.json").read_text())
    assert result["chunks"] == 12 and result["run_name"] == "tiny-study-study-estimator"
    assert {(r["phi"], r["n"], r["target"]) for r in result["rows"]} == {
        (p, n, t) for p in ("exact", "edit") for n in (2, 4) for t in ("normalised", "sequence")}
    rows = [json.loads(line) for line in (out / "chunks.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and all(len(r["samples"]) == 4 and 0 < r["oracle"] <= 1 for r in rows)
    assert "| Exact match | 4 |" in (out / "table.md").read_text() and (out / "estimator-study.png").is_file()

    import sqlite3

    with sqlite3.connect(tmp_path / "run" / "omniopd.db") as db:
        (calls,) = db.execute("select count(*) from teacher_calls c join runs r on r.id = c.run_id "
                              "where r.name = 'tiny-study-study-estimator' and c.status = 'ok'").fetchone()
    assert calls == 12  # one request of N = 4 per chunk, each in the ledger
    assert result["spend_usd"] > 0


@pytest.mark.parametrize("args, message", [
    (["--n", "ten"], "--n 'ten'"),
    (["--phi", "exact,cosine"], "unknown ['cosine']"),
])
def test_bad_options_say_what_to_fix(args, message):
    from typer.testing import CliRunner

    from omniopd.cli import app

    done = CliRunner().invoke(app, ["study", "estimator", "-c", str(ROOT / "configs/demo-model.yaml"), *args])
    assert done.exit_code == 2 and message in done.output
