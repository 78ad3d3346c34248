"""What auditing a trajectory costs, before (`omniopd plan`) and during (`omniopd spend`) a run.

The paper's Appendix B counts, per student trajectory of L tokens after a prompt of P
tokens, with M chunks of C tokens and N teacher continuations per chunk:

    teacher input  ~ M x (P + L/2)        (each chunk's prefix; chunks spread over the answer)
    teacher output ~ M x N x C

`appendix_b_tokens` is that formula as the paper writes it. `forecast_trajectory` prices
the same decomposition the way a provider actually bills it:

- requests per chunk: N continuations go out in ceil(N / n_max) requests (Anthropic has
  no `n`: N requests; Gemini at most 8 candidates per request; OpenAI and vLLM one), and
  every request pays for its whole input;
- prompt caching by the provider's rules (`CacheRule`, the same rules the emulator
  enforces; both read them from the provider registry, omniopd/providers.py):
  explicit (Anthropic): the first request of a chunk reads the previous chunk's prefix and
  writes the rest (at the cache-write price), the other requests read the whole prefix;
  a prefix shorter than the model's minimum is never cached. Implicit (OpenAI, Gemini,
  vLLM): a request reads the longest cached boundary (minimum, then steps) of what an
  earlier request sent — the previous chunk's prefix, or, for requests sent after the
  first one of the chunk started, the whole prefix;
- output: N continuations of `output_tokens` each. Teachers asked to continue a partial
  answer rarely stop early, so `output_tokens` should be what the audit asks for
  (ceil(C x max_new_tokens_factor), `requested_output_tokens`), not C.

Chunk j of M (0-based) is placed at L x (j + 1/2) / M, so the mean prefix is L/2 as in the
paper. Token counts are teacher tokens; a student tokenizer that is much denser or
sparser than the teacher's makes the forecast off by that ratio.

Pure: numbers in, numbers out (no config objects, no I/O); `forecast_inputs` in
workers/ or the CLI turns a config into these arguments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from omniopd.providers import CacheRule, provider_spec
from omniopd.teachers.pricing import Price, cost_usd
from omniopd.teachers.prompting import INSTRUCTION_TAIL, instruction_head
from omniopd.teachers.tokens import count_tokens
from omniopd.teachers.types import Usage

CHAT_OVERHEAD_TOKENS = 8
"""Role markers around a one-turn chat (prefill and raw modes), in teacher tokens."""


def cache_rule(kind: str, model: str, enabled: bool = True) -> CacheRule:
    """The caching rule of a provider kind and model (omniopd/providers.py). `enabled` is
    the teacher's `cache` setting: it switches off explicit caching (Anthropic breakpoints);
    implicit caching (OpenAI, Gemini, vLLM) happens whatever the client does."""
    rule = provider_spec(kind).cache_rule(model)
    return CacheRule("none") if rule.style == "explicit" and not enabled else rule


def requests_per_chunk(kind: str, n: int) -> int:
    """HTTP requests that return N continuations (no retries)."""
    return math.ceil(n / provider_spec(kind).max_candidates)


def first_request_alone(kind: str, cache: bool) -> bool:
    """Whether the other requests of a chunk wait for the first to start (and so hit its cache)."""
    return cache and provider_spec(kind).first_request_alone


def mode_overhead_tokens(mode: str) -> int:
    """Teacher-side tokens around the prompt and prefix for a continuation mode."""
    if mode == "instruction":
        return count_tokens(instruction_head("") + INSTRUCTION_TAIL)
    return CHAT_OVERHEAD_TOKENS


def requested_output_tokens(c: int, max_new_tokens_factor: float) -> int:
    """What the audit asks the teacher for per continuation of a C-token chunk."""
    return math.ceil(c * max_new_tokens_factor)


def appendix_b_tokens(m: int, n: int, c: int, prompt_tokens: float, trajectory_tokens: float) -> tuple[float, float]:
    """Appendix B of the paper: (teacher input, teacher output) tokens per trajectory,
    M x (P + L/2) and M x N x C."""
    return m * (prompt_tokens + trajectory_tokens / 2), float(m * n * c)


@dataclass(frozen=True)
class TrajectoryForecast:
    """Teacher tokens and cost of auditing one trajectory (floats: expectations).
    input + cached_input + cache_write = every input token billed."""

    chunks: int
    requests: int
    input_tokens: float
    cached_input_tokens: float
    cache_write_tokens: float
    output_tokens: float
    cost_usd: float
    paper_input_tokens: float
    paper_output_tokens: float

    @property
    def cache_hit_rate(self) -> float | None:
        total = self.input_tokens + self.cached_input_tokens + self.cache_write_tokens
        return self.cached_input_tokens / total if total else None

    def times(self, trajectories: float) -> TrajectoryForecast:
        """The same forecast for `trajectories` trajectories (a run)."""
        k = trajectories
        return TrajectoryForecast(
            self.chunks, self.requests, self.input_tokens * k, self.cached_input_tokens * k, self.cache_write_tokens * k,
            self.output_tokens * k, self.cost_usd * k, self.paper_input_tokens * k, self.paper_output_tokens * k,
        )


def forecast_trajectory(
    *,
    m: int,
    n: int,
    c: int,
    prompt_tokens: float,
    trajectory_tokens: float,
    output_tokens: float,
    kind: str,
    cache: CacheRule,
    price: Price,
    first_alone: bool,
    overhead_tokens: float = 0.0,
    ends_with_answer: bool = False,
) -> TrajectoryForecast:
    """Appendix B's decomposition, billed by a provider's requests and caching rules.

    m, n, c: chunks per trajectory, continuations per chunk, tokens per chunk; prompt_tokens:
    the task as the teacher sees it; trajectory_tokens: L; output_tokens: per continuation;
    overhead_tokens: template or instruction framing per request (`mode_overhead_tokens`).
    ends_with_answer: a teacher continuing the trajectory stops where the answer ends, so a
    continuation from chunk j (at L x (j + 0.5) / chunks) writes about the L x (1 - (j + 0.5)
    / chunks) tokens left, capped by `output_tokens` and at least C; False: every
    continuation writes its full allowance (a teacher that never ends early).
    A trajectory shorter than M x C holds only floor(L / C) non-overlapping chunks.
    """
    if min(m, n, c) < 1 or trajectory_tokens < 0 or prompt_tokens < 0 or output_tokens < 0:
        raise ValueError("m, n, c must be >= 1 and token counts >= 0")
    chunks = max(1, min(m, int(trajectory_tokens // c))) if trajectory_tokens >= 1 else 0
    r = requests_per_chunk(kind, n)
    uncached = read = written = 0.0
    previous = 0.0  # the previous chunk's prefix, as the provider saw it
    output = 0.0
    for j in range(chunks):
        per = output_tokens
        if ends_with_answer:
            per = min(output_tokens, max(trajectory_tokens * (1 - (j + 0.5) / chunks), min(c, output_tokens)))
        output += n * per
        x = prompt_tokens + overhead_tokens + trajectory_tokens * (j + 0.5) / chunks
        # First request: what the previous chunk left in the cache.
        hit = cache.boundary(previous)
        write = x - hit if cache.style == "explicit" and x >= cache.min_tokens else 0.0
        read += hit
        written += write
        uncached += x - hit - write
        # The other requests: the whole prefix once the first one started, else the same as the first.
        later = cache.boundary(x) if first_alone else hit
        read += (r - 1) * later
        uncached += (r - 1) * (x - later)
        previous = x
    usage = Usage(input=round(uncached), cached_input=round(read), cache_write=round(written), output=round(output))
    paper_in, paper_out = appendix_b_tokens(m, n, c, prompt_tokens, trajectory_tokens)
    return TrajectoryForecast(
        chunks=chunks,
        requests=chunks * r,
        input_tokens=uncached,
        cached_input_tokens=read,
        cache_write_tokens=written,
        output_tokens=output,
        cost_usd=cost_usd(usage, price),
        paper_input_tokens=paper_in,
        paper_output_tokens=paper_out,
    )


def paper_cost_usd(m: int, n: int, c: int, prompt_tokens: float, trajectory_tokens: float, price: Price) -> float:
    """Appendix B's token counts at the teacher's list prices (no caching, one request per chunk)."""
    paper_in, paper_out = appendix_b_tokens(m, n, c, prompt_tokens, trajectory_tokens)
    return cost_usd(Usage(input=round(paper_in), output=round(paper_out)), price)
