"""Provider adapters, one module per wire protocol; `PROVIDERS` maps a config `kind` to its
client class, built from the provider registry (omniopd/providers.py), which names each
adapter by import path."""

from __future__ import annotations

import importlib

from omniopd.providers import PROVIDER_SPECS, ProviderSpec
from omniopd.teachers.client import TeacherClient
from omniopd.teachers.providers.anthropic import AnthropicClient
from omniopd.teachers.providers.gemini import GeminiClient
from omniopd.teachers.providers.openai import OpenAIClient, OpenAICompatClient


def client_class(spec: ProviderSpec) -> type[TeacherClient]:
    """The adapter named by `spec.client` (`module:Class`); it must declare `spec` as its own."""
    module, _, name = spec.client.partition(":")
    cls = getattr(importlib.import_module(module), name)
    if not (isinstance(cls, type) and issubclass(cls, TeacherClient)) or cls.spec is not spec:
        raise TypeError(f"{spec.client} is not the TeacherClient of provider {spec.kind!r} (its `spec` must be PROVIDER_SPECS[{spec.kind!r}])")
    return cls


PROVIDERS: dict[str, type[TeacherClient]] = {kind: client_class(spec) for kind, spec in PROVIDER_SPECS.items()}

__all__ = ["PROVIDERS", "AnthropicClient", "GeminiClient", "OpenAIClient", "OpenAICompatClient", "client_class"]
