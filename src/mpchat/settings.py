"""One settings class, read from the environment (``MPCHAT_*``) or a ``.env`` file.

Validated once at start and passed in; nothing reads the environment later. In
production (``MPCHAT_ENV=production``) unsafe defaults refuse to start.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mpchat.limits.ratelimit import parse_rate

__all__ = ["AuthMode", "CloudrunHeaderAuth", "Settings", "UnsafeSettings", "describe_errors"]

AuthMode = Literal["wechat", "cloudrun", "dev"]
# Where WeChat Cloud Run's X-WX-OPENID header is believed (docs/deployment.md): nowhere, at
# login only (a service without public access issues tokens), or on every call.
CloudrunHeaderAuth = Literal["off", "login", "always"]


class UnsafeSettings(ValueError):
    """A configuration that must not run (production refusals)."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MPCHAT_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    env: Literal["development", "production"] = "development"
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = Field(default=1, ge=1)
    data_dir: Path = Path("data")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    config: Path | None = None

    database_url: str | None = None
    redis_url: str | None = None

    upstream_base_url: str | None = None
    upstream_api_key: SecretStr | None = None
    upstream_model: str = "gpt-4o-mini"
    upstream_connect_timeout: float = 5.0
    upstream_first_token_timeout: float = 30.0
    upstream_chunk_timeout: float = 30.0
    upstream_total_timeout: float = 180.0
    upstream_retry_attempts: int = Field(default=3, ge=1, le=10)
    upstream_retry_initial: float = 0.5
    upstream_retry_max_wait: float = 8.0
    upstream_pool_size: int = 256
    # The longest answer kept (characters); the rest is cut with finish_reason "length".
    max_answer_chars: int = Field(default=32000, gt=0)

    # The life of an answer (docs/chat.md): it outlives the connection that asked for it.
    on_disconnect: Literal["finish", "cancel"] = "finish"
    resume_ttl: int = Field(default=600, ge=0)
    first_delta_deadline: float = Field(default=45.0, gt=0)
    answer_save_interval: float = Field(default=1.0, gt=0)
    answer_lease: float = Field(default=30.0, gt=0)
    shutdown_timeout: float = Field(default=30.0, ge=0)
    stream_coalesce_ms: int = Field(default=0, ge=0, le=1000)
    ping_interval: float = Field(default=5.0, gt=0)

    wechat_appid: str | None = None
    wechat_secret: SecretStr | None = None
    wechat_api_base: str = "https://api.weixin.qq.com"
    auth_mode: AuthMode | None = None
    # Only a service that WeChat's gateway alone can reach may believe the header: a public
    # domain passes whatever a client sends (docs/deployment.md, "Who may say who the user is").
    cloudrun_header_auth: CloudrunHeaderAuth = "off"

    secret_key: SecretStr | None = None
    encryption_keys: SecretStr | None = None
    token_ttl: int = Field(default=604800, gt=0)

    rate_limit: str = "5/minute"
    upstream_max_concurrency: int = Field(default=32, ge=1)
    queue_size: int = Field(default=256, ge=0)
    queue_timeout: float = Field(default=30.0, gt=0)

    max_body_bytes: int = Field(default=64 * 1024, gt=0)
    # /v1/chat/completions: its callers send whole conversations.
    openai_max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    # Its request log (encrypted messages and answers), off by default; kept this many days.
    openai_log_requests: bool = False
    openai_log_days: int = Field(default=30, ge=1)
    max_content_chars: int = Field(default=2000, gt=0)
    context_token_budget: int = Field(default=3000, gt=0)
    max_answer_tokens: int | None = None
    system_prompt: str = "你是一个乐于助人的中文助手，回答简洁准确。"
    # The model that writes summaries of older turns (None: the chat model); docs/chat.md.
    summary_model: str | None = None
    # Voice (docs/voice.md): the largest recording, and the provider's audio models.
    max_audio_bytes: int = Field(default=2 * 1024 * 1024, gt=0)
    transcription_model: str = "whisper-1"
    speech_model: str = "tts-1"
    speech_voice: str = "alloy"

    wordlist: str | None = None
    # Innocent phrases that overrule a listed word inside them (docs/safety.md).
    wordlist_allow: str | None = None
    # WeChat content security: on when WeChat credentials (or cloudrun) are configured.
    wechat_security: bool | None = None
    safety_review_policy: Literal["allow", "block"] = "allow"
    safety_unavailable: Literal["open", "closed"] = "closed"
    audit_text: bool = False
    # strict: no answer text leaves before WeChat's check passed it (docs/safety.md).
    output_mode: Literal["stream", "strict"] = "stream"
    # Content safety records are kept this long (the rules ask for at least six months).
    audit_retention_days: int = Field(default=180, ge=1)
    retention_days: int | None = Field(default=None, ge=1)
    login_rate_limit: str = "30/minute"
    ai_label: str = "本回答由 AI 生成"
    model_display_name: str | None = None
    filing_number: str | None = None
    filed_model_name: str | None = None

    admin_token: SecretStr | None = None
    admin_readonly_token: SecretStr | None = None  # GET /admin/v1/* only (docs/operations.md)
    usage_retention_days: int = Field(default=90, ge=1)
    # Seconds an instance trusts what it looked up about an API key (revocation delay).
    api_key_cache_ttl: float = Field(default=5.0, ge=0, le=300)
    web_demo: bool | None = None
    cors_origins: str | None = None

    # WeChat Pay API v3 (docs/quota.md): off unless configured.
    wechatpay_mchid: str | None = None
    wechatpay_apiv3_key: SecretStr | None = None
    wechatpay_private_key: Path | None = None
    wechatpay_serial: str | None = None
    wechatpay_public_key: Path | None = None
    wechatpay_public_key_id: str | None = None
    wechatpay_notify_url: str | None = None
    wechatpay_api_base: str = "https://api.mch.weixin.qq.com"
    # The listener (mpchat.server): what one client may hold of it, and whom to believe.
    forwarded_allow_ips: str | None = None
    header_timeout: float = Field(default=10.0, gt=0)
    body_timeout: float = Field(default=30.0, gt=0)
    keepalive_timeout: int = Field(default=5, ge=1)
    max_header_bytes: int = Field(default=16 * 1024, ge=1024)
    max_headers: int = Field(default=100, ge=10)
    max_connections: int = Field(default=2000, ge=1)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        for name in ("rate_limit", "login_rate_limit"):
            try:
                parse_rate(getattr(self, name))
            except ValueError:
                raise ValueError(
                    f"MPCHAT_{name.upper()} {getattr(self, name)!r}: use N/second|minute|hour|day"
                ) from None
        if self.cloudrun_header_auth != "off" and self.resolved_auth_mode != "cloudrun":
            raise ValueError("MPCHAT_CLOUDRUN_HEADER_AUTH needs MPCHAT_AUTH_MODE=cloudrun")
        key = self.wechatpay_apiv3_key
        if key is not None and len(key.get_secret_value().encode()) != 32:
            raise ValueError("MPCHAT_WECHATPAY_APIV3_KEY must be the 32-character API v3 key")
        if self.encryption_keys is not None:
            from mpchat.storage.crypto import parse_key_spec

            try:
                parse_key_spec(self.encryption_keys.get_secret_value())
            except ValueError as exc:  # its message names no key material
                raise ValueError(f"MPCHAT_ENCRYPTION_KEYS: {exc}") from None
        return self

    # Derived values: properties, so there is one source of truth.
    @property
    def resolved_auth_mode(self) -> AuthMode:
        if self.auth_mode:
            return self.auth_mode
        return "wechat" if self.wechat_appid else "dev"

    @property
    def auth_description(self) -> str:
        """The login mode for logs and the doctor: ``cloudrun`` names where its header counts."""
        mode = self.resolved_auth_mode
        return f"{mode} (header: {self.cloudrun_header_auth})" if mode == "cloudrun" else mode

    @property
    def wechat_security_enabled(self) -> bool:
        if self.wechat_security is not None:
            return self.wechat_security
        mode = self.resolved_auth_mode
        return mode == "cloudrun" or bool(self.wechat_appid and self.wechat_secret)

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'mpchat.db'}"

    @property
    def web_demo_enabled(self) -> bool:
        return self.web_demo if self.web_demo is not None else self.env == "development"

    @property
    def wechatpay_missing(self) -> list[str]:
        """The WeChat Pay settings still unset when some are set (half-configured)."""
        values = {f"MPCHAT_{name.upper()}": getattr(self, name) for name in _WECHATPAY}
        if not any(values.values()):
            return []
        return [name for name, value in values.items() if not value]

    @property
    def wechatpay_enabled(self) -> bool:
        return bool(self.wechatpay_mchid) and not self.wechatpay_missing

    def refuse_unsafe(self) -> None:
        """Raise `UnsafeSettings` listing every unsafe choice when running in production."""
        if self.env != "production":
            return
        problems = []
        if self.resolved_auth_mode == "dev":
            problems.append("MPCHAT_AUTH_MODE is dev (set MPCHAT_WECHAT_APPID or cloudrun)")
        if self.secret_key is None or len(self.secret_key.get_secret_value()) < 32:
            problems.append("MPCHAT_SECRET_KEY is missing or shorter than 32 characters")
        if self.encryption_keys is None:
            problems.append("MPCHAT_ENCRYPTION_KEYS is missing")
        if self.resolved_auth_mode == "wechat" and not self.wechat_secret:
            problems.append("MPCHAT_WECHAT_SECRET is missing for wechat login")
        problems.extend(self._wechatpay_problems())
        if problems:
            raise UnsafeSettings("refusing to start in production: " + "; ".join(problems))

    def _wechatpay_problems(self) -> list[str]:
        if self.wechatpay_missing:
            return ["WeChat Pay is half-configured, missing " + ", ".join(self.wechatpay_missing)]
        if not self.wechatpay_enabled:
            return []
        problems = []
        if not self.wechat_appid:
            problems.append("MPCHAT_WECHAT_APPID is missing (WeChat Pay orders name the appid)")
        if not (self.wechatpay_notify_url or "").startswith("https://"):
            problems.append("MPCHAT_WECHATPAY_NOTIFY_URL must be an https:// URL")
        return problems


_WECHATPAY = ("wechatpay_mchid", "wechatpay_apiv3_key", "wechatpay_private_key",
              "wechatpay_serial", "wechatpay_public_key", "wechatpay_public_key_id",
              "wechatpay_notify_url")

def describe_errors(exc: ValidationError) -> list[str]:
    """One line per problem, each naming its ``MPCHAT_*`` variable, never its value."""
    lines = []
    for error in exc.errors(include_url=False, include_input=False):
        message = str(error.get("msg", "invalid"))
        message = message.removeprefix("Value error, ")
        loc = [str(part) for part in error.get("loc", ())]
        if loc and loc[0] in Settings.model_fields:
            lines.append(f"MPCHAT_{loc[0].upper()}: {message}")
        else:  # a check across fields names its variables itself
            lines.append(message)
    return lines
