"""The loop through the CLI: traffic captured by the embedded endpoint's serving process, feedback
ingested later by prediction id, the store exported and compacted, and one status view as JSON,
text and an HTML page that renders in headless Chromium."""

import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from conftest import Cli, serve_through_v1

from stt_flywheel.config import FlywheelConfig
from stt_flywheel.data.error_store import open_error_store
from stt_flywheel.data.manifest import Utterance
from stt_flywheel.scoring.text import normalize


@pytest.fixture
def served(
    flywheel_config: tuple[Path, FlywheelConfig], new_utts: list[Utterance], tmp_path: Path
) -> tuple[Path, FlywheelConfig, list[dict], list[Utterance]]:
    """v1 serves 12 new-domain requests through its serving process; every answer is captured."""
    path, config = flywheel_config
    utts = new_utts[:12]
    return path, config, serve_through_v1(config, utts), utts


def test_capture_feedback_export_compact_and_status(
    served: tuple[Path, FlywheelConfig, list[dict], list[Utterance]], cli: Cli, tmp_path: Path
) -> None:
    path, config, answers, utts = served
    assert {a["model_version"] for a in answers} == {"1"}
    store = open_error_store(config)
    assert store.predictions().num_rows == 12  # the serving process flushed when the endpoint stopped

    now = datetime.now(UTC).isoformat()
    events = []
    wrong = [
        (a, u) for a, u in zip(answers, utts, strict=True) if normalize(a["transcript"]) != normalize(u.text)
    ]
    assert wrong, "the base model gets some new-domain words wrong"
    for a, u in wrong:
        events.append(
            {
                "prediction_id": a["prediction_id"],
                "corrected_text": u.text,
                "event_time": now,
                "source": "app",
            }
        )
    events.append(events[0])  # repeated
    events.append(
        {"prediction_id": "no-such-prediction", "flagged": True, "event_time": now, "source": "app"}
    )
    events_file = tmp_path / "events.jsonl"
    events_file.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events) + b"not json\n")
    status, out, err = cli("feedback", "ingest", str(events_file), "--config", str(path), "--json")
    assert status == 0, err
    result = orjson.loads(out)
    assert result["states"] == {
        "applied": len(wrong),
        "superseded": 0,
        "duplicate": 1,
        "pending": 1,
    }
    assert result["quarantined"] == 1 and result["balanced"]

    status, out, err = cli("errors", "export", "--config", str(path))
    assert status == 0, err
    exported = [orjson.loads(line) for line in out.splitlines()]
    assert {r["prediction_id"] for r in exported} == {a["prediction_id"] for a in answers}
    by_id = {r["prediction_id"]: r for r in exported}
    for a, u in wrong:
        row = by_id[a["prediction_id"]]
        assert (row["hypothesis"], row["feedback"]["corrected_text"], row["label"]) == (
            a["transcript"],
            u.text,
            "corrected",
        )
        assert row["metadata"]["domain"] == u.domain and row["audio_uri"]
    assert by_id[wrong[0][0]["prediction_id"]]["feedback_events"] == 2
    status, out, _ = cli("errors", "export", "--config", str(path), "--quarantine")
    assert [orjson.loads(line)["reason"] for line in out.splitlines()] == ["invalid_json"]
    status, out, err = cli("errors", "export", "--config", str(path), "--since", "yesterday")
    assert status == 2 and "not an ISO date" in err

    status, out, err = cli("store", "compact", "--config", str(path), "--json")
    assert status == 0, err  # this hour's files are the writers' still: nothing to merge yet
    assert orjson.loads(out)["partitions"] == 0

    html = tmp_path / "status.html"
    status, out, err = cli("status", "--config", str(path), "--json", "--html", str(html))
    assert status == 0, err
    view = orjson.loads(out)
    assert view["store"]["predictions"] == 12
    fb = view["store"]["feedback_events"]
    assert fb["applied"] == len(wrong)
    # every event read is in one state, the lines rejected at ingest included
    states = ("applied", "superseded", "duplicate", "pending", "quarantined", "rejected_at_ingest")
    assert fb["read"] == sum(fb[k] for k in states) == len(events) + 1
    [v1] = view["registry"]["versions"]
    assert v1["aliases"] == ["default"] and v1["traffic"] == 100
    live = v1["live"]
    # the requests name no user: they are one user, of whom the demo config counts the earliest 10
    assert (live["requests"], live["users"], live["capped"]) == (10, 1, 2)
    assert live["corrected"] + live["pending"] == 10 and 0 < live["corrected"] <= len(wrong)
    assert live["wer"]["value"] > 0 and live["wer"]["low"] <= live["wer"]["value"] <= live["wer"]["high"]
    assert "only on predictions whose feedback carries a transcript" in view["live"]["selection_bias"]
    assert [t["version"] for t in view["trend"]] == ["1"]
    status, out, err = cli("status", "--config", str(path))
    assert status == 0, err
    flat = " ".join(out.split())
    assert "Versions" in flat and "Next trigger check would not fire: " in flat
    assert "waiting for their prediction 1" in flat and "pending" not in flat  # one meaning, said
    assert "Trend by day (UTC)" in flat and f"{datetime.now(UTC).date()}" in flat  # the trend, in text
    wer = view["registry"]["versions"][0]["live"]["wer"]
    assert (
        f"{wer['value']:.3f} [{wer['low']:.3f}, {wer['high']:.3f}]" in flat
    )  # WER as a fraction, as offline

    page = html.read_text()
    assert page.count("<svg") == 1 and "live WER" in page and "<script" not in page


@pytest.mark.chromium
def test_status_page_renders_in_chromium(
    served: tuple[Path, FlywheelConfig, list[dict], list[Utterance]], cli: Cli, tmp_path: Path
) -> None:
    path = served[0]
    html = tmp_path / "status.html"
    status, _, err = cli("status", "--config", str(path), "--html", str(html))
    assert status == 0, err
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is required: `make test` installs it through apt"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}"]
    run = subprocess.run(
        [chromium, *flags, "--enable-logging=stderr", "--v=0", "--dump-dom", html.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert not [line for line in run.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert "Versions" in run.stdout and "Trend" in run.stdout and run.stdout.count("<svg") == 1
