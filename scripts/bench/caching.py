"""Billed teacher cost per trajectory with prompt caching on vs off, per provider.

The paper's Appendix B setting: M chunks per trajectory, N continuations per chunk, C
tokens per chunk, a student trajectory of L tokens after a ~200-token prompt. Each
trajectory's chunks are audited in ascending position (as the audit task does), through
our adapters, against the emulator's cache accounting by each provider's rules, and
priced with configs/prices.yaml from the usage the emulator reports.

"off" is what the same calls cost with no caching at all (emulator cache disabled, no
Anthropic breakpoints); "on" is our client with caching against each provider's rules
(Anthropic: explicit breakpoints, 4,096-token minimum on haiku-4-5, first request alone;
OpenAI: automatic >= 1,024 tokens in 128-token steps; Gemini: implicit >= 1,024).
Also prints the cost relative to standard SFT (200 input + 8,000 output tokens per
sample at the same prices) next to the paper's Table 8 effort figure (1.75x at M=10,
N=10, C=50), and the ratio between the two.

    .venv/bin/python scripts/bench/caching.py            # all providers, 3 trajectories
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from omniopd.providers import PROVIDER_SPECS
from omniopd.teachers.client import RetryPolicy
from omniopd.teachers.emulator import EmulatorConfig, EmulatorThread, lorem
from omniopd.teachers.pricing import cost_usd, load_prices
from omniopd.teachers.providers import PROVIDERS
from omniopd.teachers.tokens import tokenize
from omniopd.teachers.types import ApiKey, Usage

MODELS = {"anthropic": "claude-haiku-4-5", "openai": "gpt-4.1-mini", "gemini": "gemini-2.5-flash"}
PAPER_EFFORT = 1.75  # Table 8, M=10, N=10, C=50
SFT_TOKENS = (200, 8000)  # Table 8: standard SFT teacher input / output per sample


def trajectory(rng: random.Random, prompt_tokens: int, length: int, m: int, c: int) -> tuple[str, list[str]]:
    """A prompt and the student prefixes before each of M non-overlapping chunks."""
    gen = lorem(rng.randrange(1 << 30))
    prompt = gen("prompt", 1, prompt_tokens, 1.0, rng.randrange(1 << 30))[0].strip()
    student = tokenize(gen("student", 1, length, 1.0, rng.randrange(1 << 30))[0])
    starts: list[int] = []
    while len(starts) < m:
        s = rng.randrange(0, length - c)
        if all(abs(s - t) >= c for t in starts):
            starts.append(s)
    return prompt, ["".join(student[:s]) for s in sorted(starts)]


async def audit_trajectories(kind: str, url: str, cache: bool, trajectories, n: int, max_new: int) -> Usage:
    client = PROVIDERS[kind](
        model=MODELS[kind], base_url=url, api_key=ApiKey("bench"), mode=PROVIDER_SPECS[kind].default_continuation,
        cache=cache, retry=RetryPolicy(max_retries=2, backoff_base_s=0.01, backoff_max_s=0.05),
    )
    total = Usage()
    async with client:
        for prompt, prefixes in trajectories:
            for prefix in prefixes:  # ascending position, as the audit task does
                result = await client.continue_prefix(prompt, prefix, n, max_new)
                total = total + result.usage
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--providers", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--trajectories", type=int, default=3)
    parser.add_argument("--m", type=int, default=10, help="chunks per trajectory (M)")
    parser.add_argument("--n", type=int, default=10, help="continuations per chunk (N)")
    parser.add_argument("--c", type=int, default=50, help="tokens per chunk (C)")
    parser.add_argument("--length", type=int, default=6340, help="student tokens per trajectory (L)")
    parser.add_argument("--prompt-tokens", type=int, default=200)
    parser.add_argument("--factor", type=float, default=1.5, help="max new tokens = factor x C (TeacherConfig.max_new_tokens_factor)")
    parser.add_argument("--ttft-ms", type=float, default=20.0, help="emulated time to first token")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    prices = load_prices(Path(__file__).resolve().parents[2] / "configs/prices.yaml")
    rng = random.Random(args.seed)
    trajs = [trajectory(rng, args.prompt_tokens, args.length, args.m, args.c) for _ in range(args.trajectories)]
    max_new = int(args.c * args.factor)
    rows = []
    for kind in args.providers:
        price = prices[MODELS[kind]]
        costs = {}
        for cache in (False, True):
            emu_cfg = EmulatorConfig(provider=kind, cache={"enabled": cache}, latency={"ttft_s": args.ttft_ms / 1000})
            with EmulatorThread(emu_cfg) as emu:
                usage = asyncio.run(audit_trajectories(kind, emu.url, cache, trajs, args.n, max_new))
            costs[cache] = (cost_usd(usage, price) / len(trajs), usage)
        sft = cost_usd(Usage(input=SFT_TOKENS[0], output=SFT_TOKENS[1]), price)
        off, on = costs[False][0], costs[True][0]
        # The most caching could save: every input token of the uncached run read from cache.
        plain = costs[False][1]
        floor = cost_usd(Usage(cached_input=plain.total_input, output=plain.output, reasoning=plain.reasoning), price) / len(trajs)
        rows.append((kind, MODELS[kind], off, on, 1 - on / off, 1 - floor / off, on / sft, on / sft / PAPER_EFFORT, costs[True][1], len(trajs)))

    print(f"M={args.m} N={args.n} C={args.c} L={args.length} prompt={args.prompt_tokens} max_new={max_new}, {args.trajectories} trajectories")
    print(f"{'provider':<10} {'model':<18} {'off $/traj':>10} {'on $/traj':>10} {'saved':>7} {'bound':>7} {'on/SFT':>7} {'/1.75x':>7}  tokens per trajectory with caching on")
    for kind, model, off, on, saved, bound, rel, ratio, usage, t in rows:
        print(
            f"{kind:<10} {model:<18} {off:>10.4f} {on:>10.4f} {saved:>7.1%} {bound:>7.1%} {rel:>6.2f}x {ratio:>7.2f}  "
            f"in {usage.input // t} cached {usage.cached_input // t} written {usage.cache_write // t} out {usage.output // t}"
        )
    print("bound: the saving if every input token were read from the cache (output is never cached)")
    worst = min(r[4] for r in rows)
    print(f"smallest saving {worst:.1%} (goal >= 40%): {'met' if worst >= 0.40 else 'NOT met'}")


if __name__ == "__main__":
    main()
