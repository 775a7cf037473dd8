"""The prediction server as Vertex runs it: a real process, configured by AIP_* variables."""

import base64
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import free_port

from stt_flywheel.data.audio import load_audio
from stt_flywheel.data.manifest import Utterance
from stt_flywheel.deployment.serving import ServingSettings
from stt_flywheel.models import load_model
from stt_flywheel.storage.trees import put_tree


@pytest.fixture(scope="module")
def server(
    base_model_dir: Path, gcs_emulator: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The server as Vertex starts it: the model is at a gs:// AIP_STORAGE_URI (fake-gcs-server)."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    storage.Client(project="emulator", credentials=AnonymousCredentials()).create_bucket("serving-models")
    model_uri = put_tree(base_model_dir, "gs://serving-models/stt-flywheel/v1", commit_file="config.json")
    port = free_port()
    env = {
        **os.environ,
        "AIP_HTTP_PORT": str(port),
        "AIP_HEALTH_ROUTE": "/v1/health",
        "AIP_PREDICT_ROUTE": "/v1/models/stt:predict",
        "AIP_STORAGE_URI": model_uri,
        "STT_FLYWHEEL_CACHE": str(tmp_path_factory.mktemp("serving-cache")),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "flywheel_pipelines.cli", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            if proc.poll() is not None:
                raise RuntimeError(proc.stdout.read().decode() if proc.stdout else "server exited")
            try:
                if httpx.get(url + "/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        else:
            raise RuntimeError("server did not become healthy")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_transcribes_real_audio_over_http(
    server: str, base_model_dir: Path, general_utts: list[Utterance]
) -> None:
    utts = general_utts[:4]
    body = {"instances": [{"b64": base64.b64encode(Path(u.audio).read_bytes()).decode()} for u in utts]}
    response = httpx.post(server + "/v1/models/stt:predict", json=body, timeout=60)
    assert response.status_code == 200, response.text
    served = [p["transcript"] for p in response.json()["predictions"]]
    local = load_model(base_model_dir, device="cpu").transcribe([load_audio(u.audio).samples for u in utts])
    assert served == local


def test_users_audio_in_other_formats_is_heard_as_the_wav_is(
    server: str, general_utts: list[Utterance]
) -> None:
    """A browser's WebM/Opus, a phone's M4A/AAC, a call centre's 8 kHz μ-law, stereo MP3."""
    from stt_flywheel.data.decode import encode_audio

    utt = general_utts[0]
    samples = load_audio(utt.audio).samples
    files = [Path(utt.audio).read_bytes()] + [
        encode_audio(samples, 16_000, e, channels=2) for e in ("webm-opus", "m4a-aac", "mp3")
    ]
    body = {"instances": [{"b64": base64.b64encode(f).decode()} for f in files]}
    response = httpx.post(server + "/v1/models/stt:predict", json=body, timeout=60)
    assert response.status_code == 200, response.text
    wav, *others = [p["transcript"] for p in response.json()["predictions"]]
    assert others == [wav] * 3


BAD_REQUESTS = [
    ({"instances": [{"b64": "%%% not base64"}]}, 400, "instance 0"),
    ({"instances": [{"b64": base64.b64encode(b"not audio").decode()}]}, 400, "not audio that decodes"),
    ({"instances": []}, 422, "instances"),
    ({"rows": []}, 422, "instances"),
]


@pytest.mark.parametrize(("body", "status", "message"), BAD_REQUESTS)
def test_bad_requests_get_clear_errors(server: str, body: dict, status: int, message: str) -> None:
    response = httpx.post(server + "/v1/models/stt:predict", json=body, timeout=30)
    assert response.status_code == status
    assert message in response.text


def test_settings_from_the_vertex_environment() -> None:
    s = ServingSettings.from_env({"AIP_STORAGE_URI": "/m", "AIP_HTTP_PORT": "9000"})
    assert (s.storage_uri, s.port, s.health_route, s.predict_route) == ("/m", 9000, "/health", "/predict")
    assert ServingSettings.from_env({}, storage_uri="/x").storage_uri == "/x"
    with pytest.raises(ValueError, match="AIP_STORAGE_URI"):
        ServingSettings.from_env({})
    assert s.host == "127.0.0.1"  # this machine only, unless told
    assert ServingSettings.from_env({"AIP_STORAGE_URI": "/m", "FLYWHEEL_HOST": "0.0.0.0"}).host == "0.0.0.0"
    assert ServingSettings.from_env({"AIP_STORAGE_URI": "/m"}, host="::1").host == "::1"


def test_local_endpoint_serves_through_serving_processes(
    tmp_path: Path, flywheel_config: tuple, general_utts: list[Utterance]
) -> None:
    """Inside `served()`, the embedded endpoint's predictions go over HTTP to a serving process per
    version, with the same transcripts as in-process, and the processes end with the block."""
    from stt_flywheel.deployment.backends import open_endpoint
    from stt_flywheel.run.stages import bootstrap_registry

    _, config = flywheel_config
    bootstrap_registry(config)
    audios = [load_audio(u.audio).samples for u in general_utts]
    endpoint = open_endpoint(config)
    _, in_process = endpoint.predict(audios)
    with endpoint.served() as served:
        version, over_http = served.predict(audios)
        url = served.server_url(version)
        assert url is not None
        assert httpx.get(url + "/health").json()["status"] == "ok"
    assert version == 1
    assert over_http == in_process
    assert endpoint.server_url(1) is None
    with pytest.raises(httpx.TransportError):
        httpx.get(url + "/health", timeout=2)


def test_a_serving_process_refuses_a_model_that_is_not_the_registered_one(
    flywheel_config: tuple, general_utts: list[Utterance]
) -> None:
    """Each serving process is told its version's digest and hashes its model directory before it
    loads it: a file changed after registration (and after `verify` passed at deploy time) stops
    the process with the reason, not a traceback, and nothing is served from it."""
    from stt_flywheel.deployment.backends import open_endpoint, open_registry
    from stt_flywheel.deployment.serving.contract import model_digest
    from stt_flywheel.run.stages import bootstrap_registry

    _, config = flywheel_config
    v1 = bootstrap_registry(config)
    assert open_registry(config).digest(v1.version) == model_digest(v1.uri)
    tampered = Path(v1.uri) / "preprocessor_config.json"
    tampered.write_text(tampered.read_text() + " ")
    audio = load_audio(general_utts[0].audio).samples
    with (
        pytest.raises(RuntimeError, match="not the one registered for this version") as caught,
        open_endpoint(config).served() as served,
    ):
        served.predict([audio])
    assert "Traceback" not in str(caught.value)


class _Pieces:
    """The committed model, recording the longest audio its decoder was handed at once."""

    def __init__(self, model) -> None:  # type: ignore[no-untyped-def]
        self.model, self.family, self.longest = model, model.family, 0
        decode = model._score_batch

        def spy(audios, temperatures):  # type: ignore[no-untyped-def]
            self.longest = max([self.longest, *(len(a) for a in audios)])
            return decode(audios, temperatures)

        model._score_batch = spy

    def transcribe_scored(self, audios, batch_size: int = 16, max_piece_s=None):  # type: ignore[no-untyped-def]
        return self.model.transcribe_scored(audios, batch_size=batch_size, max_piece_s=max_piece_s)


@pytest.fixture(scope="module")
def limited(base_model_dir) -> tuple:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from stt_flywheel.config import ServingLimits
    from stt_flywheel.deployment.serving.app import create_app
    from stt_flywheel.models import load_model

    limits = ServingLimits(max_body_bytes=2_000_000, max_instances=3, max_audio_s=4.0, chunk_s=1.0)
    model = _Pieces(load_model(base_model_dir, device="cpu"))  # its own: the spy stays with it
    app = create_app(ServingSettings(storage_uri="unused", limits=limits), model=model)  # type: ignore[arg-type]
    return TestClient(app), model


def _wav(seconds: float, value: float | None = None) -> str:
    import io

    import soundfile as sf

    samples = np.full(int(16_000 * seconds), np.nan if value is None else value, dtype=np.float32)
    buf = io.BytesIO()
    sf.write(buf, samples, 16_000, format="WAV", subtype="FLOAT")
    return base64.b64encode(buf.getvalue()).decode()


def test_requests_beyond_the_limits_are_refused_before_decoding(
    limited: tuple, general_utts: list[Utterance]
) -> None:
    client, _ = limited
    url = "/predict"
    big = {"instances": [{"b64": "A" * 3_000_000}]}
    assert client.post(url, json=big).status_code == 413  # by Content-Length

    def chunks():  # no Content-Length: counted as it streams in
        yield b'{"instances": [{"b64": "'
        for _ in range(30):
            yield b"A" * 100_000
        yield b'"}]}'

    streamed = client.post(url, content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    one = base64.b64encode(Path(general_utts[0].audio).read_bytes()).decode()
    many = client.post(url, json={"instances": [{"b64": one}] * 4})
    assert many.status_code == 400
    assert "at most 3" in many.text
    long = client.post(url, json={"instances": [{"b64": _wav(6.0, 0.1)}]})
    assert long.status_code == 400
    assert "6.0 s of audio by its header; at most 4 s" in long.text
    nan = client.post(url, json={"instances": [{"b64": _wav(1.0)}]})
    assert nan.status_code == 400
    assert "NaN or infinite" in nan.text


def test_metadata_and_users_beyond_their_bounds_are_refused(
    limited: tuple, general_utts: list[Utterance]
) -> None:
    client, _ = limited
    one = base64.b64encode(Path(general_utts[0].audio).read_bytes()).decode()
    many = {f"k{i}": "v" for i in range(17)}
    response = client.post("/predict", json={"instances": [{"b64": one, "metadata": many}]})
    assert response.status_code == 422 and "17 metadata keys; at most 16" in response.text
    long = client.post("/predict", json={"instances": [{"b64": one, "metadata": {"domain": "x" * 201}}]})
    assert long.status_code == 422 and "over 200 characters" in long.text
    named = client.post("/predict", json={"instances": [{"b64": one, "user": "u" * 257}]})
    assert named.status_code == 422
    fine = {"instances": [{"b64": one, "user": "alice"}], "parameters": {"user": "bob", "other": 1}}
    answer = client.post("/predict", json=fine)
    assert answer.status_code == 200 and answer.json()["predictions"][0]["model_version"] is None


def test_capture_without_the_identity_key_refuses_to_start() -> None:
    env = {"AIP_STORAGE_URI": "/m", "FLYWHEEL_CAPTURE_URI": "/store"}
    with pytest.raises(ValueError, match="FLYWHEEL_IDENTITY_KEY"):
        ServingSettings.from_env(env)
    assert ServingSettings.from_env({**env, "FLYWHEEL_IDENTITY_KEY": "k" * 32}).identity is not None


def test_errors_never_echo_the_request_or_show_addresses(limited: tuple) -> None:
    client, _ = limited
    payload = "B" * 500_000
    wrong_type = client.post("/predict", json={"instances": [{"b64": payload, "extra": payload}]})
    assert wrong_type.status_code == 422
    assert payload[:100] not in wrong_type.text
    assert len(wrong_type.content) < 2_000
    not_audio = client.post("/predict", json={"instances": [{"b64": base64.b64encode(b"x" * 64).decode()}]})
    assert not_audio.status_code == 400
    assert "0x" not in not_audio.text


def test_long_audio_within_the_limit_is_transcribed_in_pieces(
    limited: tuple, general_utts: list[Utterance]
) -> None:
    client, model = limited
    utt = next(u for u in general_utts if load_audio(u.audio).duration_s > 2.0)
    b64 = base64.b64encode(Path(utt.audio).read_bytes()).decode()
    response = client.post("/predict", json={"instances": [{"b64": b64}]})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["transcript"]
    assert model.longest <= 16_000  # no piece longer than chunk_s


def test_without_a_loaded_model_health_and_predict_answer_503() -> None:
    """Vertex routes traffic to a replica only once its health route answers 200."""
    from fastapi.testclient import TestClient

    from stt_flywheel.deployment.serving.app import build_app, openapi_schema

    client = TestClient(build_app(ServingSettings(storage_uri="unused"), None))
    assert client.get("/health").status_code == 503
    answer = client.post("/predict", json={"instances": [{"b64": "AAAA"}]})
    assert (answer.status_code, answer.json()["detail"]) == (503, "the model is not loaded")
    schema = openapi_schema()
    assert set(schema["paths"]) == {"/health", "/predict"}
    assert {"PredictRequest", "PredictResponse", "Health"} <= set(schema["components"]["schemas"])


def test_the_answer_names_its_version_only_when_told_to() -> None:
    base = {"AIP_STORAGE_URI": "/m", "FLYWHEEL_MODEL_VERSION": "7"}
    assert not ServingSettings.from_env(base).limits.reveal_version
    assert ServingSettings.from_env({**base, "FLYWHEEL_REVEAL_VERSION": "True"}).limits.reveal_version


def test_words_and_confidence_are_answered_when_asked(limited: tuple, general_utts: list[Utterance]) -> None:
    from stt_flywheel.data.audio import encode_wav

    client, _ = limited
    audio = load_audio(general_utts[0].audio).samples[: 16_000 * 3]
    instance = {"b64": base64.b64encode(encode_wav(audio)).decode()}
    plain = client.post("/predict", json={"instances": [instance]}).json()["predictions"][0]
    assert plain["words"] is None and plain["confidence"] is None
    asked = client.post(
        "/predict", json={"instances": [instance, instance], "parameters": {"word_confidence": True}}
    ).json()["predictions"]
    first = asked[0]
    assert first["transcript"] == plain["transcript"]
    assert " ".join(w["word"] for w in first["words"]) == first["transcript"]
    assert all(0 < w["confidence"] <= 1 and 0 <= w["start"] < w["end"] <= 3.05 for w in first["words"])
    assert first["confidence"] == pytest.approx(min(w["confidence"] for w in first["words"]), rel=1e-5)
    assert asked[1]["words"] == first["words"]  # the same audio, the same answer
    refused = client.post(
        "/predict", json={"instances": [instance], "parameters": {"word_confidence": "maybe"}}
    )
    assert refused.status_code == 422
