"""Token counts without a tokenizer: estimates for rate limits and budgets, and the
emulator's own (approximate but consistent) tokenizer.

Three different needs, three functions:

- `upper_bound_tokens`: a bound no real tokenizer exceeds. Byte-level BPE (GPT, Claude,
  Qwen) and SentencePiece with byte fallback (Gemini) emit at least one byte per token,
  so the UTF-8 byte count plus a per-message allowance for role/template tokens is an
  upper bound. Budget reservations use it: the worst case must really be the worst case.
- `estimate_tokens`: a conservative-but-close guess (3 characters per token where real
  English text averages about 4) for debiting rate-limit buckets; the debit is corrected
  with the provider's reported usage after the response.
- `tokenize` / `count_tokens`: the emulator's tokenizer. Each token is a word or a single
  punctuation mark with its leading whitespace, so `"".join(tokenize(t)) == t` and a
  prefix of a text tokenizes to a prefix of its tokens (except at the cut point), which
  is what prefix-cache accounting needs.
"""

from __future__ import annotations

import math
import re

TEMPLATE_ALLOWANCE = 64
"""Tokens allowed per request for role markers, chat-template and instruction framing."""

_TOKEN = re.compile(r"\s*(?:\w+|[^\w\s])|\s+", re.UNICODE)


def upper_bound_tokens(*texts: str) -> int:
    """A bound on the tokens any byte-level tokenizer produces for these texts."""
    return sum(len(t.encode("utf-8")) for t in texts) + TEMPLATE_ALLOWANCE


def estimate_tokens(*texts: str, chars_per_token: float = 3.0) -> int:
    """A slightly pessimistic estimate of the input tokens of a request (rate limiting)."""
    chars = sum(len(t) for t in texts)
    return math.ceil(chars / chars_per_token) + TEMPLATE_ALLOWANCE


def tokenize(text: str) -> list[str]:
    """The emulator's tokens: lossless (`"".join(tokenize(t)) == t`)."""
    return _TOKEN.findall(text)


def count_tokens(text: str) -> int:
    """Number of emulator tokens in `text`."""
    return sum(1 for _ in _TOKEN.finditer(text))


def truncate_tokens(text: str, max_tokens: int) -> str:
    """The first `max_tokens` emulator tokens of `text`."""
    return "".join(tokenize(text)[:max_tokens])
