"""Every invalid ``MPCHAT_*`` value is refused with a line naming its variable, never a
pydantic field name, a value or a traceback; garbage encryption keys are one line."""

from __future__ import annotations

import subprocess
import sys
import typing
from pathlib import Path

import pytest
from pydantic import ValidationError

from mpchat.settings import Settings, describe_errors

ROOT = Path(__file__).resolve().parents[1]


def _bad_value(annotation: object) -> str | None:
    """A value of the wrong kind for a setting's type (None: any text is acceptable)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Literal:
        return "no-such-choice"
    if args:  # X | None, SecretStr | None: the first kind decides
        return _bad_value(args[0])
    if annotation in (int, float):
        return "many"
    if annotation is bool:
        return "perhaps"
    return None


CHECKED = {f"MPCHAT_{name.upper()}": bad for name, field in Settings.model_fields.items()
           if (bad := _bad_value(field.annotation)) is not None}


def test_most_settings_are_checked():
    assert len(CHECKED) >= 40


@pytest.mark.parametrize("variable", sorted(CHECKED))
def test_an_invalid_value_names_its_variable(variable, monkeypatch):
    monkeypatch.setenv(variable, CHECKED[variable])
    with pytest.raises(ValidationError) as raised:
        Settings(_env_file=None)  # type: ignore[call-arg]
    lines = describe_errors(raised.value)
    assert lines and all(line.startswith(f"{variable}: ") for line in lines), lines
    assert CHECKED[variable] not in " ".join(lines)


def _serve(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    import os

    clean = {k: v for k, v in os.environ.items() if not k.startswith("MPCHAT_")}
    return subprocess.run([sys.executable, "-m", "mpchat", "serve"], cwd=tmp_path,
                          env={**clean, **env, "PYTHONPATH": str(ROOT / "src")},
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize(("env", "named"), [
    ({"MPCHAT_ENCRYPTION_KEYS": "not a key at all"}, "MPCHAT_ENCRYPTION_KEYS"),
    ({"MPCHAT_ENCRYPTION_KEYS": "k1:c2hvcnQ"}, "MPCHAT_ENCRYPTION_KEYS"),
    ({"MPCHAT_PORT": "eighty"}, "MPCHAT_PORT"),
    ({"MPCHAT_CONFIG": "/nonexistent/mpchat.toml"}, "MPCHAT_CONFIG"),
])
def test_serve_refuses_with_one_line(env, named, tmp_path):
    result = _serve(env, tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_a_broken_config_file_names_the_file_and_the_key(tmp_path):
    config = tmp_path / "mpchat.toml"
    config.write_text('[[providers]]\nname = "x"\nbase_url = "http://127.0.0.1:1/v1"\n'
                      'models = []\n', encoding="utf-8")
    result = _serve({"MPCHAT_CONFIG": str(config)}, tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith(f"mpchat: MPCHAT_CONFIG {config}: providers.0.models")
