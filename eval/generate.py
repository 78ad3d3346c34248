"""Generation for evaluation: k samples per item from a local checkpoint or any
OpenAI-compatible endpoint, so students and teachers get comparable rows.

    generator = LocalGenerator(config, "runs/x/ckpt-100", sampling)     # hf or vllm (config.rollout.backend)
    generator = EndpointGenerator("http://127.0.0.1:8000/v1", "Qwen/Qwen3-32B", sampling,
                                  api="chat", api_key_env="TEACHER_KEY")
    completions = generator.generate([Request("math500", "test/1", 0, prompt, seed), ...])

A `Request` is one sample: the benchmark prompt (Table 7 for math, `code_prompt` for
code) and the sample's seed, `eval.results.sample_seed(run.seed, item_id, r)`, so the k
samples of an item differ and a rerun draws the same ones.

- Local: the prompt is the user turn of the model's chat template (assistant turn
  opened), rendered by `omniopd.rollout.prompts` exactly as training renders it. The
  engine derives its own random stream from the seed (`derive_seed(seed, 0)`): the
  same seed gives the same sample on one backend, different ones on hf and vllm.
- Endpoint: one request per sample (`n: 1`) carrying `seed`; `/chat/completions` (the
  server applies the model's chat template) or `/completions` (the prompt as is). A
  server that ignores `seed` (hosted APIs mostly do) still samples k independent
  answers; only reruns are then not reproducible. Up to `concurrency` requests are in
  flight; 429, 5xx, timeouts, unreadable bodies and connection errors are retried with
  exponential backoff (honouring Retry-After); other 4xx fail at once with the server's
  message. The API key is read from the environment variable named by `api_key_env`
  and never appears in a message (servers that echo it back are redacted).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from omniopd.config import OmniConfig


@dataclass(frozen=True)
class Request:
    """One sample to draw: sample `sample_index` of item `item_id`, with its seed."""

    benchmark: str
    item_id: str
    sample_index: int
    prompt: str
    """The user message (benchmark prompt); backends wrap it in a chat template."""
    seed: int


@dataclass(frozen=True)
class Completion:
    """A generated response. Invariant: `refused` is None, or `text` is empty and the
    sample was never generated (it is graded wrong with `refused` as its reason)."""

    text: str
    finish_reason: str | None = None
    completion_tokens: int | None = None
    refused: str | None = None


@dataclass(frozen=True)
class SamplingSettings:
    """Sampling of an evaluation (config `eval.temperature`, `eval.top_p`, `eval.max_new_tokens`)."""

    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0


class Generator(Protocol):
    """Draws one completion per request, in order. `model` names what was evaluated."""

    model: str

    def generate(self, requests: Sequence[Request]) -> list[Completion]: ...

    def close(self) -> None: ...


# ------------------------------------------------------------------ local checkpoints


class LocalGenerator:
    """A checkpoint on the configured rollout backend (`rollout.backend`: hf or vllm),
    sampling only (`build_engine(..., scoring=False)`). Prompts longer than
    `max_prompt_tokens` are refused (never cut: a cut problem is another problem)."""

    def __init__(self, config: OmniConfig, model_path: str, sampling: SamplingSettings, *, max_prompt_tokens: int) -> None:
        self.model = str(model_path)
        self.sampling = sampling
        self.max_prompt_tokens = max_prompt_tokens
        self._config = config
        self._engine: Any = None

    @property
    def engine(self) -> Any:
        """The engine, started on first use (a fully resumed evaluation never loads the model)."""
        if self._engine is None:
            from omniopd.rollout import build_engine

            self._engine = build_engine(self._config, self.model, scoring=False,
                                        max_model_len=self.max_prompt_tokens + self.sampling.max_new_tokens)
        return self._engine

    def generate(self, requests: Sequence[Request]) -> list[Completion]:
        from omniopd.rollout import Sampling, render_prompts

        # "none": the benchmark prompt is already the user message (Table 7 applied for math).
        rendered, refused = render_prompts(
            self.engine.tokenizer, [(i, r.prompt) for i, r in enumerate(requests)], "none", self.max_prompt_tokens
        )
        out: list[Completion | None] = [None] * len(requests)
        for exc in refused:
            out[exc.problem_id] = Completion("", refused=f"prompt_too_long: {exc.n_tokens} tokens > {exc.limit}")
        if rendered:
            sampling = Sampling(self.sampling.max_new_tokens, self.sampling.temperature, self.sampling.top_p)
            generations = self.engine.generate(
                [p.token_ids for p in rendered], 1, sampling, seeds=[requests[p.problem_id].seed for p in rendered]
            )
            for p, g in zip(rendered, generations, strict=True):
                out[p.problem_id] = Completion(g.text, g.finish_reason, len(g.token_ids))
        return [c for c in out if c is not None]

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()


# ------------------------------------------------------------------ OpenAI-compatible endpoints


class EndpointError(RuntimeError):
    """A request failed for good (a 4xx other than 429, or retries exhausted)."""


RETRYABLE = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 529})


def endpoint_urls(url: str, api: str) -> tuple[str, str]:
    """(base URL ending in /v1, the generation URL) from what a user passes: a server
    (`http://host:8000`), its API base (`.../v1`) or a full `.../completions` URL."""
    url = url.rstrip("/")
    for suffix, kind in (("/chat/completions", "chat"), ("/completions", "completions")):
        if url.endswith(suffix):
            if kind != api:
                raise ValueError(f"--endpoint {url} is a {kind} URL but eval.endpoint_api is {api!r}")
            return url[: -len(suffix)], url
    base = url if url.endswith("/v1") else url + "/v1"
    return base, base + ("/chat/completions" if api == "chat" else "/completions")


class EndpointGenerator:
    """Samples from an OpenAI-compatible server (vLLM, SGLang, OpenAI, the teacher emulator)."""

    def __init__(
        self,
        url: str,
        model: str | None,
        sampling: SamplingSettings,
        *,
        api: str = "chat",
        api_key_env: str | None = None,
        concurrency: int = 16,
        retries: int = 6,
        timeout_s: float = 900.0,
        backoff_s: float = 0.5,
    ) -> None:
        if api not in ("chat", "completions"):
            raise ValueError(f"api must be chat or completions, got {api!r}")
        self.base, self.url = endpoint_urls(url, api)
        self.api, self.sampling = api, sampling
        self.concurrency, self.retries, self.timeout_s, self.backoff_s = concurrency, retries, timeout_s, backoff_s
        self._key: str | None = None
        if api_key_env:
            self._key = os.environ.get(api_key_env)
            if not self._key:
                raise ValueError(f"--api-key-env {api_key_env}: the environment variable is not set or empty")
        self.model = model or asyncio.run(self._served_model())
        self.requests_sent = 0  # HTTP attempts, retries included

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._key}"} if self._key else {}

    async def _served_model(self) -> str:
        import aiohttp

        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
                session.get(self.base + "/models", headers=self._headers()) as resp,
            ):
                body = await resp.json(content_type=None)
            return str(body["data"][0]["id"])
        except Exception as exc:
            raise EndpointError(
                f"could not list the models served at {self.base}/models ({type(exc).__name__}); "
                "pass the model name with --endpoint-model"
            ) from None

    def body(self, request: Request) -> dict[str, Any]:
        s = self.sampling
        body: dict[str, Any] = {"model": self.model, "max_tokens": s.max_new_tokens, "temperature": s.temperature,
                                "top_p": s.top_p, "seed": request.seed, "n": 1}
        if self.api == "chat":
            body["messages"] = [{"role": "user", "content": request.prompt}]
        else:
            body["prompt"] = request.prompt
        return body

    def generate(self, requests: Sequence[Request]) -> list[Completion]:
        return asyncio.run(self._generate_all(requests))

    async def _generate_all(self, requests: Sequence[Request]) -> list[Completion]:
        import aiohttp

        limit = asyncio.Semaphore(self.concurrency)
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        connector = aiohttp.TCPConnector(limit=self.concurrency)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            tasks = [asyncio.create_task(self._one(session, limit, r)) for r in requests]
            try:
                return list(await asyncio.gather(*tasks))
            except BaseException:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise

    async def _one(self, session: Any, limit: asyncio.Semaphore, request: Request) -> Completion:
        import aiohttp

        body, problem = self.body(request), ""
        for attempt in range(self.retries + 1):
            wait: float | None = None
            try:
                async with limit:
                    self.requests_sent += 1
                    async with session.post(self.url, json=body, headers=self._headers()) as resp:
                        text = await resp.text()
                        if resp.status == 200:
                            parsed = self._parse(text)
                            if parsed is not None:
                                return parsed
                            problem = "an unreadable 200 response"
                        elif resp.status in RETRYABLE:
                            problem = f"HTTP {resp.status}"
                            wait = _retry_after(resp.headers)
                        else:
                            raise EndpointError(
                                f"{self.url} answered HTTP {resp.status} for item {request.item_id!r}: "
                                f"{self._redact(text)[:500]}"
                            )
            except (TimeoutError, aiohttp.ClientError) as exc:
                problem = f"{type(exc).__name__}"  # never str(exc): it can carry request details
            if attempt == self.retries:
                break
            backoff = min(60.0, self.backoff_s * 2**attempt) * (0.5 + random.random())
            await asyncio.sleep(max(backoff, wait or 0.0))
        raise EndpointError(
            f"{self.url}: item {request.item_id!r} sample {request.sample_index} failed after "
            f"{self.retries + 1} attempts (last: {problem}); rerun the same command to resume"
        )

    def _parse(self, text: str) -> Completion | None:
        try:
            body = json.loads(text)
            choice = body["choices"][0]
            if self.api == "chat":
                content = choice["message"].get("content") or ""
            else:
                content = choice["text"] or ""
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            return None
        usage = body.get("usage") or {}
        return Completion(str(content), choice.get("finish_reason"), usage.get("completion_tokens"))

    def close(self) -> None:
        pass


def _retry_after(headers: Any) -> float | None:
    """Seconds to wait from `retry-after-ms` (OpenAI) or `retry-after` (seconds), if sent."""
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is not None:
            try:
                return max(0.0, float(value) * scale)
            except ValueError:
                return None  # an HTTP date: fall back to our own backoff
    return None
