"""Prompt profiles (issue 12, item 2): built-ins, the config file's overrides, the choice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mpchat.chat.profiles import CUSTOMER_SERVICE_PROMPT, VOICE_PROMPT, build_profiles
from mpchat.providers.config import load_config
from tests.utils import running_app


def _profiles(**configured: dict[str, Any]) -> dict[str, Any]:
    return build_profiles(system_prompt="默认", context_budget=3000, max_answer_tokens=None,
                          configured=configured, resolve=lambda m: {"cheap": "mini"}.get(m, m))


def test_the_built_ins_are_shipped_over_the_default():
    profiles = _profiles()
    assert set(profiles) == {"default", "customer_service", "voice"}
    assert profiles["default"].system_prompt == "默认"
    assert profiles["default"].params() == {}
    assert profiles["customer_service"].system_prompt == CUSTOMER_SERVICE_PROMPT
    voice = profiles["voice"]
    assert voice.system_prompt == VOICE_PROMPT and voice.params() == {"temperature": 0.5}
    assert voice.max_answer_tokens == 400 and voice.context_budget == 3000
    # The voice prompt tells the model about recognition errors and asks for speakable text.
    assert "语音识别" in VOICE_PROMPT and "Markdown" in VOICE_PROMPT


def test_the_config_file_overrides_fields_and_adds_profiles():
    profiles = _profiles(default={"context_budget": 1000},
                         voice={"model": "cheap", "max_answer_tokens": None},
                         legal={"system_prompt": "你是法律助手。", "temperature": 0.0})
    assert profiles["default"].context_budget == 1000
    assert profiles["voice"].model == "mini"  # the alias, resolved
    assert profiles["voice"].max_answer_tokens == 400  # unset: the built-in's
    assert profiles["voice"].context_budget == 1000  # unset everywhere: the default's
    legal = profiles["legal"]
    assert legal.system_prompt == "你是法律助手。" and legal.params() == {"temperature": 0.0}
    assert legal.model is None and legal.context_budget == 1000


@pytest.mark.parametrize(("body", "error"), [
    ('[profiles.voice]\nmodel = "nope"\n', "no provider serves"),
    ('[profiles.Bad-Name]\nsystem_prompt = "x"\n', "names are"),
    ('[profiles.voice]\ntemperature = 3\n', "temperature"),
    ('[profiles.voice]\ncolour = "red"\n', "colour"),
])
def test_bad_profiles_are_refused_at_startup(tmp_path: Path, body: str, error: str):
    config = tmp_path / "mpchat.toml"
    config.write_text('[[providers]]\nname = "p"\nbase_url = "http://x"\nmodels = ["m"]\n\n'
                      + body, encoding="utf-8")
    with pytest.raises(ValueError, match=error):
        load_config(config)


async def test_the_request_selects_the_profile_sent_to_the_provider(
    settings_factory, fake_upstream, tmp_path
):
    config = tmp_path / "mpchat.toml"
    config.write_text(
        f'[[providers]]\nname = "p"\nbase_url = "{fake_upstream.base_url}"\n'
        'api_key = "sk-test-key-123456"\nmodels = ["fake-model", "fake-mini"]\n\n'
        '[aliases]\ncheap = "fake-mini"\n\n'
        '[profiles.customer_service]\nmodel = "cheap"\nmax_answer_tokens = 123\n'
        'context_budget = 500\n', encoding="utf-8")
    async with running_app(settings_factory(config=config, system_prompt="默认")) as app:
        token = await app.login("profiles")
        for profile in (None, "voice", "customer_service"):
            body = {"content": "你好"} | ({"profile": profile} if profile else {})
            status, events = await app.chat_events(token, body)
            assert status == 200 and events[-1]["type"] == "done"
        plain, voice, service = fake_upstream.stats.bodies[-3:]
        assert plain["messages"][0]["content"] == "默认" and "temperature" not in plain
        assert plain["model"] == "fake-model"
        assert voice["messages"][0]["content"] == VOICE_PROMPT
        assert voice["temperature"] == 0.5 and voice["max_tokens"] == 400
        assert service["messages"][0]["content"] == CUSTOMER_SERVICE_PROMPT
        assert service["model"] == "fake-mini" and service["max_tokens"] == 123
        assert service["temperature"] == 0.3
        status, events = await app.chat_events(token, {"content": "你好", "profile": "nope"})
        assert status == 400
