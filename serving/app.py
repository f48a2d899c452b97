"""The online ranking service: FastAPI app scoring candidates with the champion bundle and Feast history.

Routes: POST /v1/rank (and /rank, its alias), GET /healthz (alive), GET /readyz (model and store
loaded and answering), GET /metrics (Prometheus), POST /admin/reload (token), /docs (OpenAPI).
docs/serving.md describes the request path, its budgets and its faults.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, ClassVar, TypeVar, cast

import numpy as np
import orjson
import torch
import uvicorn
from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints, field_validator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from seqrank.config import ServeConfig
from seqrank.schema import PAD
from serving import events, runtime, scoring
from serving.bundle import Bundle, load_bundle
from serving.events import EventsRequest, EventsResponse, authorize
from serving.features import ItemTable, OnlineFeatures
from serving.metrics import Metrics
from serving.ranking import candidate_items, categories_of, request_inputs, score
from serving.request_log import RequestLog

log = logging.getLogger(__name__)

ADMIN_TOKEN_ENV = "SEQRANK_ADMIN_TOKEN"
# `seqrank serve --workers N` hands each worker process its settings through these variables.
WORKER_ENV = {
    "bundle": "SEQRANK_SERVE_BUNDLE",
    "feast": "SEQRANK_SERVE_FEAST",
    "request_log": "SEQRANK_SERVE_REQUEST_LOG",
    "config": "SEQRANK_SERVE_CONFIG",
}
# The probe user of /readyz: index 1 exists in every non-empty vocabulary; a missing row is fine,
# the read answering is what counts.
PROBE_USER = 1
ROUTES = (
    "/v1/rank",
    "/rank",
    "/v1/events",
    "/healthz",
    "/readyz",
    "/metrics",
    "/admin/reload",
    "/docs",
    "/openapi.json",
)

RawId = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=256)] | StrictInt
T = TypeVar("T")


class RankContext(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: Annotated[str, StringConstraints(strict=True, max_length=256)] | None = Field(
        None, description="echoed in the response and the request log"
    )
    request_time_ms: StrictInt | None = Field(
        None, gt=0, description="impression time (epoch ms) the features are taken as of; default: now"
    )


class RankRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: RawId = Field(description="raw user id, a string or an integer")
    candidates: list[RawId] = Field(min_length=1, description="raw item ids to rank, strings or integers")
    context: RankContext | None = None

    # Vocabularies key raw ids as strings; an integer id is its decimal string.
    @field_validator("user_id", mode="after")
    @classmethod
    def _user_as_str(cls, value: str | int) -> str:
        return str(value)

    @field_validator("candidates", mode="after")
    @classmethod
    def _candidates_as_str(cls, value: list[str | int]) -> list[str]:
        return list(map(str, value))


class ScoredItem(BaseModel):
    item_id: str
    score: float


class Timing(BaseModel):
    features_ms: float
    model_ms: float
    total_ms: float


class RankResponse(BaseModel):
    user_id: str
    request_id: str | None
    model: str
    model_version: str
    items: list[ScoredItem]
    degraded: bool = Field(description="true: popularity order, the model was not asked (degraded_reason)")
    degraded_reason: str | None
    timing: Timing


class NotReady(Exception):
    """The service has no model to answer with yet (starting, or every load failed)."""


class StoreFault(Exception):
    """An online-store read failed or passed its deadline; `kind` names which, for /metrics."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


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


class RequestMetrics:
    """ASGI middleware timing every request by route and status, and counting 4xx/5xx by kind.

    Outermost, so the 413 of BodyLimit and FastAPI's 422 are counted like the app's own answers.
    Paths outside ROUTES share the label "other", keeping the series bounded.
    """

    KINDS: ClassVar[dict[int, str]] = {
        403: "forbidden",
        404: "not_found",
        413: "too_large",
        422: "invalid_request",
        503: "not_ready",
    }

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            path = scope["path"]
            route = path if path in ROUTES else "other"
            self.metrics.request_seconds.labels(route, str(status)).observe(time.perf_counter() - started)
            if status >= 400:
                self.metrics.errors.labels(
                    self.KINDS.get(status, "internal" if status >= 500 else "bad_request")
                ).inc()


class Service:
    """The live state behind the app: the current bundle (swapped whole on reload), the store, the
    in-process item table, and the thread that keeps them (re)loaded.

    Store reads run on one dedicated thread and the request waits at most cfg.feature_timeout_ms
    for them: past it the request gets a degraded answer (popularity order), never a hang. The
    store is opened in the background and retried while it is unreachable, so a missing store
    fails /readyz instead of crashing the process.
    """

    def __init__(
        self,
        bundle_dir: Path,
        feast_dir: Path,
        cfg: ServeConfig,
        request_log: RequestLog | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.bundle_dir = Path(bundle_dir)
        self.feast_dir = Path(feast_dir)
        self.cfg = cfg
        self.request_log = request_log
        self.metrics = metrics or Metrics()
        self.bundle: Bundle | None = None
        self.features: OnlineFeatures | None = None
        self.items: ItemTable | None = None
        self.load_error: str | None = None
        self.store_error: str | None = None
        self.last_reload_error: str | None = None
        self._reload_lock = threading.Lock()
        self._store_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="seqrank-store")
        self._stop = threading.Event()
        self._keeper: threading.Thread | None = None
        self._timeout_s = cfg.feature_timeout_ms / 1000
        self.cores = runtime.CoreShare(cfg.unit_cores or runtime.default_unit_cores(cfg.workers))

    @staticmethod
    def now_ms() -> int:
        """The impression time of a request without context.request_time_ms (batch key `ts`), epoch ms."""
        return int(time.time() * 1000)

    # --- loading ---------------------------------------------------------------------------------

    def load_bundle(self) -> None:
        """Load the bundle now; raises when it is unusable (and records why for /readyz)."""
        try:
            bundle = load_bundle(self.bundle_dir)
        except Exception as err:
            self.load_error = f"{type(err).__name__}: {err}"
            raise
        self._serve_bundle(bundle)
        self.load_error = None

    def _serve_bundle(self, bundle: Bundle) -> None:
        # Sessions first: a request that sees the new bundle finds its runtime ready.
        scoring.prepare(bundle.model, self.cfg.runtime, self.cores.cores)
        self.bundle = bundle
        self.metrics.serving(bundle.model.spec.name, bundle.model_version)
        n_items = max(len(bundle.item_category), bundle.vocab_sizes.get("item", 0))
        if self.items is None or self.items.n_items != n_items:
            self.items = ItemTable(n_items)

    def open_store(self) -> bool:
        """Open the online store and (re)read the item table when the store changed; whether the
        store is usable. Failures are kept in `store_error`, never raised."""
        try:
            if self.features is None:
                self.features = OnlineFeatures(
                    self.feast_dir,
                    read_delay_s=self.cfg.fault_store_delay_ms / 1000,
                    on_read=lambda view, s: self.metrics.store_read_seconds.labels(view).observe(s),
                )
            if self.items is not None:
                self.items.refresh(self.features)
        except Exception as err:
            # Any failure (no repo, registry unreadable, Redis down) must leave the service up.
            self.store_error = f"{type(err).__name__}: {err}"
            log.warning("online store at %s is not usable: %s", self.feast_dir, self.store_error)
            return False
        self.store_error = None
        return True

    def start(self, load_now: bool) -> None:
        """Load now (`load_now`: a bad bundle raises) or in the background, then keep the store
        and the item table fresh on a daemon thread until `stop`."""
        if load_now:
            self.load_bundle()
            self.open_store()
        self._keeper = threading.Thread(target=self._keep, name="seqrank-keeper", daemon=True)
        self._keeper.start()

    def _keep(self) -> None:
        while not self._stop.is_set():
            if self.bundle is None:
                try:
                    self.load_bundle()
                except Exception:
                    log.exception("loading bundle %s failed; retrying", self.bundle_dir)
            ok = self.open_store() if self.bundle is not None else False
            self._stop.wait(self.cfg.item_refresh_s if ok else self.cfg.store_retry_s)

    def stop(self) -> None:
        self._stop.set()
        self._store_pool.shutdown(wait=False, cancel_futures=True)

    def reload(self) -> tuple[bool, str | None]:
        """Load the bundle again; on failure keep serving the last good one and return the error.

        A bundle released with its own store version (Bundle.feast_dir) brings that store: it is
        opened and the item table read from it before anything is swapped, then store, item table
        and bundle are assigned, so requests keep being answered throughout. A request that began on
        the old bundle may read the new store; its ids extend the old one's, and ids past a model's
        vocab are unknown to it (ranking._known), never an error.
        """
        with self._reload_lock:
            try:
                fresh = load_bundle(self.bundle_dir)
                features, items = self.features, self.items
                if fresh.feast_dir is not None and (
                    features is None or features.feast_dir != fresh.feast_dir
                ):
                    features = OnlineFeatures(
                        fresh.feast_dir,
                        read_delay_s=self.cfg.fault_store_delay_ms / 1000,
                        on_read=lambda view, s: self.metrics.store_read_seconds.labels(view).observe(s),
                    )
                n_items = max(len(fresh.item_category), fresh.vocab_sizes.get("item", 0))
                if items is None or items.n_items != n_items or features is not self.features:
                    items = ItemTable(n_items)
                    if features is not None:
                        items.refresh(features)
            except Exception as err:
                # Any failure here (missing file, bad weights, wrong spec) must leave the service up.
                self.last_reload_error = f"{type(err).__name__}: {err}"
                self.metrics.reloads.labels("failed").inc()
                self.metrics.errors.labels("reload_failed").inc()
                current = self.bundle.model_version if self.bundle else None
                log.exception("reload of %s failed; still serving %s", self.bundle_dir, current)
                return False, self.last_reload_error
            if features is not self.features and features is not None:
                self.features, self.feast_dir = features, features.feast_dir
                log.info("online store switched to %s", features.feast_dir)
            self.items = items
            self._serve_bundle(fresh)
            self.last_reload_error = None
            self.metrics.reloads.labels("ok").inc()
            return True, None

    # --- store reads with a deadline -----------------------------------------------------------

    def _read(self, read: Callable[[OnlineFeatures], T]) -> T:
        """`read(features)` on the store thread, waited for at most cfg.feature_timeout_ms."""
        features = self.features
        if features is None:
            raise StoreFault(
                "store_unavailable", f"online store not open: {self.store_error or 'connecting'}"
            )
        future: Future[T] = self._store_pool.submit(read, features)
        try:
            return future.result(timeout=self._timeout_s)
        except FutureTimeout:
            future.cancel()  # still queued: skip it; already running: it finishes, unread
            raise StoreFault(
                "feature_timeout", f"online-store read took over {self.cfg.feature_timeout_ms:g} ms"
            ) from None
        except Exception as err:
            raise StoreFault("store_error", f"online-store read failed: {type(err).__name__}: {err}") from err

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Whether the model is loaded and the store answers a probe read within the deadline."""
        problems = []
        bundle = self.bundle
        if bundle is None:
            problems.append(f"model: {self.load_error or 'loading'}")
        try:
            self._read(lambda features: features.user_sequence(PROBE_USER))
        except StoreFault as fault:
            problems.append(f"store: {fault}")
        # The item table feeds dense models and the degraded (popularity) answer of every model.
        if bundle is not None and not (self.items and self.items.loaded):
            problems.append("item table: loading")
        body: dict[str, Any] = {"ready": not problems, "problems": problems}
        if bundle is not None:
            body.update(model=bundle.model.spec.name, model_version=bundle.model_version)
        self.metrics.ready.set(0 if problems else 1)
        return not problems, body

    # --- ranking -------------------------------------------------------------------------------

    def rank(self, request: RankRequest) -> dict[str, Any]:
        """The RankResponse for `request` as plain JSON-able data (items by score, descending)."""
        with self.cores.request():  # counted in flight, for the cores its scoring may use
            return self._rank(request)

    def _rank(self, request: RankRequest) -> dict[str, Any]:
        started = time.perf_counter()
        bundle = self.bundle  # one reference for the whole request, whatever a reload does meanwhile
        if bundle is None:
            raise NotReady(f"no model loaded yet: {self.load_error or 'loading'}")
        context = request.context or RankContext()
        now = context.request_time_ms or self.now_ms()
        # The validators made every id a string; the fields keep the types the API accepts.
        user_id, candidates = cast(str, request.user_id), cast(list[str], request.candidates)
        self.metrics.candidates.observe(len(candidates))
        indices = candidate_items(bundle, candidates)
        user = bundle.user_index.get(user_id, PAD)
        wanted: list[int] = []
        searches = "cat_item" in bundle.inputs or "cat_ts" in bundle.inputs
        if searches:
            categories = categories_of(bundle, indices)
            wanted = np.unique(categories[categories != PAD]).tolist()
        try:
            sequence, by_category = self._read(
                lambda features: (
                    features.user_sequence(user),
                    features.category_sequences(user, wanted) if wanted else {},
                )
            )
        except StoreFault as fault:
            return self._degraded(bundle, request, indices, fault, started)
        fetched = time.perf_counter()
        items = self.items
        stats = items.stats(indices) if items is not None and "item_dense" in bundle.inputs else None
        inputs = request_inputs(
            bundle,
            user_id,
            candidates,
            sequence,
            now,
            by_category if searches else None,
            stats,
            indices,
        )
        scores = score(bundle, inputs)
        scored = time.perf_counter()
        order = np.argsort(-scores, kind="stable")  # ties keep the caller's order
        if self.request_log is not None and self.request_log.sampled():
            top_category = int(categories_of(bundle, indices[order[:1]])[0])
            self._log(bundle, request, user, now, sequence, top_category, by_category.get(top_category))
        return self._response(
            bundle, request, order, scores[order], None, (fetched - started, scored - fetched, started)
        )

    def _degraded(
        self, bundle: Bundle, request: RankRequest, indices: np.ndarray, fault: StoreFault, started: float
    ) -> dict[str, Any]:
        """Popularity order (clicks in the item table; the caller's order where unknown), flagged."""
        self.metrics.degraded.labels(fault.kind).inc()
        self.metrics.errors.labels(fault.kind).inc()
        log.warning("degraded answer for user %s: %s", request.user_id, fault)
        items = self.items
        popularity = items.popularity(indices) if items is not None else np.zeros(len(indices))
        order = np.argsort(-popularity, kind="stable")
        fetched = time.perf_counter()
        return self._response(
            bundle, request, order, popularity[order], fault.kind, (fetched - started, 0.0, started)
        )

    def _response(
        self,
        bundle: Bundle,
        request: RankRequest,
        order: np.ndarray,
        ranked: np.ndarray,
        degraded: str | None,
        timing: tuple[float, float, float],
    ) -> dict[str, Any]:
        candidates = request.candidates
        ids = [candidates[i] for i in order.tolist()]
        items = [{"item_id": i, "score": s} for i, s in zip(ids, ranked.tolist(), strict=True)]
        features_s, model_s, started = timing
        return {
            "user_id": request.user_id,
            "request_id": request.context.request_id if request.context else None,
            "model": bundle.model.spec.name,
            "model_version": bundle.model_version,
            "items": items,
            "degraded": degraded is not None,
            "degraded_reason": degraded,
            "timing": {
                "features_ms": round(features_s * 1e3, 3),
                "model_ms": round(model_s * 1e3, 3),
                "total_ms": round((time.perf_counter() - started) * 1e3, 3),
            },
        }

    def _log(
        self,
        bundle: Bundle,
        request: RankRequest,
        user: int,
        now: int,
        sequence: dict[str, np.ndarray],
        top_category: int,
        category_row: dict[str, np.ndarray] | None,
    ) -> None:
        """Log what the model read, with the bundle this request used: the last seq_len behaviors,
        and the category sub-sequence the SIM hard search retrieves for the top candidate."""
        assert self.request_log is not None
        if category_row is None:
            try:
                category_row = self._read(
                    lambda features: features.category_sequences(user, [top_category]).get(top_category, {})
                )
            except StoreFault as fault:
                log.warning("request log without category features: %s", fault)
                category_row = {}
        length = bundle.seq_len
        self.request_log.write(
            {
                "ts": now,
                "request_id": request.context.request_id if request.context else None,
                "user_id": request.user_id,
                "user": user,
                "model_version": bundle.model_version,
                "run_id": bundle.run_id,
                "bundle": str(bundle.path),
                "seq_len": length,
                "features": {name: values[-length:] for name, values in sequence.items()},
                "category": top_category,
                "category_features": category_row,
            }
        )


def _field(loc: tuple[Any, ...]) -> str:
    # ("body", "candidates", 3) -> "candidates[3]"; the body itself (bad JSON) -> "body".
    parts = [str(p) for p in loc[1:]] if loc and loc[0] == "body" else [str(p) for p in loc]
    name = ""
    for part in parts:
        name += f"[{part}]" if part.isdigit() else (f".{part}" if name else part)
    return name or "body"


def create_app(
    bundle_dir: Path,
    feast_dir: Path,
    cfg: ServeConfig,
    request_log_dir: Path | None = None,
    load_now: bool = True,
) -> FastAPI:
    """The ranking app over `bundle_dir` (a serving bundle) and `feast_dir` (a Feast store directory).

    With `load_now` the bundle is loaded when the app starts (its lifespan), so a broken bundle
    fails there; without, it loads in the background and /readyz answers 503 until it has
    (make_server: the process is up and observable while it starts). The store is always opened
    without raising: while it is unreachable /readyz fails and ranking answers degraded.
    With `request_log_dir`, a `cfg.request_log_sample` share of requests is logged there.
    """
    request_log = RequestLog(request_log_dir, cfg.request_log_sample) if request_log_dir is not None else None
    metrics = Metrics()
    service = Service(bundle_dir, feast_dir, cfg, request_log, metrics)
    if not os.environ.get(ADMIN_TOKEN_ENV):
        log.info("%s is not set: admin endpoints are disabled", ADMIN_TOKEN_ENV)

    @asynccontextmanager
    async def lifespan(_: FastAPI):  # type: ignore[no-untyped-def]
        service.start(load_now)
        try:
            yield
        finally:
            service.stop()

    app = FastAPI(title="seqrank ranking service", lifespan=lifespan)
    app.state.service = service
    app.add_middleware(BodyLimit, max_bytes=cfg.max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=metrics)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, err: RequestValidationError) -> JSONResponse:
        errors = [
            {
                # A body that is no JSON has the byte offset as its location, not a field.
                "field": "body" if e.get("type") == "json_invalid" else _field(tuple(e.get("loc", ()))),
                "message": e.get("msg", ""),
            }
            for e in err.errors()
        ]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return JSONResponse({"detail": detail, "errors": errors}, status_code=422)

    def rank(request: RankRequest) -> Response:
        if len(request.candidates) > cfg.max_candidates:
            raise HTTPException(
                status_code=413,
                detail=f"candidates: {len(request.candidates)} given; at most {cfg.max_candidates} per request",
            )
        try:
            body = service.rank(request)
        except NotReady as err:
            raise HTTPException(status_code=503, detail=str(err)) from None
        # Encoded here: FastAPI would re-validate 500 items against the model it documents; orjson
        # takes 0.04 ms for 500 items where json.dumps takes 0.5 ms (docs/serving.md).
        return Response(orjson.dumps(body), media_type="application/json")

    app.post("/v1/rank", response_model=RankResponse, summary="Rank candidates for a user")(rank)
    app.post("/rank", response_model=RankResponse, deprecated=True, summary="Alias of /v1/rank")(rank)

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        """Alive: the process answers. Says what it serves, if anything yet."""
        bundle = service.bundle
        return {
            "status": "ok",
            "loaded": bundle is not None,
            "model_version": bundle.model_version if bundle else None,
            "run_id": bundle.run_id if bundle else None,
            "model": bundle.model.spec.name if bundle else None,
            "last_reload_error": service.last_reload_error,
        }

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        """Ready: a model is loaded and the online store answers a read within the deadline."""
        ok, body = service.readiness()
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics")
    def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/admin/reload")
    def reload(x_admin_token: str | None = Header(default=None)) -> JSONResponse:
        # Read per request, so the token can be rotated (or admin switched off) without a restart.
        admin_token = os.environ.get(ADMIN_TOKEN_ENV)
        if not admin_token:
            raise HTTPException(status_code=403, detail=f"admin is disabled: {ADMIN_TOKEN_ENV} is not set")
        if x_admin_token is None or not hmac.compare_digest(x_admin_token.encode(), admin_token.encode()):
            raise HTTPException(status_code=403, detail="missing or wrong X-Admin-Token")
        previous = service.bundle.model_version if service.bundle else None
        ok, error = service.reload()
        current = service.bundle.model_version if service.bundle else None
        body = {"reloaded": ok, "previous": previous, "model_version": current}
        if not ok:
            return JSONResponse({**body, "error": error}, status_code=500)
        log.info("reloaded bundle: %s -> %s", previous, current)
        return JSONResponse(body)

    @app.post("/v1/events", response_model=EventsResponse)
    def push_events(
        request: EventsRequest, x_admin_token: str | None = Header(default=None)
    ) -> EventsResponse:
        """New behaviors into the online sequences (admin token); the next /v1/rank reads them."""
        authorize(x_admin_token, ADMIN_TOKEN_ENV)
        return events.push_events(service.bundle, service.features, request)

    return app


def make_server(
    bundle_dir: Path, feast_dir: Path, cfg: ServeConfig, request_log_dir: Path | None = None
) -> uvicorn.Server:
    """A uvicorn server for the app on cfg.host:cfg.port; `.run()` blocks, `.should_exit` stops it.

    Sets torch's intra-op threads for the whole process (cfg.torch_threads), so it belongs here
    (the process entry) and not in `create_app`, which tests and embedding applications call.
    The bundle loads in the background: /healthz answers at once, /readyz once it is loaded.
    """
    torch.set_num_threads(cfg.torch_threads)
    app = create_app(bundle_dir, feast_dir, cfg, request_log_dir, load_now=False)
    log.info("serving %s on http://%s:%d", bundle_dir, cfg.host, cfg.port)
    config = uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level="warning", access_log=False)
    return uvicorn.Server(config)


def worker_app() -> FastAPI:
    """The app of one `--workers` process (a uvicorn factory), from the WORKER_ENV variables."""
    cfg = ServeConfig.model_validate_json(os.environ[WORKER_ENV["config"]])
    torch.set_num_threads(cfg.torch_threads)
    request_log = os.environ.get(WORKER_ENV["request_log"])
    return create_app(
        Path(os.environ[WORKER_ENV["bundle"]]),
        Path(os.environ[WORKER_ENV["feast"]]),
        cfg,
        Path(request_log) if request_log else None,
        load_now=False,
    )


def serve(bundle_dir: Path, feast_dir: Path, cfg: ServeConfig, request_log_dir: Path | None = None) -> None:
    """Run the service with uvicorn on cfg.host:cfg.port (loopback unless configured otherwise).

    With cfg.workers > 1, uvicorn's supervisor runs that many processes on the one socket, each
    with its own model, store client and metrics (docs/serving.md).
    """
    if cfg.workers == 1:
        make_server(bundle_dir, feast_dir, cfg, request_log_dir).run()
        return
    os.environ[WORKER_ENV["bundle"]] = str(Path(bundle_dir).resolve())
    os.environ[WORKER_ENV["feast"]] = str(Path(feast_dir).resolve())
    os.environ[WORKER_ENV["request_log"]] = str(request_log_dir) if request_log_dir else ""
    os.environ[WORKER_ENV["config"]] = cfg.model_dump_json()
    uvicorn.run(
        "serving.app:worker_app",
        factory=True,
        host=cfg.host,
        port=cfg.port,
        workers=cfg.workers,
        log_level="warning",
        access_log=False,
    )
