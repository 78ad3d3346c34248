"""Rate-limit utilisation: 4 audit-like worker processes against one emulated provider
with requests/min and tokens/min limits, shared Redis buckets vs per-process buckets.

Each worker process runs a different number of concurrent audit loops (uneven load, as
real audit workers have); each loop continues a random student prefix N times through
our client, as the audit task does. Two runs in one invocation, against the same
emulator (reset in between):

- shared: every process debits one set of Redis token buckets (omniopd's limiter);
- split (the honest baseline): every process keeps its own in-process buckets with a
  static 1/4 share of each limit: never oversubscribed, no coordination needed;
- per-process: every process keeps its own in-process buckets with the whole limit (the
  naive client-side setup, 4x oversubscribed; shown for the 429s it causes).

Two demand patterns (--scenarios): "steady", every process busy for the whole run; and
"uneven", processes joining and leaving (process 1 busy throughout, process 2 the first
half, process 3 the second half, process 4 the first and third quarters), the case where a
static split strands the share of an idle process and shared buckets should win.

Utilisation = what the emulator served with status 200 per minute / the limit, for the
binding dimension, over the run; 429 share = 429 responses / all responses. Goal:
utilisation >= 0.95 with <= 1% 429s.

    .venv/bin/python scripts/bench/ratelimit.py --duration 45
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

MODEL = "claude-haiku-4-5"
KEY_ENV = "OMNIOPD_BENCH_KEY"


def worker(mode: str, url: str, redis_url: str, prefix: str, limits: dict, loops: int, n: int, duration: float, windows: list, seed: int, ready, go, start_at, out) -> None:
    """One audit-worker process: `loops` concurrent chunk audits for `duration` seconds
    from the common start time (set once every process has imported and is ready), busy
    only inside `windows` (fractions of the run, [(from, to), ...]) and idle outside."""
    from omniopd.config import TeacherConfig
    from omniopd.teachers.build import build_teacher
    from omniopd.teachers.emulator.generators import lorem
    from omniopd.teachers.types import TeacherError

    os.environ[KEY_ENV] = "bench-key"
    cfg = TeacherConfig(
        kind="anthropic", model=MODEL, base_url=url, api_key_env=KEY_ENV, cache=False, timeout_s=30,
        rate_limits={**limits, "max_retries": 8, "backoff_base_s": 0.5, "backoff_max_s": 8},
    )
    rng = random.Random(seed)
    words = lorem(seed)

    async def main() -> dict:
        client = build_teacher(cfg, redis_url=redis_url if mode == "shared" else None, key_prefix=prefix)
        done = {"chunks": 0, "failed": 0, "attempts": 0, "http_429": 0}

        def next_busy(now: float) -> float | None:
            """When this process is (or next becomes) busy; None: not again in this run."""
            for lo, hi in windows:
                t_lo, t_hi = start_at.value + lo * duration, start_at.value + hi * duration
                if now < t_hi:
                    return max(now, t_lo)
            return None

        async def loop() -> None:
            while time.time() < stop_at:
                busy_at = next_busy(time.time())
                if busy_at is None:
                    return
                if busy_at > time.time():
                    await asyncio.sleep(busy_at - time.time())
                    continue
                length = rng.randrange(300, 1500)
                text = words("s", 1, length, 1.0, rng.randrange(1 << 30))[0]
                try:
                    result = await client.continue_prefix("Solve the problem.", text, n, 40)
                    attempts = result.attempts
                    done["chunks"] += 1
                except TeacherError as exc:
                    attempts = exc.partial.attempts if exc.partial else []
                    done["failed"] += 1
                done["attempts"] += len(attempts)
                done["http_429"] += sum(a.http_status == 429 for a in attempts)

        # warm up (imports, HTTP pool, Redis connection) so every process starts on time
        await client.context_window()
        await client.limiter.cooldown_left()
        ready.put(os.getpid())
        await asyncio.to_thread(go.wait)
        stop_at = start_at.value + duration
        await asyncio.sleep(max(0.0, start_at.value - time.time()))
        async with client:
            await asyncio.gather(*(loop() for _ in range(loops)))
        return done

    out.put(asyncio.run(main()))


def emulator_stats(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/_emulator/stats?timeline=1") as resp:
        return json.loads(resp.read())


# Busy windows per process, as fractions of the run.
SCENARIOS = {
    "steady": [[(0.0, 1.0)]] * 4,
    "uneven": [[(0.0, 1.0)], [(0.0, 0.5)], [(0.5, 1.0)], [(0.0, 0.25), (0.5, 0.75)]],
}


def run_mode(mode: str, scenario: str, args, url: str, limits: dict) -> dict:
    urllib.request.urlopen(urllib.request.Request(f"{url}/_emulator/reset", method="POST")).read()
    ctx = mp.get_context("spawn")
    out, ready, go, start = ctx.Queue(), ctx.Queue(), ctx.Event(), ctx.Value("d", 0.0)
    prefix = f"bench-{uuid.uuid4().hex[:8]}:"
    # split: each process configured with its static share of every limit
    own = {k: v / len(args.loops) for k, v in limits.items()} if mode == "split" else limits
    procs = [
        ctx.Process(target=worker, args=(mode, url, args.redis_url, prefix, own, loops, args.n, args.duration,
                                         SCENARIOS[scenario][i], 100 * i + 7, ready, go, start, out))
        for i, loops in enumerate(args.loops)
    ]
    for p in procs:
        p.start()
    for _ in procs:  # every process imported and built its client: start together
        ready.get(timeout=300)
    start_at = start.value = time.time() + 1.0
    stop_at = start_at + args.duration
    go.set()
    results = [out.get(timeout=args.duration + 300) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    stats = emulator_stats(url)
    rows = {}
    # whole run, and steady state (without the first seconds, where every bucket starts full)
    for name, lo in (("run", start_at), ("steady", start_at + args.warmup_s)):
        t_lo, t_hi = lo - stats["wall_t0"], stop_at - stats["wall_t0"]
        window = [e for e in stats["timeline"] if t_lo <= e[0] < t_hi]
        ok = [e for e in window if e[2] == 200]
        served = {"requests": len(ok), "input": sum(e[3] for e in ok), "output": sum(e[4] for e in ok)}
        util = {
            dim: served[dim] / (limits[key] * (t_hi - t_lo) / 60.0)
            for dim, key in (("requests", "requests_per_min"), ("input", "input_tokens_per_min"), ("output", "output_tokens_per_min"))
            if limits.get(key)
        }
        rows[name] = {"util": util, "binding": max(util.values()), "responses": len(window),
                      "share_429": sum(e[2] == 429 for e in window) / max(1, len(window))}
    return {
        "mode": mode, "scenario": scenario, **rows["run"], "steady": rows["steady"]["binding"],
        "chunks": sum(r["chunks"] for r in results), "failed": sum(r["failed"] for r in results),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=45.0, help="seconds per mode")
    parser.add_argument("--rpm", type=float, default=600.0, help="requests per minute limit")
    parser.add_argument("--itpm", type=float, default=480_000.0, help="input tokens per minute limit")
    parser.add_argument("--otpm", type=float, default=60_000.0, help="output tokens per minute limit")
    parser.add_argument("--n", type=int, default=4, help="continuations per chunk (Anthropic: one request each)")
    parser.add_argument("--loops", type=int, nargs=4, default=[2, 4, 6, 8], help="concurrent audits in each of the 4 processes")
    parser.add_argument("--emulator-burst-s", type=float, default=5.0, help="depth of the emulator's buckets (providers: 60 s; smaller = stricter)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--warmup-s", type=float, default=5.0, help="seconds excluded from the steady-state utilisation")
    parser.add_argument("--modes", nargs="+", default=["shared", "split", "per-process"], choices=["shared", "split", "per-process"])
    parser.add_argument("--repeats", type=int, default=1, help="repeats of every (scenario, mode); median [min, max]")
    parser.add_argument("--scenarios", nargs="+", default=["steady", "uneven"], choices=sorted(SCENARIOS))
    args = parser.parse_args()

    limits = {"requests_per_min": args.rpm, "input_tokens_per_min": args.itpm, "output_tokens_per_min": args.otpm}
    emu_config = {
        "provider": "anthropic", "limits": {**limits, "burst_s": args.emulator_burst_s},
        "latency": {"ttft_s": 0.15, "ttft_jitter_s": 0.1, "per_token_s": 0.002}, "cache": {"enabled": False},
    }
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
        json.dump(emu_config, fh)  # JSON is YAML
    emu = subprocess.Popen(
        [sys.executable, "-m", "omniopd", "teacher", "emulate", "--provider", "anthropic", "--port", "0", "--emulator-config", fh.name],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True,
    )
    try:
        line = emu.stdout.readline()
        url = line.split(" on ")[1].split()[0]
        runs = [run_mode(mode, scenario, args, url, limits)
                for _ in range(args.repeats) for scenario in args.scenarios for mode in args.modes]
    finally:
        emu.send_signal(signal.SIGINT)
        emu.wait(timeout=30)
        os.unlink(fh.name)

    print(f"limits: {args.rpm:.0f} req/min, {args.itpm:.0f} input tok/min, {args.otpm:.0f} output tok/min; "
          f"4 processes x {args.loops} audits, N={args.n}, {args.duration:.0f} s per mode")
    print(f"each cell: median [min, max] over {args.repeats} repeat(s), modes interleaved")
    print(f"{'scenario':<9} {'mode':<12} {'req util':>9} {'in util':>8} {'out util':>9} {'binding':>20} {'steady':>20} "
          f"{'429 share':>10} {'responses':>10} {'chunks':>7} {'failed':>7}")
    rows = []
    for scenario in args.scenarios:
        for mode in args.modes:
            cell = [r for r in runs if r["mode"] == mode and r["scenario"] == scenario]
            med = {dim: statistics.median(r["util"].get(dim, 0.0) for r in cell) for dim in ("requests", "input", "output")}
            row = {"scenario": scenario, "mode": mode, "binding": [r["binding"] for r in cell],
                   "steady": [r["steady"] for r in cell], "share_429": max(r["share_429"] for r in cell)}
            rows.append(row)
            print(f"{scenario:<9} {mode:<12} {med['requests']:>9.3f} {med['input']:>8.3f} {med['output']:>9.3f} "
                  f"{spread(row['binding']):>20} {spread(row['steady']):>20} {row['share_429']:>10.2%} "
                  f"{statistics.median(r['responses'] for r in cell):>10.0f} {statistics.median(r['chunks'] for r in cell):>7.0f} "
                  f"{max(r['failed'] for r in cell):>7}")
    print(f"binding: utilisation of the most used limit over the whole run; steady: the same without the first "
          f"{args.warmup_s:.0f} s; 429 share and failed: the worst repeat")
    for shared in (r for r in rows if r["mode"] == "shared"):
        binding = statistics.median(shared["binding"])
        met = binding >= 0.95 and shared["share_429"] <= 0.01
        split = next((r for r in rows if r["mode"] == "split" and r["scenario"] == shared["scenario"]), None)
        versus = ""
        if split:
            ratios = [a / b for a, b in zip(shared["steady"], split["steady"], strict=True)]
            versus = f"; vs static split: {spread(ratios, '{:.2f}')}x steady utilisation (per repeat)"
        print(f"{shared['scenario']}: shared buckets utilisation {binding:.3f} (goal >= 0.95), "
              f"429 share {shared['share_429']:.2%} (goal <= 1%): {'met' if met else 'NOT met'}{versus}")


def spread(values: list[float], fmt: str = "{:.3f}") -> str:
    """'median [min, max]'."""
    return f"{fmt.format(statistics.median(values))} [{fmt.format(min(values))}, {fmt.format(max(values))}]"


if __name__ == "__main__":
    main()
