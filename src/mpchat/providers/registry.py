"""Providers from the configuration: the config file's list, ``MPCHAT_UPSTREAM_*``, or the demo."""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp

from mpchat.providers.config import FileConfig
from mpchat.providers.demo import DemoModel
from mpchat.providers.openai import OpenAICompatible, StreamLimits, Timeouts
from mpchat.providers.types import Provider
from mpchat.settings import Settings

__all__ = ["ProviderSpec", "build_providers"]


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """A provider and how traffic control treats it."""

    provider: Provider
    priority: int = 1
    weight: float = 1.0
    rpm: int = 0
    tpm: int = 0
    max_concurrency: int | None = None


def build_providers(
    settings: Settings, config: FileConfig, http: aiohttp.ClientSession
) -> list[ProviderSpec]:
    timeouts = Timeouts(
        connect=settings.upstream_connect_timeout,
        first_token=settings.upstream_first_token_timeout,
        chunk_gap=settings.upstream_chunk_timeout,
        total=settings.upstream_total_timeout,
    )
    # An answer past MPCHAT_MAX_ANSWER_CHARS ends there with finish reason "length".
    limits = StreamLimits(max_answer_chars=settings.max_answer_chars)
    if config.providers:
        default_model = config.resolve("default")
        specs = []
        for p in config.providers:
            model = default_model if default_model in p.models else p.models[0]
            client = OpenAICompatible(session=http, base_url=p.base_url, api_key=p.key(),
                                      model=model, models=p.models, tools=p.tools, name=p.name,
                                      timeouts=timeouts, limits=limits, audio=p.audio())
            specs.append(ProviderSpec(client, p.priority, p.weight, p.rpm, p.tpm,
                                      p.max_concurrency))
        return specs
    if settings.upstream_base_url:
        key = settings.upstream_api_key
        client = OpenAICompatible(
            session=http,
            base_url=settings.upstream_base_url,
            api_key=key.get_secret_value() if key else None,
            model=settings.upstream_model,
            timeouts=timeouts,
            limits=limits,
        )
        return [ProviderSpec(client)]
    return [ProviderSpec(DemoModel())]
