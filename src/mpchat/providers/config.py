"""The TOML config file (``MPCHAT_CONFIG``): several providers, model aliases, prompt profiles.

```toml
[[providers]]
name = "deepseek"
base_url = "https://api.deepseek.com/v1"
api_key_env = "DEEPSEEK_API_KEY"   # or api_key = "..." (keep the file private then)
models = ["deepseek-chat"]         # the first is the provider's default model
priority = 1                       # 1 is tried first; higher numbers are fallbacks
weight = 3                         # share of traffic among providers of one priority
rpm = 500                          # requests per minute it allows (0 = untracked)
tpm = 200000                       # tokens per minute it allows (0 = untracked)
max_concurrency = 32               # in flight at once (default MPCHAT_UPSTREAM_MAX_CONCURRENCY)
tools = true                       # takes `tools` (function calling) on /v1/chat/completions
transcription_model = "whisper-1"  # voice: its /audio/* models (docs/voice.md)

[aliases]
default = "deepseek-chat"          # what a client's "default" means

[profiles.voice]                   # built in: default, customer_service, voice (docs/chat.md)
system_prompt = "……"               # unset: the built-in's (or MPCHAT_SYSTEM_PROMPT)
model = "default"                  # a model or an alias
temperature = 0.5
max_answer_tokens = 400
context_budget = 2000
```

``[quota]``, ``[quota.prices]`` and ``[[plans]]`` (quotas and credit packs) are described in
`mpchat.quota.config` and docs/quota.md.

Without a file, ``MPCHAT_UPSTREAM_*`` describe one provider (or none: the demo model).
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from mpchat.quota.config import PlanConfig, QuotaConfig

__all__ = ["FileConfig", "ProviderConfig", "load_config"]


class ProviderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,40}$")
    base_url: str
    api_key: SecretStr | None = None
    api_key_env: str | None = None
    models: list[str] = Field(min_length=1)
    priority: int = Field(default=1, ge=0)
    weight: float = Field(default=1.0, gt=0)
    rpm: int = Field(default=0, ge=0)
    tpm: int = Field(default=0, ge=0)
    max_concurrency: int | None = Field(default=None, ge=1)
    tools: bool = True
    # Its audio endpoints' models (unset: MPCHAT_TRANSCRIPTION_MODEL, ...); a provider that sets
    # one is the one voice uses (docs/voice.md).
    transcription_model: str | None = None
    speech_model: str | None = None
    speech_voice: str | None = None

    def audio(self) -> dict[str, str]:
        fields = ("transcription_model", "speech_model", "speech_voice")
        return {f: v for f in fields if (v := getattr(self, f))}

    def key(self) -> str | None:
        if self.api_key is not None:
            return self.api_key.get_secret_value()
        if self.api_key_env:
            value = os.environ.get(self.api_key_env)
            if not value:
                raise ValueError(f"provider {self.name}: {self.api_key_env} is not set")
            return value
        return None


class Profile(BaseModel):
    """A prompt profile's fields; unset ones come from the built-in or ``default``."""

    model_config = ConfigDict(extra="forbid")
    system_prompt: str | None = Field(default=None, min_length=1)
    model: str | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_answer_tokens: int | None = Field(default=None, gt=0)
    context_budget: int | None = Field(default=None, gt=0)


class FileConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    providers: list[ProviderConfig] = Field(default_factory=list)
    aliases: dict[str, str] = Field(default_factory=dict)
    profiles: dict[str, Profile] = Field(default_factory=dict)
    quota: QuotaConfig | None = None  # None: quotas off
    plans: list[PlanConfig] = Field(default_factory=list, max_length=50)

    @model_validator(mode="after")
    def _check(self) -> FileConfig:
        names = [p.name for p in self.providers]
        if len(names) != len(set(names)):
            raise ValueError("provider names must be unique")
        plan_ids = [p.id for p in self.plans]
        if len(plan_ids) != len(set(plan_ids)):
            raise ValueError("plan ids must be unique")
        served = {m for p in self.providers for m in p.models}
        for alias, target in self.aliases.items():
            if self.providers and target not in served:
                raise ValueError(f"alias {alias!r} points at {target!r}, which no provider serves")
        for name, profile in self.profiles.items():
            if not re.fullmatch(r"[a-z0-9_]{1,40}", name):
                raise ValueError(f"profile {name!r}: names are a-z, 0-9 and _ (at most 40)")
            model = self.resolve(profile.model) if profile.model else None
            if model is not None and self.providers and model not in served:
                raise ValueError(f"profile {name!r}: no provider serves {profile.model!r}")
        return self

    def resolve(self, model: str | None) -> str | None:
        """The concrete model for a client's ``model`` (an alias, a served model, or None)."""
        if model is None:
            model = "default"
        return self.aliases.get(model, model if model != "default" else None)


def load_config(path: Path | None) -> FileConfig:
    if path is None:
        return FileConfig()
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"MPCHAT_CONFIG {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"MPCHAT_CONFIG {path}: {exc}") from None
    return FileConfig.model_validate(data)
