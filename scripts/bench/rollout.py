"""Benchmark the student rollout backends: sampling throughput, the exact-entropy pass, weight reload.

For each model (the tiny test student and a ~13M-parameter one, both built offline with
the tiny factory) and each backend (hf, vllm) it measures, on one workload of P prompts x
n samples x up to M new tokens:

- generation tokens/s, without scoring (the sampler alone) and with the exact-entropy pass
  (one teacher-forced sliced forward, Eq. 6), and the pass as a fraction of generation
  time (goal <= 25%);
- generation with engine top-k logprobs (the `topk` entropy source) for comparison;
- baselines in the same run: transformers' own `model.generate` for the hf sampler, and an
  unsliced full-logits forward for the entropy pass;
- weight reload: hf state-dict load, vLLM `reload_weights` and a vLLM engine restart, each
  followed by the probe check (timed separately).

    .venv/bin/python scripts/bench/rollout.py                     # everything
    .venv/bin/python scripts/bench/rollout.py --backends hf --models tiny --max-new-tokens 64
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

MODELS = {
    # head_dim 32: the smallest head size vLLM's CPU attention supports
    "tiny": dict(layers=2, hidden_size=64, heads=2, kv_heads=1, intermediate_size=128, vocab_size=1024),
    # ~13M parameters: 2 x 8192 x 256 (untied embeddings) + 4 layers of 2.16M
    "13m": dict(layers=4, hidden_size=256, heads=4, kv_heads=2, intermediate_size=2560, vocab_size=8192),
}


def build_model(name: str, root: Path) -> Path:
    from omniopd.models.tiny import TinySpec, default_corpus, make_tiny_model

    out = root / name
    if (out / "config.json").is_file():
        return out
    # a larger corpus so that BPE actually reaches an 8192-token vocabulary
    corpus = default_corpus(0, lines=40_000 if MODELS[name]["vocab_size"] > 2048 else 3000)
    return make_tiny_model(out, TinySpec(**MODELS[name]), corpus)


def perturbed_copy(src: Path, dst: Path, seed: int) -> Path:
    import shutil

    import torch

    from omniopd.models.loading import load_causal_lm

    model = load_causal_lm(str(src), dtype="float32", device="cpu", trainable=True)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.02)
    model.save_pretrained(dst, safe_serialization=True)
    for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        if (src / f).is_file():
            shutil.copy(src / f, dst / f)
    return dst


def n_params(path: Path) -> int:
    from safetensors import safe_open

    total = 0
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        for key in f.keys():  # noqa: SIM118 (safe_open has no __iter__)
            total += _prod(f.get_slice(key).get_shape())
    return total


def _prod(shape) -> int:
    out = 1
    for s in shape:
        out *= s
    return out


def median_time(fn, repeats: int):
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def full_logits_entropy(model, sequences):
    """Baseline entropy pass: whole-sequence logits [L, V] at once, no slicing, one sequence at a time."""
    import torch

    from omniopd.algo.entropy import token_logprobs_and_entropy

    with torch.inference_mode():
        for prompt, completion in sequences:
            ids = torch.tensor([list(prompt) + list(completion)])
            logits = model(ids).logits[0]  # [L, V]
            token_logprobs_and_entropy(logits[len(prompt) - 1 : -1], torch.tensor(list(completion)))


def hf_generate_baseline(engine, prompts, n, max_new_tokens):
    """transformers' model.generate on the same left-padded batch (one global random stream)."""
    import torch

    tok = engine.tokenizer
    batch = tok.pad([{"input_ids": p} for p in prompts for _ in range(n)], return_tensors="pt", padding_side="left")
    with torch.inference_mode():
        out = engine.model.generate(
            **batch, max_new_tokens=max_new_tokens, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
            pad_token_id=tok.pad_token_id, eos_token_id=engine.stop_token_ids,
        )
    new = out[:, batch["input_ids"].shape[1] :]
    return int((new != tok.pad_token_id).sum())


def bench_backend(backend: str, model_dir: Path, args, tmp: Path) -> dict:
    from omniopd.rollout import Sampling, load_version, render_prompts
    from omniopd.rollout.scoring import score_completions

    row: dict = {"backend": backend}
    t0 = time.perf_counter()
    if backend == "hf":
        from omniopd.rollout.hf import HFEngine

        engine = HFEngine(str(model_dir), device="cpu", max_batch_rows=args.prompts * args.samples)
    else:
        from omniopd.rollout.vllm import VllmEngine

        engine = VllmEngine(str(model_dir), max_model_len=args.max_new_tokens + 256, cpu_kvcache_gb=1)
    row["start_s"] = time.perf_counter() - t0
    try:
        questions = [(f"q{i}", f"Compute {17 * i + 3} * {i + 2}, then subtract {i}.") for i in range(args.prompts)]
        prompts, _ = render_prompts(engine.tokenizer, questions, "table7", 256)
        ids = [p.token_ids for p in prompts]
        sampling = Sampling(max_new_tokens=args.max_new_tokens, seed=1)
        engine.generate(ids[:1], 1, Sampling(max_new_tokens=8, seed=0))  # warm-up
        gen_s, gens = median_time(lambda: engine.generate(ids, args.samples, sampling), args.repeats)
        tokens = sum(len(g.token_ids) for g in gens)
        seqs = [(g.prompt_token_ids, g.token_ids) for g in gens]
        score_s, _ = median_time(
            lambda: score_completions(engine.scoring_model, seqs, slice_tokens=args.slice_tokens), args.repeats
        )
        full_s, _ = median_time(lambda: full_logits_entropy(engine.scoring_model, seqs), args.repeats)
        topk = Sampling(max_new_tokens=args.max_new_tokens, seed=1, topk_logprobs=20)
        topk_s, topk_gens = median_time(lambda: engine.generate(ids, args.samples, topk), args.repeats)
        row.update(
            tokens=tokens,
            gen_tok_s=tokens / gen_s,
            gen_exact_tok_s=tokens / (gen_s + score_s),
            entropy_fraction=score_s / gen_s,
            score_s=score_s,
            full_logits_s=full_s,
            topk20_tok_s=sum(len(g.token_ids) for g in topk_gens) / topk_s,
        )
        if backend == "hf":
            base_s, base_tokens = median_time(
                lambda: hf_generate_baseline(engine, ids, args.samples, args.max_new_tokens), args.repeats
            )
            row["hf_generate_tok_s"] = base_tokens / base_s
        ckpt = perturbed_copy(model_dir, tmp / f"{model_dir.name}-{backend}-v1", seed=1)
        report = load_version(engine, ckpt, 1, tolerance=1e-3)
        row.update(reload_method=report.method, reload_s=report.seconds, verify_s=report.verify_seconds,
                   probe_diff=report.max_abs_diff)
        if backend == "vllm" and not args.skip_restart:
            t0 = time.perf_counter()
            engine.restart(str(model_dir))
            row["restart_s"] = time.perf_counter() - t0
    finally:
        engine.close()
    return row


def fmt(x, spec=".1f"):
    return "-" if x is None else format(x, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="tiny,13m", help="comma list of: " + ", ".join(MODELS))
    parser.add_argument("--backends", default="hf,vllm", help="comma list of: hf, vllm")
    parser.add_argument("--prompts", type=int, default=4, help="prompts per batch")
    parser.add_argument("--samples", type=int, default=4, help="samples per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=128, help="tokens per sample (random models rarely stop early)")
    parser.add_argument("--slice-tokens", type=int, default=512, help="rollout.entropy_slice_tokens")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per measurement (median)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads in this process (0 = torch default)")
    parser.add_argument("--skip-restart", action="store_true", help="do not time a vLLM engine restart")
    parser.add_argument("--work-dir", type=Path, default=None, help="where models are built (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmpdir:
        root = args.work_dir or Path(tmpdir)
        rows = []
        for name in args.models.split(","):
            model_dir = build_model(name, root)
            params = n_params(model_dir)
            for backend in args.backends.split(","):
                print(f"... {name} ({params / 1e6:.1f}M params) on {backend}", file=sys.stderr, flush=True)
                row = bench_backend(backend, model_dir, args, Path(tmpdir))
                rows.append({"model": name, "params_m": params / 1e6, **row})
    print(
        f"\nworkload: {args.prompts} prompts x {args.samples} samples x <= {args.max_new_tokens} new tokens, "
        f"median of {args.repeats}, torch threads {torch.get_num_threads()}\n"
    )
    print("| model | backend | start s | gen tok/s | gen+exact tok/s | entropy pass / gen | "
          "entropy pass s (full-logits baseline s) | topk-20 gen tok/s | hf model.generate tok/s | "
          "reload s (method) | probe check s | restart s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} ({r['params_m']:.1f}M) | {r['backend']} | {fmt(r['start_s'])} | {fmt(r['gen_tok_s'])} "
            f"| {fmt(r['gen_exact_tok_s'])} | {r['entropy_fraction']:.1%} | {r['score_s']:.3f} ({r['full_logits_s']:.3f}) "
            f"| {fmt(r['topk20_tok_s'])} | {fmt(r.get('hf_generate_tok_s'))} | {r['reload_s']:.3f} ({r['reload_method']}) "
            f"| {r['verify_s']:.2f} | {fmt(r.get('restart_s'))} |"
        )
    print("\nentropy pass vs goal (<= 25% of generation time):")
    for r in rows:
        verdict = "meets" if r["entropy_fraction"] <= 0.25 else "MISSES"
        print(f"  {r['model']:>5} {r['backend']:>4}: {r['entropy_fraction']:.1%} -> {verdict} the goal "
              f"(ratio {r['entropy_fraction'] / 0.25:.2f} of the budget)")
    for r in rows:
        if r["backend"] == "hf":
            print(f"  {r['model']:>5}   hf: own seeded decode loop vs transformers generate: "
                  f"{r['gen_tok_s'] / r['hf_generate_tok_s']:.2f}x")
        if r.get("restart_s"):
            print(f"  {r['model']:>5} vllm: reload_weights {r['reload_s']:.3f} s vs restart {r['restart_s']:.1f} s "
                  f"({r['restart_s'] / r['reload_s']:.0f}x)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
