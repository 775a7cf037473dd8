"""The serving app (FastAPI): the routes of `contract`, the request limits, capture."""

from __future__ import annotations

import base64
import binascii
import logging
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from stt_flywheel.config import ServingLimits
from stt_flywheel.data.audio import TARGET_SAMPLE_RATE, resample
from stt_flywheel.data.capture import CapturedPrediction, CaptureWriter
from stt_flywheel.data.decode import FORMATS_IN_WORDS, AudioDecodeError, DecodedAudio, decode_audio
from stt_flywheel.data.error_store import ErrorStore
from stt_flywheel.data.identity import ANONYMOUS
from stt_flywheel.data.records import new_prediction_id
from stt_flywheel.deployment.body_limit import BodyLimit
from stt_flywheel.deployment.serving.contract import (
    Health,
    PredictedWord,
    Prediction,
    PredictRequest,
    PredictResponse,
    ServingSettings,
    model_digest,
)
from stt_flywheel.errors import InputError, InputNotFound
from stt_flywheel.models import SpeechModel, load_model
from stt_flywheel.models.confidence import Transcript
from stt_flywheel.storage.objectstore import is_remote
from stt_flywheel.storage.trees import fetch_tree

__all__ = ["build_app", "create_app", "openapi_schema", "run_server"]

log = logging.getLogger("stt_flywheel.serving")


def _audio_of(i: int, b64: str, limits: ServingLimits) -> tuple[bytes, DecodedAudio]:
    """One instance's audio, refused (400) when it is not base64, not audio, longer than the limit
    by its header (before a sample is decoded), or not finite. The message names the instance and
    the problem, never echoes the bytes."""
    try:
        data = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise HTTPException(status_code=400, detail=f"instance {i}: b64 is not valid base64") from None
    try:
        decoded = decode_audio(data, max_duration_s=limits.max_audio_s)
    except AudioDecodeError as exc:
        if exc.code == "too_long":
            detail = f"instance {i}: {exc.detail}"
        else:
            detail = f"instance {i}: not audio that decodes ({FORMATS_IN_WORDS}): {exc.detail}"
        raise HTTPException(status_code=400, detail=detail) from None
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
    default_spill = Path(tempfile.gettempdir()) / f"stt-flywheel-capture-spill-{os.getuid()}"
    return CaptureWriter.from_settings(ErrorStore(settings.capture_uri), settings.capture, default_spill)


def _checked(directory: Path, expected: str | None) -> Path:
    """`directory`, once its content is the model the registry holds (when a digest is given)."""
    if expected is not None and (found := model_digest(directory)) != expected:
        raise InputError(
            f"the model at {directory} is not the one registered for this version (digest {found[:12]}…, "
            f"expected {expected[:12]}…): refusing to serve it"
        )
    return directory


def create_app(settings: ServingSettings, model: SpeechModel | None = None) -> FastAPI:
    """The server of the model at `settings.storage_uri` (or of `model`, already loaded)."""
    if model is None:
        directory = _checked(_local_model_dir(settings.storage_uri), settings.model_digest)
        model = load_model(directory, device="auto")
    return build_app(settings, model)


def openapi_schema() -> dict[str, Any]:
    """The API as OpenAPI describes it (the default routes), for the docs; loads no model."""
    return build_app(ServingSettings(storage_uri="AIP_STORAGE_URI"), None).openapi()


def build_app(settings: ServingSettings, model: SpeechModel | None) -> FastAPI:
    """The routes around `model`; without one (not loaded) health and predict answer 503."""
    writer = _capture_writer(settings)

    def loaded() -> SpeechModel:
        if model is None:
            raise HTTPException(status_code=503, detail="the model is not loaded")
        return model

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

    def pseudonym(user: str | None) -> str:
        if settings.identity is None:  # capture always has a key (`from_env` refuses it without)
            return ANONYMOUS
        return settings.identity.pseudonym(user)

    app = FastAPI(title="stt-flywheel serving", lifespan=lifespan)
    app.state.capture = writer

    @app.get(settings.health_route)
    def health() -> Health:
        """200 once the model is loaded, with the capture writer's counters."""
        return Health(
            status="ok",
            family=loaded().family,
            model_version=settings.model_version,
            capture=writer.describe() if writer is not None else None,
        )

    limits = settings.limits
    app.add_middleware(BodyLimit, limit=limits.max_body_bytes)

    app.add_exception_handler(RequestValidationError, _invalid)

    @app.post(settings.predict_route)
    def predict(request: PredictRequest) -> PredictResponse:
        """Transcribe each instance; each prediction names its id and the version that answered."""
        speech = loaded()
        if len(request.instances) > limits.max_instances:
            raise HTTPException(
                status_code=400,
                detail=f"{len(request.instances)} instances in one request; at most {limits.max_instances}",
            )
        audios, raw = [], []
        _check_metadata(request, limits)
        for i, instance in enumerate(request.instances):
            data, decoded = _audio_of(i, instance.b64, limits)
            raw.append((data, decoded))
            audios.append(resample(decoded.samples, decoded.sample_rate, TARGET_SAMPLE_RATE))
        revealed = settings.model_version if limits.reveal_version else None
        transcripts = speech.transcribe_scored(
            audios, batch_size=settings.batch_size, max_piece_s=limits.chunk_s
        )
        now = datetime.now(UTC)
        out = []
        for instance, transcript, (data, decoded) in zip(request.instances, transcripts, raw, strict=True):
            pid = new_prediction_id(now)
            if writer is not None:
                user = pseudonym(instance.user or request.parameters.user)
                writer.offer(
                    _captured(settings, pid, now, transcript, instance.metadata, user, data, decoded)
                )
            out.append(_answer(transcript, pid, revealed, request.parameters.word_confidence))
        return PredictResponse(predictions=out)

    return app


def _captured(
    settings: ServingSettings,
    pid: str,
    now: datetime,
    transcript: Transcript,
    metadata: dict[str, str],
    user: str,
    data: bytes,
    decoded: DecodedAudio,
) -> CapturedPrediction:
    """What capture keeps of one prediction, signed by this process (`Identity.sign`): its words
    and confidence always, asked for or not."""
    text, version = transcript.text, settings.model_version
    return CapturedPrediction(
        pid,
        now,
        version,
        settings.endpoint,
        text,
        metadata,
        decoded.duration_s,
        data,
        decoded.extension,
        user=user,
        signature=settings.identity.sign(version, pid, user, text) if settings.identity else None,
        confidence=transcript.confidence,
        words=[w.as_dict() for w in transcript.words],
    )


def _answer(transcript: Transcript, pid: str, revealed: str | None, word_confidence: bool) -> Prediction:
    """One instance's answer; its words and confidence when the request asked for them."""
    return Prediction(
        transcript=transcript.text,
        prediction_id=pid,
        model_version=revealed,
        confidence=transcript.confidence if word_confidence else None,
        words=[PredictedWord(**w.as_dict()) for w in transcript.words] if word_confidence else None,
    )


def _check_metadata(request: PredictRequest, limits: ServingLimits) -> None:
    for i, instance in enumerate(request.instances):
        problem = limits.metadata_problem(instance.metadata)
        if problem:
            raise HTTPException(status_code=422, detail=f"instance {i}: {problem}")


async def _invalid(_: Request, exc: Exception) -> JSONResponse:
    """What was wrong and where, never the request itself (which may be megabytes of audio)."""
    problems = exc.errors() if isinstance(exc, RequestValidationError) else []
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in problems
    ]
    return JSONResponse(status_code=422, content={"detail": errors})


def run_server(settings: ServingSettings) -> None:
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="warning")
