"""A serving process on this machine, and its client: how the embedded endpoint serves a version
(what Vertex does with the serving image)."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np

__all__ = ["ServingProcess"]


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
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"the serving process did not become healthy in {timeout_s:.0f} s")
            time.sleep(0.25)

    def health(self) -> dict[str, Any]:
        response = httpx.get(self.url + "/health", timeout=10)
        response.raise_for_status()
        return dict(response.json())

    def predict(
        self,
        audios: Sequence[np.ndarray],
        metadata: Sequence[dict[str, str]] | None = None,
        users: Sequence[str | None] | None = None,
    ) -> list[dict[str, Any]]:
        """POST the audio as base64 WAV instances (with their metadata and users), `batch` per
        request; the predictions in order: transcript, prediction_id, model_version."""
        from stt_flywheel.data.audio import encode_wav

        out: list[dict[str, Any]] = []
        metadata = metadata or [{}] * len(audios)
        users = users or [None] * len(audios)
        for start in range(0, len(audios), self.batch):
            window = slice(start, start + self.batch)
            instances = [
                {"b64": base64.b64encode(encode_wav(a)).decode(), "metadata": m, "user": u}
                for a, m, u in zip(audios[window], metadata[window], users[window], strict=True)
            ]
            response = httpx.post(self.url + "/predict", json={"instances": instances}, timeout=600)
            response.raise_for_status()
            out += response.json()["predictions"]
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
