"""The two lock files: runtime pins apart from the tools, each name pinned once, nothing missing.

requirements.lock is what `make run` and a deployment image install: exactly the closure of
mpchat's runtime dependencies (pyproject.toml's ``dependencies``, with their extras and what
they pull in). requirements-dev.lock adds the development, test and benchmark tools on top
(``-r requirements.lock``). The closure is read from the installed distributions' metadata, so
this runs in the test venv, which `make test` installs from both files.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
RUNTIME_LOCK = ROOT / "requirements.lock"
DEV_LOCK = ROOT / "requirements-dev.lock"
# name==version, and an environment marker for a pin that only some Pythons need.
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!_-]+)(\s*;\s*\S.*)?$")
# Never in the runtime lock, whatever the resolver says (bench/ has its own requirements).
TOOLS = {"pytest", "pytest-asyncio", "pytest-xdist", "ruff", "mypy", "hypothesis",
         "schemathesis", "py-spy", "pyinstrument", "openai", "litellm"}


def _name(raw: str) -> str:
    return re.sub(r"[-_.]+", "-", raw).lower()


def _oldest_python() -> dict[str, str]:
    """The marker environment of the oldest Python that pyproject.toml's requires-python admits."""
    with (ROOT / "pyproject.toml").open("rb") as f:
        spec = tomllib.load(f)["project"]["requires-python"]
    assert spec.startswith(">="), spec
    oldest = Version(spec[2:])
    return {"python_version": f"{oldest.major}.{oldest.minor}",
            "python_full_version": f"{oldest.major}.{oldest.minor}.{oldest.micro}"}


def _pins(path: Path) -> tuple[dict[str, Requirement], list[str]]:
    """{name: pin} of a lock file, and its other (``-r``) lines; fails on a repeated name."""
    pins: dict[str, Requirement] = {}
    includes: list[str] = []
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-r "):
            includes.append(line[3:].strip())
            continue
        match = PIN.match(line)
        assert match, f"{path.name}:{number}: not an exact pin: {raw!r}"
        name = _name(match[1])
        assert name not in pins, f"{path.name}:{number}: {name} pinned twice"
        pins[name] = Requirement(line)
    return pins, includes


def _version(pin: Requirement) -> str:
    return next(iter(pin.specifier)).version


def _closure(roots: list[Requirement], python: dict[str, str] | None = None) -> set[str]:
    """The names of ``roots`` and of all they require on this Python (or on the one whose
    marker environment is ``python``), extras included."""
    seen: set[tuple[str, str]] = set()
    stack = [(_name(r.name), extra) for r in roots for extra in ("", *sorted(r.extras))]
    while stack:
        name, extra = stack.pop()
        if (name, extra) in seen:
            continue
        seen.add((name, extra))
        try:
            requires = metadata.distribution(name).requires or []
        except metadata.PackageNotFoundError:
            # Only another Python's requirement can be missing here (this venv has this
            # Python's closure, test_this_venv_has_the_pinned_versions); it counts as a leaf.
            assert python is not None, name
            continue
        for text in requires:
            requirement = Requirement(text)
            if requirement.marker and not requirement.marker.evaluate(
                    {**(python or {}), "extra": extra}):
                continue
            if requirement.marker is None and extra:
                continue  # already taken with extra ""
            child = _name(requirement.name)
            stack += [(child, e) for e in ("", *sorted(requirement.extras))]
    return {name for name, _ in seen}


def _applies(requirement: Requirement, extra: str) -> bool:
    return requirement.marker is None or requirement.marker.evaluate({"extra": extra})


def _mpchat_requirements(extra: str = "") -> list[Requirement]:
    """mpchat's runtime requirements, or (``extra``) those its extra adds to them."""
    requirements = [Requirement(text) for text in metadata.requires("mpchat") or []]
    return [r for r in requirements
            if _applies(r, extra) and not (extra and _applies(r, ""))]


def test_each_name_is_pinned_once_and_the_dev_lock_builds_on_the_runtime_lock() -> None:
    runtime, runtime_includes = _pins(RUNTIME_LOCK)
    dev, dev_includes = _pins(DEV_LOCK)
    assert runtime_includes == []
    assert dev_includes == ["requirements.lock"]
    assert set(runtime) & set(dev) == set(), "pinned in both files"


def test_the_runtime_lock_is_exactly_what_mpchat_needs_to_run() -> None:
    runtime, _ = _pins(RUNTIME_LOCK)
    assert set(runtime) & TOOLS == set()
    # On this Python and on the oldest one mpchat supports: redis needs async-timeout before
    # 3.11.3 (Debian 12's Python is 3.11.2), a pin with a marker.
    needed = _closure(_mpchat_requirements()) | _closure(_mpchat_requirements(), _oldest_python())
    assert needed - set(runtime) == set(), "required at run time but not pinned there"
    assert set(runtime) - needed == set(), "pinned for run time but nothing there needs it"


def test_the_dev_lock_holds_the_tools_and_all_they_need() -> None:
    runtime, _ = _pins(RUNTIME_LOCK)
    dev, _ = _pins(DEV_LOCK)
    tools = _mpchat_requirements("dev")
    assert {_name(r.name) for r in tools} - {"litellm"} <= set(dev)
    assert _closure(tools) - set(runtime) - set(dev) == set(), "a tool's dependency unpinned"


def test_this_venv_has_the_pinned_versions() -> None:
    """What the suite ran against is what the locks say (`make` reinstalls when they change)."""
    pins = {**_pins(RUNTIME_LOCK)[0], **_pins(DEV_LOCK)[0]}
    installed = {_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    wrong = {name: (_version(pin), installed.get(name)) for name, pin in pins.items()
             if (pin.marker is None or pin.marker.evaluate())
             and installed.get(name) != _version(pin)}
    assert wrong == {}, "(pinned, installed); run make to reinstall"


def _imported_modules(root: Path) -> set[str]:
    modules: set[str] = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                modules.add(node.module.split(".")[0])
    return modules


def test_the_code_imports_only_what_the_runtime_lock_installs() -> None:
    """An import in src/ of something only the dev lock brings (httpx, say) fails here."""
    runtime, _ = _pins(RUNTIME_LOCK)
    providers = metadata.packages_distributions()
    third_party = _imported_modules(ROOT / "src" / "mpchat") - set(sys.stdlib_module_names)
    third_party.discard("mpchat")
    outside = {module: providers.get(module) for module in third_party
               if not {_name(d) for d in providers.get(module, [])} & set(runtime)}
    assert outside == {}
