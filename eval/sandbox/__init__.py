"""The code sandbox: run model-written programs in bubblewrap (threat model in box.py)."""

from eval.sandbox.box import (
    LANGUAGES,
    CompileResult,
    Limits,
    RunResult,
    Sandbox,
    SandboxError,
    SandboxUnavailable,
    find_bwrap,
    run_program,
    sandbox_python,
)
from eval.sandbox.launch import INSTALL_HINT
from eval.sandbox.slots import DEFAULT_UID_BASE, Slot, acquire_slot

__all__ = [
    "DEFAULT_UID_BASE", "INSTALL_HINT", "LANGUAGES", "CompileResult", "Limits", "RunResult",
    "Sandbox", "SandboxError", "SandboxUnavailable", "Slot", "acquire_slot", "find_bwrap",
    "run_program", "sandbox_python",
]  # fmt: skip
