"""Run a short real learner step on a GPU and report tokens/s and memory.

    .venv/bin/python scripts/gpu_check.py [--model DIR] [--tokens 4096] [--batch 2] [--steps 3]
        [--method NAME] [--lora] [--cpu] [--gpus N]

`--method` is a key of omniopd.objectives.OBJECTIVES (default omniopd); an objective that
needs teacher logits gets the student itself as its white-box teacher.

What it does: builds the configured learner (fp32 master weights, bf16 autocast, frozen bf16
reference; LoRA with --lora), makes `--batch` random trajectories of `--tokens` completion
tokens with M = tokens // 100 audited chunks of C = 50 tokens, runs one warm-up step and
`--steps` measured steps, and prints tokens/s, seconds per step and its parts, peak GPU memory
(torch.cuda.max_memory_allocated) and the loss. Without `--model` a ~13M-parameter Qwen3
model is built offline, which exercises the code path but says little about speed; point
`--model` at a real student (e.g. a local Qwen3-1.7B directory) for real numbers.

Without a CUDA GPU it exits with status 2 and says so (`--cpu` runs the same check on CPU).

`--gpus N` (N > 1) re-runs itself under torchrun as N processes: the multi-GPU learner step
(FSDP2 over the student and the reference, docs/learner.md "Scale-out") on the same batches;
rank 0 prints tokens/s of the whole step and its own peak memory. With `--cpu`, N gloo
processes on CPU.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    from omniopd.objectives import OBJECTIVES, objective_class  # torch-free

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="student model directory (default: build a ~13M model offline)")
    parser.add_argument("--tokens", type=int, default=4096, help="completion tokens per trajectory")
    parser.add_argument("--batch", type=int, default=2, help="trajectories per step (paper: 2 per device)")
    parser.add_argument("--steps", type=int, default=3, help="measured steps after one warm-up")
    parser.add_argument("--method", default="omniopd", choices=list(OBJECTIVES))
    parser.add_argument("--lora", action="store_true", help="train LoRA adapters (reference = adapters disabled)")
    parser.add_argument("--cpu", action="store_true", help="run on CPU instead (checks the script, not a GPU)")
    parser.add_argument("--gpus", type=int, default=1, help="processes under torchrun (FSDP across them)")
    args = parser.parse_args()

    import os

    import torch

    if args.gpus > 1 and "WORLD_SIZE" not in os.environ:
        return _relaunch(args)

    if not args.cpu and not torch.cuda.is_available():
        print(f"no CUDA GPU is visible to torch {torch.__version__} (CUDA build: {torch.version.cuda or 'none'}); "
              "run this on a GPU machine with a CUDA build of torch, or pass --cpu to check the script itself",
              file=sys.stderr)
        return 2
    from omniopd.config import parse_config
    from omniopd.train import build_trainer
    from scripts.bench.learner import build_model, examples

    device = "cpu" if args.cpu else "cuda"
    model = args.model or str(build_model("13m", Path(tempfile.mkdtemp(prefix="omniopd-gpu-check-"))))
    loss = {"method": args.method, "normalisation": "token"}
    if objective_class(args.method).needs.teacher_logits:
        loss["whitebox_teacher"] = model  # itself: checks the path, the KL is 0
    rewarded = {}
    if objective_class(args.method).needs.rewards:  # groups of 2 (bench examples), graded by the demo checker
        rewarded = {"reward": {"grader": "demo"}, "rollout": {"samples_per_prompt": 2}}
    config = parse_config({
        "student": {"path": model, "device": device},
        "learner": {"lr": 1e-6, "batch_size": args.batch, "max_steps": 1000, "bf16": True,
                    "lora": {"enabled": args.lora}},
        "loss": loss,
        **rewarded,
    })
    trainer = build_trainer(config)  # under torchrun: joins the process group, shards with FSDP2
    main_rank = trainer.world is None or trainer.world.is_main
    vocab = trainer.models.student.get_output_embeddings().weight.shape[0]
    texts = ("Step 1: 2 + 2 = 4. Then we add the next term.",) * 2  # what sft trains on
    batches = [examples(args.batch, args.tokens, vocab, seed=s, teacher_texts=texts) for s in range(args.steps + 1)]
    trainer.step(batches[0])
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    metrics = [trainer.step(batch) for batch in batches[1:]]
    seconds = (time.perf_counter() - t0) / args.steps
    tokens = sum(m.forward_tokens for m in metrics) / args.steps
    params = sum(p.numel() for p in trainer.models.student.parameters())  # DTensor: the full count
    if not main_rank:
        return 0
    world = f", {trainer.world.size} processes (FSDP2)" if trainer.world else ""
    print(f"device: {torch.cuda.get_device_name(0) if device == 'cuda' else 'cpu'}; model {model} ({params:,} parameters){world}")
    print(f"method {args.method}{' + LoRA' if args.lora else ''}, autocast {trainer.settings.loss.autocast}, "
          f"batch {args.batch} x {args.tokens} completion tokens")
    last = metrics[-1]
    print(f"tokens/s: {tokens / seconds:,.0f}   s/step: {seconds:.3f} (forward {last.timings.forward_s:.3f}, "
          f"backward {last.timings.backward_s:.3f}, optimizer {last.timings.optimizer_s:.3f})")
    if device == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB allocated, "
              f"{torch.cuda.max_memory_reserved() / 2**30:.2f} GiB reserved")
    print(f"loss {last.loss:.5f}  kl {last.kl}  grad norm {last.grad_norm:.4f}")
    return 0


def _relaunch(args) -> int:
    """Build the default model once (every rank must load the same weights), then run this
    script as `args.gpus` processes under torchrun."""
    import subprocess

    argv = [a for a in sys.argv[1:] if not a.startswith("--gpus")]
    if "--gpus" in sys.argv:
        i = sys.argv.index("--gpus")
        argv = [a for j, a in enumerate(sys.argv[1:], 1) if j not in (i, i + 1)]
    if args.model is None:
        from scripts.bench.learner import build_model

        argv += ["--model", str(build_model("13m", Path(tempfile.mkdtemp(prefix="omniopd-gpu-check-"))))]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.gpus}",
               __file__, *argv]
    return subprocess.call(command)


if __name__ == "__main__":
    sys.exit(main())
