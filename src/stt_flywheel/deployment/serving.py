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
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from stt_flywheel.config import CaptureSettings
from stt_flywheel.data.audio import TARGET_SAMPLE_RATE, decode_audio, resample
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


def capture_env(
    store_uri: str | None,
    settings: CaptureSettings,
    *,
    version: str | int | None,
    endpoint: str | None,
    spill_dir: str | Path | None = None,
) -> dict[str, str]:
    """The environment that makes a serving process capture its traffic as `version`."""
    env = {
        "FLYWHEEL_MODEL_VERSION": str(version) if version is not None else "",
        "FLYWHEEL_ENDPOINT": endpoint or "",
    }
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

    @app.post(settings.predict_route)
    def predict(request: _PredictRequest) -> dict[str, Any]:
        audios, raw = [], []
        for i, instance in enumerate(request.instances):
            try:
                data = base64.b64decode(instance.b64, validate=True)
                decoded = decode_audio(data)
            except (binascii.Error, ValueError) as exc:
                raise HTTPException(status_code=400, detail=f"instance {i}: {exc}") from exc
            raw.append((data, decoded.duration_s))
            audios.append(resample(decoded.samples, decoded.sample_rate, TARGET_SAMPLE_RATE))
        texts = model.transcribe(audios, batch_size=settings.batch_size)
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
