"""Fixtures for teacher tests: an emulator per test (in a background thread), and a
clean slate for the process-wide prefill fallbacks and prefix memory."""

from __future__ import annotations

import asyncio
from contextlib import ExitStack

import pytest

from omniopd.teachers import client as client_module
from omniopd.teachers import prompting
from omniopd.teachers.emulator import EmulatorConfig, EmulatorThread
from omniopd.teachers.providers import PROVIDERS
from omniopd.teachers.types import ApiKey

KEY = "test-key-0123456789abcdef"


@pytest.fixture(autouse=True)
def _fresh_process_state():
    client_module._MODE_FALLBACK.clear()
    prompting.PREFIXES._items.clear()
    yield
    client_module._MODE_FALLBACK.clear()
    prompting.PREFIXES._items.clear()


@pytest.fixture
def emulator():
    """`emulator(provider, generator=None, **config)` -> a running EmulatorThread."""
    with ExitStack() as stack:

        def start(provider: str, generator=None, **config) -> EmulatorThread:
            cfg = EmulatorConfig(provider=provider, **config)
            return stack.enter_context(EmulatorThread(cfg, generator))

        yield start


def make_client(kind: str, url: str, *, model: str = "m", mode: str | None = None, key: str = KEY, **kwargs):
    """A client of `kind` against the emulator at `url` (retries fast by default)."""
    from omniopd.config import DEFAULT_CONTINUATION
    from omniopd.teachers.client import RetryPolicy

    kwargs.setdefault("retry", RetryPolicy(max_retries=4, backoff_base_s=0.01, backoff_max_s=0.05))
    kwargs.setdefault("timeout_s", 10.0)
    return PROVIDERS[kind](model=model, base_url=url, api_key=ApiKey(key), mode=mode or DEFAULT_CONTINUATION[kind], **kwargs)


def run(coro):
    return asyncio.run(coro)


async def call(client, prompt="Q: what is 2+2?", prefix="The answer is ", n=3, max_new_tokens=8, **kwargs):
    async with client:
        return await client.continue_prefix(prompt, prefix, n, max_new_tokens, **kwargs)
