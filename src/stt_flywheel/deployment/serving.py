"""Prediction server following Vertex AI's custom-container contract.

Vertex starts the container with `AIP_HTTP_PORT`, `AIP_HEALTH_ROUTE`, `AIP_PREDICT_ROUTE` and
`AIP_STORAGE_URI` (where the model artifacts are) in the environment, sends
`{"instances": [{"b64": "<audio file bytes, base64>", "metadata": {"domain": "…"}}, ...]}` to the
predict route and expects `{"predictions": [...]}` back, one per instance: the transcript, a
`prediction_id` (what feedback names later) and the `model_version` that answered. The health
route answers 200 once the model is loaded, with the capture counters. `stt-flywheel serve` runs
the same server locally.

Capture is configured by the environment the deployer sets per version (`capture_env`):
`FLYWHEEL_CAPTURE_URI` (the error store; unset: no capture), `FLYWHEEL_MODEL_VERSION`,
`FLYWHEEL_ENDPOINT` and the `capture.*` settings as `FLYWHEEL_CAPTURE_*`.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from stt_flywheel.config import CaptureSettings, ServingLimits
from stt_flywheel.data.audio import TARGET_SAMPLE_RATE, DecodedAudio, decode_audio, resample
from stt_flywheel.data.capture import CapturedPrediction, CaptureWriter
from stt_flywheel.data.error_store import ErrorStore
from stt_flywheel.data.records import new_prediction_id
from stt_flywheel.errors import InputError, InputNotFound
from stt_flywheel.models import SpeechModel, load_model
from stt_flywheel.storage.objectstore import fetch_tree, is_remote

__all__ = ["ServingProcess", "ServingSettings", "capture_env", "create_app", "run_server"]

log = logging.getLogger("stt_flywheel.serving")

_CAPTURE_ENV = {
    "share": "FLYWHEEL_CAPTURE_SHARE",
    "audio": "FLYWHEEL_CAPTURE_AUDIO",
    "batch_size": "FLYWHEEL_CAPTURE_BATCH_SIZE",
    "flush_interval_s": "FLYWHEEL_CAPTURE_FLUSH_INTERVAL_S",
    "queue_size": "FLYWHEEL_CAPTURE_QUEUE_SIZE",
    "retry_interval_s": "FLYWHEEL_CAPTURE_RETRY_INTERVAL_S",
    "spill_dir": "FLYWHEEL_CAPTURE_SPILL_DIR",
}


_LIMITS_ENV = {
    "max_body_bytes": "FLYWHEEL_MAX_BODY_BYTES",
    "max_instances": "FLYWHEEL_MAX_INSTANCES",
    "max_audio_s": "FLYWHEEL_MAX_AUDIO_S",
    "chunk_s": "FLYWHEEL_CHUNK_S",
}


def capture_env(
    store_uri: str | None,
    settings: CaptureSettings,
    *,
    version: str | int | None,
    endpoint: str | None,
    spill_dir: str | Path | None = None,
    limits: ServingLimits | None = None,
) -> dict[str, str]:
    """The environment that makes a serving process capture its traffic as `version` (and hold
    requests to `limits`)."""
    env = {
        "FLYWHEEL_MODEL_VERSION": str(version) if version is not None else "",
        "FLYWHEEL_ENDPOINT": endpoint or "",
    }
    if limits is not None:
        env |= {var: str(getattr(limits, name)) for name, var in _LIMITS_ENV.items()}
    if not settings.enabled or not store_uri:
        return env
    env["FLYWHEEL_CAPTURE_URI"] = store_uri
    for name, var in _CAPTURE_ENV.items():
        value = getattr(settings, name)
        if name == "spill_dir":
            value = spill_dir or value
        if value is not None:
            env[var] = str(int(value) if isinstance(value, bool) else value)
    return env


@dataclass(frozen=True)
class ServingSettings:
    storage_uri: str
    port: int = 8080
    host: str = "127.0.0.1"  # this machine only; the serving image sets FLYWHEEL_HOST=0.0.0.0
    health_route: str = "/health"
    predict_route: str = "/predict"
    batch_size: int = 16
    model_version: str | None = None
    endpoint: str | None = None
    capture_uri: str | None = None
    capture: CaptureSettings = field(default_factory=CaptureSettings)
    limits: ServingLimits = field(default_factory=ServingLimits)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> ServingSettings:
        env = dict(os.environ if env is None else env)
        values: dict[str, Any] = {
            "storage_uri": env.get("AIP_STORAGE_URI", ""),
            "port": int(env.get("AIP_HTTP_PORT", "8080")),
            "host": env.get("FLYWHEEL_HOST") or "127.0.0.1",
            "health_route": env.get("AIP_HEALTH_ROUTE", "/health"),
            "predict_route": env.get("AIP_PREDICT_ROUTE", "/predict"),
            "model_version": env.get("FLYWHEEL_MODEL_VERSION") or None,
            "endpoint": env.get("FLYWHEEL_ENDPOINT") or None,
            "capture_uri": env.get("FLYWHEEL_CAPTURE_URI") or None,
        }
        capture = {name: env[var] for name, var in _CAPTURE_ENV.items() if env.get(var)}
        try:
            values["capture"] = CaptureSettings.model_validate(capture)
        except ValueError as exc:
            raise InputError(f"invalid FLYWHEEL_CAPTURE_* setting: {exc}") from exc
        limits = {name: env[var] for name, var in _LIMITS_ENV.items() if env.get(var)}
        try:
            values["limits"] = ServingLimits.model_validate(limits)
        except ValueError as exc:
            raise InputError(f"invalid FLYWHEEL_MAX_* / FLYWHEEL_CHUNK_S setting: {exc}") from exc
        values.update({k: v for k, v in overrides.items() if v is not None})
        if not values["storage_uri"]:
            raise InputError("no model: set AIP_STORAGE_URI or pass a model directory")
        return cls(**values)


class _Instance(BaseModel):
    model_config = ConfigDict(extra="forbid")
    b64: str = Field(description="The audio file (WAV, FLAC, OGG), base64-encoded.")
    metadata: dict[str, str] = Field(
        default_factory=dict,
        description="What the caller knows of the request: speaker, device, domain, app, …",
    )


class _PredictRequest(BaseModel):
    instances: list[_Instance] = Field(min_length=1)
    parameters: dict[str, Any] = Field(default_factory=dict)


class _BodyLimit:
    """ASGI middleware: a body over `limit` bytes gets 413, judged by Content-Length before it is
    read, or as it streams in when the length is not given; the handler never sees it."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await self._refuse(send)
            return
        seen, refused = 0, False

        async def limited() -> dict[str, Any]:
            nonlocal seen, refused
            message: dict[str, Any] = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit and not refused:
                    refused = True
                    await self._refuse(send)
                    return {"type": "http.disconnect"}  # the handler stops reading
            return message

        async def quiet(message: dict[str, Any]) -> None:
            if not refused:  # after the 413, whatever the handler answers goes nowhere
                await send(message)

        await self.app(scope, limited, quiet)

    async def _refuse(self, send: Any) -> None:
        body = json.dumps({"detail": f"request body over {self.limit} bytes"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _audio_of(i: int, b64: str, limits: ServingLimits) -> tuple[bytes, DecodedAudio]:
    """One instance's audio, refused (400) when it is not base64, not audio, longer than the limit
    by its header (before a sample is decoded), or not finite. The message names the instance and
    the problem, never echoes the bytes."""
    try:
        data = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise HTTPException(status_code=400, detail=f"instance {i}: b64 is not valid base64") from None
    try:
        info = sf.info(io.BytesIO(data))
    except Exception:  # libsndfile's errors name the buffer object by its address
        raise HTTPException(
            status_code=400, detail=f"instance {i}: not audio that decodes (WAV, FLAC or OGG)"
        ) from None
    seconds = info.frames / info.samplerate if info.samplerate > 0 else 0.0
    if seconds > limits.max_audio_s:
        raise HTTPException(
            status_code=400,
            detail=f"instance {i}: {seconds:.1f} s of audio; at most {limits.max_audio_s:g} s",
        )
    try:
        decoded = decode_audio(data)
    except ValueError:
        raise HTTPException(
            status_code=400, detail=f"instance {i}: not audio that decodes (WAV, FLAC or OGG)"
        ) from None
    if decoded.samples.size == 0:
        raise HTTPException(status_code=400, detail=f"instance {i}: the audio has no samples")
    if not np.isfinite(decoded.samples).all():
        raise HTTPException(status_code=400, detail=f"instance {i}: the audio has NaN or infinite samples")
    return data, decoded


def _local_model_dir(storage_uri: str) -> Path:
    """The model directory: the path itself, or a local copy of a `gs://` prefix (Vertex sets
    `AIP_STORAGE_URI` to a copy of the version's artifact URI)."""
    if is_remote(storage_uri):
        return fetch_tree(storage_uri, "config.json")
    path = Path(storage_uri.removeprefix("file://"))
    if not (path / "config.json").exists():
        raise InputNotFound(f"no saved model at {storage_uri}")
    return path


def _capture_writer(settings: ServingSettings) -> CaptureWriter | None:
    if not settings.capture_uri or not settings.capture.enabled:
        return None
    default_spill = Path(tempfile.gettempdir()) / "stt-flywheel-capture-spill"
    return CaptureWriter.from_settings(ErrorStore(settings.capture_uri), settings.capture, default_spill)


def create_app(settings: ServingSettings, model: SpeechModel | None = None) -> FastAPI:
    model = model or load_model(_local_model_dir(settings.storage_uri), device="auto")
    writer = _capture_writer(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if writer is not None:
            log.info(
                "capturing %s of the traffic of version %s into %s",
                settings.capture.share,
                settings.model_version,
                settings.capture_uri,
            )
        yield
        if writer is not None:  # uvicorn's shutdown, on SIGTERM too: write what is queued
            writer.close()

    app = FastAPI(title="stt-flywheel serving", lifespan=lifespan)
    app.state.capture = writer

    @app.get(settings.health_route)
    def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "family": model.family,
            "model_version": settings.model_version,
            "capture": writer.describe() if writer is not None else None,
        }

    limits = settings.limits
    app.add_middleware(_BodyLimit, limit=limits.max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # what was wrong and where, never the request itself (which may be megabytes of audio)
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return JSONResponse(status_code=422, content={"detail": errors})

    @app.post(settings.predict_route)
    def predict(request: _PredictRequest) -> dict[str, Any]:
        if len(request.instances) > limits.max_instances:
            raise HTTPException(
                status_code=400,
                detail=f"{len(request.instances)} instances in one request; at most {limits.max_instances}",
            )
        audios, raw = [], []
        for i, instance in enumerate(request.instances):
            data, decoded = _audio_of(i, instance.b64, limits)
            raw.append((data, decoded.duration_s))
            audios.append(resample(decoded.samples, decoded.sample_rate, TARGET_SAMPLE_RATE))
        texts = model.transcribe(audios, batch_size=settings.batch_size, max_piece_s=limits.chunk_s)
        now = datetime.now(UTC)
        out = []
        for instance, text, (data, duration) in zip(request.instances, texts, raw, strict=True):
            pid = new_prediction_id(now)
            if writer is not None:
                writer.offer(
                    CapturedPrediction(
                        pid,
                        now,
                        settings.model_version,
                        settings.endpoint,
                        text,
                        instance.metadata,
                        duration,
                        data,
                    )
                )
            out.append({"transcript": text, "prediction_id": pid, "model_version": settings.model_version})
        return {"predictions": out}

    return app


def run_server(settings: ServingSettings) -> None:
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="warning")


class ServingProcess:
    """This server in a child process on a free local port, and an HTTP client for it: the
    embedded endpoint's way of serving a version (what Vertex does with the serving image)."""

    def __init__(
        self,
        storage_uri: str,
        startup_timeout_s: float = 180.0,
        batch: int = 32,
        env: dict[str, str] | None = None,
    ) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.batch = batch
        env = {
            **os.environ,
            "AIP_STORAGE_URI": storage_uri,
            "AIP_HTTP_PORT": str(self.port),
            "AIP_HEALTH_ROUTE": "/health",
            "AIP_PREDICT_ROUTE": "/predict",
            **(env or {}),
        }
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 -- lives as long as the process, closed in close()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "stt_flywheel.deployment.serving"],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._wait_healthy(startup_timeout_s)

    def _wait_healthy(self, timeout_s: float) -> None:

        deadline = time.monotonic() + timeout_s
        while True:
            if self._proc.poll() is not None:
                self._log.seek(0)
                raise RuntimeError(f"the serving process exited: {self._log.read().decode()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"the serving process did not become healthy in {timeout_s:.0f} s")
            time.sleep(0.25)

    def health(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/health", timeout=10) as response:
            return dict(json.loads(response.read()))

    def predict(
        self, audios: Sequence[np.ndarray], metadata: Sequence[dict[str, str]] | None = None
    ) -> list[dict[str, Any]]:
        """POST the audio as base64 WAV instances (with their metadata), `batch` per request;
        the predictions in order: transcript, prediction_id, model_version."""
        from stt_flywheel.data.audio import encode_wav

        out: list[dict[str, Any]] = []
        for start in range(0, len(audios), self.batch):
            instances = [
                {"b64": base64.b64encode(encode_wav(a)).decode(), "metadata": m}
                for a, m in zip(
                    audios[start : start + self.batch],
                    (metadata or [{}] * len(audios))[start : start + self.batch],
                    strict=True,
                )
            ]
            request = urllib.request.Request(
                self.url + "/predict",
                data=json.dumps({"instances": instances}).encode(),
                headers={"content-type": "application/json"},
                method="POST",
            )
            with urllib.request.urlopen(request, timeout=600) as response:
                out += json.loads(response.read())["predictions"]
        return out

    def transcribe(self, audios: Sequence[np.ndarray]) -> list[str]:
        return [p["transcript"] for p in self.predict(audios)]

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, as Vertex stops a replica, and wait; returns the exit code."""
        if self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(timeout=timeout_s)
        return int(self._proc.returncode)

    def log(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._log.close()


if __name__ == "__main__":  # what ServingProcess starts
    run_server(ServingSettings.from_env())
