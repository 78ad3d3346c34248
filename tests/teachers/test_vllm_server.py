"""Waiting for a teacher's vLLM server: every way it can fail names the URL and the model.
The server here is a small HTTP stand-in answering /health and /v1/models as vLLM does;
tests/teachers/test_vllm_teacher.py runs the real one."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler

import pytest

from omniopd.teachers.vllm_server import (
    TeacherServerError,
    server_command,
    server_env,
    wait_until_serving,
)
from tests.http_stand_in import serving


class _StandIn(BaseHTTPRequestHandler):
    served: tuple[str, ...] = ()
    healthy = True

    def do_GET(self):
        if self.path == "/health" and self.healthy:
            body, status = b"", 200
        elif self.path == "/v1/models":
            body, status = json.dumps({"object": "list", "data": [{"id": m, "object": "model"} for m in self.served]}).encode(), 200
        else:
            body, status = b"", 503
        self.send_response(status)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def stand_in():
    with serving(_StandIn) as server:
        yield server


def test_a_served_model_is_found(stand_in):
    _StandIn.served, _StandIn.healthy = ("demo-teacher",), True
    url = f"http://127.0.0.1:{stand_in.server_port}/v1"
    assert wait_until_serving(url, "demo-teacher", timeout_s=5) < 5


def test_an_unknown_model_name_is_refused_with_what_is_served(stand_in):
    _StandIn.served, _StandIn.healthy = ("Qwen/Qwen3-32B",), True
    url = f"http://127.0.0.1:{stand_in.server_port}/v1"
    with pytest.raises(TeacherServerError) as err:
        wait_until_serving(url, "demo-teacher", timeout_s=5)
    message = str(err.value)
    assert url in message and "'demo-teacher'" in message and "'Qwen/Qwen3-32B'" in message


def test_a_server_that_never_becomes_healthy_times_out_naming_url_and_model(stand_in):
    _StandIn.healthy = False
    url = f"http://127.0.0.1:{stand_in.server_port}/v1"
    with pytest.raises(TeacherServerError, match="did not answer within 1 s") as err:
        wait_until_serving(url, "demo-teacher", timeout_s=1)
    assert url in str(err.value) and "'demo-teacher'" in str(err.value)


def test_a_server_process_that_dies_is_reported_at_once_with_its_log(tmp_path):
    log = tmp_path / "teacher.log"
    log.write_text("INFO loading\nValueError: bad model directory\n")
    with pytest.raises(TeacherServerError) as err:
        wait_until_serving("http://127.0.0.1:9/v1", "demo-teacher", timeout_s=60, alive=lambda: 1, log=log)
    message = str(err.value)
    assert "exited with code 1" in message and "http://127.0.0.1:9/v1" in message
    assert "bad model directory" in message and str(log) in message


def test_the_server_command_and_environment():
    command = server_command("/models/t", port=8123, served_name="demo-teacher", max_model_len=512,
                             extra=["--enforce-eager"])
    assert command[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    joined = " ".join(command)
    for part in ("--model /models/t", "--port 8123", "--served-model-name demo-teacher", "--max-model-len 512",
                 "--host 127.0.0.1", "--enforce-eager"):
        assert part in joined
    assert server_env({}, kvcache_gb=2)["VLLM_CPU_KVCACHE_SPACE"] == "2"
    assert server_env({"VLLM_CPU_KVCACHE_SPACE": "4"})["VLLM_CPU_KVCACHE_SPACE"] == "4"  # the caller's wins
