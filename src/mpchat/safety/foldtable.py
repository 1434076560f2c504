"""The folding table prebuilt at image build time, so a cold start loads it instead of
building it (docs/benchmarks.md, "Cold start and idle memory").

Building the table (`normalize.build_fold_table`) folds every assigned character one by one
and converts OpenCC's dictionaries through OpenCC, about 0.13 s on an idle machine (and
several times that on a busy one): most of what the app's start-up did after its imports.
The image runs ``python -m mpchat.safety.foldtable`` once after installing the package; the
file it writes beside this module is read back in a few milliseconds.

The file carries a digest of everything the table is made from: this package's folding code
(``normalize.py``), Python's version (its Unicode database, and marshal's format) and OpenCC's
package files (their paths and sizes, and its release). A file made from anything else
(another Python, an upgraded OpenCC, changed folding rules, or no file at all) is ignored and
the table is built at start as before, so a stale file costs time, never a wrong fold.
Nothing writes the file at run time.

The format is `marshal` (the table as the dict it is): read straight into the dict, without
the JSON parser's intermediate lists, it leaves the process about 1.5 MB smaller. Like a
``.pyc`` file, it is written at build time into the installed package and trusted as such.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import marshal
import os
import sys
import tempfile
import unicodedata
from pathlib import Path

from mpchat.safety import normalize

__all__ = ["PREBUILT", "digest", "load_prebuilt", "write_prebuilt"]

log = logging.getLogger("mpchat.safety")

PREBUILT = Path(__file__).with_name("fold_table.marshal")
_FORMAT = 1


def digest() -> str:
    """What a table built here and now is made from, as one hex digest."""
    h = hashlib.sha256(f"{_FORMAT}\0{sys.version}\0{unicodedata.unidata_version}\0".encode())
    h.update(Path(normalize.__file__).read_bytes())
    # OpenCC's files by path and size, its release by its dist-info's name: reading their
    # contents (over 1 MB) took most of the load's time. Not by modification time, which a
    # copy between the image's stages need not keep.
    for path in _opencc_files():
        h.update(f"\0{path}\0{path.stat().st_size}".encode())
    return h.hexdigest()


def load_prebuilt(path: Path | None = None) -> normalize.FoldTable | None:
    """The prebuilt table if ``path`` (default `PREBUILT`) holds one made from what this
    process has, else None."""
    path = path or PREBUILT
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None  # a checkout, or an install without the build step: built at start
    except OSError as exc:
        log.warning("prebuilt folding table unreadable (%s), building it", type(exc).__name__)
        return None
    try:
        stored = marshal.loads(data)
    except (EOFError, ValueError, TypeError):
        stored = None
    if not (isinstance(stored, tuple) and len(stored) == 2 and stored[0] == digest()
            and isinstance(stored[1], dict)):
        # Visible, because it costs every start the build the file was meant to save.
        log.warning("prebuilt folding table %s is not from this code, Python and OpenCC; "
                    "building it (run python -m mpchat.safety.foldtable)", path.name)
        return None
    table: normalize.FoldTable = stored[1]
    return table


def write_prebuilt(path: Path | None = None) -> int:
    """Build the table and write it (atomically) to ``path`` (default `PREBUILT`); returns
    its entry count."""
    path = path or PREBUILT
    table = normalize.build_fold_table()
    data = marshal.dumps((digest(), table))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".fold_table.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp, 0o644)  # readable by the image's non-root user
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(table)


def _opencc_files() -> list[Path]:
    """OpenCC's package files (code, configurations, dictionaries) and its distribution's
    metadata (named with its version), found without importing it (that alone is slow)."""
    spec = importlib.util.find_spec("opencc")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("opencc is not installed")
    root = Path(next(iter(spec.submodule_search_locations)))
    files = [p for p in root.rglob("*")
             if p.is_file() and p.suffix in (".py", ".json", ".txt")
             and "__pycache__" not in p.parts]
    return sorted([*files, *root.parent.glob("opencc*.dist-info/METADATA")])


def main() -> int:
    count = write_prebuilt()
    print(f"wrote {PREBUILT} ({count} characters)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
