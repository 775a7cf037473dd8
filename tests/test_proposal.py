"""The review budget: which settled predictions a person is asked to correct, and the round trip
through Label Studio (its own label interface checks the tasks, predictions and annotations)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from conftest import Cli
from label_studio_sdk.label_interface import LabelInterface

from stt_flywheel.config import FlywheelConfig
from stt_flywheel.data.error_store import ErrorStore, Senders, open_error_store
from stt_flywheel.data.identity import Identity
from stt_flywheel.data.proposal import LABEL_CONFIG, label_studio_tasks, propose, read_label_studio_export
from stt_flywheel.data.records import new_prediction_id

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
KEY = Identity(b"p" * 32)


def _prediction(
    identity: Identity,
    k: int,
    confidence: float | None,
    *,
    domain: str = "general",
    speaker: str = "s1",
    hours_ago: float = 48,
    text: str | None = None,
    audio: bool = True,
    signed: bool = True,
) -> dict:
    at = NOW - timedelta(hours=hours_ago, minutes=k)
    pid, user = new_prediction_id(at), identity.pseudonym(f"user-{k % 3}")
    hypothesis = text or f"utterance number {k}"
    words = [
        {"word": w, "start": None, "end": None, "confidence": confidence or 0.5} for w in hypothesis.split()
    ]
    return {
        "prediction_id": pid,
        "predicted_at": at,
        "model_version": "2",
        "endpoint": "stt",
        "hypothesis": hypothesis,
        "metadata": {"domain": domain, "speaker": speaker},
        "user": user,
        "duration_s": 2.0,
        "audio_uri": f"gs://audio/{k}.wav" if audio else None,
        "audio_sha256": None,
        "signature": identity.sign("2", pid, user, hypothesis) if signed else "forged",
        "confidence": confidence,
        "words": words if confidence is not None else None,
    }


def test_the_budget_goes_to_the_least_sure_settled_unanswered_predictions_spread_over_strata(
    tmp_path: Path,
) -> None:
    store = ErrorStore(tmp_path / "store", senders=Senders(KEY))
    rows = [
        # one stratum (pharmacy, s1) is the least sure of all: it gets its share, not the budget
        *(_prediction(KEY, k, 0.01 * k, domain="pharmacy") for k in range(1, 7)),
        _prediction(KEY, 10, 0.40, speaker="s2"),
        _prediction(KEY, 11, 0.50, speaker="s3"),
        _prediction(KEY, 12, 0.30, domain="pharmacy", speaker="s4"),
        _prediction(KEY, 13, None, speaker="s5"),  # captured before confidence: after the rest
        # never proposed: answered, unsettled, without audio, not signed by a serving process,
        # or a text already proposed
        _prediction(KEY, 20, 0.001),
        _prediction(KEY, 21, 0.001, hours_ago=2),
        _prediction(KEY, 22, 0.001, audio=False),
        _prediction(KEY, 23, 0.001, signed=False),
        _prediction(KEY, 24, 0.02, domain="pharmacy", speaker="s4", text="utterance number 1"),
    ]
    store.write_predictions(rows, now=NOW - timedelta(hours=1))
    answered = rows[10]  # k = 20
    event = {"prediction_id": answered["prediction_id"], "flagged": True, "event_time": NOW.isoformat()}
    assert store.ingest_feedback([{**event, "source": "app", "user": "user-2"}], now=NOW).accepted == 1
    picked = propose(store, 5, now=NOW, label_window=timedelta(hours=24))
    ids = [p.prediction_id for p in picked]
    by_k = {
        r["prediction_id"]: k
        for k, r in zip([*range(1, 7), 10, 11, 12, 13, 20, 21, 22, 23, 24], rows, strict=True)
    }
    # no stratum more than a fifth of the budget (one): the least sure of each, the one without a
    # confidence last
    assert [by_k[i] for i in ids] == [1, 12, 10, 11, 13]
    assert picked[0].least_sure == "utterance" and picked[0].confidence == pytest.approx(0.01)
    more = [by_k[p.prediction_id] for p in propose(store, 12, now=NOW, label_window=timedelta(hours=24))]
    assert sorted(more) == [1, 2, 3, 4, 5, 6, 10, 11, 12, 13] and more[-1] == 13
    since = NOW - timedelta(
        hours=48, minutes=3
    )  # the newest three of the pharmacy stratum and 10–13 are older
    assert {
        by_k[p.prediction_id]
        for p in propose(store, 20, now=NOW, label_window=timedelta(hours=24), since=since)
    } == {1, 2, 3}


def _exported(tasks: list[dict], texts: dict[str, str | None]) -> list[dict]:
    """What Label Studio exports after people worked the tasks: each with its id, and an annotation
    per person who submitted one (None: they skipped the task, which Label Studio keeps as cancelled)."""
    out = []
    for n, task in enumerate(tasks, start=1):
        text = texts.get(task["data"]["prediction_id"], "")
        annotation = {
            "id": 100 + n,
            "completed_by": {"id": 7, "email": "reviewer@example.com"},
            "result": [
                {
                    "id": f"r{n}",
                    "from_name": "transcription",
                    "to_name": "audio",
                    "type": "textarea",
                    "origin": "manual",
                    "value": {"text": [text or ""]},
                }
            ],
            "was_cancelled": text is None,
            "created_at": "2026-11-20T13:00:00.000000Z",
            "updated_at": f"2026-11-20T13:0{n % 10}:00.000000Z",
            "lead_time": 12.5,
        }
        out.append(
            {"id": n, "data": task["data"], "annotations": [annotation], "predictions": task["predictions"]}
        )
    return out


def test_label_studio_tasks_and_their_export_round_trip(tmp_path: Path) -> None:
    store = ErrorStore(tmp_path / "store", senders=Senders(KEY, reviewer_sources=("review", "label-studio")))
    rows = [_prediction(KEY, k, 0.1 * k) for k in range(1, 4)]
    store.write_predictions(rows, now=NOW - timedelta(hours=1))
    picked = propose(store, 3, now=NOW, label_window=timedelta(hours=24))
    tasks = label_studio_tasks(picked, audio_url="http://127.0.0.1:8070/")
    interface = LabelInterface(LABEL_CONFIG)
    for task, p in zip(tasks, picked, strict=True):
        # (the label interface's validate_task cannot take a task with its predictions: each apart)
        assert interface.validate_task({"data": task["data"]})
        assert interface.validate_prediction(task["predictions"][0])
        assert task["data"]["audio"] == f"http://127.0.0.1:8070/audio/{p.prediction_id}"
        assert task["predictions"][0]["result"][0]["value"]["text"] == [p.hypothesis]
    assert label_studio_tasks(picked[:1])[0]["data"]["audio"] == picked[0].audio_uri
    first, second, third = (p.prediction_id for p in picked)
    export = _exported(tasks, {first: "utterance number one", second: None, third: picked[2].hypothesis})
    for task in export:
        assert interface.validate_annotation(task["annotations"][0])
    export.append({"id": 99, "data": {"audio": "x"}, "annotations": []})  # a task of another project
    export.append({"annotations": "not a list"})
    events, skipped = read_label_studio_export(export, "label-studio", NOW)
    assert [e["prediction_id"] for e in events] == [first, third]
    assert (
        events[0]["corrected_text"] == "utterance number one" and events[0]["user"] == "reviewer@example.com"
    )
    assert [s["reason"] for s in skipped][:2] == [
        "no submitted annotation",
        "its data names no prediction_id",
    ]
    assert skipped[2]["reason"].startswith("not a Label Studio task")
    result = store.ingest_feedback(events, now=NOW + timedelta(hours=1))
    assert result.accepted == 2 and not result.quarantined  # a reviewer source may label anyone's
    kinds = {p["prediction_id"]: kind for p, _, kind in store.errors()}
    assert kinds[first] == "corrected" and kinds.get(third) in (None, "confirmed")
    # answered now: proposed no more
    assert [p.prediction_id for p in propose(store, 3, now=NOW, label_window=timedelta(hours=24))] == [second]


def test_review_commands_say_what_is_wrong(
    flywheel_config: tuple[Path, FlywheelConfig], tmp_path: Path, cli: Cli
) -> None:
    path, config = flywheel_config
    empty = tmp_path / "empty.json"
    empty.write_text("")
    tasks = tmp_path / "tasks.json"
    tasks.write_bytes(orjson.dumps([{"id": 1, "data": {"prediction_id": "p"}, "annotations": []}]))
    for argv, status, said in (
        (["review", "import", str(empty)], 1, "is not JSON"),
        (["review", "import", str(tmp_path / "missing.json")], 1, "cannot read"),
        (["review", "import", str(tasks), "--source", "crowd"], 1, "not in feedback.reviewer_sources"),
        (["review", "propose", "--budget", "3", "--since", "last week"], 2, "not an ISO date"),
        (["review", "propose", "--budget", "0"], 2, "greater than or equal to 1"),
        (["review", "export", "--budget", "3", "--format", "csv", "--out", "x.json"], 2, "label-studio"),
        (
            ["review", "export", "--budget", "3", "--out", str(tmp_path / "no" / "dir.json")],
            1,
            "cannot write",
        ),
    ):
        code, out, err = cli(*argv, "--config", str(path))
        assert code == status, (argv, out, err)
        assert said in " ".join((out + err).replace("│", " ").split()) and "Traceback" not in out + err
    assert cli("review", "propose", "--budget", "3", "--config", str(path))[1].startswith(
        "nothing to propose"
    )
    code, out, _ = cli(
        "review", "export", "--budget", "3", "--out", str(tmp_path / "t.json"), "--config", str(path)
    )
    assert code == 0 and orjson.loads((tmp_path / "t.json").read_bytes()) == []
    assert (tmp_path / "t.label-config.xml").read_text() == LABEL_CONFIG
    assert open_error_store(config).predictions().num_rows == 0
