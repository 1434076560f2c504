"""The `mpchat` command: serve, migrate, doctor, keys, rotate-keys, and the fakes (upstream,
wechat, wechatpay)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from mpchat.cli_keys import add_keys_parser, run_keys
from mpchat.settings import Settings, describe_errors

__all__ = ["main"]

log = logging.getLogger("mpchat")


class _Parser(argparse.ArgumentParser):
    """A parser whose description may be computed when help is shown (``describe``), so a
    description that needs an import does not cost every start."""

    def __init__(self, *args: Any, describe: Callable[[], str] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._describe = describe

    def format_help(self) -> str:
        if self._describe is not None:
            self.description, self._describe = self._describe(), None
        return super().format_help()


def main(argv: Sequence[str] | None = None) -> int:
    parser = _Parser(prog="mpchat", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP service (uvicorn, uvloop, httptools)",
                           epilog=_settings_help(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int, help="processes (default MPCHAT_WORKERS, 1)")
    sub.add_parser("migrate", help="apply database migrations (Alembic) and exit")
    sub.add_parser("doctor", help="check the configuration and every dependency; exit 0 if all "
                                  "is well")
    add_keys_parser(sub)
    fake = sub.add_parser("fake-upstream", help="run the fake OpenAI-compatible provider",
                          describe=_fake_upstream_doc,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    fake.add_argument("--host", default="127.0.0.1", help="default %(default)s")
    fake.add_argument("--port", type=int, default=9100, help="default %(default)s")
    fake.add_argument("--ttft-ms", type=float, default=0.0, help="time to first token")
    fake.add_argument("--chunks", type=int, default=20, help="deltas per answer")
    fake.add_argument("--gap-ms", type=float, default=0.0, help="time between deltas")
    fake.add_argument("--audio-latency-ms", type=float, default=0.0,
                      help="delay of /v1/audio/transcriptions and /v1/audio/speech")
    fake.add_argument("--transcript", default="你好", help="what every recording says")
    rotate = sub.add_parser("rotate-keys",
                            help="re-encrypt stored rows under the newest encryption key")
    rotate.add_argument("--batch-size", type=int, default=500, help="rows per transaction")
    wx = sub.add_parser("fake-wechat", help="run the fake WeChat API")
    wx.add_argument("--host", default="127.0.0.1")
    wx.add_argument("--port", type=int, default=9200)
    pay = sub.add_parser("fake-wechatpay", help="run the fake WeChat Pay (API v3)",
                         description="Writes the key files the service needs into --dir and "
                                     "prints its MPCHAT_WECHATPAY_* settings.")
    pay.add_argument("--host", default="127.0.0.1")
    pay.add_argument("--port", type=int, default=9300)
    pay.add_argument("--dir", default="data/fake-wechatpay", help="default %(default)s")
    pay.add_argument("--notify-url", default="http://127.0.0.1:8000/api/v1/pay/wechat/notify",
                     help="where notifications go (default %(default)s)")
    args = parser.parse_args(argv)

    if args.command == "fake-upstream":
        from mpchat.fakes.upstream import FakeUpstreamConfig, serve_forever

        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
        config = FakeUpstreamConfig(ttft=args.ttft_ms / 1000, chunks=args.chunks,
                                    gap=args.gap_ms / 1000,
                                    audio_latency=args.audio_latency_ms / 1000,
                                    transcript=args.transcript)
        serve_forever(args.host, args.port, config)
        return 0
    if args.command == "fake-wechat":
        from mpchat.fakes.wechat import main as fake_wechat

        return fake_wechat(["--host", args.host, "--port", str(args.port)])
    if args.command == "fake-wechatpay":
        from mpchat.fakes.wechatpay import main as fake_wechatpay

        return fake_wechatpay(["--host", args.host, "--port", str(args.port), "--dir", args.dir,
                               "--notify-url", args.notify_url])

    settings = _load_settings()
    if settings is None:
        return 2
    from mpchat.logs import configure_logging, secret_values

    quiet = args.command == "keys" and getattr(args, "quiet", False)
    configure_logging("WARNING" if quiet else settings.log_level, secret_values(settings),
                      fmt=settings.log_format)
    if args.command == "migrate":
        return asyncio.run(_migrate(settings))
    if args.command == "doctor":
        from mpchat.doctor import run

        return run(settings)
    if args.command == "keys":
        return asyncio.run(run_keys(settings, args))
    if args.command == "rotate-keys":
        return asyncio.run(_rotate_keys(settings, max(args.batch_size, 1)))
    return _serve(settings, args.host, args.port, args.workers)


def _settings_help() -> str:
    """Every setting as its variable and default (their meanings: docs/configuration.md)."""
    lines = ["settings (environment variables, or a .env file in the working directory;",
             "meanings in docs/configuration.md, every one commented in .env.example):"]
    for name, field in Settings.model_fields.items():
        default = field.default
        shown = "unset" if default is None else str(default)
        if field.annotation is not None and "SecretStr" in str(field.annotation):
            shown = "unset (secret)"
        shown = shown if len(shown) < 40 else shown[:37] + "..."
        lines.append(f"  MPCHAT_{name.upper():<34} {shown}")
    return "\n".join(lines)


def _fake_upstream_doc() -> str:
    """The fake provider's script steps and control API, for ``fake-upstream --help`` (only
    then: importing the fake costs every other command's start, `mpchat serve`'s above all)."""
    from mpchat.fakes import upstream

    return upstream.__doc__ or ""


def _load_settings() -> Settings | None:
    """The settings, or None after printing one line per problem, each naming its variable."""
    from pydantic import ValidationError

    from mpchat.providers.config import load_config

    problems: list[str] = []
    try:
        settings = Settings()
        settings.refuse_unsafe()
    except ValidationError as exc:
        problems = describe_errors(exc)
    except ValueError as exc:  # UnsafeSettings: names its variables
        problems = [str(exc)]
    else:
        try:  # a broken MPCHAT_CONFIG is found now, not when the app starts
            load_config(settings.config)
        except ValidationError as exc:
            problems = [f"MPCHAT_CONFIG {settings.config}: {'.'.join(map(str, e['loc']))}: "
                        f"{e['msg']}" for e in exc.errors(include_input=False)]
        except ValueError as exc:  # unreadable or not TOML: names MPCHAT_CONFIG
            problems = [str(exc)]
    for line in problems:
        print(f"mpchat: {line}", file=sys.stderr)
    return None if problems else settings


async def _migrate(settings: Settings) -> int:
    from mpchat.storage.engine import create_engine
    from mpchat.storage.migrations import upgrade

    engine = create_engine(settings.resolved_database_url)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()
    log.info("database is at the latest migration")
    return 0


async def _rotate_keys(settings: Settings, batch_size: int) -> int:
    """Exit 0 when every value is under the newest key, 1 when unreadable ones remain."""
    from mpchat.devkeys import resolve_secrets
    from mpchat.storage.crypto import Keyring
    from mpchat.storage.engine import create_engine
    from mpchat.storage.rotation import BatchProgress, count_stale, rotate_keys

    keyring = Keyring.from_spec(resolve_secrets(settings)[1])
    engine = create_engine(settings.resolved_database_url)

    def progress(batch: BatchProgress) -> None:
        print(f"{batch.column}: {batch.total_rewritten} rewritten under {keyring.primary}"
              f" (+{batch.rewritten}, changed meanwhile {batch.skipped},"
              f" unreadable {batch.unreadable})", flush=True)

    try:
        report = await rotate_keys(engine, keyring, batch_size=batch_size, on_batch=progress)
        left = await count_stale(engine, keyring)
    finally:
        await engine.dispose()
    for bad in report.unreadable:
        print(f"unreadable: {bad.column} row {bad.row} key {bad.key_id}: {bad.reason}",
              file=sys.stderr)
    remaining = sum(left.values())
    print(f"done: {report.rewritten} rewritten, {remaining} not under {keyring.primary}")
    return 0 if remaining == 0 else 1


def _serve(settings: Settings, host: str | None, port: int | None, workers: int | None) -> int:
    from mpchat.server import serve

    workers = workers or settings.workers
    if workers > 1 and settings.env == "development":
        # Migrate once here, so the workers starting together find the schema at head.
        asyncio.run(_migrate(settings))
    return serve(settings, host=host, port=port, workers=workers)


if __name__ == "__main__":
    sys.exit(main())
