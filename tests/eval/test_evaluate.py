"""`omniopd eval` end to end: the tiny model through the transformers backend, a scripted
teacher behind a real OpenAI-compatible server (the provider emulator), resumption after
an interruption, the store link to a training run, and `omniopd eval compare`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from eval.passk import paired_difference
from eval.results import BenchmarkScore, sample_seed
from tests.conftest import wait_left
from tests.eval.scripted_teacher import expected_correct

ROOT = Path(__file__).parents[2]
DATA = Path(__file__).parent / "data"
SEED = 11
ITEMS = {"math500": ["m1", "m2", "m3"], "apps": ["c1", "c2", "c3"]}
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "COLUMNS": "200"}


def make_config(tmp_path: Path, *, store_url: str | None = None, model: str = "", **eval_cfg) -> Path:
    """A run config over the tiny math and code files, its store migrated to head."""
    from db.migrate import upgrade
    from db.session import make_engine

    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    (data / "math500.jsonl").write_text((DATA / "ours_math.jsonl").read_text())
    (data / "apps.jsonl").write_text((DATA / "ours_code.jsonl").read_text())
    cfg = {
        "run": {"name": "evaltest", "seed": SEED, "output_dir": str(tmp_path / "run")},
        "student": {"path": model, "device": "cpu"},
        "rollout": {"backend": "hf"},
        "eval": {"data_dir": str(data), "samples": 2, "max_new_tokens": 64, "grading_workers": 2,
                 "pass_at_k": [1, 2], **eval_cfg},
    }
    if store_url:
        cfg["store"] = {"url": store_url}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    engine = make_engine(store_url or f"sqlite:///{tmp_path / 'run' / 'omniopd.db'}")
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    return path


def omniopd(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "omniopd", *args], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=wait_left(timeout))


def store_view(config: Path) -> dict[str, tuple[object, list]]:
    """eval-run key -> (EvalRunRecord, its result rows)."""
    from db.repo_eval import eval_results, list_eval_runs
    from db.session import make_engine, make_session_factory
    from omniopd.config import load_config

    engine = make_engine(load_config(config).store_url)
    try:
        with make_session_factory(engine, read_only=True).begin() as s:
            return {r.key: (r, eval_results(s, eval_run_id=r.id)) for r in list_eval_runs(s)}
    finally:
        engine.dispose()


def evaluate_here(config: Path, benchmarks: str, *, overrides: tuple[str, ...] = (), **target) -> Path:
    """The same evaluation in this process (eval.runner, what the CLI calls); its results.json."""
    from eval.runner import Target, evaluate_config
    from omniopd.config import load_config

    name = target.pop("name", None)
    _, paths = evaluate_config(load_config(config, list(overrides)), config, benchmarks, Target(**target), name=name)
    return paths["json"]


def results_json(stdout: str) -> Path:
    line = next(ln for ln in stdout.splitlines() if ln.startswith("results: "))
    return Path(line.split()[1])


def expected_pass_at_1(benchmark: str, k: int, seed: int = SEED) -> float:
    items = ITEMS[benchmark]
    return sum(expected_correct(i, sample_seed(seed, i, r)) for i in items for r in range(k)) / (len(items) * k)


# ------------------------------------------------------------------ transformers backend


@pytest.mark.slow
@pytest.mark.sandbox
def test_tiny_model_is_evaluated_end_to_end_through_the_transformers_backend(
    tmp_path: Path, tiny_model_dir: str, bwrap: str
) -> None:
    """In this process (eval.runner.evaluate_config, what the CLI calls): the torch and
    model start-up are paid once per test session, not once more in a subprocess."""
    config = make_config(tmp_path, model=tiny_model_dir, max_new_tokens=12, batch_samples=4)
    results = evaluate_here(config, "math500,apps", model=tiny_model_dir)

    report = json.loads(results.read_text())
    stored = store_view(config)
    assert sorted(stored) == sorted(f"{report['tag']}/{b}" for b in ("math500", "apps"))
    for key, (run, rows) in stored.items():
        bench = key.rsplit("/", 1)[1]
        assert run.status == "finished" and run.samples == 2 and run.model == tiny_model_dir
        assert sorted((r.item_id, r.sample_index) for r in rows) == [(i, s) for i in ITEMS[bench] for s in range(2)]
        assert [r.seed for r in rows] == [sample_seed(SEED, r.item_id, r.sample_index) for r in rows]
        assert len({r.seed for r in rows}) == len(rows)  # k distinct seeds per item, distinct across items
        assert all(r.n_tokens is not None and 1 <= r.n_tokens <= 12 for r in rows)
        assert run.pass_at_1 == pytest.approx(sum(r.correct for r in rows) / len(rows))
        assert all(r.detail["reason"] for r in rows)

    assert set(report["benchmarks"]) == {"math500", "apps"}
    for entry in report["benchmarks"].values():
        score = BenchmarkScore.from_dict(entry["score"])
        assert (score.n_items, score.samples_per_item, entry["generated"]) == (3, 2, 6)
        assert score.pass_at_1 == stored[entry["key"]][0].pass_at_1
    assert set(report["tables"]) == {"math", "code"}
    markdown = results.with_name("results.md").read_text()
    assert "| Model | MATH-500 | Average |" in markdown and "| Model | APPS | Average |" in markdown
    samples = [json.loads(x) for x in (results.parent / "samples" / "apps.jsonl").read_text().splitlines()]
    assert [(s["item_id"], s["sample_index"]) for s in samples] == [(i, r) for i in ITEMS["apps"] for r in range(2)]
    assert all(s["reason"] and s["seed"] == sample_seed(SEED, s["item_id"], s["sample_index"]) for s in samples)



# ------------------------------------------------------------------ an OpenAI-compatible endpoint


@pytest.mark.sandbox
def test_endpoint_evaluation_of_a_scripted_teacher_gives_the_known_pass_at_1(tmp_path: Path, start_teacher, bwrap: str) -> None:
    teacher = start_teacher(faults="429,500")  # the first two requests fail: retried
    config = make_config(tmp_path, samples=4)
    proc = omniopd("eval", "-c", str(config), "-b", "math500,apps", "--endpoint", teacher.url, "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    for bench in ("math500", "apps"):
        score = report["benchmarks"][bench]["score"]
        assert score["pass_at_1"] == pytest.approx(expected_pass_at_1(bench, 4))
        assert score["samples_per_item"] == 4
    # every sample reached the server with its own seed, exactly once
    assert sorted(teacher.seeds()) == sorted((i, sample_seed(SEED, i, r)) for b in ITEMS.values() for i in b for r in range(4))
    rows = {r.item_id: r for _, (_, rs) in store_view(config).items() for r in rs if r.item_id == "c1"}
    assert rows["c1"].correct and rows["c1"].score == 1.0 and "print(a + b)" in rows["c1"].extracted


@pytest.mark.services
def test_results_go_to_postgresql_and_are_linked_to_a_training_run_step(tmp_path: Path, start_teacher, postgres_url: str) -> None:
    """--run/--step attach run_id, policy_version and step: list_eval_runs(run_id=...)
    is the query that plots accuracy against step."""
    from db.repo_eval import list_eval_runs, policy_version_at_step
    from db.repo_runs import open_run, publish_policy_version
    from db.session import make_engine, make_session_factory

    teacher = start_teacher()
    config = make_config(tmp_path, store_url=postgres_url)
    engine = make_engine(postgres_url)
    sessions = make_session_factory(engine)
    with sessions.begin() as s:
        run = open_run(s, name="train-1", config={}, base_model_path="base", provider_caps={}, run_cap=None)
        publish_policy_version(s, run_id=run.id, version=3, path="/ckpt/v3", step=30)
    try:
        proc = omniopd("eval", "-c", str(config), "-b", "math500", "--endpoint", f"{teacher.url}/v1/chat/completions",
                       "--endpoint-model", "scripted-teacher", "--run", "train-1", "--step", "30")
        assert proc.returncode == 0, proc.stderr[-3000:]
        evaluate_here(config, "math500", endpoint=teacher.url, run="train-1", step=0)
        with sessions.begin() as s:
            assert policy_version_at_step(s, run_id=run.id, step=30).version == 3
            curve = [(r.step, r.policy_version, r.pass_at_1) for r in list_eval_runs(s, run_id=run.id, benchmark="math500")]
    finally:
        engine.dispose()
    expected = expected_pass_at_1("math500", 2)
    assert sorted(curve) == [(0, 0, pytest.approx(expected)), (30, 3, pytest.approx(expected))]


# ------------------------------------------------------------------ resumption


def _rows(config: Path) -> list[tuple[str, int]]:
    return [(r.item_id, r.sample_index) for _, (_, rows) in store_view(config).items() for r in rows]


def _run_until_rows(config: Path, args: list[str], more_than: int, sig: int) -> subprocess.CompletedProcess:
    """Start `omniopd eval`, wait until the store holds more than `more_than` rows, send `sig`."""
    proc = subprocess.Popen([sys.executable, "-m", "omniopd", "eval", "-c", str(config), *args], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + wait_left(120)
        while len(_rows(config)) <= more_than:
            assert proc.poll() is None, f"finished before it could be interrupted: {proc.communicate()}"
            assert time.monotonic() < deadline, "no progress within 120 s"
            time.sleep(0.02)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=wait_left(60))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_an_interrupted_evaluation_resumes_without_grading_anything_twice(tmp_path: Path, start_teacher) -> None:
    # 1 s per answer, one at a time: 12 s of generation, so the signals land mid-run even on a
    # loaded machine (at 200 ms CI once saw all 12 answers written before the first signal).
    teacher = start_teacher(ttft_ms=1000)
    config = make_config(tmp_path, samples=4, batch_samples=2, endpoint_concurrency=1)
    args = ["-b", "math500", "--endpoint", teacher.url, "--name", "resumed"]
    total = 3 * 4

    first = _run_until_rows(config, args, 0, signal.SIGINT)
    assert first.returncode == 130 and "rerun the same command to resume" in first.stderr
    after_first = _rows(config)
    second = _run_until_rows(config, args, len(after_first), signal.SIGKILL)
    assert second.returncode == -signal.SIGKILL
    after_kill = _rows(config)
    assert len(after_first) < len(after_kill) < total
    assert len(set(after_kill)) == len(after_kill)

    served_before = len(teacher.seeds())
    final = omniopd("eval", "-c", str(config), *args)
    assert final.returncode == 0, final.stderr[-3000:]
    assert f"resumed/math500: {total - len(after_kill)} generated, {len(after_kill)} from the store" in final.stdout
    assert len(teacher.seeds()) - served_before == total - len(after_kill)  # only the missing samples
    rows = _rows(config)
    assert sorted(rows) == sorted((i, r) for i in ITEMS["math500"] for r in range(4))

    clean = evaluate_here(config, "math500", endpoint=teacher.url, name="uninterrupted")
    resumed = json.loads(results_json(final.stdout).read_text())["benchmarks"]["math500"]["score"]
    uninterrupted = json.loads(clean.read_text())["benchmarks"]["math500"]["score"]
    assert resumed == uninterrupted
    assert resumed["pass_at_1"] == pytest.approx(expected_pass_at_1("math500", 4))


# ------------------------------------------------------------------ compare


def test_eval_compare_reports_paired_differences_from_files_and_from_the_store(tmp_path: Path, start_teacher) -> None:
    teacher = start_teacher()
    config = make_config(tmp_path, samples=4)
    file_a = evaluate_here(config, "math500", endpoint=teacher.url, name="seed-a")
    file_b = evaluate_here(config, "math500", endpoint=teacher.url, name="seed-b", overrides=("run.seed=5",))
    score_a = BenchmarkScore.from_dict(json.loads(file_a.read_text())["benchmarks"]["math500"]["score"])
    score_b = BenchmarkScore.from_dict(json.loads(file_b.read_text())["benchmarks"]["math500"]["score"])
    want = paired_difference(score_a, score_b)
    assert score_b.pass_at_1 == pytest.approx(expected_pass_at_1("math500", 4, seed=5))
    with pytest.raises(ValueError, match=r"already holds samples drawn with seed=5 \(now 11\)"):  # a reused --name never mixes
        evaluate_here(config, "math500", endpoint=teacher.url, name="seed-b")

    by_file = omniopd("eval", "compare", str(file_a), str(file_b))
    assert by_file.returncode == 0, by_file.stderr
    row = next(line for line in by_file.stdout.splitlines() if line.startswith("| MATH-500"))
    assert row == (f"| MATH-500 | {100 * score_a.pass_at_1:.2f} | {100 * score_b.pass_at_1:.2f} | "
                   f"{100 * want.value:+.2f} [{100 * want.ci_low:+.2f}, {100 * want.ci_high:+.2f}] | 3 |")

    by_key = omniopd("eval", "compare", "seed-a", "seed-b/math500", "-c", str(config), "--json")
    assert by_key.returncode == 0, by_key.stderr
    (diff,) = json.loads(by_key.stdout)["benchmarks"]
    assert (diff["difference"], diff["ci_low"], diff["ci_high"], diff["n_items"]) == pytest.approx(
        (want.value, want.ci_low, want.ci_high, 3))

    from db.session import make_engine, make_session_factory
    from eval.report import load_store_scores

    engine = make_engine(f"sqlite:///{tmp_path / 'run' / 'omniopd.db'}")
    try:
        with make_session_factory(engine, read_only=True).begin() as s, pytest.raises(LookupError, match="no-such-tag"):
            load_store_scores(s, "no-such-tag")
    finally:
        engine.dispose()
