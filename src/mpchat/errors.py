"""The error tree: every failure a client can see, with its stable code (API.md).

Errors are values raised in the domain; the HTTP status is attached here as data and
the mapping to a response happens once, at the edge (``mpchat.api.errors``)::

    MpchatError
    ├── InvalidRequest            400 invalid_request
    │   └── InvalidNotification   400 invalid_notification (a WeChat Pay notification refused)
    ├── ContentRejected           400 content_rejected
    ├── Unauthorized              401 unauthorized
    │   ├── InvalidCode           401 invalid_code
    │   ├── InvalidApiKey         401 invalid_api_key   (missing, unknown, revoked, expired)
    │   └── UnverifiedNotification 401 invalid_signature (signature, key id or timestamp)
    ├── QuotaExceeded             402 quota_exceeded
    ├── Forbidden                 403 forbidden         (a read-only admin token's write)
    │   └── Blocked               403 blocked           (the operator blocked this user)
    ├── NotFound                  404 not_found
    ├── PayloadTooLarge           413 payload_too_large
    ├── RateLimited               429 rate_limited      (retry_after)
    ├── UpstreamError             502 upstream_error
    ├── ServiceUnavailable        503 service_unavailable (a dependency such as WeChat is down)
    ├── Busy                      503 busy              (retry_after)
    └── UpstreamTimeout           504 upstream_timeout

``message`` is the text a user may see (zh-CN). It never carries an upstream body,
a stack trace or a secret: put those in logs (redacted), not here.
"""

from __future__ import annotations

__all__ = [
    "AudioTooLarge",
    "Blocked",
    "Busy",
    "ContentRejected",
    "EmptyAudio",
    "Forbidden",
    "InvalidApiKey",
    "InvalidAudio",
    "InvalidCode",
    "InvalidNotification",
    "InvalidRequest",
    "MpchatError",
    "NotFound",
    "NotReady",
    "PayloadTooLarge",
    "QuotaExceeded",
    "RateLimited",
    "Retracted",
    "ServiceUnavailable",
    "Unauthorized",
    "UnsupportedAudio",
    "UnverifiedNotification",
    "UpstreamError",
    "UpstreamTimeout",
    "error_for_code",
]


class MpchatError(Exception):
    """Base of every error with a stable code."""

    status: int = 500
    code: str = "internal_error"
    default_message: str = "服务内部错误，请稍后再试"

    def __init__(self, message: str | None = None, *, retry_after: float | None = None) -> None:
        self.message = message or self.default_message
        self.retry_after = retry_after
        super().__init__(self.message)

    def to_dict(self) -> dict[str, object]:
        body: dict[str, object] = {"code": self.code, "message": self.message}
        if self.retry_after is not None:
            body["retry_after"] = _whole_seconds(self.retry_after)
        return body


def _whole_seconds(seconds: float) -> int:
    """Round up so a client that waits exactly this long is never early."""
    whole = int(seconds)
    return whole + 1 if seconds > whole else max(whole, 1)


class InvalidRequest(MpchatError):
    status, code, default_message = 400, "invalid_request", "请求格式不正确"


class InvalidNotification(InvalidRequest):
    """A WeChat Pay notification that is not what it must be (body, resource, order)."""

    code, default_message = "invalid_notification", "通知内容不正确"


class InvalidAudio(InvalidRequest):
    """A voice recording that is corrupt or not in the format its Content-Type names."""

    code, default_message = "invalid_audio", "录音格式不正确或已损坏"


class UnsupportedAudio(InvalidRequest):
    code, default_message = "unsupported_audio", "不支持的录音格式"


class AudioTooLarge(InvalidRequest):
    code, default_message = "audio_too_large", "录音过长"


class EmptyAudio(InvalidRequest):
    """An empty recording, or one in which nothing was recognised."""

    code, default_message = "empty_audio", "没有听清，请再说一遍"


class Retracted(MpchatError):
    """An answer withdrawn by content safety: never shown, never spoken."""

    status, code, default_message = 410, "retracted", "该回答已被撤回"


class NotReady(MpchatError):
    """What is asked for is still being produced (a sentence of a streaming answer)."""

    status, code, default_message = 409, "not_ready", "内容尚未生成，请稍后再试"


class ContentRejected(MpchatError):
    status, code, default_message = 400, "content_rejected", "内容未通过安全检查，请修改后再试"


class Unauthorized(MpchatError):
    status, code, default_message = 401, "unauthorized", "登录已失效，请重新登录"


class InvalidCode(Unauthorized):
    code, default_message = "invalid_code", "登录凭证无效，请重新登录"


class InvalidApiKey(Unauthorized):
    code, default_message = "invalid_api_key", "API 密钥无效"


class UnverifiedNotification(Unauthorized):
    """A WeChat Pay notification whose signature, key id or timestamp does not check out."""

    code, default_message = "invalid_signature", "通知签名验证失败"


class QuotaExceeded(MpchatError):
    status, code, default_message = 402, "quota_exceeded", "额度已用完"


class Forbidden(MpchatError):
    status, code, default_message = 403, "forbidden", "没有执行此操作的权限"


class Blocked(Forbidden):
    code, default_message = "blocked", "账号已被停用"


class NotFound(MpchatError):
    status, code, default_message = 404, "not_found", "内容不存在"


class PayloadTooLarge(MpchatError):
    status, code, default_message = 413, "payload_too_large", "请求内容过大"


class RateLimited(MpchatError):
    status, code, default_message = 429, "rate_limited", "请求过于频繁，请稍后再试"


class UpstreamError(MpchatError):
    status, code, default_message = 502, "upstream_error", "模型服务暂时不可用，请稍后再试"


class ServiceUnavailable(MpchatError):
    status, code, default_message = 503, "service_unavailable", "服务暂时不可用，请稍后再试"


class Busy(MpchatError):
    status, code, default_message = 503, "busy", "当前排队人数过多，请稍后再试"


class UpstreamTimeout(MpchatError):
    status, code, default_message = 504, "upstream_timeout", "模型服务响应超时，请稍后再试"


def error_for_code(code: str, message: str | None = None, *,
                   retry_after: float | None = None) -> MpchatError:
    """The error a stable code names (as an `error` line carries it), with its message.

    An unknown code is an `MpchatError` of its own: 500 ``internal_error``.
    """
    cls = _BY_CODE.get(code, MpchatError)
    return cls(message or None, retry_after=retry_after)


def _by_code() -> dict[str, type[MpchatError]]:
    found: dict[str, type[MpchatError]] = {}
    pending: list[type[MpchatError]] = [MpchatError]
    while pending:  # breadth first: of two classes with one code, the more general wins
        cls = pending.pop(0)
        found.setdefault(cls.code, cls)
        pending.extend(cls.__subclasses__())
    return found


_BY_CODE = _by_code()
