"""The demo's teacher: a scripted expert behind the provider emulator.

`omniopd teacher emulate --generator py:omniopd.demo.expert:generator` serves it in a real
provider wire format. The emulator hands the generator what a model would see: the chat
rendered as `<|role|>\\n...` turns, ending with the assistant turn and any prefill (or, in
instruction form, the partial answer inside `<answer_so_far>`). The expert finds the
question and the student's partial answer in it and continues correctly from there
(`omniopd.demo.task.expert_continuation`); every one of the n candidates is the same, as
from a teacher sampling at low temperature.
"""

from __future__ import annotations

from omniopd.demo.task import expert_continuation, parse_question

_ASSISTANT = "<|assistant|>\n"
_SO_FAR_OPEN, _SO_FAR_CLOSE = "<answer_so_far>\n", "\n</answer_so_far>"


def partial_answer(prompt_text: str) -> str:
    """The student's partial answer inside what the emulator renders."""
    if _SO_FAR_OPEN in prompt_text:
        body = prompt_text.rsplit(_SO_FAR_OPEN, 1)[1]
        return body.split(_SO_FAR_CLOSE, 1)[0]
    if _ASSISTANT in prompt_text:
        return prompt_text.rsplit(_ASSISTANT, 1)[1]
    return ""


def continue_text(prompt_text: str) -> str:
    """One expert continuation; empty when the prompt holds no demo question."""
    question = parse_question(prompt_text)
    if question is None:
        return ""
    start, ops = question
    return expert_continuation(start, ops, partial_answer(prompt_text))


def generator():
    """The emulator generator: `generate(prompt_text, n, max_tokens, temperature, seed)`."""

    def generate(prompt_text: str, n: int, max_tokens: int, temperature, seed) -> list[str]:
        return [continue_text(prompt_text)] * n

    return generate
