"""Prediction server following Vertex AI's custom-container contract.

Vertex starts the container with `AIP_HTTP_PORT`, `AIP_HEALTH_ROUTE`, `AIP_PREDICT_ROUTE` and
`AIP_STORAGE_URI` (where the model artifacts are) in the environment, sends
`{"instances": [{"b64": "<audio file bytes, base64>"}, ...]}` to the predict route and expects
`{"predictions": [...]}` back, one per instance. The health route answers 200 once the model is
loaded. `stt-flywheel serve` runs the same server locally.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from stt_flywheel.data.audio import TARGET_SAMPLE_RATE, decode_audio, resample
from stt_flywheel.errors import InputError, InputNotFound
from stt_flywheel.models import SpeechModel, load_model
from stt_flywheel.storage.objectstore import fetch_tree, is_remote

__all__ = ["ServingProcess", "ServingSettings", "create_app", "run_server"]


@dataclass(frozen=True)
class ServingSettings:
    storage_uri: str
    port: int = 8080
    health_route: str = "/health"
    predict_route: str = "/predict"
    batch_size: int = 16

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> ServingSettings:
        env = dict(os.environ if env is None else env)
        values: dict[str, Any] = {
            "storage_uri": env.get("AIP_STORAGE_URI", ""),
            "port": int(env.get("AIP_HTTP_PORT", "8080")),
            "health_route": env.get("AIP_HEALTH_ROUTE", "/health"),
            "predict_route": env.get("AIP_PREDICT_ROUTE", "/predict"),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        if not values["storage_uri"]:
            raise InputError("no model: set AIP_STORAGE_URI or pass a model directory")
        return cls(**values)


class _Instance(BaseModel):
    model_config = ConfigDict(extra="forbid")
    b64: str = Field(description="The audio file (WAV, FLAC, OGG), base64-encoded.")


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


def create_app(settings: ServingSettings, model: SpeechModel | None = None) -> FastAPI:
    model = model or load_model(_local_model_dir(settings.storage_uri), device="auto")
    app = FastAPI(title="stt-flywheel serving")

    @app.get(settings.health_route)
    def health() -> dict[str, str]:
        return {"status": "ok", "family": model.family}

    @app.post(settings.predict_route)
    def predict(request: _PredictRequest) -> dict[str, Any]:
        audios = []
        for i, instance in enumerate(request.instances):
            try:
                decoded = decode_audio(base64.b64decode(instance.b64, validate=True))
            except (binascii.Error, ValueError) as exc:
                raise HTTPException(status_code=400, detail=f"instance {i}: {exc}") from exc
            audios.append(resample(decoded.samples, decoded.sample_rate, TARGET_SAMPLE_RATE))
        texts = model.transcribe(audios, batch_size=settings.batch_size)
        return {"predictions": [{"transcript": t} for t in texts]}

    return app


def run_server(settings: ServingSettings) -> None:
    import uvicorn

    uvicorn.run(create_app(settings), host="0.0.0.0", port=settings.port, log_level="warning")


class ServingProcess:
    """This server in a child process on a free local port, and an HTTP client for it: the
    embedded endpoint's way of serving a version (what Vertex does with the serving image)."""

    def __init__(self, storage_uri: str, startup_timeout_s: float = 180.0, batch: int = 32) -> None:
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

    def transcribe(self, audios: Sequence[np.ndarray]) -> list[str]:
        """POST the audio as base64 WAV instances, `batch` per request; transcripts in order."""

        from stt_flywheel.data.audio import encode_wav

        out: list[str] = []
        for start in range(0, len(audios), self.batch):
            instances = [
                {"b64": base64.b64encode(encode_wav(a)).decode()} for a in audios[start : start + self.batch]
            ]
            request = urllib.request.Request(
                self.url + "/predict",
                data=json.dumps({"instances": instances}).encode(),
                headers={"content-type": "application/json"},
                method="POST",
            )
            with urllib.request.urlopen(request, timeout=600) as response:
                out += [p["transcript"] for p in json.loads(response.read())["predictions"]]
        return out

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
