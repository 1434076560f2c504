"""Build mpchat's image with podman where no image registry is reachable.

The Dockerfile's base is a build argument (``PYTHON_IMAGE``); here it is a Debian bookworm
made by debootstrap from Debian's own packages (python3, python3-venv: Python 3.11) and
imported into podman once (``BASE``, kept in podman's storage). pip in the build reads a
wheelhouse of requirements.lock that this machine's pip downloads once (kept under
``CACHE``) and that is mounted into the build, so the build itself needs no network.
docs/deployment.md, "The image, tested", says what a machine needs and why the flags below.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mpchat-container"
# Bump the tag's number when _make_base changes what the base holds.
BASE = "localhost/mpchat-test-base:bookworm-1"
BASE_PYTHON = "3.11"  # Debian bookworm's python3
DEBIAN_MIRROR = os.environ.get("MPCHAT_TEST_DEBIAN_MIRROR", "http://deb.debian.org/debian")


class Unavailable(Exception):
    """This machine cannot build or run the image; the message says what is missing."""


def podman() -> list[str]:
    """``podman`` and the global flags this machine needs.

    runc rather than the default crun where both exist: crun (1.8, Debian 12) refuses hosts
    whose cgroups are in hybrid mode (v1 controllers and a v2 mount), as these VMs are.
    """
    if shutil.which("podman") is None:
        raise Unavailable("podman is not installed (apt-get install podman runc debootstrap)")
    return ["podman", *(["--runtime", "runc"] if shutil.which("runc") else [])]


def ulimits() -> list[str]:
    """Resource limits the container can have.

    podman asks by default for more open files (1048576) and processes than the host allows,
    and an engine without CAP_SYS_RESOURCE (these VMs) cannot raise a hard limit: the
    container's start fails ("setrlimit RLIMIT_NOFILE: Operation not permitted"). So ask for
    at most what this process has. conmon runs with nproc 32768 here; mpchat needs a few.
    """
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    files = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    return ["--ulimit", f"nofile={files}:{files}", "--ulimit", "nproc=4096:4096"]


def run(argv: list[str], *, timeout: float, stdin: bytes | None = None) -> str:
    """Run a command to its end: its stdout; a RuntimeError with its output if it fails."""
    result = subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{argv[:4]} exited {result.returncode}:\n"
                           f"{result.stdout.decode(errors='replace')[-3000:]}\n"
                           f"{result.stderr.decode(errors='replace')[-3000:]}")
    return result.stdout.decode(errors="replace")


@contextlib.contextmanager
def _cache_lock() -> Iterator[None]:
    """One builder of the cached base and wheelhouse at a time (pytest workers, worktrees)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def base_image() -> str:
    """The base image's name, made once: debootstrap, then ``podman import``."""
    with _cache_lock():
        exists = subprocess.run([*podman(), "image", "exists", BASE], check=False)
        if exists.returncode != 0:
            _make_base()
    return BASE


def _make_base() -> None:
    if shutil.which("debootstrap") is None or os.geteuid() != 0:
        raise Unavailable(f"{BASE} is not built and making it needs debootstrap, as root")
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        rootfs = Path(tmp) / "rootfs"
        try:
            run(["debootstrap", "--variant=minbase",
                 "--include=python3,python3-venv,python-is-python3",
                 "bookworm", str(rootfs), DEBIAN_MIRROR], timeout=900)
        finally:
            _unmount_under(rootfs)  # debootstrap mounts /proc and /sys there, a failed one stays
        run(["tar", "-C", str(rootfs), "-cf", f"{tmp}/rootfs.tar", "."], timeout=300)
        run([*podman(), "import", f"{tmp}/rootfs.tar", BASE], timeout=300)


def _unmount_under(path: Path) -> None:
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(f"{path}/")), reverse=True):
        subprocess.run(["umount", "--lazy", mount], check=False)


def wheelhouse() -> Path:
    """requirements.lock's wheels (markers ignored: the base's Python may need more than this
    one does) and the build backend's, for Python 3.11, downloaded once per lock."""
    pins = [line.split(";")[0].strip()
            for line in (ROOT / "requirements.lock").read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith("#")]
    with (ROOT / "pyproject.toml").open("rb") as f:
        pins += tomllib.load(f)["build-system"]["requires"]
    key = hashlib.sha256("\n".join([BASE_PYTHON, *pins]).encode()).hexdigest()[:16]
    wheels = CACHE / f"wheels-{key}"
    with _cache_lock():
        if not wheels.is_dir():
            partial = Path(tempfile.mkdtemp(dir=CACHE, prefix="wheels-partial-"))
            try:
                run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                     "--only-binary=:all:", "--python-version", BASE_PYTHON,
                     "--implementation", "cp", "--abi", f"cp{BASE_PYTHON.replace('.', '')}",
                     "--abi", "abi3", "--abi", "none", "-d", str(partial), *pins], timeout=600)
                partial.rename(wheels)
            finally:
                shutil.rmtree(partial, ignore_errors=True)
    return wheels


def build(tag: str) -> None:
    """``podman build`` of the repository's Dockerfile on the local base, without network.

    ``--format docker``: the OCI image format has no HEALTHCHECK (podman drops it).
    """
    base, wheels = base_image(), wheelhouse()
    # One build at a time, and none while `remove` prunes: buildah 1.28 building the same
    # layers twice at once, or beside an rmi of them, fails (a COPY --from finds no files).
    with _cache_lock():
        # Niced: `make test` runs it beside the Python suite, whose end is the whole run's.
        run(["nice", "-n", "10", *podman(), "build", "--format", "docker",
             "--network", "none", *ulimits(), "--volume", f"{wheels}:/wheels:ro",
             "--build-arg", f"PYTHON_IMAGE={base}",
             "--build-arg", "PIP_FIND_LINKS=/wheels", "--build-arg", "PIP_NO_INDEX=1",
             "--tag", tag, str(ROOT)], timeout=900)


def remove(tag: str) -> None:
    """Remove a built image, and the build cache of source trees a day old.

    rmi takes the final stage's layers; each source tree leaves its build stage's last two
    (about 35 MB, untagged). Those a day old go; the lock's, below newer ones, stay cached.
    """
    with _cache_lock():
        for argv in (["rmi", "--force", tag],
                     ["image", "prune", "--force", "--filter", "until=24h"]):
            subprocess.run([*podman(), *argv], capture_output=True, timeout=300, check=False)
