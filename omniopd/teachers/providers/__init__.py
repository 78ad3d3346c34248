"""Provider adapters, one module per wire protocol; `PROVIDERS` maps a config `kind` to its client."""

from __future__ import annotations

from omniopd.teachers.client import TeacherClient
from omniopd.teachers.providers.anthropic import AnthropicClient
from omniopd.teachers.providers.gemini import GeminiClient
from omniopd.teachers.providers.openai import OpenAIClient, OpenAICompatClient

PROVIDERS: dict[str, type[TeacherClient]] = {
    "openai_compat": OpenAICompatClient,
    "openai": OpenAIClient,
    "anthropic": AnthropicClient,
    "gemini": GeminiClient,
}

__all__ = ["PROVIDERS", "AnthropicClient", "GeminiClient", "OpenAIClient", "OpenAICompatClient"]
