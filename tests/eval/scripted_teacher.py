"""A teacher for evaluation tests: the provider emulator (OpenAI-compatible wire format) as
a real server process, with a scripted generator whose answers depend on the item and the
request's seed, so Pass@1 is a number the test can compute.

    python tests/eval/scripted_teacher.py --ready-file F --seeds-file S [--ttft-ms 50] [--faults 429,500] [--api-key K]

Writes the bound port to F once serving; appends {"item", "seed"} per generation to S
(that is how tests see that per-request seeds reach the server).

Answers (items of tests/eval/data/ours_math.jsonl and ours_code.jsonl):
  m1 (gold 2)            always correct
  m2 (gold \\frac{1}{2}) correct iff seed % 2 == 0
  m3 (gold 3)            always wrong
  c1 (a+b, stdin)        always correct
  c2 (total, call-based) correct iff seed % 3 != 0, else a wrong return value
  c3 (print pi)          always wrong (prints 3)
"""

from __future__ import annotations

import argparse
import json
import threading
from pathlib import Path

MATH = {
    "What is $1+1$?": lambda seed: "One plus one is two.\nAnswer: 2",
    "What is half of one?": lambda seed: "Half of one.\nAnswer: \\frac{1}{2}" if seed % 2 == 0 else "Hmm.\nAnswer: 3",
    "Solve $x^2 = 9$ for $x > 0$.": lambda seed: "x is four.\nAnswer: 4",
}
CODE = {
    "Print a+b.": lambda seed: "Read two numbers.\n```python\na, b = map(int, input().split())\nprint(a + b)\n```",
    "Return the sum of a list.": lambda seed: (
        "```python\ndef total(xs):\n    return sum(xs)\n```" if seed % 3 else "```python\ndef total(xs):\n    return len(xs)\n```"
    ),
    "Print pi.": lambda seed: "```python\nprint(3)\n```",
}
ITEM_IDS = {"What is $1+1$?": "m1", "What is half of one?": "m2", "Solve $x^2 = 9$ for $x > 0$.": "m3",
            "Print a+b.": "c1", "Return the sum of a list.": "c2", "Print pi.": "c3"}


def expected_correct(item_id: str, seed: int) -> bool:
    """What the scripted teacher's answer to (item, seed) grades as."""
    return {"m1": True, "m2": seed % 2 == 0, "m3": False, "c1": True, "c2": seed % 3 != 0, "c3": False}[item_id]


def make_generator(seeds_file: Path):
    lock = threading.Lock()

    def generate(prompt_text: str, n: int, max_tokens: int, temperature: float | None, seed: int | None) -> list[str]:
        for question, answer in {**MATH, **CODE}.items():
            if question in prompt_text:
                with lock, seeds_file.open("a") as f:
                    f.write(json.dumps({"item": ITEM_IDS[question], "seed": seed}) + "\n")
                return [answer(seed or 0) for _ in range(n)]
        return ["I do not know this problem." for _ in range(n)]

    return generate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ready-file", type=Path, required=True)
    p.add_argument("--seeds-file", type=Path, required=True)
    p.add_argument("--ttft-ms", type=float, default=0.0, help="latency before each response")
    p.add_argument("--faults", default="", help="forced outcomes of the first requests, e.g. 429,500")
    p.add_argument("--api-key", default=None, help="accept only this key (a wrong one gets a 401 echoing it)")
    a = p.parse_args()

    from omniopd.teachers.emulator import EmulatorConfig, serve

    config = EmulatorConfig(
        provider="openai_compat", models=["scripted-teacher"], api_key=a.api_key,
        latency={"ttft_s": a.ttft_ms / 1000}, faults={"script": [f for f in a.faults.split(",") if f]},
    )

    def ready(port: int) -> None:
        tmp = a.ready_file.with_suffix(".tmp")
        tmp.write_text(str(port))
        tmp.replace(a.ready_file)

    serve(config, 0, make_generator(a.seeds_file), ready=ready)


if __name__ == "__main__":
    main()
