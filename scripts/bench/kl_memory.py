"""Peak memory of the Eq. 8 KL anchor, blockwise (OmniOPD) versus naive, forward + backward.

Setting (issue 2): one trajectory of T = 2048 tokens, Qwen3's vocabulary V = 151,936, a small
hidden size (64), so the logits dominate memory as they do for real models. The un-audited
set U is what `select_chunks` leaves with M = 10 chunks of C = 50 tokens. Variants:

- naive: logits = hidden @ W.T for student and reference in float32 ([T, V] each), log_softmax
  of both, F.kl_div(..., reduction="none") summed over U, backward.
- sliced: `token_stats(HiddenStates(...), other=HiddenStates(...), kl_other_student=True)` with
  token_slice x vocab_slice blocks; no [T, V] tensor of either model ever exists.
- sliced-bf16-logits (informational): the student's [T, V] logits already exist in bf16, as
  a HF forward returns them (built before the measurement starts), and are passed as logits;
  what is measured is what the KL adds on top, including their [T, V] bf16 gradient.

Method: torch's CPU allocator exposes no peak statistics and tracemalloc does not see it, so
each variant runs in a fresh subprocess and reads the kernel's resident-set high-water mark:
inputs are built, the peak is reset (`echo 5 > /proc/self/clear_refs`, Linux >= 4.0), the
forward and backward run, and VmHWM from /proc/self/status minus the RSS just before is the
peak added by the KL anchor. Where the reset is not allowed the lifetime peak (ru_maxrss) is
used instead, minus the same baseline (the table says which). Values and gradients of the
variants are compared, so the saving is not bought with a different result.

    .venv/bin/python scripts/bench/kl_memory.py [--tokens 2048] [--vocab 151936] [--hidden 64]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


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


def child(args: argparse.Namespace) -> dict:
    """Run one variant in this (fresh) process and report its memory and results."""
    import gc

    import torch
    import torch.nn.functional as F

    from omniopd.algo.chunks import select_chunks
    from omniopd.algo.sliced import HiddenStates, token_stats

    gen = torch.Generator().manual_seed(0)
    t, v, h = args.tokens, args.vocab, args.hidden
    hidden = torch.randn(1, t, h, generator=gen).requires_grad_()
    weight = (torch.randn(v, h, generator=gen) * 0.3).requires_grad_()
    ref_hidden = hidden.detach() + 0.1 * torch.randn(1, t, h, generator=gen)
    ref_weight = weight.detach() + 0.03 * torch.randn(v, h, generator=gen)
    entropies = torch.rand(t, generator=gen)
    mask = select_chunks(entropies, m=10, c=50).unaudited_mask[None]  # [1, T]
    if args.child == "sliced-bf16-logits":
        with torch.no_grad():  # given logits, e.g. from a HF forward in bf16
            given_logits = (hidden @ weight.T).bfloat16().requires_grad_()  # [1, T, V]
    gc.collect()
    baseline = _status_kib("VmRSS")
    exact_peak = _reset_peak()
    start = time.perf_counter()
    if args.child == "naive":
        logits = hidden @ weight.T  # [1, T, V] float32
        with torch.no_grad():
            ref_logits = ref_hidden @ ref_weight.T
        kl_full = F.kl_div(
            logits.log_softmax(-1), ref_logits.log_softmax(-1), log_target=True, reduction="none"
        )
        kl = kl_full.sum(-1) * mask  # [1, T]
    elif args.child == "sliced":
        kl = token_stats(
            HiddenStates(hidden, weight),
            None,
            mask,
            other=HiddenStates(ref_hidden, ref_weight),
            kl_other_student=True,
            token_slice=args.token_slice,
            vocab_slice=args.vocab_slice,
        ).kl_other_student
    else:  # sliced-bf16-logits
        kl = token_stats(
            given_logits,
            None,
            mask,
            other=HiddenStates(ref_hidden, ref_weight),
            kl_other_student=True,
            token_slice=args.token_slice,
            vocab_slice=args.vocab_slice,
        ).kl_other_student
    kl.sum().backward()
    seconds = time.perf_counter() - start
    peak = (
        _status_kib("VmHWM") if exact_peak else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    )
    return {
        "variant": args.child,
        "method": "VmHWM after reset" if exact_peak else "ru_maxrss (lifetime)",
        "baseline_mib": baseline / 1024,
        "peak_mib": peak / 1024,
        "added_mib": (peak - baseline) / 1024,
        "seconds": seconds,
        "kl_sum": float(kl.sum()),
        "grad_hidden": None if hidden.grad is None else hidden.grad.double().norm().item(),
        "grad_weight": None if weight.grad is None else weight.grad.double().norm().item(),
    }


def run_variant(variant: str, args: argparse.Namespace) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        variant,
        "--tokens",
        str(args.tokens),
        "--vocab",
        str(args.vocab),
        "--hidden",
        str(args.hidden),
        "--token-slice",
        str(args.token_slice),
        "--vocab-slice",
        str(args.vocab_slice),
    ]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(
            f"variant {variant} failed (exit {done.returncode}):\n{done.stderr[-3000:]}"
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, default=2048, help="trajectory length T")
    parser.add_argument(
        "--vocab", type=int, default=151_936, help="vocabulary size V (Qwen3: 151,936)"
    )
    parser.add_argument(
        "--hidden", type=int, default=64, help="hidden size H (small, so logits dominate)"
    )
    parser.add_argument(
        "--token-slice", type=int, default=512, help="rows per block (config loss.kl_token_slice)"
    )
    parser.add_argument(
        "--vocab-slice",
        type=int,
        default=8192,
        help="vocabulary entries per block (loss.kl_vocab_slice)",
    )
    parser.add_argument(
        "--variants", default="naive,sliced,sliced-bf16-logits", help="comma-separated"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return

    results = [run_variant(v, args) for v in args.variants.split(",")]
    print(
        f"KL(pi_ref || pi_theta) anchor, forward + backward: T = {args.tokens}, V = {args.vocab:,}, "
        f"H = {args.hidden}, blocks {args.token_slice} x {args.vocab_slice}; peak = {results[0]['method']}"
    )
    print(
        f"{'variant':<20} {'peak RSS (MiB)':>15} {'added by KL (MiB)':>18} {'seconds':>8} {'sum KL':>12}"
    )
    for r in results:
        print(
            f"{r['variant']:<20} {r['peak_mib']:>15.0f} {r['added_mib']:>18.0f} {r['seconds']:>8.1f} {r['kl_sum']:>12.4f}"
        )
    by_name = {r["variant"]: r for r in results}
    if "naive" in by_name and "sliced" in by_name:
        naive, sliced = by_name["naive"], by_name["sliced"]
        ratio = sliced["added_mib"] / naive["added_mib"]
        same = all(
            abs(sliced[k] - naive[k]) <= 1e-4 * abs(naive[k])
            for k in ("kl_sum", "grad_hidden", "grad_weight")
        )
        print(
            f"sliced / naive added peak = {ratio:.3f} (goal <= 0.25: {'met' if ratio <= 0.25 else 'NOT met'}); "
            f"total-RSS ratio {sliced['peak_mib'] / naive['peak_mib']:.3f}; "
            f"KL and gradients agree to 1e-4 relative: {same}"
        )


if __name__ == "__main__":
    main()
