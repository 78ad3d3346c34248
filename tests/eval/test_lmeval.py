"""lm-eval integration: our task YAMLs on local files, our graders in process_results,
all k repeats graded, and distinct per-sample seeds through `omniopd-completions`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from eval.lmeval.taskgen import write_task_dir
from eval.results import sample_seed

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
    """Fake OpenAI-compatible /v1/completions: the text depends only on the seed, as a
    seeded sampler's would; every payload is recorded."""

    payloads: list[dict]

    def do_POST(self) -> None:
        payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.payloads.append(payload)  # type: ignore[attr-defined]
        body = json.dumps({"choices": [{"index": 0, "text": f"Work.\nAnswer: {payload['seed'] % 3}", "finish_reason": "stop"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def completions_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Completions)
    server.payloads = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


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


# ------------------------------------------------------------------ the documented command, hf backend, tiny model


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway random Qwen3 (hidden 64, 2 layers) with a BPE tokenizer trained here.

    Local to this test until the tiny-model factory (omniopd/models/) lands in this branch."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    out = tmp_path_factory.mktemp("tiny-qwen3")
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [f"Answer: {i} + {i * 3} = {i * 4}. Solve the following math problem step by step." for i in range(200)]
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<|endoftext|>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", unk_token="<unk>", pad_token="<|endoftext|>")
    fast.save_pretrained(out)
    torch.manual_seed(0)
    config = Qwen3Config(vocab_size=len(fast), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, head_dim=16, max_position_embeddings=512, tie_word_embeddings=False,
                         eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id, bos_token_id=fast.eos_token_id)
    Qwen3ForCausalLM(config).save_pretrained(out)
    return out


@pytest.mark.slow
def test_lm_eval_cli_evaluates_a_tiny_model_offline_on_a_local_math_task(tiny_model: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "math500.jsonl").write_text((DATA / "ours_math.jsonl").read_text())
    tasks, out = tmp_path / "tasks", tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "OMNIOPD_GRADING_WORKERS": "2", "TOKENIZERS_PARALLELISM": "false"}
    subprocess.run([sys.executable, "-m", "eval.lmeval", "write-tasks", "--samples", "3", "--max-tokens", "8",
                    "--benchmarks", "math500", "--out", str(tasks)], cwd=ROOT, env=env, check=True, timeout=60)
    proc = subprocess.run(
        [sys.executable, "-m", "eval.lmeval", "run", "--model", "hf", "--model_args", f"pretrained={tiny_model},dtype=float32",
         "--device", "cpu", "--batch_size", "3", "--tasks", "omniopd_math500", "--include_path", str(tasks),
         "--metadata", f"data_dir={data}", "--output_path", str(out), "--log_samples"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (results_file,) = out.rglob("results_*.json")
    metric = json.loads(results_file.read_text())["results"]["omniopd_math500"]["pass_at_1,k_samples"]
    assert 0.0 <= metric <= 1.0  # a random model is (almost surely) wrong; the pipeline is what is tested
    (samples_file,) = out.rglob("samples_omniopd_math500_*.jsonl")
    samples = [json.loads(line) for line in samples_file.read_text().splitlines()]
    assert sorted(s["doc"]["id"] for s in samples) == ["m1", "m2", "m3"]
    assert all(len(s["filtered_resps"][0]) == 3 and "pass_at_1" in s for s in samples)


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
