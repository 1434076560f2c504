"""`.env.example` lists every setting (commented, at its default) and nothing else;
`mpchat.example.toml` shows every key of the config file and is itself a valid config."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from mpchat.providers.config import FileConfig, ProviderConfig, load_config
from mpchat.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
ENV_LINE = re.compile(r"^#? ?(MPCHAT_[A-Z0-9_]+)=(.*)$", re.MULTILINE)


def test_env_example_lists_every_setting_once_at_its_default():
    text = (ROOT / ".env.example").read_text(encoding="utf-8")
    listed = ENV_LINE.findall(text)
    names = [name for name, _ in listed]
    settings = {f"MPCHAT_{n.upper()}": f for n, f in Settings.model_fields.items()}
    assert sorted(set(names)) == sorted(names), "a setting is listed twice"
    assert sorted(set(settings) - set(names)) == [], "settings missing from .env.example"
    assert sorted(set(names) - set(settings)) == [], "names in .env.example nothing reads"
    for name, value in listed:
        default = settings[name].default
        if value and default is not None:
            expected = str(default).lower() if isinstance(default, bool) else str(default)
            assert value == expected, f"{name}: {value!r} is not the default {expected!r}"
    assert not re.search(r"^MPCHAT_", text, re.MULTILINE), "everything stays commented out"


def test_env_example_as_is_is_the_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text((ROOT / ".env.example").read_text(encoding="utf-8"))
    assert Settings() == Settings(_env_file=None)  # type: ignore[call-arg]


def test_toml_example_shows_every_key_and_loads(monkeypatch):
    path = ROOT / "mpchat.example.toml"
    text = path.read_text(encoding="utf-8")
    shown = set(re.findall(r"^#? ?([a-z_]+) = ", text, re.MULTILINE))
    assert set(ProviderConfig.model_fields) <= shown
    assert set(tomllib.loads(text)) == set(FileConfig.model_fields)
    monkeypatch.setenv("DEEPSEEK_API_KEY", "sk-test")
    monkeypatch.setenv("DASHSCOPE_API_KEY", "sk-test")
    config = load_config(path)
    assert [p.name for p in config.providers] == ["deepseek", "qwen"]
    assert config.resolve("default") == "deepseek-chat"
