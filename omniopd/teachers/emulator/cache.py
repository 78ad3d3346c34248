"""Prompt-cache accounting by each provider's rules, on the emulator's tokens.

- explicit (Anthropic): a request is a list of blocks, some ending in a `cache_control`
  breakpoint with a lifetime (5 minutes, or 1 hour with `ttl: "1h"`). The longest
  block-boundary prefix already in the cache is read; the part from there to the last
  breakpoint is written if that prefix has at least `min_tokens` tokens, each stretch at
  the lifetime of the breakpoint that closes it (reported as `cache_creation`'s 5m / 1h
  counts); the rest is plain input. Entries become usable only once the response that
  wrote them has started (`available_at`) and are refreshed on a hit.
- implicit (OpenAI automatic caching, Gemini implicit caching): any prompt prefix of at
  least `min_tokens` tokens is cached in steps of `granularity` tokens (OpenAI: 1024,
  then +128); hits are reported as cached tokens, and there is no write charge.

A lookup with `touch=False` changes nothing, so a request can be accounted before it is
admitted (Anthropic's input-tokens-per-minute limit leaves cache reads out) and
`commit` refreshes what it read once it is.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from omniopd.teachers.tokens import count_tokens, tokenize

LONG_TTL_S = 3600.0
"""Anthropic's `ttl: "1h"` breakpoints."""


@dataclass(frozen=True)
class CacheUse:
    """Input tokens of one request split by cache outcome (total = uncached + read + write).
    `write_long` is the part of `write` that went to 1-hour entries."""

    total: int
    read: int = 0
    write: int = 0
    pending: tuple[tuple[str, float], ...] = ()
    """(entry key, lifetime in seconds) to publish once the response starts."""
    hits: tuple[str, ...] = ()
    """Entry keys read (refreshed by `commit`)."""
    write_long: int = 0

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
    bill_writes: bool = False
    """Implicit caching that reports what it writes (OpenAI gpt-5.6+ `cache_write_tokens`)."""
    _entries: dict[str, tuple[float, float, float]] = field(default_factory=dict)  # key -> (available_at, expires_at, ttl)

    def _live(self, key: str, now: float) -> bool:
        entry = self._entries.get(key)
        if entry is None:
            return False
        available_at, expires_at, _ = entry
        if expires_at < now:
            del self._entries[key]
            return False
        return available_at <= now

    def commit(self, use: CacheUse, now: float) -> None:
        """Refresh the entries a request read (a hit restarts their lifetime)."""
        for key in use.hits:
            if key in self._entries:
                available_at, _, ttl = self._entries[key]
                self._entries[key] = (available_at, now + ttl, ttl)

    def explicit(self, model: str, blocks: list[tuple[str, float | None]], now: float, touch: bool = True) -> CacheUse:
        """Blocks are (text, breakpoint lifetime in seconds or None) in prompt order (role
        markers included)."""
        text = "".join(t for t, _ in blocks)
        total = count_tokens(text)
        if not self.enabled:
            return CacheUse(total)
        digest = hashlib.sha256(model.encode())
        bounds: list[tuple[str, int, float | None]] = []  # (key, tokens, breakpoint ttl) per block end
        prefix = ""
        for piece, ttl in blocks:
            prefix += piece
            digest.update(piece.encode())
            bounds.append((digest.hexdigest(), count_tokens(prefix), ttl))
        breakpoints = [i for i, b in enumerate(bounds) if b[2] is not None]
        if not breakpoints:
            return CacheUse(total)
        last_bp = breakpoints[-1]
        read, hits = 0, []
        for key, tokens, _ in bounds[: last_bp + 1]:
            if self._live(key, now):
                read = tokens
                hits.append(key)
        write = write_long = 0
        if bounds[last_bp][1] >= self.min_tokens:
            start = read
            for i in breakpoints:  # each stretch at the lifetime of the breakpoint closing it
                tokens, ttl = bounds[i][1], bounds[i][2]
                if tokens > start:
                    write += tokens - start
                    write_long += (tokens - start) if ttl is not None and ttl >= LONG_TTL_S else 0
                    start = tokens
        pending = tuple((k, ttl) for k, tokens, ttl in bounds if ttl is not None and tokens >= self.min_tokens and k not in self._entries)
        use = CacheUse(total, read, write, pending, tuple(hits), write_long)
        if touch:
            self.commit(use, now)
        return use

    def implicit(self, model: str, text: str, now: float, touch: bool = True) -> CacheUse:
        tokens = tokenize(text)
        total = len(tokens)
        if not self.enabled or total < self.min_tokens:
            return CacheUse(total)
        digest = hashlib.sha256(model.encode())
        read, hits, pending = 0, [], []
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
                hits.append(key)
            elif key not in self._entries:
                pending.append((key, self.ttl_s))
            boundary += self.granularity
        # The new entries reach the longest boundary; what lies past the hit is written.
        written = (self.min_tokens + (total - self.min_tokens) // self.granularity * self.granularity) - read
        write = written if self.bill_writes and pending else 0
        use = CacheUse(total, read, write, tuple(pending), tuple(hits))
        if touch:
            self.commit(use, now)
        return use

    def publish(self, pending: tuple[tuple[str, float], ...], available_at: float) -> None:
        """Make entries usable from `available_at` (when the writing response started)."""
        for key, ttl in pending:
            self._entries.setdefault(key, (available_at, available_at + ttl, ttl))
