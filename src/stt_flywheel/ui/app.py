"""`stt-flywheel ui`: one place to see the wheel, served (like `mlflow ui` or `tensorboard`).

Server-rendered pages without scripts, read from the store, the ledgers and the registry on each
request. People's audio and words are on these pages, so the server listens on loopback, or
behind Identity-Aware Proxy with each request's signed assertion checked. A form that changes
something (a review decision) is accepted only from a page of this server (its `Origin`), and is
recorded with who made it.
"""

from __future__ import annotations

import mimetypes
import posixpath
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from urllib.parse import parse_qs, quote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from stt_flywheel.config import FlywheelConfig
from stt_flywheel.config.serving import IAP_ISSUER
from stt_flywheel.data.audio import AudioLimits, AudioRejected, read_audio_bytes
from stt_flywheel.data.error_store import open_error_store
from stt_flywheel.data.review import Screen, held_corrections
from stt_flywheel.deployment.body_limit import BodyLimit
from stt_flywheel.deployment.feedback.auth import PublishedKeys, loopback, verified_claims
from stt_flywheel.errors import FlywheelError, InputError, InputNotFound
from stt_flywheel.monitoring.status import SystemStatus, system_status
from stt_flywheel.run.approval import who
from stt_flywheel.run.ledger import REPORT_TYPES
from stt_flywheel.run.review import review
from stt_flywheel.run.summary import resolve_run
from stt_flywheel.storage.objectstore import open_store
from stt_flywheel.ui import overview, people, runs
from stt_flywheel.ui.kit import frame, markdown, para
from stt_flywheel.ui.queries import find_prediction

__all__ = ["SECURITY_HEADERS", "check_listening", "create_app", "serve"]

MAX_FORM_BYTES = 16_384  # a review decision: an id, a word and a reason

# No script runs on these pages, nothing is framed, nothing leaves for another site.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "media-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _html(text: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(text, status_code=status, headers=SECURITY_HEADERS)


class _Identity:
    """Who a request comes from: the IAP assertion's email behind IAP, else this machine's user."""

    def __init__(self, config: FlywheelConfig) -> None:
        self.audience = config.ui.iap_audience
        self.keys = PublishedKeys(config.ui.iap_certs_url)

    def of(self, request: Request) -> str | None:
        if not self.audience:
            return who()
        claims = verified_claims(
            request.headers.get("x-goog-iap-jwt-assertion", ""), self.keys, self.audience
        )
        if claims is None:
            return None
        email = claims.get("email")
        return str(email) if claims.get("iss") == IAP_ISSUER and email else None


class _Pages:
    """Each route's handler over one config: read, render, answer."""

    def __init__(self, config: FlywheelConfig) -> None:
        self.config = config
        self.identity = _Identity(config)

    def view(self) -> SystemStatus:
        return system_status(self.config)

    def home(self, request: Request) -> Response:
        held = sum(1 for _ in held_corrections(open_error_store(self.config), Screen.of(self.config)))
        return _html(overview.home_page(self.config, self.view(), held))

    def versions(self, request: Request) -> Response:
        return _html(overview.versions_page(self.config, self.view()))

    def version(self, request: Request) -> Response:
        return _html(overview.version_page(self.config, self.view(), int(request.path_params["version"])))

    def canaries(self, request: Request) -> Response:
        return _html(overview.canaries_page(self.config))

    def live(self, request: Request) -> Response:
        now, q = datetime.now(UTC), request.query_params
        start, end = overview.parse_window(q.get("hours"), q.get("since"), q.get("until"), now)
        return _html(overview.live_page(self.config, start, end, now))

    def runs(self, request: Request) -> Response:
        return _html(runs.runs_page(self.config))

    def run(self, request: Request) -> Response:
        ref = request.path_params["run"]
        run_id = resolve_run(self.config, ref)
        if run_id != ref:  # `latest` or a prefix: the page's own address names the run
            return RedirectResponse(f"/runs/{quote(run_id)}", status_code=302)
        return _html(runs.run_page(self.config, run_id))

    def validation(self, request: Request) -> Response:
        return _html(runs.validation_page(self.config, request.path_params["run"]))

    def run_report(self, request: Request) -> Response:
        run_id, stage = resolve_run(self.config, request.path_params["run"]), request.path_params["stage"]
        if stage not in REPORT_TYPES:
            raise InputNotFound(f"no stage {stage!r}: one of {', '.join(REPORT_TYPES)}")
        return _report(self.config, f"{run_id}/{stage}.{REPORT_TYPES[stage]}")

    def report(self, request: Request) -> Response:
        return _report(self.config, request.path_params["key"])

    def dataset(self, request: Request) -> Response:
        return _html(runs.dataset_page(self.config, request.path_params["version"]))

    def utterance(self, request: Request) -> Response:
        return _html(people.utterance_page(self.config, request.path_params["pid"]))

    def audio(self, request: Request) -> Response:
        return _audio(self.config, request.path_params["pid"])

    def review_queue(self, request: Request) -> Response:
        return _html(people.review_page(self.config, request.query_params.get("done", "")))

    async def review_decision(self, request: Request) -> Response:
        """Accept or reject one held correction, from this server's own review page only."""
        if request.headers.get("origin") != f"{request.url.scheme}://{request.headers.get('host', '')}":
            refusal = "A review decision is taken only from this server's own review page."
            return _html(frame("Refused", [para(refusal)]), 403)
        by = await run_in_threadpool(self.identity.of, request)
        form = parse_qs((await request.body()).decode("utf-8", "replace"))  # BodyLimit bounds it
        decision, reason = (form.get(k, [""])[0] for k in ("decision", "reason"))
        if decision not in ("accept", "reject"):
            raise InputError("decision is accept or reject")
        pid = request.path_params["pid"]
        await run_in_threadpool(
            review, self.config, [pid], accept=decision == "accept", reason=reason, by=str(by)
        )
        return RedirectResponse(f"/review?done={quote(f'{pid}: {decision}ed by {by}')}", status_code=303)

    async def guard(self, request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        """Behind IAP, nothing but the health check without a verified assertion."""
        checked = self.identity.audience and request.url.path != "/healthz"
        if checked and await run_in_threadpool(self.identity.of, request) is None:
            refusal = "This dashboard is reached through Identity-Aware Proxy."
            return _html(frame("Refused", [para(refusal)]), 401)
        return await call_next(request)

    def routes(self) -> list[Route]:
        return [
            Route("/", self.home),
            Route("/versions", self.versions),
            Route("/versions/{version:int}", self.version),
            Route("/canaries", self.canaries),
            Route("/live", self.live),
            Route("/runs", self.runs),
            Route("/runs/{run}", self.run),
            Route("/runs/{run}/validation", self.validation),
            Route("/runs/{run}/reports/{stage}", self.run_report),
            Route("/reports/{key:path}", self.report),
            Route("/datasets/{version}", self.dataset),
            Route("/utterances/{pid}", self.utterance),
            Route("/audio/{pid}", self.audio),
            Route("/review", self.review_queue),
            Route("/review/{pid}", self.review_decision, methods=["POST"]),
            Route("/healthz", lambda request: Response("ok", media_type="text/plain")),
        ]


def _not_found(request: Request, exc: Exception) -> Response:
    return _html(frame("Not found", [para(str(exc))]), 404)


def _cannot(request: Request, exc: Exception) -> Response:
    return _html(frame("Cannot show that", [para(str(exc))]), 400)


def create_app(config: FlywheelConfig, *, allowed_hosts: list[str] | None = None) -> Starlette:
    """The dashboard's app; `allowed_hosts` are the names a request's `Host` may carry (None: any,
    which `ui` allows only behind IAP)."""
    pages = _Pages(config)
    middleware = [
        Middleware(BodyLimit, limit=MAX_FORM_BYTES),
        Middleware(BaseHTTPMiddleware, dispatch=pages.guard),
    ]
    if allowed_hosts is not None:
        middleware.insert(0, Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts))
    return Starlette(
        routes=pages.routes(),
        middleware=middleware,
        exception_handlers={InputNotFound: _not_found, FlywheelError: _cannot},
    )


def _report(config: FlywheelConfig, key: str) -> Response:
    """A file under `paths.reports` (a kept stage report, a monitor report, a ledger entry) as what
    it is: HTML as a page, Markdown rendered into one, JSON as JSON."""
    clean = posixpath.normpath(key)
    if clean.startswith(("/", "..")) or clean != key or "\\" in key:
        raise InputNotFound(f"no report {key!r}")
    found = open_store(config.paths.reports).read(clean)
    if found is None:
        raise InputNotFound(f"no report {clean} under {config.paths.reports}")
    if clean.endswith(".md"):
        title = clean.rsplit("/", 1)[-1]
        return _html(frame(title, [markdown(found.data.decode("utf-8", "replace"))], here="/runs"))
    kind = mimetypes.guess_type(clean)[0] or "application/octet-stream"
    if kind == "text/html":
        kind += "; charset=utf-8"
    return Response(found.data, media_type=kind, headers=SECURITY_HEADERS)


def _audio(config: FlywheelConfig, prediction_id: str) -> Response:
    """One prediction's audio as stored, if it lies in the store or under `dataset.audio_roots`."""
    store = open_error_store(config)
    prediction = find_prediction(store, prediction_id)
    if prediction is None or not prediction["audio_uri"]:
        raise InputNotFound(f"no audio for prediction {prediction_id}")
    uri = prediction["audio_uri"]
    try:
        data = read_audio_bytes(uri, AudioLimits.of(store.root, config.dataset))
    except AudioRejected as exc:
        raise InputNotFound(f"the audio of {prediction_id} cannot be played: {exc}") from None
    kind = mimetypes.guess_type(uri)[0] or "application/octet-stream"
    return Response(data, media_type=kind, headers=SECURITY_HEADERS)


def check_listening(config: FlywheelConfig, host: str) -> None:
    """Refuse an address beyond loopback unless IAP's assertions are checked (`ui.iap_audience`)."""
    if not loopback(host) and not config.ui.iap_audience:
        raise InputError(
            f"refusing to serve people's audio and words on {host} with nobody checked: listen on 127.0.0.1, "
            "or put Identity-Aware Proxy in front and set ui.iap_audience"
        )


def serve(config: FlywheelConfig, host: str, port: int) -> None:
    """Listen until interrupted; beyond loopback only with IAP's assertions checked."""
    import uvicorn

    check_listening(config, host)
    hosts = None if config.ui.iap_audience else ["127.0.0.1", "localhost", "[::1]", "::1", host]
    uvicorn.run(create_app(config, allowed_hosts=hosts), host=host, port=port, log_level="warning")
