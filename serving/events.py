"""POST /v1/events: new behaviors pushed into the online sequences, visible to the next /v1/rank."""

from __future__ import annotations

import hmac
import os
import time
from typing import Annotated, Literal

import numpy as np
from fastapi import HTTPException
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints, field_validator

from feature_repo import Behavior
from seqrank.schema import PAD
from serving.bundle import Bundle
from serving.features import OnlineFeatures

RawId = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=256)] | StrictInt
MAX_EVENTS = 1_000  # per request: one push holds the store lock for its read-merge-write


class Event(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: RawId = Field(description="raw user id, a string or an integer")
    item_id: RawId = Field(description="raw item id; its category comes from the model's item table")
    ts: int | None = Field(None, gt=0, description="behavior time in epoch ms; default: when received")
    # Sequences hold positive behaviors only (DESIGN §3); impressions never enter a history.
    event_type: Literal["click", "cart", "fav", "buy"] = "click"

    # Vocabularies key raw ids as strings; an integer id is its decimal string.
    @field_validator("user_id", "item_id", mode="after")
    @classmethod
    def _as_str(cls, value: str | int) -> str:
        return str(value)


class EventsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[Event] = Field(min_length=1, max_length=MAX_EVENTS)


class EventsResponse(BaseModel):
    accepted: int = Field(description="behaviors pushed")
    unknown: int = Field(description="behaviors skipped: user or item not in the model's vocabulary")
    user_behavior: int = Field(description="user sequences rewritten")
    user_category_behavior: int = Field(description="(user, category) sequences rewritten")
    push_ms: float


def authorize(token: str | None, env_var: str) -> None:
    """403 unless admin is enabled (`env_var` set) and `token` matches it, compared in constant time."""
    # Read per request, so the token can be rotated (or admin switched off) without a restart.
    admin_token = os.environ.get(env_var)
    if not admin_token:
        raise HTTPException(status_code=403, detail=f"admin is disabled: {env_var} is not set")
    if token is None or not hmac.compare_digest(token.encode(), admin_token.encode()):
        raise HTTPException(status_code=403, detail="missing or wrong X-Admin-Token")


def push_events(
    bundle: Bundle | None, features: OnlineFeatures | None, request: EventsRequest
) -> EventsResponse:
    """Map raw ids through the bundle's vocabularies and push the known behaviors online.

    Users and items the model has no index for are skipped and counted: the store is keyed by
    dense indices, and the next pipeline run (whose ingest assigns them one) picks them up.
    """
    if bundle is None or features is None:
        raise HTTPException(status_code=503, detail="not ready: model or online store not loaded")
    now_ms = int(time.time() * 1000)
    behaviors = []
    for event in request.events:
        user = bundle.user_index.get(str(event.user_id), PAD)
        item = bundle.item_index.get(str(event.item_id), PAD)
        if user == PAD or item == PAD or item >= len(bundle.item_category):
            continue
        category = int(np.asarray(bundle.item_category)[item])
        behaviors.append(Behavior(int(user), int(item), category, event.ts or now_ms))
    started = time.perf_counter()
    pushed = features.push(behaviors) if behaviors else {"user_behavior": 0, "user_category_behavior": 0}
    return EventsResponse(
        accepted=len(behaviors),
        unknown=len(request.events) - len(behaviors),
        user_behavior=pushed["user_behavior"],
        user_category_behavior=pushed["user_category_behavior"],
        push_ms=round((time.perf_counter() - started) * 1e3, 3),
    )
