"""Providers built from settings carry the answer limit (MPCHAT_MAX_ANSWER_CHARS)."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from mpchat.fakes.upstream import FakeUpstream
from mpchat.providers.config import FileConfig, ProviderConfig
from mpchat.providers.registry import build_providers
from mpchat.settings import Settings
from tests.providers.helpers import MESSAGES, finish, texts


async def test_max_answer_chars_reaches_every_provider(fake_upstream: FakeUpstream,
                                                       tmp_path: Path):
    settings = Settings(_env_file=None, data_dir=tmp_path, max_answer_chars=4,  # type: ignore[call-arg]
                        upstream_base_url=fake_upstream.base_url)
    config = FileConfig(providers=[ProviderConfig(name="a", base_url=fake_upstream.base_url,
                                                  models=["m"])])
    async with aiohttp.ClientSession() as http:
        for cfg in (FileConfig(), config):
            (spec,) = build_providers(settings, cfg, http)
            fake_upstream.script = [{"text": ["一二三", "四五六"]}]
            events = [e async for e in spec.provider.stream(MESSAGES)]
            assert texts(events)[0] == "一二三四"
            assert finish(events).reason == "length"
