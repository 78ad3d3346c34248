"""The cost forecast: the paper's Appendix B counts, and a provider-aware forecast that
matches what our adapters are billed by the emulator's cache rules."""

from __future__ import annotations

import asyncio
import math

import pytest

from omniopd.config import DEFAULT_CONTINUATION
from omniopd.teachers.client import RetryPolicy
from omniopd.teachers.emulator import EmulatorConfig, EmulatorThread, lorem
from omniopd.teachers.forecast import (
    CacheRule,
    appendix_b_tokens,
    cache_rule,
    first_request_alone,
    forecast_trajectory,
    mode_overhead_tokens,
    requests_per_chunk,
)
from omniopd.teachers.pricing import Price, cost_usd
from omniopd.teachers.providers import PROVIDERS
from omniopd.teachers.tokens import tokenize
from omniopd.teachers.types import ApiKey, Usage

PRICE = Price(input=1.0, cached_input=0.1, cache_write=1.25, output=5.0)


@pytest.mark.parametrize("m,c,expected_input", [(5, 50, 16_850), (10, 25, 33_700), (10, 50, 33_700), (20, 50, 67_400)])
def test_appendix_b_input_matches_table_8(m, c, expected_input):
    # Table 8 (N = 10 rows): L ~ 6,340 student tokens after a 200-token prompt.
    assert appendix_b_tokens(m, 10, c, 200, 6340)[0] == pytest.approx(expected_input)


def test_appendix_b_output_is_the_texts_m_n_c():
    # Appendix B: "For M = 10, N = 20, C = 50, this is exactly 10,000 decode tokens". (Table 8's
    # output column is 2 x M x N x C throughout; we follow the formula the text states.)
    assert appendix_b_tokens(10, 20, 50, 200, 6340)[1] == 10_000


def test_requests_per_chunk_follow_each_providers_n_limit():
    assert [requests_per_chunk(k, 10) for k in ("openai_compat", "openai", "anthropic", "gemini")] == [1, 1, 10, 2]
    assert requests_per_chunk("openai", 129) == 2


def test_implicit_cache_hits_in_boundaries_and_never_below_the_minimum():
    rule = CacheRule("implicit", 1024, 128)
    assert [rule.boundary(x) for x in (1023, 1024, 1151, 1152, 5000)] == [0, 1024, 1024, 1152, 4992]
    assert CacheRule("explicit", 4096).boundary(4095) == 0 and CacheRule("none").boundary(10**6) == 0


def test_a_short_trajectory_holds_fewer_chunks_and_a_run_scales_linearly():
    fc = forecast_trajectory(m=10, n=4, c=50, prompt_tokens=100, trajectory_tokens=120, output_tokens=75, kind="openai",
                             cache=cache_rule("openai", "m"), price=PRICE, first_alone=False)
    assert fc.chunks == 2 and fc.requests == 2 and fc.output_tokens == 2 * 4 * 75
    run = fc.times(10)
    assert run.cost_usd == pytest.approx(10 * fc.cost_usd) and run.input_tokens == pytest.approx(10 * fc.input_tokens)


def test_anthropic_caching_is_cheaper_than_none_above_the_models_minimum():
    kwargs = dict(m=10, n=10, c=50, prompt_tokens=200, trajectory_tokens=6340, output_tokens=75, kind="anthropic", price=PRICE)
    on = forecast_trajectory(**kwargs, cache=cache_rule("anthropic", "claude-haiku-4-5"), first_alone=True)
    off = forecast_trajectory(**kwargs, cache=cache_rule("anthropic", "claude-haiku-4-5", enabled=False), first_alone=False)
    assert on.cost_usd < 0.6 * off.cost_usd and on.cache_hit_rate > 0.5 and off.cache_hit_rate == 0
    # Table 8 counts one prefill per chunk; Anthropic sends N requests, each paying for its input.
    assert off.input_tokens + off.cached_input_tokens == pytest.approx(10 * on.paper_input_tokens, rel=0.05)


# ---------------------------------------------------- against the emulator's billing

M, N, C, L, P = 4, 10, 20, 3000, 150


def _trajectories(count: int) -> list[tuple[str, list[str]]]:
    """Prompts of P tokens and student answers of L tokens, chunks where the forecast puts them."""
    out = []
    for seed in range(count):
        gen = lorem(seed)
        prompt = gen("prompt", 1, P, 1.0, seed)[0].strip()
        student = tokenize(gen("student", 1, L, 1.0, seed + 100)[0])
        out.append((prompt, ["".join(student[: int(L * (j + 0.5) / M)]) for j in range(M)]))
    return out


async def _audit(kind: str, model: str, url: str, cache: bool, trajectories, max_new: int) -> tuple[Usage, str]:
    mode = DEFAULT_CONTINUATION[kind]
    client = PROVIDERS[kind](model=model, base_url=url, api_key=ApiKey("k" * 20), mode=mode, cache=cache,
                             retry=RetryPolicy(2, 0.01, 0.05))
    total = Usage()
    async with client:
        for prompt, prefixes in trajectories:
            for prefix in prefixes:  # ascending position, as the audit does
                total = total + (await client.continue_prefix(prompt, prefix, N, max_new)).usage
    return total, mode


@pytest.mark.parametrize("kind,model", [
    ("anthropic", "claude-sonnet-4-5"), ("anthropic", "claude-haiku-4-5"), ("openai", "gpt-4.1-mini"), ("gemini", "gemini-2.5-flash"),
])
@pytest.mark.parametrize("cache", [True, False])
def test_forecast_matches_what_the_emulator_bills_our_adapters(kind, model, cache):
    trajectories = _trajectories(2)
    max_new = math.ceil(C * 1.5)
    # Requests of one chunk sent together must all arrive before the first one starts
    # answering (and publishes its cache entries), as the forecast assumes: a slower first token.
    concurrent = requests_per_chunk(kind, N) > 1 and not first_request_alone(kind, cache)
    with EmulatorThread(EmulatorConfig(provider=kind, latency={"ttft_s": 0.15 if concurrent else 0.005})) as emu:
        usage, mode = asyncio.run(_audit(kind, model, emu.url, cache, trajectories, max_new))
    billed = cost_usd(usage, PRICE) / len(trajectories)
    fc = forecast_trajectory(
        m=M, n=N, c=C, prompt_tokens=P, trajectory_tokens=L, output_tokens=max_new, kind=kind,
        cache=cache_rule(kind, model, cache), price=PRICE, first_alone=first_request_alone(kind, cache),
        overhead_tokens=mode_overhead_tokens(mode),
    )
    assert fc.cost_usd == pytest.approx(billed, rel=0.03)
    assert fc.cached_input_tokens == pytest.approx(usage.cached_input / len(trajectories), rel=0.03, abs=1)
    assert fc.output_tokens == usage.output / len(trajectories)
