"""How a teacher is asked to continue a student's partial answer, per continuation mode.

- raw: we render the chat template ourselves and append the student prefix with no
  end-of-turn token, then ask a completions endpoint to continue the text (exact).
- prefill: the prefix is a trailing assistant turn the model continues (exact up to the
  whitespace rule below). Anthropic rejects a prefill that ends in whitespace, so trailing
  whitespace is moved out of the prefill and removed again from the front of each
  continuation (`split_trailing_whitespace` / `rejoin`).
- instruction: a user message asks the model to continue the given partial answer
  verbatim (approximate: the model may restart a word or repeat a few characters; phi
  works on the cut text, so small seams cost little).

All forms put what never changes (instruction, problem) first and the growing student
prefix last, so the chunks of one trajectory share a prefix and provider caches hit.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path

INSTRUCTION = (
    "Below are a task and the beginning of an answer to it. Continue the answer from the "
    "exact point where it stops (even in the middle of a word or a formula). Output only the "
    "continuation: do not repeat any of the given text, do not comment, do not add quotes or "
    "formatting of your own."
)


def instruction_head(prompt: str) -> str:
    """The part of the instruction message before the student prefix (shared by all chunks)."""
    return f"{INSTRUCTION}\n\n<task>\n{prompt}\n</task>\n\n<answer_so_far>\n"


INSTRUCTION_TAIL = "\n</answer_so_far>\n\nContinue the answer now, starting exactly where <answer_so_far> stops."


def instruction_message(prompt: str, prefix: str) -> str:
    """The whole user message of the instruction form."""
    return instruction_head(prompt) + prefix + INSTRUCTION_TAIL


def split_trailing_whitespace(prefix: str) -> tuple[str, str]:
    """(body, whitespace) with body + whitespace == prefix and body not ending in whitespace."""
    body = prefix.rstrip()
    return body, prefix[len(body) :]


def rejoin(whitespace: str, continuation: str) -> str:
    """The continuation of `body + whitespace` given a continuation of `body`: drop the part
    of the continuation's leading whitespace that the prefix already had."""
    common = 0
    for a, b in zip(whitespace, continuation, strict=False):
        if a != b:
            break
        common += 1
    return continuation[common:]


# ------------------------------------------------------------ cache segments


class PrefixMemory:
    """Remembers the last prefix sent per (model, prompt), so the next, longer prefix of
    the same trajectory can be split into [previous prefix, new text] blocks: with a cache
    breakpoint after each block, the previous request's cache entry is read and only the
    new text is written (Anthropic caches at block boundaries only)."""

    def __init__(self, size: int = 1024):
        self._size = size
        self._items: OrderedDict[str, list[str]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(model: str, prompt: str) -> str:
        return hashlib.sha256(f"{model}\x00{prompt}".encode()).hexdigest()

    def segments(self, model: str, prompt: str, body: str) -> list[str]:
        """`body` split at the previous prefix of this prompt, if it extends it (the same
        body asked again, e.g. to fetch missing samples, gets the same split)."""
        key = self._key(model, prompt)
        with self._lock:
            last = self._items.get(key)
            previous = "".join(last) if last else ""
            if last and previous == body:
                split = last
            elif previous and len(previous) < len(body) and body.startswith(previous) and body[len(previous) :].strip():
                split = [previous, body[len(previous) :]]
            else:
                split = [body]
            self._items[key] = split
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return list(split)


PREFIXES = PrefixMemory()
"""Process-wide: clients come and go per task, the provider's cache does not."""


# --------------------------------------------------------- chat templates


class ChatTemplate:
    """Renders a one-turn chat prompt the way the served model expects, ending with the
    generation prompt (no end-of-turn token), for raw-prompt continuation."""

    def __init__(self, source: str):
        self.source = source
        path = Path(source)
        if path.is_file():
            self._render = _jinja_renderer(path.read_text())
        else:
            self._render = _tokenizer_renderer(source)

    def render(self, prompt: str) -> str:
        return self._render(prompt)


def _jinja_renderer(template: str):
    """A template file in the Hugging Face chat-template dialect (Jinja2)."""
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str):
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    compiled = env.from_string(template)

    def render(prompt: str) -> str:
        return compiled.render(
            messages=[{"role": "user", "content": prompt}], add_generation_prompt=True, bos_token="", eos_token=""
        )

    return render


@lru_cache(maxsize=8)
def _load_tokenizer(source: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source)
    except Exception as exc:  # any hub/offline/format error
        raise ValueError(
            f"cannot load a chat template from {source!r} ({type(exc).__name__}): set the teacher's "
            "`chat_template_from` to a local tokenizer directory or a .jinja template file"
        ) from None


def _tokenizer_renderer(source: str):
    tokenizer = _load_tokenizer(source)
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"the tokenizer at {source!r} has no chat template; set `chat_template_from` to a .jinja file")

    def render(prompt: str) -> str:
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)

    return render
