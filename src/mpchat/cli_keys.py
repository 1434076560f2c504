"""`mpchat keys create|list|revoke|rotate`: API keys from the operator's shell.

Each command opens the configured database (migrating it first, as ``mpchat migrate``
does). A secret is printed once, on the last line; ``--quiet`` prints nothing else, so
``$(mpchat keys create --name acc --quiet | tail -1)`` is the key. Exit codes: 0 done,
1 no such key, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from mpchat.errors import InvalidRequest, NotFound

if TYPE_CHECKING:  # imported when a keys command runs, not on every `mpchat` start
    from mpchat.apikeys import ApiKey, ApiKeys
    from mpchat.settings import Settings

__all__ = ["add_keys_parser", "run_keys"]

_DURATION = re.compile(r"(\d{1,6})([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_COLUMNS = ("ID", "NAME", "PREFIX", "STATUS", "MODELS", "RPM", "TPM", "USED/QUOTA", "EXPIRES")


def add_keys_parser(sub: argparse._SubParsersAction[Any]) -> None:
    keys = sub.add_parser("keys", help="issue, list, revoke and rotate API keys",
                          description=__doc__,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = keys.add_subparsers(dest="keys_command", required=True)
    create = commands.add_parser("create", help="issue a key (printed once)")
    create.add_argument("--name", required=True, help="what the key is for (1-64 characters)")
    create.add_argument("--models", type=_models, help="allowed models, comma-separated "
                        "(default: every model)")
    create.add_argument("--rpm", type=_positive, help="requests per minute (default: unlimited)")
    create.add_argument("--tpm", type=_positive, help="tokens per minute (default: unlimited)")
    create.add_argument("--quota", type=_positive, help="tokens in all (default: unlimited)")
    create.add_argument("--expires", type=_expiry, help="30d, 12h, 45m, 2w, or a moment such as "
                        "2027-01-01T00:00:00Z (default: never)")
    create.add_argument("--quiet", action="store_true", help="print only the key")
    listing = commands.add_parser("list", help="the keys, oldest first")
    listing.add_argument("--all", action="store_true", help="revoked keys too")
    revoke = commands.add_parser("revoke", help="stop a key (every instance within "
                                 "MPCHAT_API_KEY_CACHE_TTL seconds)")
    revoke.add_argument("id")
    rotate = commands.add_parser("rotate", help="a new secret for a key; the old one stops")
    rotate.add_argument("id")
    rotate.add_argument("--quiet", action="store_true", help="print only the key")


async def run_keys(settings: Settings, args: argparse.Namespace) -> int:
    from mpchat.apikeys import ApiKeys
    from mpchat.storage.engine import create_engine
    from mpchat.storage.migrations import upgrade

    engine = create_engine(settings.resolved_database_url)
    keys = ApiKeys(engine, cache_ttl=0)
    try:
        await upgrade(engine)
        return await _COMMANDS[args.keys_command](keys, args)
    except NotFound:
        print(f"mpchat: no API key {args.id!r}", file=sys.stderr)
        return 1
    except InvalidRequest as exc:
        print(f"mpchat: {exc.message}", file=sys.stderr)
        return 2
    finally:
        await keys.aclose()
        await engine.dispose()


async def _create(keys: ApiKeys, args: argparse.Namespace) -> int:
    key, secret = await keys.create(name=args.name, models=args.models, rpm=args.rpm,
                                    tpm=args.tpm, quota=args.quota, expires_at=args.expires)
    _show_secret(key, secret, quiet=args.quiet, verb="Created")
    return 0


async def _list(keys: ApiKeys, args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    rows = [_COLUMNS, *(_row(key, now) for key in await keys.list(include_revoked=args.all))]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
              .rstrip())
    return 0


async def _revoke(keys: ApiKeys, args: argparse.Namespace) -> int:
    key = await keys.revoke(args.id)
    assert key.revoked_at is not None
    print(f"Revoked API key {key.id} ({key.name}) at {_moment(key.revoked_at)}; other instances "
          "stop accepting it within MPCHAT_API_KEY_CACHE_TTL seconds.")
    return 0


async def _rotate(keys: ApiKeys, args: argparse.Namespace) -> int:
    key, secret = await keys.rotate(args.id)
    _show_secret(key, secret, quiet=args.quiet, verb="Rotated")
    return 0


_COMMANDS: dict[str, Callable[[ApiKeys, argparse.Namespace], Awaitable[int]]] = {
    "create": _create, "list": _list, "revoke": _revoke, "rotate": _rotate,
}


def _show_secret(key: ApiKey, secret: str, *, quiet: bool, verb: str) -> None:
    if not quiet:
        print(f"{verb} API key {key.id} ({key.name})")
        for label, value in zip(_COLUMNS[4:], _row(key, datetime.now(UTC))[4:], strict=True):
            print(f"  {label.lower():<11}{value}")
        print("This key is shown once and cannot be recovered (only its hash is kept); "
              "store it now:")
    print(secret)


def _row(key: ApiKey, now: datetime) -> tuple[str, ...]:
    return (
        key.id, key.name, key.prefix + "...", key.status(now),
        ",".join(key.models) if key.models is not None else "*",
        _limit(key.rpm), _limit(key.tpm), f"{key.used_tokens}/{_limit(key.quota)}",
        _moment(key.expires_at) if key.expires_at else "never",
    )


def _limit(value: int | None) -> str:
    return "-" if value is None else str(value)


def _moment(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def _models(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("name at least one model (omit --models for all)")
    return names


def _expiry(text: str) -> datetime:
    """``30d`` (from now: s, m, h, d, w) or an ISO 8601 moment (UTC when it names no zone)."""
    duration = _DURATION.fullmatch(text.strip())
    if duration is not None:
        seconds = int(duration.group(1)) * _UNIT_S[duration.group(2)]
        return datetime.now(UTC) + timedelta(seconds=seconds)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a duration (30d, 12h) or a moment (2027-01-01T00:00:00Z): {text!r}") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
