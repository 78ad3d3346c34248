"""A local stand-in for teacher APIs: speaks the OpenAI (and vLLM), Anthropic and Gemini
wire formats on 127.0.0.1, backed by a pluggable generator, with each provider's rate
limits (real 429s and headers), prompt-cache accounting, and injected faults.

Tests, benchmarks and the demo use it; so can a user rehearsing a run before paying:
`omniopd teacher emulate --provider anthropic --port 8765`.
"""

from omniopd.teachers.emulator.config import (
    FAULTS,
    EmulatorCache,
    EmulatorConfig,
    EmulatorFaults,
    EmulatorLatency,
    EmulatorLimits,
)
from omniopd.teachers.emulator.core import Emulator, EmuRequest, EmuResult, LogEntry
from omniopd.teachers.emulator.generators import (
    Generate,
    echo,
    from_spec,
    lorem,
    scripted,
    transformers_model,
)
from omniopd.teachers.emulator.server import EmulatorThread, make_app, serve, start

__all__ = [
    "FAULTS",
    "EmuRequest",
    "EmuResult",
    "Emulator",
    "EmulatorCache",
    "EmulatorConfig",
    "EmulatorFaults",
    "EmulatorLatency",
    "EmulatorLimits",
    "EmulatorThread",
    "Generate",
    "LogEntry",
    "echo",
    "from_spec",
    "lorem",
    "make_app",
    "scripted",
    "serve",
    "start",
    "transformers_model",
]
