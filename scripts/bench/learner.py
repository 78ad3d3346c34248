"""Learner step benchmark (issue 6): throughput on CPU and peak memory of the KL anchor.

Part `throughput`: tokens/s of one real learner step (`Trainer.step`: student forward
with gradients, reference forward, prior + proxy, Eq. 8 loss in slices, backward, clip,
AdamW) on the tiny test student and a ~13M-parameter one, against the baseline every
trainer has: a plain transformers cross-entropy step (`model(input_ids, labels=...)`,
full [B, T, V] logits, backward, AdamW) on the same batch in the same run. Variants:
`omniopd` (beta = 0.1: two forwards), `omniopd beta=0` (no reference forward) and `sft`
style `hf-ce`. tokens/s counts the real tokens the student reads per step (prompt +
completion - 1 per row).

Part `memory`: peak resident memory added by one real OmniOPD step (beta = 0.1) at a long
sequence with Qwen3's vocabulary (V = 151,936) and a small body, so logits dominate as they
do for real models: `sliced` (loss.kl_token_slice x kl_vocab_slice = 512 x 8192) versus
`unsliced` (one block of T x V: the whole [T, V] float32 logits of both models at once).
Each variant runs in a fresh subprocess; VmHWM is reset just before the step
(/proc/self/clear_refs, as in kl_memory.py) and the RSS before the step is subtracted.

    .venv/bin/python scripts/bench/learner.py [--part all|throughput|memory] [--tokens 1024]
        [--steps 3] [--mem-tokens 2048] [--cache DIR]

The part "fraction of learner wall time waiting for bundles in the full loop with an
emulated teacher" needs rollout and audit workers; it is measured at integration.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

MODELS = {  # the same two models as scripts/bench/rollout.py
    "tiny": dict(layers=2, hidden_size=64, heads=2, kv_heads=1, intermediate_size=128, vocab_size=1024),
    "13m": dict(layers=4, hidden_size=256, heads=4, kv_heads=2, intermediate_size=2560, vocab_size=8192),
}
QWEN_VOCAB = 151_936


def build_model(name: str, root: Path) -> Path:
    from omniopd.models.tiny import TinySpec, default_corpus, make_tiny_model

    out = root / name
    if (out / "config.json").is_file():
        return out
    corpus = default_corpus(0, lines=40_000 if MODELS[name]["vocab_size"] > 2048 else 3000)
    return make_tiny_model(out, TinySpec(**MODELS[name]), corpus)


def build_wide_vocab_model(root: Path) -> Path:
    """The tiny body with Qwen3's output vocabulary (random ids; the tiny tokenizer is only
    used for its pad id)."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    out = root / "wide-vocab"
    if (out / "config.json").is_file():
        return out
    tiny = build_model("tiny", root)
    config = Qwen3Config(vocab_size=QWEN_VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=32, tie_word_embeddings=False,
                         max_position_embeddings=8192)
    torch.manual_seed(0)
    Qwen3ForCausalLM(config).save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (tiny / name).is_file():
            shutil.copy(tiny / name, out / name)
    return out


def examples(batch: int, tokens: int, vocab: int, seed: int = 0, prompt: int = 64, teacher_texts=()):
    """`batch` trajectories of `tokens` completion tokens with M = tokens // 100 chunks of C = 50;
    each also carries sampled log-probabilities and a reward group of 2 (rewards 1, 0) for
    objectives that learn from rewards (the others ignore them)."""
    import torch

    from omniopd.objectives.examples import RewardGroup
    from omniopd.train import AuditedChunk, TrainExample

    gen = torch.Generator().manual_seed(seed)
    out = []
    for k in range(batch):
        chunks = tuple(AuditedChunk(s, s + 50, k_sem=float(j % 10), n=10, teacher_texts=tuple(teacher_texts))
                       for j, s in enumerate(range(25, tokens - 50, 100)))
        out.append(TrainExample(k, torch.randint(10, vocab, (prompt,), generator=gen).tolist(),
                                torch.randint(10, vocab, (tokens,), generator=gen).tolist(), chunks,
                                sampled_logprobs=[-10.0] * tokens, group=RewardGroup((1.0, 0.0), k % 2)))
    return out


def config_for(model: Path, **loss):
    from omniopd.config import parse_config

    return parse_config({
        "student": {"path": str(model), "device": "cpu"},
        "learner": {"lr": 1e-4, "batch_size": 2, "max_steps": 1000},
        "loss": {"normalisation": "token", **loss},
    })


def hf_ce_step(model, optimizer, batch) -> None:
    """The baseline: transformers' own loss on the response tokens from full logits."""
    import torch

    from omniopd.objectives.collate import collate
    from omniopd.objectives.examples import Row

    rows = [Row(e.key, e.prompt_ids, e.completion_ids) for e in batch]
    b = collate(rows, pad_id=0)
    labels = torch.full((len(rows), b.input_ids.shape[1] + 1), -100)
    labels[:, 1:][b.response_mask()] = b.targets[b.response_mask()]  # HF shifts labels itself
    out = model(input_ids=b.input_ids, attention_mask=b.attention_mask, labels=labels[:, :-1])
    out.loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def throughput(args: argparse.Namespace, cache: Path) -> list[dict]:
    import torch

    from omniopd.models.loading import load_causal_lm
    from omniopd.train import build_trainer

    torch.manual_seed(0)
    results = []
    for name in ("tiny", "13m"):
        path = build_model(name, cache)
        vocab = MODELS[name]["vocab_size"]
        batches = [examples(2, args.tokens, vocab, seed=s) for s in range(args.steps + 1)]
        forward_tokens = sum(len(e.prompt_ids) + len(e.completion_ids) - 1 for e in batches[0])
        variants = {
            "omniopd": lambda p=path: build_trainer(config_for(p)),
            "omniopd beta=0": lambda p=path: build_trainer(config_for(p, beta=0.0)),
        }
        for variant, make in variants.items():
            trainer = make()
            trainer.step(batches[0])  # warm-up: allocator, AdamW state
            t0 = time.perf_counter()
            for batch in batches[1:]:
                trainer.step(batch)
            seconds = (time.perf_counter() - t0) / args.steps
            results.append(dict(model=name, params=_params(trainer.models.student), variant=variant,
                                step_s=seconds, tokens_per_s=forward_tokens / seconds))
            del trainer
        model = load_causal_lm(str(path), dtype="float32", device="cpu", trainable=True)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        hf_ce_step(model, optimizer, batches[0])
        t0 = time.perf_counter()
        for batch in batches[1:]:
            hf_ce_step(model, optimizer, batch)
        seconds = (time.perf_counter() - t0) / args.steps
        results.append(dict(model=name, params=_params(model), variant="hf-ce (baseline)",
                            step_s=seconds, tokens_per_s=forward_tokens / seconds))
    return results


def _params(model) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------- memory


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def memory_child(args: argparse.Namespace) -> dict:
    import gc

    import torch

    from omniopd.train import build_trainer

    torch.set_num_threads(2)
    model = Path(args.model)
    t = args.mem_tokens
    slices = {"kl_token_slice": 512, "kl_vocab_slice": 8192} if args.child == "sliced" else \
        {"kl_token_slice": t + 64, "kl_vocab_slice": QWEN_VOCAB}
    trainer = build_trainer(config_for(model, beta=0.1, **slices))
    batch = examples(1, t, QWEN_VOCAB)
    gc.collect()
    baseline = _status_kib("VmRSS")
    exact = _reset_peak()
    t0 = time.perf_counter()
    metrics = trainer.step(batch)
    seconds = time.perf_counter() - t0
    peak = _status_kib("VmHWM") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"variant": args.child, "method": "VmHWM after reset" if exact else "ru_maxrss (lifetime)",
            "added_mib": (peak - baseline) / 1024, "seconds": seconds, "loss": metrics.loss,
            "grad_norm": metrics.grad_norm}


def memory(args: argparse.Namespace, cache: Path) -> list[dict]:
    model = build_wide_vocab_model(cache)
    out = []
    for variant in ("sliced", "unsliced"):
        command = [sys.executable, __file__, "--child", variant, "--model", str(model),
                   "--mem-tokens", str(args.mem_tokens)]
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        if done.returncode != 0:
            raise RuntimeError(f"{variant} failed:\n{done.stderr[-3000:]}")
        out.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return out


# ---------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["all", "throughput", "memory"], default="all")
    parser.add_argument("--tokens", type=int, default=1024, help="completion tokens per trajectory (throughput)")
    parser.add_argument("--steps", type=int, default=3, help="measured steps per variant (after one warm-up)")
    parser.add_argument("--mem-tokens", type=int, default=2048, help="completion tokens of the memory step")
    parser.add_argument("--cache", type=Path, default=None, help="directory for the built models (default: temp)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(memory_child(args)))
        return
    cache = args.cache or Path(tempfile.mkdtemp(prefix="omniopd-bench-learner-"))
    cache.mkdir(parents=True, exist_ok=True)
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; models in {cache}")
    if args.part in ("all", "throughput"):
        rows = throughput(args, cache)
        print(f"\nthroughput: batch 2 x (64 prompt + {args.tokens} completion tokens), {args.steps} steps after warm-up")
        print(f"{'model':6} {'params':>10} {'variant':18} {'s/step':>8} {'tokens/s':>10} {'vs hf-ce':>9}")
        for r in rows:
            base = next(x for x in rows if x["model"] == r["model"] and x["variant"].startswith("hf-ce"))
            print(f"{r['model']:6} {r['params']:>10,} {r['variant']:18} {r['step_s']:>8.3f} "
                  f"{r['tokens_per_s']:>10,.0f} {r['tokens_per_s'] / base['tokens_per_s']:>8.2f}x")
    if args.part in ("all", "memory"):
        rows = memory(args, cache)
        print(f"\npeak memory of one OmniOPD step (beta 0.1), T = {args.mem_tokens} + 64, V = {QWEN_VOCAB:,}, hidden 64")
        print(f"{'variant':10} {'added MiB':>10} {'s/step':>8} {'loss':>10}  method")
        for r in rows:
            print(f"{r['variant']:10} {r['added_mib']:>10,.0f} {r['seconds']:>8.2f} {r['loss']:>10.5f}  {r['method']}")
        sliced, unsliced = rows
        print(f"ratio sliced / unsliced memory: {sliced['added_mib'] / unsliced['added_mib']:.3f}; "
              f"same loss: {abs(sliced['loss'] - unsliced['loss']) < 1e-4}")


if __name__ == "__main__":
    main()
