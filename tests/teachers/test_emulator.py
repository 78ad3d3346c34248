"""The emulator's own rules: prompt-cache accounting, rate limits with each provider's
429 signals, request validation, generators."""

from __future__ import annotations

import json
import urllib.request

import aiohttp
import pytest

from omniopd.teachers.emulator import scripted
from omniopd.teachers.emulator.cache import PromptCache
from omniopd.teachers.emulator.generators import echo, lorem
from omniopd.teachers.tokens import count_tokens
from tests.teachers.conftest import run

# ------------------------------------------------------------------ caches


def test_explicit_cache_writes_once_and_reads_only_after_the_writer_started():
    cache = PromptCache("explicit", min_tokens=10)
    blocks = [("<|user|>\n", None), ("word " * 20, 300.0)]
    first = cache.explicit("m", blocks, now=0.0)
    assert (first.read, first.write) == (0, first.total)
    concurrent = cache.explicit("m", blocks, now=0.5)  # before the writer's response started
    assert (concurrent.read, concurrent.write) == (0, concurrent.total)
    cache.publish(first.pending, available_at=1.0)
    later = cache.explicit("m", blocks, now=1.0)
    assert (later.read, later.write, later.uncached) == (first.total, 0, 0)


def test_explicit_cache_ignores_prefixes_below_the_minimum_and_expires():
    cache = PromptCache("explicit", min_tokens=100, ttl_s=300)
    short = cache.explicit("m", [("a " * 20, 300.0)], now=0.0)
    assert short.write == 0 and short.pending == ()
    long_blocks = [("a " * 200, 300.0)]
    cache.publish(cache.explicit("m", long_blocks, now=0.0).pending, 0.0)
    assert cache.explicit("m", long_blocks, now=299.0).read > 0  # hit refreshes the TTL
    assert cache.explicit("m", long_blocks, now=598.0).read > 0
    assert cache.explicit("m", long_blocks, now=2000.0).read == 0  # expired


def test_one_hour_breakpoints_outlive_five_minute_ones_and_are_counted_apart():
    cache = PromptCache("explicit", min_tokens=10)
    blocks = [("a " * 50, 3600.0), ("b " * 50, 300.0)]
    head = count_tokens(blocks[0][0])
    first = cache.explicit("m", blocks, now=0.0)
    assert first.write == first.total and first.write_long == head  # the stretch closed by the 1h breakpoint
    cache.publish(first.pending, 0.0)
    later = cache.explicit("m", blocks, now=1000.0)  # the 5-minute entry expired, the hour one did not
    assert (later.read, later.write, later.write_long) == (head, first.total - head, 0)


def test_implicit_cache_hits_in_increments_past_the_minimum():
    cache = PromptCache("implicit", min_tokens=1024, granularity=128)
    text = "t " * 1500  # 1500 emulator tokens
    cache.publish(cache.implicit("m", text, 0.0).pending, 0.0)
    assert cache.implicit("m", text, 1.0).read == 1024 + 3 * 128  # largest step <= 1500
    other = "t " * 1100 + "different " * 400
    assert cache.implicit("m", other, 1.0).read == 1024  # shared 1100 tokens -> 1024 step
    assert cache.implicit("m", "t " * 1000, 1.0).read == 0  # below the minimum
    assert cache.implicit("other-model", text, 1.0).read == 0


# ------------------------------------------------------------- rate limits


async def post(url: str, body: dict, headers: dict) -> tuple[int, dict, dict]:
    async with aiohttp.ClientSession() as session, session.post(url, json=body, headers=headers) as resp:
        return resp.status, {k.lower(): v for k, v in resp.headers.items()}, json.loads(await resp.read())


def test_openai_limits_answer_429_with_ratelimit_headers(emulator):
    emu = emulator("openai", generator=scripted(["x"]), limits={"requests_per_min": 120, "burst_s": 1.0})  # 2 fit
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    auth = {"authorization": "Bearer k"}
    statuses = [run(post(f"{emu.url}/v1/chat/completions", body, auth)) for _ in range(3)]
    assert [s for s, _, _ in statuses] == [200, 200, 429]
    _, ok_headers, _ = statuses[0]
    assert ok_headers["x-ratelimit-limit-requests"] == "120" and ok_headers["x-ratelimit-remaining-requests"] == "1"
    _, headers, err = statuses[2]
    assert err["error"]["code"] == "rate_limit_exceeded"
    assert float(headers["retry-after-ms"]) > 0 and "x-ratelimit-reset-requests" in headers


def test_anthropic_429_has_retry_after_and_reset_timestamps(emulator):
    emu = emulator("anthropic", generator=scripted(["x"]), limits={"input_tokens_per_min": 60, "burst_s": 1.0})
    body = {"model": "m", "max_tokens": 2, "messages": [{"role": "user", "content": "one two three"}]}
    auth = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    assert run(post(f"{emu.url}/v1/messages", body, auth))[0] == 200  # a full bucket admits it
    status, headers, err = run(post(f"{emu.url}/v1/messages", body, auth))  # ...and is now in debt
    assert status == 429 and err["error"]["type"] == "rate_limit_error"
    assert int(headers["retry-after"]) >= 1
    assert headers["anthropic-ratelimit-input-tokens-limit"] == "60"
    assert headers["anthropic-ratelimit-input-tokens-reset"].endswith("Z")


def test_anthropic_input_limit_leaves_cache_reads_out(emulator):
    # 2,000 input tokens a minute: three 1,500-token requests fit only because the second and
    # third read their prefix from the cache (current Claude models do not count reads).
    emu = emulator("anthropic", generator=scripted(["x"]), limits={"input_tokens_per_min": 2000})
    blocks = [{"type": "text", "text": "w " * 1500, "cache_control": {"type": "ephemeral"}}]
    body = {"model": "claude-opus-4-8", "max_tokens": 2, "messages": [{"role": "user", "content": blocks}]}
    headers = {"x-api-key": "k", "anthropic-version": "2026-10-21"}
    answers = [run(post(f"{emu.url}/v1/messages", body, headers)) for _ in range(3)]
    assert [status for status, _, _ in answers] == [200, 200, 200]
    assert [a[2]["usage"]["cache_read_input_tokens"] > 1400 for a in answers] == [False, True, True]


def test_gemini_429_carries_retry_info_and_per_day_quota_is_distinguishable(emulator):
    emu = emulator("gemini", generator=scripted(["x"]), limits={"requests_per_min": 60, "burst_s": 1.0, "daily_requests": 2})
    url = f"{emu.url}/v1beta/models/gemini-2.5-flash:generateContent"
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    key = {"x-goog-api-key": "k"}
    first = run(post(url, body, key))
    second = run(post(url, body, key))
    assert first[0] == 200 and second[0] == 429
    details = second[2]["error"]["details"]
    assert any(d["@type"].endswith("RetryInfo") and d["retryDelay"].endswith("s") for d in details)
    assert "retry-after" not in {k.lower() for k in second[1]}  # Gemini sends no headers
    import time

    time.sleep(1.05)
    third = run(post(url, body, key))  # the second used up the day (2 admitted requests)
    assert third[0] == 429
    quota = next(d for d in third[2]["error"]["details"] if d["@type"].endswith("QuotaFailure"))
    assert "PerDay" in quota["violations"][0]["quotaId"]


def test_no_retry_after_option_omits_it(emulator):
    emu = emulator("openai", generator=scripted(["x"]), limits={"requests_per_min": 60, "burst_s": 1.0, "retry_after": False})
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    run(post(f"{emu.url}/v1/chat/completions", body, {"authorization": "Bearer k"}))
    status, headers, _ = run(post(f"{emu.url}/v1/chat/completions", body, {"authorization": "Bearer k"}))
    assert status == 429 and "retry-after" not in headers and "retry-after-ms" not in headers


# -------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "messages,expected",
    [
        ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a "}], "trailing whitespace"),
        ([{"role": "assistant", "content": "a"}], "first message"),
        ([{"role": "user", "content": "  "}], "non-whitespace"),
        ([{"role": "user", "content": [{"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}] * 5}], "maximum of 4"),
    ],
)
def test_anthropic_rejects_what_the_real_api_rejects(emulator, messages, expected):
    emu = emulator("anthropic")
    status, _, err = run(post(f"{emu.url}/v1/messages", {"model": "m", "max_tokens": 4, "messages": messages}, {"x-api-key": "k", "anthropic-version": "2023-06-01"}))
    assert status == 400 and expected in err["error"]["message"]


def test_gemini_rejects_more_than_eight_candidates(emulator):
    emu = emulator("gemini")
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "generationConfig": {"candidateCount": 9}}
    status, _, err = run(post(f"{emu.url}/v1beta/models/g:generateContent", body, {"x-goog-api-key": "k"}))
    assert status == 400 and "candidate_count" in err["error"]["message"]


def test_prompt_longer_than_the_context_window_is_rejected(emulator):
    emu = emulator("openai_compat", context_window=50)
    status, _, _ = run(post(f"{emu.url}/v1/completions", {"model": "m", "prompt": "w " * 60, "max_tokens": 1}, {}))
    assert status == 400


# --------------------------------------------------------------- generators


def test_generated_texts_are_cut_to_max_tokens_and_at_stop_sequences(emulator):
    emu = emulator("openai_compat", generator=scripted(["one two three four five", "alpha STOP beta"]))
    body = {"model": "m", "prompt": "p", "max_tokens": 3, "n": 2, "stop": ["STOP"]}
    _, _, data = run(post(f"{emu.url}/v1/completions", body, {}))
    assert [c["text"] for c in data["choices"]] == ["one two three", "alpha "]
    assert [c["finish_reason"] for c in data["choices"]] == ["length", "stop"]


def test_lorem_is_seeded_and_exactly_max_tokens_long():
    a, b = lorem(1), lorem(1)
    assert a("p", 2, 7, 1.0, 5) == b("p", 2, 7, 1.0, 5)
    assert all(count_tokens(t) == 7 for t in a("p", 3, 7, 1.0, None))
    assert echo("a b c d", 1, 2, None, None) == [" c d"]


def test_stats_endpoint_counts_requests_and_usage(emulator):
    emu = emulator("openai_compat", generator=scripted(["x y"]), faults={"script": ["500"]})
    for _ in range(2):
        run(post(f"{emu.url}/v1/completions", {"model": "m", "prompt": "p q", "max_tokens": 5}, {}))
    with urllib.request.urlopen(f"{emu.url}/_emulator/stats?timeline=1") as resp:
        stats = json.loads(resp.read())
    assert stats["by_status"] == {"500": 1, "200": 1}
    assert stats["usage"]["output"] == 2 and len(stats["timeline"]) == 2
