"""The prebuilt folding table: the same table as a build, ignored unless it was made from
this code, this Unicode and these OpenCC files, and what a start loads instead of OpenCC."""

from __future__ import annotations

import logging
import marshal
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mpchat.safety import foldtable, normalize

SRC = Path(foldtable.__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def prebuilt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fold") / "fold_table.marshal"
    assert foldtable.write_prebuilt(path) > 20_000
    return path


def test_the_prebuilt_table_is_the_built_table(prebuilt: Path) -> None:
    loaded = foldtable.load_prebuilt(prebuilt)
    assert loaded == normalize.build_fold_table()
    folding = normalize.Normalizer(loaded)
    assert folding.fold("網絡賭場 ＣＡＳＩＮＯ") == "网络赌场 casino"
    assert list(folding.offsets("a\u200bb")) == [0, 2]


def test_a_table_made_from_anything_else_is_ignored(
    prebuilt: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _, table = marshal.loads(prebuilt.read_bytes())
    stale = tmp_path / "stale.marshal"
    stale.write_bytes(marshal.dumps(("0" * 64, table)))
    with caplog.at_level(logging.WARNING, logger="mpchat.safety"):
        assert foldtable.load_prebuilt(stale) is None
    assert "stale.marshal is not from this code" in caplog.text  # costs every start: said
    broken = tmp_path / "broken.marshal"
    broken.write_bytes(prebuilt.read_bytes()[:1000])
    assert foldtable.load_prebuilt(broken) is None
    other = tmp_path / "other.marshal"
    other.write_bytes(marshal.dumps({"digest": foldtable.digest()}))
    assert foldtable.load_prebuilt(other) is None
    assert foldtable.load_prebuilt(tmp_path / "missing.marshal") is None


def test_the_digest_follows_the_folding_code(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    before = foldtable.digest()
    assert foldtable.digest() == before
    changed = tmp_path / "normalize.py"
    changed.write_bytes(Path(normalize.__file__).read_bytes() + b"\n# another rule\n")
    monkeypatch.setattr(normalize, "__file__", str(changed))
    assert foldtable.digest() != before


def test_the_digest_follows_opencc_s_files(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    dictionary = tmp_path / "opencc" / "dictionary" / "TSCharacters.txt"
    dictionary.parent.mkdir(parents=True)
    dictionary.write_text("臺\t台\n", encoding="utf-8")
    monkeypatch.setattr(foldtable, "_opencc_files", lambda: [dictionary])
    before = foldtable.digest()
    dictionary.write_text("臺\t台\n擡\t抬\n", encoding="utf-8")  # an upgrade rewrites it
    assert foldtable.digest() != before


def test_a_start_with_the_prebuilt_table_does_not_load_opencc(prebuilt: Path) -> None:
    code = (
        "import sys\nfrom pathlib import Path\n"
        "import mpchat.safety.foldtable as f\n"
        "f.PREBUILT = Path(sys.argv[1])\n"
        "from mpchat.safety.normalize import default_normalizer\n"
        "assert default_normalizer().fold('賭博') == '赌博'\n"
        "print('opencc' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    with_file = subprocess.run([sys.executable, "-c", code, str(prebuilt)], env=env,
                               capture_output=True, text=True, check=True, timeout=60)
    assert with_file.stdout.strip() == "False"
    without = subprocess.run([sys.executable, "-c", code, str(prebuilt.with_name("none"))],
                             env=env, capture_output=True, text=True, check=True, timeout=60)
    assert without.stdout.strip() == "True"  # built at start, as before
