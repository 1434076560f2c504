"""/admin/v1/keys: the operator issues, lists, revokes and rotates API keys.

A secret appears in exactly two responses, the key's creation and its rotation (``"key"``,
sent with ``Cache-Control: no-store``); no response ever carries its hash.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import AwareDatetime, BaseModel, Field, StringConstraints, field_validator

from mpchat.api.deps import Svc, require_admin
from mpchat.apikeys import ApiKey, KeyStatus

__all__ = ["router"]

router = APIRouter(prefix="/admin/v1/keys", tags=["admin"], dependencies=[Depends(require_admin)])

KeyId = Annotated[str, Path(min_length=1, max_length=32)]
ModelName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128)]
PerMinute = Annotated[int, Field(ge=1, le=2**31 - 1, strict=True)]
NO_STORE = {"Cache-Control": "no-store"}


class KeyCreate(BaseModel):
    name: str = Field(min_length=1, max_length=64, strict=True)
    models: list[ModelName] | None = Field(default=None, min_length=1, max_length=50)
    rpm: PerMinute | None = None
    tpm: PerMinute | None = None
    quota: int | None = Field(default=None, ge=1, le=2**63 - 1, strict=True)
    expires_at: AwareDatetime | None = None

    @field_validator("expires_at")
    @classmethod
    def _in_the_future(cls, value: datetime | None) -> datetime | None:
        if value is not None and value <= datetime.now(UTC):
            raise ValueError("expires_at must be in the future")
        return value


class KeyOut(BaseModel):
    id: str
    name: str
    prefix: str
    status: KeyStatus
    models: list[str] | None
    rpm: int | None
    tpm: int | None
    quota: int | None
    used_tokens: int
    expires_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime


class KeyWithSecret(KeyOut):
    key: str  # the secret: shown here once, never again


class KeyList(BaseModel):
    items: list[KeyOut]


@router.post("", status_code=201, response_model=KeyWithSecret)
async def create_key(body: KeyCreate, svc: Svc, response: Response) -> KeyWithSecret:
    key, secret = await svc.api_keys.create(
        name=body.name, models=body.models, rpm=body.rpm, tpm=body.tpm, quota=body.quota,
        expires_at=body.expires_at,
    )
    response.headers.update(NO_STORE)
    return KeyWithSecret(**_fields(key), key=secret)


@router.get("", response_model=KeyList)
async def list_keys(
    svc: Svc, include_revoked: Annotated[bool, Query(alias="all")] = False
) -> KeyList:
    """Oldest first; revoked keys only with ``?all=true``."""
    keys = await svc.api_keys.list(include_revoked=include_revoked)
    return KeyList(items=[KeyOut(**_fields(k)) for k in keys])


@router.get("/{key_id}", response_model=KeyOut)
async def get_key(key_id: KeyId, svc: Svc) -> KeyOut:
    return KeyOut(**_fields(await svc.api_keys.get(key_id)))


@router.post("/{key_id}/revoke", response_model=KeyOut)
async def revoke_key(key_id: KeyId, svc: Svc) -> KeyOut:
    return KeyOut(**_fields(await svc.api_keys.revoke(key_id)))


@router.delete("/{key_id}", status_code=204)
async def delete_key(key_id: KeyId, svc: Svc) -> Response:
    """Revokes (the row stays, for its usage and the record)."""
    await svc.api_keys.revoke(key_id)
    return Response(status_code=204)


@router.post("/{key_id}/rotate", response_model=KeyWithSecret)
async def rotate_key(key_id: KeyId, svc: Svc, response: Response) -> KeyWithSecret:
    key, secret = await svc.api_keys.rotate(key_id)
    response.headers.update(NO_STORE)
    return KeyWithSecret(**_fields(key), key=secret)


def _fields(key: ApiKey) -> dict[str, object]:
    return {
        "id": key.id, "name": key.name, "prefix": key.prefix,
        "status": key.status(datetime.now(UTC)),
        "models": list(key.models) if key.models is not None else None,
        "rpm": key.rpm, "tpm": key.tpm, "quota": key.quota, "used_tokens": key.used_tokens,
        "expires_at": key.expires_at, "revoked_at": key.revoked_at, "created_at": key.created_at,
    }
