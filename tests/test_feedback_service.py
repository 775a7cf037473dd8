"""Feedback from a team's own service: the client library and `feedback serve` as a real process
over HTTP, with bearer keys, Google ID tokens (a stand-in issuer) and Pub/Sub push envelopes."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
import yaml
from conftest import free_port
from fakes.google_tokens import TokenIssuer, serving_certs

from stt_flywheel.client import FlywheelClient
from stt_flywheel.config import FeedbackService, load_config
from stt_flywheel.data.decode import encode_audio
from stt_flywheel.data.error_store import open_error_store
from stt_flywheel.errors import InputError

APP_KEY = "app:" + "k" * 32
REVIEW_KEY = "review:" + "r" * 32
AUDIENCE = "https://feedback.example.run.app"
PUSHER = "pubsub-push@p.iam.gserviceaccount.com"


def _speech(seconds: float = 1.0) -> bytes:
    tone = (0.3 * np.sin(np.arange(int(16_000 * seconds)) / 5)).astype(np.float32)
    return encode_audio(tone, 16_000, "webm-opus")


@pytest.fixture(scope="module")
def issuer() -> Iterator[tuple[TokenIssuer, str]]:
    tokens = TokenIssuer()
    with serving_certs(tokens) as url:
        yield tokens, url


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, issuer: tuple[TokenIssuer, str]) -> Iterator[dict]:
    """`stt-flywheel feedback serve` in its own process, with keys in a file and ID tokens from
    the stand-in issuer; yields its URL and config."""
    root = tmp_path_factory.mktemp("feedback-service")
    keys = root / "keys"
    keys.write_text(f"# callers\n{APP_KEY}\n{REVIEW_KEY}\n")
    keys.chmod(0o600)
    port = free_port()
    config = root / "flywheel.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "paths": {"root": str(root / "state")},
                "serving": {"max_audio_s": 30},
                "feedback": {
                    "service": {
                        "port": port,
                        "keys_secret": str(keys),
                        "audience": AUDIENCE,
                        "callers": {PUSHER: "pubsub"},
                        "certs_url": issuer[1],
                        "max_body_bytes": 200_000,
                        "max_events": 50,
                    }
                },
            }
        )
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "flywheel_pipelines.cli", "feedback", "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={k: v for k, v in os.environ.items() if k != "PORT"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            if proc.poll() is not None:
                raise RuntimeError(proc.stdout.read().decode() if proc.stdout else "exited")
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        yield {"url": url, "config": config}
    finally:
        proc.terminate()
        proc.wait(10)


def _captured(config: Path, n: int, user: str) -> list[str]:
    with FlywheelClient.from_config(config, model_version="1", spill_dir=config.parent / "spill") as client:
        pids = [client.capture(_speech(), f"turn on the lamp {i}", user=user) for i in range(n)]
    return pids


def _post(url: str, body: object, key: str | None = APP_KEY, **kw: object) -> httpx.Response:
    headers = {"authorization": f"Bearer {key.partition(':')[2]}"} if key else {}
    return httpx.post(url + "/v1/feedback", content=orjson.dumps(body), headers=headers, timeout=30, **kw)


def _event(pid: str, text: str, user: str = "u1", **extra: object) -> dict:
    return {
        "prediction_id": pid,
        "corrected_text": text,
        "event_time": datetime.now(UTC).isoformat(),
        "user": user,
        **extra,
    }


def test_one_event_and_a_batch_over_http_each_verdict_in_the_answer(service: dict) -> None:
    url, config = service["url"], service["config"]
    pids = _captured(config, 3, "u1")
    one = _post(url, _event(pids[0], "turn on the lamp"))
    assert one.status_code == 200, one.text
    assert one.json() | {"problems": []} == {
        "read": 1,
        "accepted": 1,
        "quarantined": 0,
        "states": {"applied": 1, "superseded": 0, "duplicate": 0, "pending": 0},
        "problems": [],
    }
    batch = [
        _event(pids[1], "turn on the lamp one"),
        {"prediction_id": pids[2], "corrected_text": "no time"},  # no event_time
        _event(pids[2], "a reviewer's word", source="review"),  # not this caller's name
        _event(pids[2], "someone else's", user="u2"),  # not the requester
    ]
    answer = _post(url, {"events": batch})
    assert answer.status_code == 200
    body = answer.json()
    assert (body["read"], body["accepted"], body["quarantined"]) == (4, 1, 3)
    assert [(p["event"], p["reason"]) for p in body["problems"]] == [
        (2, "invalid_record"),
        (3, "source_not_the_caller"),
        (4, "not_the_requester"),
    ]
    assert "someone else's" not in answer.text
    stored = open_error_store(load_config(config)).feedback()
    assert set(stored["source"].to_pylist()) == {"app"}  # the caller's name, not the body's


def test_a_reviewer_key_may_label_any_users_prediction(service: dict) -> None:
    pid = _captured(service["config"], 1, "u3")[0]
    answer = _post(service["url"], [_event(pid, "turn on the lamp", user="reviewer-7")], key=REVIEW_KEY)
    assert answer.json()["accepted"] == 1


def test_a_pubsub_push_with_an_id_token(service: dict, issuer: tuple[TokenIssuer, str]) -> None:
    tokens, _ = issuer
    pids = _captured(service["config"], 2, "u4")
    lines = b"\n".join(orjson.dumps(_event(p, "turn on the lamp", user="u4")) for p in pids) + b"\n{broken\n"
    envelope = {
        "message": {"data": base64.b64encode(lines).decode(), "messageId": "1", "attributes": {}},
        "subscription": "projects/p/subscriptions/feedback-push",
    }
    token = tokens.mint(PUSHER, AUDIENCE)
    answer = httpx.post(
        service["url"] + "/v1/feedback", json=envelope, headers={"authorization": f"Bearer {token}"}
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["accepted"], [p["reason"] for p in body["problems"]]) == (2, ["invalid_json"])
    for bad in (
        tokens.mint("someone@gmail.com", AUDIENCE),  # a real Google account, not one named
        tokens.mint(PUSHER, "https://another.example"),
        tokens.mint(PUSHER, AUDIENCE, expires_in_s=-3600),
        tokens.mint(PUSHER, AUDIENCE, issuer="https://evil.example"),
        tokens.mint(PUSHER, AUDIENCE, verified=False),
        TokenIssuer().mint(PUSHER, AUDIENCE),  # signed by another key
    ):
        refused = httpx.post(
            service["url"] + "/v1/feedback", json=envelope, headers={"authorization": f"Bearer {bad}"}
        )
        assert refused.status_code == 401


@pytest.mark.parametrize(
    ("body", "headers", "status", "message"),
    [
        (b"{}", {}, 401, "bearer key or a Google ID token"),
        (b"{}", {"authorization": "Bearer " + "x" * 32}, 401, "bearer key"),
        (b"{}", {"authorization": "Basic " + APP_KEY.partition(":")[2]}, 401, "bearer key"),
        (b"not json", None, 400, "not JSON"),
        (b"12", None, 400, "expected an event"),
        (orjson.dumps({"message": {"data": "%%%"}, "subscription": "s"}), None, 400, "not base64"),
        (orjson.dumps([{"prediction_id": "x"}] * 51), None, 400, "at most 50"),
        (b"[" + b" " * 300_000 + b"]", None, 413, "over 200000 bytes"),
    ],
)
def test_bad_requests_get_clear_errors(
    service: dict, body: bytes, headers: dict | None, status: int, message: str
) -> None:
    sent = headers if headers is not None else {"authorization": f"Bearer {APP_KEY.partition(':')[2]}"}
    answer = httpx.post(service["url"] + "/v1/feedback", content=body, headers=sent, timeout=30)
    assert answer.status_code == status
    assert message in answer.json()["detail"]


def test_the_client_sends_through_the_service_and_spills_while_it_is_away(
    service: dict, tmp_path: Path
) -> None:
    config = service["config"]
    pids = _captured(config, 2, "u5")
    dead = f"http://127.0.0.1:{free_port()}"
    away = FlywheelClient.from_config(
        config,
        model_version="1",
        feedback_url=dead,
        feedback_key=APP_KEY.partition(":")[2],
        spill_dir=tmp_path,
    )
    away.feedback(pids[0], corrected_text="turn on the lamp", user="u5")
    assert away.close()["feedback"]["spilled"] == 1
    assert list((tmp_path / "feedback").glob("feedback-*.jsonl"))
    back = FlywheelClient.from_config(
        config,
        model_version="1",
        feedback_url=service["url"],
        feedback_key=APP_KEY.partition(":")[2],
        spill_dir=tmp_path,
    )
    back.feedback(pids[1], flagged=True, user="u5")
    counters = back.close()["feedback"]
    assert (counters["sent"], counters["spilled"]) == (2, 0)
    events = open_error_store(load_config(config)).feedback()
    assert set(pids) <= set(events["prediction_id"].to_pylist())


def test_the_client_refuses_what_serving_would_and_keeps_the_format(service: dict, tmp_path: Path) -> None:
    config = service["config"]
    with FlywheelClient.from_config(config, model_version="1", spill_dir=tmp_path) as client:
        with pytest.raises(InputError, match="not audio"):
            client.capture(b"RIFF....WAVEfmt nonsense", "x")
        with pytest.raises(InputError, match="at most"):
            client.capture(_speech(40), "x")
        with pytest.raises(InputError, match="metadata"):
            client.capture(_speech(), "x", metadata={f"k{i}": "v" for i in range(100)})
        pid = client.capture(_speech(), "turn on the lamp", user="u6")
    store = open_error_store(load_config(config))
    row = store.lookup([pid]).to_pylist()[0]
    assert row["audio_uri"].endswith(".webm") and row["signature"] and row["user"] != "u6"


def test_over_the_rate_a_caller_waits(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from stt_flywheel.data.error_store import ErrorStore
    from stt_flywheel.deployment.feedback import build_feedback_app

    keys = tmp_path / "keys"
    keys.write_text(APP_KEY + "\n")
    keys.chmod(0o600)
    app = build_feedback_app(
        FeedbackService(keys_secret=str(keys), requests_per_minute=3), ErrorStore(tmp_path / "s")
    )
    client = TestClient(app)
    auth = {"authorization": f"Bearer {APP_KEY.partition(':')[2]}"}
    answers = [client.post("/v1/feedback", content=b"[]", headers=auth) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert 1 <= int(answers[-1].headers["retry-after"]) <= 60


def test_keys_from_secret_manager_and_a_key_file_open_to_others(tmp_path: Path) -> None:
    from fakes.secret_manager import running_secret_manager

    from stt_flywheel.config.base import ConfigError
    from stt_flywheel.deployment.feedback.auth import load_keys

    with running_secret_manager() as (fake, url):
        name = fake.add_version("projects/p/secrets/feedback-keys", f"{APP_KEY}\n{REVIEW_KEY}\n".encode())
        keys = load_keys(FeedbackService(keys_secret=name, secret_api_endpoint=url))
    assert sorted(keys.values()) == ["app", "review"]
    open_file = tmp_path / "keys"
    open_file.write_text(APP_KEY + "\n")
    open_file.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        load_keys(FeedbackService(keys_secret=str(open_file)))
    open_file.chmod(0o600)
    open_file.write_text("app:short\n")
    with pytest.raises(ConfigError, match="16 characters"):
        load_keys(FeedbackService(keys_secret=str(open_file)))


def test_without_a_way_to_know_callers_it_serves_this_machine_only(cli, tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"paths:\n  root: {tmp_path / 'state'}\n")
    status, _, err = cli("feedback", "serve", "--config", str(config), "--host", "0.0.0.0")
    assert status == 1
    assert "no way to know callers" in err
