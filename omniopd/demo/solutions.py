"""The teacher answers the training problems once: the data of SFT on teacher rollouts.

The paper's SFT baseline (Table 1) is offline imitation: the teacher writes full solutions
to the training problems once, and the student is fine-tuned on them (`SFTOnTrajectories`,
Eq. 1, fed by workers/learner/replay.py). Here the teacher is the demo's teacher model
(`omniopd.demo.teacher`), sampled directly with transformers at the temperature its vLLM
server samples at (1.0, pure sampling: no top-k/top-p), from the prompt it was trained on.

Why the model directly and not through its vLLM server: this is one offline batch before
training, not a conversation with a live endpoint; the weights and the sampling are the
served teacher's, so the texts are draws from the same distribution, and the SFT arm then
needs no server at all (a vLLM start costs minutes on a loaded CPU). What the server would
have billed is counted exactly all the same: prompt tokens in, generated tokens (up to and
including EOS) out, in the teacher's own tokenizer, priced like the served teacher
(configs/prices.yaml, `demo-teacher`: emulated dollars, the local model charges nothing).

Solutions are not filtered for correctness (imitation of the teacher as it is; the share
that is right is recorded beside them). Cached per (seed, teacher, problems) like the
student: a manifest beside the file.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from omniopd.demo.task import DemoProblem

SOLUTIONS_VERSION = 1


@dataclass(frozen=True)
class TeacherSolutions:
    """The file of solutions (`data.teacher_solutions`) and what writing it cost."""

    path: Path
    problems: int
    input_tokens: int
    output_tokens: int
    right_fraction: float
    seconds: float
    cached: bool = False

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


def write_teacher_solutions(teacher_dir: Path, problems: list[DemoProblem], out: Path, *, seed: int,
                            grade: Callable[[str, str], bool], max_new_tokens: int = 48, temperature: float = 1.0,
                            batch: int = 64, log: Callable[[str], None] = print) -> TeacherSolutions:
    """One sampled solution per problem to `out` (JSONL: id, completion, right), or the cached
    one; `grade(completion, answer)` says whether a solution is right (the demo's checker)."""
    import torch

    from omniopd.models.loading import load_causal_lm, load_tokenizer
    from omniopd.rollout.prompts import render_text

    manifest = out.with_suffix(".json")
    key = {"teacher": str(teacher_dir), "problems": len(problems), "first": problems[0].id if problems else None,
           "seed": seed, "max_new_tokens": max_new_tokens, "temperature": temperature, "version": SOLUTIONS_VERSION}
    if manifest.is_file() and out.is_file():
        saved = json.loads(manifest.read_text())
        if saved.get("key") == key:
            return TeacherSolutions(**{**saved["result"], "path": out, "cached": True})
    started = time.monotonic()
    tokenizer = load_tokenizer(str(teacher_dir))  # left padding: generation continues every row's prompt
    model = load_causal_lm(str(teacher_dir), device="cpu", trainable=False)
    torch.manual_seed(seed)
    rows, tokens_in, tokens_out, right = [], 0, 0, 0
    for start in range(0, len(problems), batch):
        part = problems[start : start + batch]
        texts = [render_text(tokenizer, p.question, "none") for p in part]  # as the teacher was trained
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            gen = model.generate(**enc, do_sample=True, temperature=temperature, top_k=0, top_p=1.0,
                                 max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=tokenizer.eos_token_id)
        for p, prompt_mask, ids in zip(part, enc["attention_mask"], gen[:, enc["input_ids"].shape[1]:], strict=True):
            ids = ids.tolist()
            n = ids.index(tokenizer.eos_token_id) + 1 if tokenizer.eos_token_id in ids else len(ids)  # EOS is billed
            text = tokenizer.decode(ids[:n], skip_special_tokens=True).strip()
            ok = bool(grade(text, str(p.answer)))
            rows.append({"id": p.id, "completion": text, "right": ok})
            tokens_in, tokens_out, right = tokens_in + int(prompt_mask.sum()), tokens_out + n, right + ok
        log(f"teacher solutions: {len(rows)}/{len(problems)} ({time.monotonic() - started:.0f} s)")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = TeacherSolutions(out, len(rows), tokens_in, tokens_out, right / max(len(rows), 1),
                              time.monotonic() - started)
    manifest.write_text(json.dumps({"key": key, "result": {**asdict(result), "path": str(out), "cached": False}},
                                   indent=2) + "\n")
    return result
