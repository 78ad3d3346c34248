"""lm-eval integration: our task YAMLs on local files, our graders in process_results,
all k repeats graded, and distinct per-sample seeds through `omniopd-completions`."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from eval.lmeval.taskgen import write_task_dir
from eval.results import sample_seed
from tests.http_stand_in import serving

ROOT = Path(__file__).parents[2]
DATA = Path(__file__).parent / "data"


def test_checked_in_task_yamls_are_the_generators_output(tmp_path: Path) -> None:
    written = write_task_dir(tmp_path, shim=False)
    checked_in = sorted((ROOT / "eval" / "lmeval").glob("omniopd_*.yaml"))
    assert [p.name for p in checked_in] == sorted(p.name for p in written)
    for path in written:
        assert path.read_text() == (ROOT / "eval" / "lmeval" / path.name).read_text(), (
            f"{path.name} is stale: regenerate with write_task_dir('eval/lmeval', shim=False)")


# ------------------------------------------------------------------ a seed-honouring completions server


class _Completions(BaseHTTPRequestHandler):
    """Fake OpenAI-compatible /v1/completions and /v1/chat/completions: the text depends only
    on the seed, as a seeded sampler's would; every payload is recorded."""

    payloads: list[dict]

    def do_POST(self) -> None:
        payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.payloads.append(payload)  # type: ignore[attr-defined]
        text = f"Work.\nAnswer: {payload['seed'] % 3}"
        choice = ({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                  if self.path.endswith("/chat/completions") else {"index": 0, "text": text, "finish_reason": "stop"})
        body = json.dumps({"choices": [choice], "usage": {"prompt_tokens": 1, "completion_tokens": 3}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def completions_server() -> Iterator[ThreadingHTTPServer]:
    with serving(_Completions) as server:
        server.payloads = []  # type: ignore[attr-defined]
        yield server


def _url(server: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/v1/completions"


def test_omniopd_completions_sends_each_repeat_its_own_seed(completions_server: ThreadingHTTPServer) -> None:
    from lm_eval.api.instance import Instance
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    from eval.lmeval.model import OmniCompletions

    def requests() -> list[Instance]:
        out = []
        for doc_id, item in enumerate(["m1", "m2"]):
            inst = Instance("generate_until", {"id": item}, (f"prompt {item}", {"until": [], "max_gen_toks": 8}), 0, ("t", doc_id, 3))
            out += [inst] * 3  # lm-eval's repeats: the same Instance k times
        return out

    args = {"base_url": _url(completions_server), "model": "fake", "tokenizer_backend": None, "tokenized_requests": False, "seed": 1234}
    LocalCompletionsAPI(**args).generate_until(requests(), disable_tqdm=True)
    assert len({p["seed"] for p in completions_server.payloads}) == 1  # the problem being fixed
    completions_server.payloads.clear()
    texts = OmniCompletions(**args).generate_until(requests(), disable_tqdm=True)
    sent = [(p["prompt"], p["seed"]) for p in completions_server.payloads]
    expected = [(f"prompt {item}", sample_seed(1234, item, r)) for item in ["m1", "m2"] for r in range(3)]
    assert sorted(sent) == sorted(expected)
    assert texts == [f"Work.\nAnswer: {seed % 3}" for _, seed in expected]


def test_lm_eval_runs_our_task_with_k_seeded_samples_and_our_grader(completions_server: ThreadingHTTPServer, tmp_path: Path) -> None:
    """In-process simple_evaluate: the generated task reads local files and every one of the
    k samples reaches process_results (the server answers `seed % 3`, so the exact Pass@1
    is known)."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    import eval.lmeval.model  # noqa: F401  (registers omniopd-completions)
    from eval.lmeval import utils

    data = tmp_path / "data"
    data.mkdir()
    (data / "amc23.jsonl").write_text("\n".join(json.dumps({"id": f"q{i}", "problem": f"P{i}", "answer": str(i % 3)}) for i in range(4)) + "\n")
    write_task_dir(tmp_path / "tasks", samples=5, max_tokens=16, benchmarks=["amc23"])
    try:
        results = lm_eval.simple_evaluate(
            model="omniopd-completions",
            model_args=f"base_url={_url(completions_server)},model=fake,tokenizer_backend=none,tokenized_requests=False,seed=7",
            tasks=["omniopd_amc23"],
            task_manager=TaskManager(include_path=str(tmp_path / "tasks"), include_defaults=False, metadata={"data_dir": str(data)}),
            metadata={"data_dir": str(data)},
            log_samples=True,
        )
    finally:
        utils._close_graders()
    per_doc = {s["doc"]["id"]: s for s in results["samples"]["omniopd_amc23"]}
    assert all(len(s["filtered_resps"][0]) == 5 for s in per_doc.values())
    expected = {f"q{i}": sum(sample_seed(7, f"q{i}", r) % 3 == i % 3 for r in range(5)) / 5 for i in range(4)}
    assert {i: s["pass_at_1"] for i, s in per_doc.items()} == pytest.approx(expected)
    metric = results["results"]["omniopd_amc23"]["pass_at_1,k_samples"]
    assert metric == pytest.approx(sum(expected.values()) / 4)
    assert len(completions_server.payloads) == 20


# ------------------------------------------------------------------ parity with `omniopd eval`


def documented_commands() -> list[list[str]]:
    """The `python -m eval.lmeval run` commands in the code blocks of docs/eval.md, as argument lists."""
    commands, inside, lines = [], False, []
    for line in (ROOT / "docs" / "eval.md").read_text().splitlines():
        if line.startswith("```"):
            inside = not inside
            continue
        if inside:
            lines.append(line)
    for command in "\n".join(lines).replace("\\\n", " ").splitlines():
        if "python -m eval.lmeval run" in command and not command.lstrip().startswith("#"):
            commands.append(shlex.split(command))
    return commands


def test_documented_commands_send_the_prompt_omniopd_eval_sends() -> None:
    """Chat-template use is what `omniopd eval` does: the local checkpoint (`hf`) and the
    chat endpoint apply it, the raw-completions endpoint does not (docs/eval.md, the table)."""
    by_model = {argv[argv.index("--model") + 1]: argv for argv in documented_commands()}
    assert set(by_model) == {"hf", "omniopd-chat-completions", "omniopd-completions"}
    assert "--apply_chat_template" in by_model["hf"]
    assert "--apply_chat_template" in by_model["omniopd-chat-completions"]
    assert "--apply_chat_template" not in by_model["omniopd-completions"]
    assert "/v1/chat/completions" in " ".join(by_model["omniopd-chat-completions"])


def _omniopd_eval(tmp_path: Path, data: Path, *, model: str = "", endpoint: str | None = None, samples: int,
                  max_new_tokens: int, temperature: float, seed: int = 7) -> dict[str, list]:
    """`omniopd eval` in this process (eval.runner, what the CLI calls) on `data`/math500.jsonl;
    item id -> its stored results, in sample order."""
    from db.migrate import upgrade
    from db.repo_eval import eval_results, list_eval_runs
    from db.session import make_engine, make_session_factory
    from eval.runner import Target, evaluate_config
    from omniopd.config import load_config

    tmp_path.mkdir(parents=True, exist_ok=True)
    config = tmp_path / "omniopd.yaml"
    config.write_text(yaml.safe_dump({
        "run": {"name": "parity", "seed": seed, "output_dir": str(tmp_path / "run")},
        "student": {"path": model, "device": "cpu"}, "rollout": {"backend": "hf"},
        "eval": {"data_dir": str(data), "samples": samples, "max_new_tokens": max_new_tokens,
                 "temperature": temperature, "grading_workers": 1, "pass_at_k": [1]},
    }))
    engine = make_engine(f"sqlite:///{tmp_path / 'run' / 'omniopd.db'}")
    try:
        upgrade(engine)
        target = Target(model=model) if endpoint is None else Target(endpoint=endpoint, endpoint_model="fake")
        evaluate_config(load_config(config), config, "math500", target)
        with make_session_factory(engine, read_only=True).begin() as s:
            (run,) = list_eval_runs(s)
            rows = eval_results(s, eval_run_id=run.id)
    finally:
        engine.dispose()
    out: dict[str, list] = {}
    for row in rows:
        out.setdefault(row.item_id, []).append(row)
    return out


@pytest.mark.slow
def test_documented_hf_command_agrees_with_omniopd_eval_item_by_item_on_a_checkpoint(
    tiny_model_dir: str, tmp_path: Path
) -> None:
    """The local-checkpoint command of docs/eval.md, as written there (paths, task and token
    budget substituted), on the tiny chat model, greedy: lm-eval sends every item the very
    prompt text `omniopd eval --model` renders (chat template, assistant turn opened), gets
    the same completion, and the two give the same verdict. Without `--apply_chat_template`
    the prompts differ and this fails."""
    from omniopd.models.loading import load_tokenizer
    from omniopd.rollout.prompts import render_text

    data = tmp_path / "data"
    data.mkdir()
    (data / "math500.jsonl").write_text((DATA / "ours_math.jsonl").read_text())
    ours = _omniopd_eval(tmp_path, data, model=tiny_model_dir, samples=1, max_new_tokens=8, temperature=0.0)

    (argv,) = [a for a in documented_commands() if a[a.index("--model") + 1] == "hf"]
    tasks, out = tmp_path / "tasks", tmp_path / "out"
    write_task_dir(tasks, samples=1, temperature=0.0, max_tokens=8, benchmarks=["math500"])
    substitute = {"--tasks": "omniopd_math500", "--metadata": f"data_dir={data}", "--gen_kwargs": "max_gen_toks=8",
                  "--model_args": f"pretrained={tiny_model_dir},dtype=float32"}
    argv = argv[argv.index("python"):]  # without the environment assignments in front
    argv = [substitute.get(argv[i - 1], a) if i else a for i, a in enumerate(argv)]
    assert argv[:4] == ["python", "-m", "eval.lmeval", "run"]
    argv = [sys.executable, *argv[1:], "--include_path", str(tasks), "--device", "cpu", "--batch_size", "3",
            "--output_path", str(out), "--log_samples"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "OMNIOPD_GRADING_WORKERS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (samples_file,) = out.rglob("samples_omniopd_math500_*.jsonl")
    theirs = {row["doc"]["id"]: row for row in map(json.loads, samples_file.read_text().splitlines())}

    tokenizer = load_tokenizer(tiny_model_dir)
    assert sorted(theirs) == sorted(ours) == ["m1", "m2", "m3"]
    for item_id, row in theirs.items():
        (result,) = ours[item_id]
        assert row["arguments"]["gen_args_0"]["arg_0"] == render_text(tokenizer, row["doc"]["prompt"], "none"), item_id
        assert row["filtered_resps"][0] == [result.completion], item_id
        assert row["pass_at_1"] == float(result.correct), item_id


def test_chat_completions_command_sends_the_requests_of_omniopd_eval_endpoint(
    completions_server: ThreadingHTTPServer, tmp_path: Path
) -> None:
    """`omniopd-chat-completions --apply_chat_template` against a recording server sends, for
    every (item, sample), the messages, seed and sampling of `omniopd eval --endpoint` (chat
    API, the default), and the two give the same Pass@1 per item."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    import eval.lmeval.model  # noqa: F401  (registers the omniopd models)
    from eval.lmeval import utils

    data = tmp_path / "data"
    data.mkdir()
    (data / "math500.jsonl").write_text((DATA / "ours_math.jsonl").read_text())
    base = _url(completions_server).removesuffix("/v1/completions")
    ours = _omniopd_eval(tmp_path / "ours", data, endpoint=base, samples=4, max_new_tokens=32, temperature=1.0)

    def requests() -> list[tuple]:
        keep = ("messages", "prompt", "seed", "temperature", "top_p", "max_tokens")
        return sorted(json.dumps({k: p.get(k) for k in keep}, sort_keys=True) for p in completions_server.payloads)

    sent_by_ours = requests()
    completions_server.payloads.clear()
    write_task_dir(tmp_path / "tasks", samples=4, max_tokens=32, benchmarks=["math500"])
    try:
        results = lm_eval.simple_evaluate(
            model="omniopd-chat-completions",
            model_args=f"base_url={base}/v1/chat/completions,model=fake,seed=7",
            tasks=["omniopd_math500"], apply_chat_template=True,
            task_manager=TaskManager(include_path=str(tmp_path / "tasks"), include_defaults=False,
                                     metadata={"data_dir": str(data)}),
            metadata={"data_dir": str(data)}, log_samples=True,
        )
    finally:
        utils._close_graders()
    assert requests() == sent_by_ours and len(sent_by_ours) == 12
    per_doc = {s["doc"]["id"]: s["pass_at_1"] for s in results["samples"]["omniopd_math500"]}
    assert per_doc == {i: sum(r.correct for r in rows) / 4 for i, rows in ours.items()}


# ------------------------------------------------------------------ the documented command against a real server


@pytest.mark.slow
@pytest.mark.sandbox
def test_lm_eval_cli_grades_math_and_code_tasks_of_an_emulated_teacher_with_per_request_seeds(
    tmp_path: Path, start_teacher, bwrap: str
) -> None:
    """`python -m eval.lmeval run --model omniopd-completions` against the provider emulator
    as a server process: every repeat reaches the server with sample_seed(seed, id, r), and
    the code task grades through the sandboxed CodeGrader (Pass@1 is known exactly)."""
    from tests.eval.scripted_teacher import expected_correct

    teacher = start_teacher()
    data = tmp_path / "data"
    data.mkdir()
    (data / "math500.jsonl").write_text((DATA / "ours_math.jsonl").read_text())
    (data / "apps.jsonl").write_text((DATA / "ours_code.jsonl").read_text())
    tasks, out, k, seed = tmp_path / "tasks", tmp_path / "out", 3, 7
    write_task_dir(tasks, samples=k, max_tokens=64, benchmarks=["math500", "apps"])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "OMNIOPD_GRADING_WORKERS": "2", "TOKENIZERS_PARALLELISM": "false"}
    model_args = (f"base_url={teacher.url}/v1/completions,model=scripted-teacher,tokenizer_backend=none,"
                  f"tokenized_requests=False,num_concurrent=4,seed={seed}")
    proc = subprocess.run(
        [sys.executable, "-m", "eval.lmeval", "run", "--model", "omniopd-completions", "--model_args", model_args,
         "--tasks", "omniopd_math500,omniopd_apps", "--include_path", str(tasks), "--metadata", f"data_dir={data}",
         "--output_path", str(out), "--log_samples"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    items = {"math500": ["m1", "m2", "m3"], "apps": ["c1", "c2", "c3"]}
    assert sorted(teacher.seeds()) == sorted((i, sample_seed(seed, i, r)) for ids in items.values() for i in ids for r in range(k))
    (results_file,) = out.rglob("results_*.json")
    results = json.loads(results_file.read_text())["results"]
    for bench, ids in items.items():
        expected = sum(expected_correct(i, sample_seed(seed, i, r)) for i in ids for r in range(k)) / (len(ids) * k)
        assert results[f"omniopd_{bench}"]["pass_at_1,k_samples"] == pytest.approx(expected)
