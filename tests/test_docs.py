"""docs/configuration.md says what `Settings` reads: every variable in full, with its default."""

from __future__ import annotations

import re
from pathlib import Path

from mpchat.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "configuration.md"
# A name written out in full; `MPCHAT_UPSTREAM_*` (a family, not a variable) is not one.
NAME = re.compile(r"\bMPCHAT_[A-Z0-9_]*[A-Z0-9]\b")
ROW = re.compile(r"^\| `(MPCHAT_[A-Z0-9_]+)` \| (.*?) \| (.*) \|$", re.MULTILINE)
TEST_ONLY_HEADING = "### Test-only variables"


def _text() -> str:
    return DOC.read_text(encoding="utf-8")


def _settings() -> dict[str, object]:
    return {f"MPCHAT_{name.upper()}": f.default for name, f in Settings.model_fields.items()}


def _rows() -> dict[str, str]:
    """Variable -> its default cell, for the rows of the tables."""
    rows: dict[str, str] = {}
    for name, default, _ in ROW.findall(_text()):
        assert name not in rows, f"{name} has two rows in {DOC.name}"
        rows[name] = default
    return rows


def _test_only() -> set[str]:
    text = _text()
    assert TEST_ONLY_HEADING in text
    section = text.split(TEST_ONLY_HEADING, 1)[1].split("\n#", 1)[0]
    return set(NAME.findall(section))


def test_every_setting_has_a_row_of_its_own() -> None:
    missing = sorted(set(_settings()) - set(_rows()))
    assert not missing, f"settings without a row in docs/configuration.md: {missing}"


def test_every_documented_name_is_a_setting_or_a_test_variable() -> None:
    known = set(_settings()) | _test_only()
    unknown = sorted(set(NAME.findall(_text())) - known)
    assert not unknown, f"docs/configuration.md names variables nothing reads: {unknown}"


def test_no_abbreviated_names() -> None:
    # `MPCHAT_UPSTREAM_BASE_URL`, `_API_KEY`: the second cannot be searched for.
    assert not re.findall(r"`_[A-Z][A-Z0-9_]*`", _text())


def test_test_only_variables_are_read_by_the_tests() -> None:
    sources = "".join(p.read_text(encoding="utf-8") for p in (ROOT / "tests").rglob("*.py"))
    test_only = _test_only()
    assert test_only and all(name.startswith("MPCHAT_TEST_") for name in test_only)
    assert not sorted(name for name in test_only if f'"{name}"' not in sources)


def test_documented_defaults_are_the_real_ones() -> None:
    rows = _rows()
    checked, wrong = 0, []
    for name, default in _settings().items():
        written = re.findall(r"`([^`]*)`", rows.get(name, ""))
        if default is None or not written or written[0].startswith("MPCHAT_"):
            continue  # unset or derived defaults are described in words
        shown = written[0]
        if isinstance(default, bool):
            ok = shown == str(default).lower()
        elif isinstance(default, int | float):
            ok = float(shown) == default
        else:
            ok = shown == str(default)
        checked += 1
        if not ok:
            wrong.append(f"{name}: documented {shown!r}, really {default!r}")
    assert not wrong
    assert checked >= 30  # most defaults are literal values, so most are checked
