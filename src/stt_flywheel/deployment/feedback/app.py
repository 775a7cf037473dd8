"""`stt-flywheel feedback serve`: users' corrections over HTTP, from a team's own service.

`POST /v1/feedback` takes one event, a batch (`{"events": [...]}` or a JSON array), or a Pub/Sub
push envelope whose message data is one event, a JSON array or JSON lines. Everything goes
through `ErrorStore.ingest_feedback`, as `feedback ingest` files do: the same checks, the same
quarantine with reasons, the user index, the tombstones of forgotten people and the per-user
limit. An event that is wrong is quarantined and the request still answers 200 (so Pub/Sub does
not send it again); a request that is not JSON gets 400, a store that does not take the events
503 (send again: the events are idempotent).
"""

from __future__ import annotations

import base64
import binascii
import logging
from typing import Any, Literal

import orjson
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, TypeAdapter
from starlette.concurrency import run_in_threadpool

from stt_flywheel.config import FeedbackService, FlywheelConfig
from stt_flywheel.config.base import ConfigError
from stt_flywheel.data.error_store import ErrorStore, open_error_store
from stt_flywheel.data.records import FeedbackEvent
from stt_flywheel.deployment.body_limit import BodyLimit
from stt_flywheel.deployment.feedback.auth import Callers, RateLimit, load_keys, loopback, port_from_env

__all__ = ["FeedbackAnswer", "build_feedback_app", "feedback_openapi", "run_feedback_service"]

log = logging.getLogger("stt_flywheel.feedback")


class FeedbackBatch(BaseModel):
    events: list[FeedbackEvent]


class PubSubMessage(BaseModel):
    data: str = Field(description="base64 of one event, a JSON array of events, or JSON lines")
    attributes: dict[str, str] = {}
    messageId: str | None = None  # noqa: N815 -- Pub/Sub's own names
    publishTime: str | None = None  # noqa: N815


class PubSubPush(BaseModel):
    """What a Pub/Sub push subscription POSTs."""

    message: PubSubMessage
    subscription: str


FeedbackRequest = FeedbackEvent | FeedbackBatch | list[FeedbackEvent] | PubSubPush


class Problem(BaseModel):
    event: int = Field(description="Its place in the request, from 1 (for JSON lines, its line).")
    reason: str
    detail: str


class FeedbackAnswer(BaseModel):
    read: int
    accepted: int
    quarantined: int
    states: dict[str, int] = Field(description="applied, superseded, duplicate, pending")
    problems: list[Problem] = Field(description="Each quarantined event: why (nothing of it echoed).")


def _rows(body: bytes) -> tuple[list[Any], Literal["http", "pubsub"]]:
    """The events a request body carries, as rows for `ingest_feedback` (a row that is not
    valid is quarantined there); 400 when the body itself cannot be read."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise HTTPException(status_code=400, detail="the body is not JSON") from None
    if isinstance(doc, dict) and isinstance(doc.get("message"), dict) and "subscription" in doc:
        try:
            data = base64.b64decode(str(doc["message"].get("data", "")), validate=True)
        except (binascii.Error, ValueError):
            raise HTTPException(status_code=400, detail="the Pub/Sub message data is not base64") from None
        if data.lstrip().startswith(b"["):
            try:
                return list(orjson.loads(data)), "pubsub"
            except orjson.JSONDecodeError:
                pass  # then as lines: each bad one is quarantined with its reason
        return [line for line in data.splitlines() if line.strip()] or [data], "pubsub"
    if isinstance(doc, dict) and isinstance(doc.get("events"), list):
        return doc["events"], "http"
    if isinstance(doc, list):
        return doc, "http"
    if isinstance(doc, dict):
        return [doc], "http"
    raise HTTPException(status_code=400, detail='expected an event, {"events": [...]} or a JSON array')


def _with_source(rows: list[Any], caller: str | None) -> list[Any]:
    """An event that names no source is the caller's; one that names another is left to be
    quarantined (`source_not_the_caller`)."""
    if caller is None:
        return rows
    out = []
    for row in rows:
        if isinstance(row, bytes):
            try:
                row = orjson.loads(row)
            except orjson.JSONDecodeError:
                out.append(row)
                continue
        if isinstance(row, dict) and "source" not in row:
            row = {**row, "source": caller}
        out.append(row)
    return out


def feedback_openapi() -> dict[str, Any]:
    """The service's API as OpenAPI describes it, for the docs."""
    return build_feedback_app(FeedbackService(), store=None).openapi()


def _request_schema(app: FastAPI) -> None:
    """The body is read by hand (each bad event is quarantined, not a 422 for the request); the
    schema of what it may be is still published."""
    base = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = base()
        body = TypeAdapter(FeedbackRequest).json_schema(ref_template="#/components/schemas/{model}")
        schema.setdefault("components", {}).setdefault("schemas", {}).update(body.pop("$defs", {}))
        route = schema["paths"]["/v1/feedback"]["post"]
        route["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def build_feedback_app(settings: FeedbackService, store: ErrorStore | None) -> FastAPI:
    callers = Callers(settings, load_keys(settings) if store is not None else {})
    limit = RateLimit(settings.requests_per_minute)
    app = FastAPI(title="stt-flywheel feedback", version="1")
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)

    @app.get("/health")
    def health() -> dict[str, str]:
        """200 while the service runs; says nothing else to anyone."""
        return {"status": "ok"}

    @app.post(
        "/v1/feedback",
        responses={
            400: {"description": "not JSON, or more events than `max_events`"},
            401: {"description": "no valid key or ID token"},
            413: {"description": "a body over `max_body_bytes`"},
            429: {"description": "over `requests_per_minute` for this caller; see Retry-After"},
            503: {"description": "the store did not take the events: send them again"},
        },
    )
    async def feedback(request: Request) -> FeedbackAnswer:
        """Append feedback events; each event's verdict is in the answer."""
        caller = None if callers.open else callers.name_of(request.headers.get("authorization"))
        if caller is None and not callers.open:
            raise HTTPException(
                status_code=401,
                detail="a bearer key or a Google ID token is needed",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if (wait := limit.wait_s(caller or "anyone")) > 0:
            raise HTTPException(
                status_code=429, detail="too many requests", headers={"Retry-After": str(int(wait) + 1)}
            )
        rows, how = _rows(await request.body())
        if how == "http" and len(rows) > settings.max_events:
            raise HTTPException(
                status_code=400, detail=f"{len(rows)} events in one request; at most {settings.max_events}"
            )
        if store is None:
            raise HTTPException(status_code=503, detail="no store")
        try:
            result = await run_in_threadpool(store.ingest_feedback, _with_source(rows, caller), None, caller)
        except Exception as exc:  # noqa: BLE001 -- the store's trouble, not the caller's: send again
            log.warning("feedback: the store did not take %d events (%s)", len(rows), type(exc).__name__)
            raise HTTPException(
                status_code=503, detail="the store did not take the events; send them again"
            ) from None
        counts = result.as_dict()
        return FeedbackAnswer(
            read=result.read,
            accepted=result.accepted,
            quarantined=len(result.quarantined),
            states=counts["states"],
            problems=[Problem(event=q.line, reason=q.reason, detail=q.detail) for q in result.quarantined],
        )

    @app.exception_handler(HTTPException)
    async def _answer(_: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    _request_schema(app)
    return app


def run_feedback_service(config: FlywheelConfig, host: str | None = None, port: int | None = None) -> None:
    import uvicorn

    settings = config.feedback.service
    host = host or settings.host
    app = build_feedback_app(settings, open_error_store(config))
    if not loopback(host) and not (settings.keys_secret or settings.audience):
        raise ConfigError(
            f"feedback serve on {host} with no way to know callers: set feedback.service.keys_secret "
            "or audience and callers (or listen on 127.0.0.1)"
        )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    port = port or port_from_env(settings)
    ways = [
        w for w, on in (("bearer keys", settings.keys_secret), ("Google ID tokens", settings.audience)) if on
    ]
    log.info(
        "feedback service on http://%s:%d/v1/feedback into %s; callers by %s",
        host,
        port,
        config.paths.error_store,
        " and ".join(ways) or "nothing (open: this machine only)",
    )
    uvicorn.run(app, host=host, port=port, log_level="warning")
