"""Prompt-cache accounting by each provider's rules, on the emulator's tokens.

- explicit (Anthropic): a request is a list of blocks, some ending in a `cache_control`
  breakpoint. The longest block-boundary prefix already in the cache is read; the part
  from there to the last breakpoint is written if that prefix has at least `min_tokens`
  tokens; the rest is plain input. Entries become usable only once the response that
  wrote them has started (`available_at`), live `ttl_s` and are refreshed on a hit.
- implicit (OpenAI automatic caching, Gemini implicit caching): any prompt prefix of at
  least `min_tokens` tokens is cached in steps of `granularity` tokens (OpenAI: 1024,
  then +128); hits are reported as cached tokens, and there is no write charge.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from omniopd.teachers.tokens import count_tokens, tokenize


@dataclass(frozen=True)
class CacheUse:
    """Input tokens of one request split by cache outcome (total = input + read + write)."""

    total: int
    read: int = 0
    write: int = 0
    pending: tuple[str, ...] = ()
    """Entry keys to publish once the response starts."""

    @property
    def uncached(self) -> int:
        return self.total - self.read - self.write


@dataclass
class PromptCache:
    rule: str  # "explicit" or "implicit"
    min_tokens: int
    granularity: int = 1
    ttl_s: float = 300.0
    enabled: bool = True
    _entries: dict[str, tuple[float, float]] = field(default_factory=dict)  # key -> (available_at, expires_at)

    def _live(self, key: str, now: float) -> bool:
        entry = self._entries.get(key)
        if entry is None:
            return False
        available_at, expires_at = entry
        if expires_at < now:
            del self._entries[key]
            return False
        return available_at <= now

    def _touch(self, key: str, now: float) -> None:
        available_at, _ = self._entries[key]
        self._entries[key] = (available_at, now + self.ttl_s)

    def explicit(self, model: str, blocks: list[tuple[str, bool]], now: float) -> CacheUse:
        """Blocks are (text, ends_in_breakpoint) in prompt order (role markers included)."""
        text = "".join(t for t, _ in blocks)
        total = count_tokens(text)
        if not self.enabled:
            return CacheUse(total)
        digest = hashlib.sha256(model.encode())
        bounds: list[tuple[str, int, bool]] = []  # (key, tokens, is_breakpoint) per block end
        prefix = ""
        for piece, breakpoint in blocks:
            prefix += piece
            digest.update(piece.encode())
            bounds.append((digest.hexdigest(), count_tokens(prefix), breakpoint))
        last_bp = max((i for i, b in enumerate(bounds) if b[2]), default=-1)
        if last_bp < 0:
            return CacheUse(total)
        read = 0
        for key, tokens, _ in bounds[: last_bp + 1]:
            if self._live(key, now):
                read = tokens
                self._touch(key, now)
        write_tokens = bounds[last_bp][1]
        write = write_tokens - read if write_tokens >= self.min_tokens and write_tokens > read else 0
        pending = tuple(k for k, tokens, bp in bounds if bp and tokens >= self.min_tokens and k not in self._entries)
        return CacheUse(total, read, write, pending)

    def implicit(self, model: str, text: str, now: float) -> CacheUse:
        tokens = tokenize(text)
        total = len(tokens)
        if not self.enabled or total < self.min_tokens:
            return CacheUse(total)
        digest = hashlib.sha256(model.encode())
        read = 0
        pending = []
        done = 0
        boundary = self.min_tokens
        while boundary <= total:
            for tok in tokens[done:boundary]:
                digest.update(tok.encode())
                digest.update(b"\x00")
            done = boundary
            key = digest.hexdigest()
            if self._live(key, now):
                read = boundary
                self._touch(key, now)
            elif key not in self._entries:
                pending.append(key)
            boundary += self.granularity
        return CacheUse(total, read, 0, tuple(pending))

    def publish(self, keys: tuple[str, ...], available_at: float) -> None:
        """Make entries usable from `available_at` (when the writing response started)."""
        for key in keys:
            self._entries.setdefault(key, (available_at, available_at + self.ttl_s))
