"""The online ranking service: FastAPI app scoring candidates with the champion bundle and Feast history."""

from __future__ import annotations

import hmac
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import uvicorn
from fastapi import FastAPI, Header, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictStr
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from seqrank.config import ServeConfig
from seqrank.schema import PAD
from serving.bundle import Bundle, load_bundle
from serving.features import OnlineFeatures
from serving.ranking import build_batch, candidate_items, categories_of, score
from serving.request_log import RequestLog

log = logging.getLogger(__name__)

ADMIN_TOKEN_ENV = "SEQRANK_ADMIN_TOKEN"
# One intra-op thread: on the 2-core machines this targets, a second torch thread competes with
# the event loop and the network for the cores; 500-candidate DIN requests measured about 1.5-2x
# slower at p50 with 2 threads than with 1. Scale out with processes instead.
TORCH_THREADS = 1


class RankRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: StrictStr = Field(min_length=1, max_length=256)
    candidates: list[StrictStr] = Field(min_length=1)


class ScoredItem(BaseModel):
    item_id: str
    score: float


class RankResponse(BaseModel):
    user_id: str
    model_version: str
    items: list[ScoredItem]


class BodyLimit:
    """ASGI middleware answering 413 when a request body exceeds `max_bytes`.

    Checks Content-Length first, then counts the bytes of chunked bodies as they arrive; the
    buffered body is replayed to the app, so handlers read it as usual.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _reject(self, send: Send) -> None:
        response = JSONResponse({"detail": f"request body exceeds {self.max_bytes} bytes"}, status_code=413)
        await send({"type": "http.response.start", "status": 413, "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._reject(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class Service:
    """The live state behind the app: the current bundle (swapped whole on reload) and the store."""

    def __init__(self, bundle_dir: Path, feast_dir: Path, request_log: RequestLog | None = None) -> None:
        self.bundle_dir = Path(bundle_dir)
        self.bundle: Bundle = load_bundle(self.bundle_dir)
        self.features = OnlineFeatures(feast_dir)
        self.request_log = request_log
        self.last_reload_error: str | None = None
        self._reload_lock = threading.Lock()

    @staticmethod
    def now_ms() -> int:
        """The impression time of a request (batch key `ts`), epoch ms."""
        return int(time.time() * 1000)

    def reload(self) -> tuple[bool, str | None]:
        """Load the bundle again; on failure keep serving the last good one and return the error."""
        with self._reload_lock:
            try:
                fresh = load_bundle(self.bundle_dir)
            except Exception as err:
                # Any failure here (missing file, bad weights, wrong spec) must leave the service up.
                self.last_reload_error = f"{type(err).__name__}: {err}"
                log.exception(
                    "reload of %s failed; still serving %s", self.bundle_dir, self.bundle.model_version
                )
                return False, self.last_reload_error
            self.bundle = fresh
            self.last_reload_error = None
            return True, None

    def rank(self, request: RankRequest) -> dict[str, Any]:
        """The RankResponse for `request` as plain JSON-able data (items by score, descending)."""
        bundle = self.bundle  # one reference for the whole request, whatever a reload does meanwhile
        user = bundle.user_index.get(request.user_id, 0)
        sequence = self.features.user_sequence(user)
        now = self.now_ms()
        by_category = stats = None
        if bundle.inputs & {"cat_item", "cat_ts", "item_dense"}:
            indices = candidate_items(bundle, request.candidates)
            if "cat_item" in bundle.inputs or "cat_ts" in bundle.inputs:
                categories = categories_of(bundle, indices)
                by_category = self.features.category_sequences(user, categories[categories != PAD].tolist())
            if "item_dense" in bundle.inputs:
                stats = self.features.item_stats(indices)
        batch = build_batch(bundle, request.user_id, request.candidates, sequence, now, by_category, stats)
        scores = score(bundle, batch)
        order = np.argsort(-scores, kind="stable").tolist()  # ties keep the caller's order
        ranked = scores[order].tolist()
        candidates = request.candidates
        items = [{"item_id": candidates[i], "score": s} for i, s in zip(order, ranked, strict=True)]
        if self.request_log is not None and self.request_log.sampled():
            self._log(request, user, now, sequence, int(batch["category"][order[0]]))
        return {"user_id": request.user_id, "model_version": bundle.model_version, "items": items}

    def _log(
        self, request: RankRequest, user: int, now: int, sequence: dict[str, np.ndarray], top_category: int
    ) -> None:
        """Log what the model read: the last seq_len behaviors, and the category sub-sequence the
        SIM hard search would retrieve for the top candidate."""
        assert self.request_log is not None
        length = self.bundle.seq_len
        sub = self.features.category_sequences(user, [top_category]).get(top_category, {})
        self.request_log.write(
            {
                "ts": now,
                "user_id": request.user_id,
                "user": user,
                "model_version": self.bundle.model_version,
                "seq_len": length,
                "features": {name: values[-length:] for name, values in sequence.items()},
                "category": top_category,
                "category_features": sub,
            }
        )


def create_app(
    bundle_dir: Path, feast_dir: Path, cfg: ServeConfig, request_log_dir: Path | None = None
) -> FastAPI:
    """The ranking app over `bundle_dir` (a serving bundle) and `feast_dir` (a Feast store directory).

    Loads the bundle and opens the online store now, so a broken deployment fails at startup.
    With `request_log_dir`, a `cfg.request_log_sample` share of requests is logged there.
    """
    request_log = RequestLog(request_log_dir, cfg.request_log_sample) if request_log_dir is not None else None
    service = Service(bundle_dir, feast_dir, request_log)
    if not os.environ.get(ADMIN_TOKEN_ENV):
        log.info("%s is not set: admin endpoints are disabled", ADMIN_TOKEN_ENV)

    app = FastAPI(title="seqrank ranking service", docs_url=None, redoc_url=None)
    app.state.service = service
    app.add_middleware(BodyLimit, max_bytes=cfg.max_body_bytes)

    # Returning a Response skips FastAPI re-validating 500 items against the model it documents.
    @app.post("/rank", response_model=RankResponse)
    def rank(request: RankRequest) -> JSONResponse:
        if len(request.candidates) > cfg.max_candidates:
            raise HTTPException(
                status_code=413,
                detail=f"{len(request.candidates)} candidates; at most {cfg.max_candidates} per request",
            )
        return JSONResponse(service.rank(request))

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        bundle = service.bundle
        return {
            "status": "ok",
            "loaded": True,
            "model_version": bundle.model_version,
            "run_id": bundle.run_id,
            "model": bundle.model.spec.name,
            "last_reload_error": service.last_reload_error,
        }

    @app.post("/admin/reload")
    def reload(x_admin_token: str | None = Header(default=None)) -> JSONResponse:
        # Read per request, so the token can be rotated (or admin switched off) without a restart.
        admin_token = os.environ.get(ADMIN_TOKEN_ENV)
        if not admin_token:
            raise HTTPException(status_code=403, detail=f"admin is disabled: {ADMIN_TOKEN_ENV} is not set")
        if x_admin_token is None or not hmac.compare_digest(x_admin_token.encode(), admin_token.encode()):
            raise HTTPException(status_code=403, detail="missing or wrong X-Admin-Token")
        previous = service.bundle.model_version
        ok, error = service.reload()
        body = {"reloaded": ok, "previous": previous, "model_version": service.bundle.model_version}
        if not ok:
            return JSONResponse({**body, "error": error}, status_code=500)
        log.info("reloaded bundle: %s -> %s", previous, body["model_version"])
        return JSONResponse(body)

    return app


def make_server(
    bundle_dir: Path, feast_dir: Path, cfg: ServeConfig, request_log_dir: Path | None = None
) -> uvicorn.Server:
    """A uvicorn server for the app on cfg.host:cfg.port; `.run()` blocks, `.should_exit` stops it.

    Sets torch's intra-op threads for the whole process, so it belongs here (the process entry)
    and not in `create_app`, which tests and embedding applications call.
    """
    torch.set_num_threads(TORCH_THREADS)
    app = create_app(bundle_dir, feast_dir, cfg, request_log_dir)
    log.info("serving %s on http://%s:%d", app.state.service.bundle.model_version, cfg.host, cfg.port)
    config = uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level="warning", access_log=False)
    return uvicorn.Server(config)


def serve(bundle_dir: Path, feast_dir: Path, cfg: ServeConfig, request_log_dir: Path | None = None) -> None:
    """Run the service with uvicorn on cfg.host:cfg.port (loopback unless configured otherwise)."""
    make_server(bundle_dir, feast_dir, cfg, request_log_dir).run()
