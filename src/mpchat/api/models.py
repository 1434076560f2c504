"""Request and response bodies of the wire contract (API.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

__all__ = [
    "ChatBody",
    "ChatResponse",
    "ConversationOut",
    "ConversationPage",
    "LoginBody",
    "LoginResponse",
    "MessageOut",
    "MessagePage",
    "Usage",
]

Id = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]


class _Strict(BaseModel):
    # Wrong types are errors ("123" is not a bool), unknown fields are ignored.
    model_config = ConfigDict(strict=True)


class LoginBody(_Strict):
    code: str = Field(min_length=1, max_length=256)


class LoginResponse(BaseModel):
    token: str
    expires_in: int


class ChatBody(_Strict):
    content: str = Field(min_length=1)
    conversation_id: Id | None = None
    stream: bool = True
    profile: str | None = Field(default=None, max_length=64)


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int


class ChatResponse(BaseModel):
    conversation_id: str
    message_id: str
    content: str
    finish_reason: str
    usage: Usage
    ai_generated: Literal[True]
    label: str


class ConversationOut(BaseModel):
    id: str
    title: str
    updated_at: datetime
    message_count: int


class ConversationPage(BaseModel):
    items: list[ConversationOut]
    next: str | None


class MessageOut(BaseModel):
    id: str
    role: str
    content: str | None
    status: str
    created_at: datetime
    # True: the model sees this message only through the summary of earlier turns.
    summarized: bool = False


class MessagePage(BaseModel):
    items: list[MessageOut]
    next: str | None
