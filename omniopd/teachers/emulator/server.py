"""Serving the emulator: the aiohttp app, a blocking `serve` for the CLI, and
`EmulatorThread` (a server on its own event loop in a background thread) for tests and
benchmarks, so synchronous code such as the official clients can call it."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

from aiohttp import web

from omniopd.teachers.emulator import wire_anthropic, wire_gemini, wire_openai
from omniopd.teachers.emulator.config import EmulatorConfig
from omniopd.teachers.emulator.core import WELL_FORMED, Emulator
from omniopd.teachers.emulator.generators import Generate

_WIRES = {"openai": wire_openai, "anthropic": wire_anthropic, "gemini": wire_gemini}
"""Wire module per wire-format family (`ProviderSpec.wire`): a provider speaking an existing
format (another OpenAI-compatible server) needs no new entry."""
HOST = "127.0.0.1"  # the emulator never listens beyond the local machine


@web.middleware
async def _undelivered_if_unwritten(request: web.Request, handler) -> web.StreamResponse:
    """A well-formed 200 is delivered only if it is written: a handler that finished after its
    client gave up (the client's timeout on a loaded machine) writes to a closed connection,
    and its log entry must not say the client read the usage it billed. The body is written
    here (a streamed one by its handler) so that a failed write is seen."""
    WELL_FORMED.set(None)
    try:
        response = await handler(request)
        if WELL_FORMED.get() is not None and not response.prepared:
            await response.prepare(request)
            await response.write_eof()
    except BaseException:  # the client is gone (a failed write, or the handler cancelled)
        entry = WELL_FORMED.get()
        if entry is not None:
            entry.delivered = False
        raise
    return response


def make_app(emu: Emulator) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[_undelivered_if_unwritten])
    app.add_routes(_WIRES[emu.spec.wire].routes(emu))

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(emu.stats(timeline=request.query.get("timeline") == "1"))

    async def reset(request: web.Request) -> web.Response:
        emu.reset()
        return web.json_response({"ok": True})

    app.add_routes([web.get("/_emulator/stats", stats), web.post("/_emulator/reset", reset)])
    return app


async def start(emu: Emulator, port: int = 0) -> tuple[web.AppRunner, int]:
    """Start serving on 127.0.0.1:`port` (0 = any free port); returns the runner and port."""
    # handler_cancellation: a client that gave up (timeout) cancels its hanging handler.
    runner = web.AppRunner(make_app(emu), handler_cancellation=True, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, HOST, port)
    await site.start()
    sockets = site._server.sockets  # type: ignore[union-attr]  # the bound port when port=0
    return runner, sockets[0].getsockname()[1]


def serve(config: EmulatorConfig, port: int, generator: Generate | None = None, ready: Any = None) -> None:
    """Run until interrupted (the `omniopd teacher emulate` command)."""

    async def main() -> None:
        emu = Emulator(config, generator)
        runner, bound = await start(emu, port)
        if ready is not None:
            ready(bound)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


class EmulatorThread:
    """`with EmulatorThread(config) as emu_thread: emu_thread.url ...` — a live emulator for
    the duration of the block; `emulator` gives direct access to its log and state."""

    def __init__(self, config: EmulatorConfig, generator: Generate | None = None, port: int = 0):
        self.config = config
        self.generator = generator
        self.port = port
        self.emulator: Emulator | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stop: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def _run(self) -> None:
        async def main() -> None:
            self._stop = asyncio.Event()
            self.emulator = Emulator(self.config, self.generator)
            runner, self.port = await start(self.emulator, self.port)
            self._ready.set()
            try:
                await self._stop.wait()
            finally:
                await runner.cleanup()

        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(main())
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._ready.set()
        finally:
            self._loop.close()

    def __enter__(self) -> EmulatorThread:
        self._thread = threading.Thread(target=self._run, name="omniopd-emulator", daemon=True)
        self._thread.start()
        self._ready.wait(timeout=30)
        if self._error is not None:
            raise RuntimeError(f"the emulator did not start: {self._error}") from self._error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout=30)
