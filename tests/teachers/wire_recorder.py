"""A local HTTP server that records every request (method, path, headers, JSON body) and
answers with a minimal valid response of the provider's wire format, so the same request
can be captured from OmniOPD's adapter and from an official SDK and compared. No network."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from omniopd.teachers.emulator.server import EmulatorThread


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    """Lower-cased names."""
    body: dict[str, Any]


def _openai(path: str, body: dict[str, Any]) -> dict[str, Any]:
    n = int(body.get("n") or 1)
    usage = {"prompt_tokens": 5, "completion_tokens": n, "total_tokens": 5 + n}
    if path.endswith("/chat/completions"):
        choices = [{"index": i, "message": {"role": "assistant", "content": "x"}, "finish_reason": "stop"} for i in range(n)]
        return {"id": "c", "object": "chat.completion", "created": 0, "model": body.get("model"), "choices": choices, "usage": usage}
    choices = [{"index": i, "text": "x", "finish_reason": "stop"} for i in range(n)]
    return {"id": "c", "object": "text_completion", "created": 0, "model": body.get("model"), "choices": choices, "usage": usage}


def _anthropic_message(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "msg_1", "type": "message", "role": "assistant", "model": body.get("model"),
        "content": [{"type": "text", "text": "x"}], "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 5, "output_tokens": 1, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
    }


def _anthropic_stream(body: dict[str, Any]) -> bytes:
    message = {**_anthropic_message(body), "content": [], "stop_reason": None}
    events = [
        ("message_start", {"message": message}),
        ("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "x"}}),
        ("content_block_stop", {"index": 0}),
        ("message_delta", {"delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": {"output_tokens": 1}}),
        ("message_stop", {}),
    ]
    return b"".join(f"event: {k}\ndata: {json.dumps({'type': k, **d})}\n\n".encode() for k, d in events)


def _gemini(body: dict[str, Any]) -> dict[str, Any]:
    n = int((body.get("generationConfig") or {}).get("candidateCount") or 1)
    candidates = [{"content": {"role": "model", "parts": [{"text": "x"}]}, "finishReason": "STOP", "index": i} for i in range(n)]
    return {"candidates": candidates, "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": n, "totalTokenCount": 5 + n}}


class WireRecorder(EmulatorThread):
    """`with WireRecorder() as rec: ... rec.url ... rec.requests` (a server on its own loop
    in a background thread, like the emulator, so synchronous SDK calls can reach it)."""

    def __init__(self) -> None:
        super().__init__(config=None)  # type: ignore[arg-type]
        self.requests: list[Recorded] = []

    def _run(self) -> None:  # the emulator thread's loop, serving this app instead
        import asyncio

        async def handle(request: web.Request) -> web.StreamResponse:
            raw = await request.read()
            body = json.loads(raw) if raw else {}
            self.requests.append(Recorded(request.method, request.path, {k.lower(): v for k, v in request.headers.items()}, body))
            path = request.path
            if path.endswith(":generateContent"):
                return web.json_response(_gemini(body))
            if path.endswith("/v1/messages"):
                if body.get("stream"):
                    return web.Response(body=_anthropic_stream(body), content_type="text/event-stream")
                return web.json_response(_anthropic_message(body))
            return web.json_response(_openai(path, body))

        async def main() -> None:
            self._stop = asyncio.Event()
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", handle)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self._ready.set()
            try:
                await self._stop.wait()
            finally:
                await runner.cleanup()

        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(main())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
        finally:
            self._loop.close()

    def take(self) -> list[Recorded]:
        """The requests recorded so far, and forget them."""
        taken, self.requests = self.requests, []
        return taken
