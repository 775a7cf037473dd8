"""The monitor decides canaries and watches the default from live evidence, on both backends: the
embedded registry + endpoint, and Vertex AI through the real SDK against the local stand-in (where
the traffic split must really move). Traffic and feedback are written to the error store as
capture and users would; the monitor reads them like any other look."""

import io
import json
import multiprocessing
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from fakes.stand_in_http import StandInHandler, serving
from fakes.vertex import running_fake
from records import record

from stt_flywheel.config import FlywheelConfig, MonitorSettings, load_config
from stt_flywheel.data.error_store import open_error_store
from stt_flywheel.data.records import new_prediction_id
from stt_flywheel.deployment.backends import open_endpoint, open_registry
from stt_flywheel.deployment.registry import AuditEntry
from stt_flywheel.deployment.strategies import replace_deployment, start_canary
from stt_flywheel.monitoring.canary import Arm, CanaryState, decide_canary
from stt_flywheel.monitoring.monitor import canary_state, run_monitor
from stt_flywheel.scoring.stats import proportion_difference

RIGHT = "take two ibuprofen daily"
WRONG = "take two ibuprofin daily"  # one substitution in four words

MONITOR = {
    "min_labelled_per_arm": 40,
    "min_scored_per_arm": 20,
    "correction_rate_margin": 0.05,
    "wer_margin": 0.05,
    "max_looks": 4,
    "max_canary_hours": 24,
}


class World:
    """A registry with v1 serving, an error store, and traffic written by version."""

    def __init__(self, kind: str, config: FlywheelConfig, model_dir: Path) -> None:
        self.kind, self.config, self.model_dir = kind, config, model_dir
        self.registry = open_registry(config)
        self.endpoint = open_endpoint(config, self.registry)
        self.store = open_error_store(config)
        self.rng = random.Random(7)
        self.registry.register(model_dir, source_run="bootstrap")
        replace_deployment(self.registry, self.endpoint, 1, "bootstrap")

    def register(self, run: str) -> int:
        return self.registry.register(self.model_dir, source_run=run).version

    def traffic(self, version: int, n: int, wrong: float, start: datetime, end: datetime) -> None:
        """`n` predictions by `version` spread over [start, end), for 50 users; each wrong one is
        corrected, and a tenth of the right ones confirmed, by their users, in events that arrive at `end`."""
        preds, events = [], []
        pseudonym = self.store.senders.pseudonym
        for i in range(n):
            at = start + (end - start) * (i + 0.5) / n
            pid = new_prediction_id(at)
            bad = self.rng.random() < wrong
            preds.append(
                {
                    "prediction_id": pid,
                    "predicted_at": at,
                    "model_version": str(version),
                    "endpoint": "stt",
                    "hypothesis": WRONG if bad else RIGHT,
                    "metadata": {},
                    "duration_s": 1.0,
                    "audio_uri": None,
                    "audio_sha256": None,
                    "user": pseudonym(f"user-{i % 50}"),
                    # as its serving process signs it: what lets it decide
                    "signature": self.store.senders.identity.sign(
                        str(version), pid, pseudonym(f"user-{i % 50}"), WRONG if bad else RIGHT
                    ),
                    "confidence": 0.3 if bad else 0.9,  # a model that knows when it is unsure
                }
            )
            if bad or self.rng.random() < 0.1:
                events.append(
                    {
                        "prediction_id": pid,
                        "corrected_text": RIGHT,
                        "event_time": at.isoformat(),
                        "source": "app",
                        "user": f"user-{i % 50}",
                    }
                )
        self.store.write_predictions(preds, now=end)
        self.store.ingest_feedback(events, now=end)

    def monitor(self, now: datetime, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        stream = io.StringIO()
        decision = run_monitor(self.config, now=now, log_stream=stream, **kwargs)
        return decision, json.loads(stream.getvalue().strip().splitlines()[-1])

    def looks(self) -> list[AuditEntry]:
        return [e for e in self.registry.audit_log() if e.action.startswith("monitor_")]


def _config(tmp_path: Path, **monitor: Any) -> dict[str, Any]:
    return {
        "paths": {"root": str(tmp_path / "state")},
        "dataset": {"audio_roots": ["/audio"]},  # where the records of tests/records.py say their audio is
        "feedback": {"label_window_hours": 0.5},
        "monitor": {**MONITOR, **monitor},
    }


@pytest.fixture(params=["local", pytest.param("vertex", marks=pytest.mark.gcs)])
def world_factory(request: pytest.FixtureRequest, tmp_path: Path, model_dir: Path) -> Iterator[Any]:
    def local(**monitor: Any) -> World:
        return World("local", FlywheelConfig.model_validate(_config(tmp_path, **monitor)), model_dir)

    if request.param == "local":
        yield local
        return
    bucket = request.getfixturevalue("gcs_bucket")
    identity = request.getfixturevalue("identity_secret")
    with running_fake() as (fake, url):

        def vertex(**monitor: Any) -> World:
            raw = _config(tmp_path, **monitor)
            raw["paths"] |= {"models": f"{bucket}/models", "state": f"{bucket}/state"}
            raw["deploy"] = {"backend": "vertex", "endpoint_name": "stt-test"}
            raw["identity"] = identity
            raw["vertex"] = {
                "project": fake.project,
                "location": fake.location,
                "api_endpoint": url,
                "serving_image": "us-docker.pkg.dev/p/r/serving@sha256:" + "a" * 64,
                "retry_initial_s": 0.05,
            }
            return World("vertex", FlywheelConfig.model_validate(raw), model_dir)

        yield vertex


def _canary(world: World, percent: int = 50) -> datetime:
    version = world.register("run-2")
    start_canary(world.registry, world.endpoint, version, percent, "pipeline run run-2")
    return datetime.now(UTC)


class Receiver(StandInHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802
        Receiver.received.append(json.loads(self.read_body()))
        self.reply_json(200, {"ok": True})


@pytest.fixture
def webhook() -> Iterator[str]:
    Receiver.received = []
    with serving(Receiver) as url:
        yield f"{url}/hooks/T000/B000/secret"


def test_a_good_canary_is_promoted(world_factory: Any) -> None:
    world = world_factory()
    t0 = _canary(world)
    assert world.endpoint.traffic() == {1: 50, 2: 50}
    world.traffic(1, 400, 0.40, t0, t0 + timedelta(hours=1))
    world.traffic(2, 400, 0.08, t0, t0 + timedelta(hours=1))
    decision, line = world.monitor(t0 + timedelta(hours=2))
    assert decision.action == "promote", decision.reasons
    assert decision.acted and decision.look == 1
    assert world.endpoint.traffic() == {2: 100}
    assert world.registry.aliases() == {"default": 2, "previous": 1}
    rate, wer = decision.tests
    assert rate["metric"] == "correction_rate" and rate["verdict"] == "non_inferior"
    assert rate["high"] < 0.05 and rate["a"] < rate["b"]
    assert wer["verdict"] == "non_inferior"
    # every look leaves its numbers in the audit log, a log line and a report
    (entry,) = world.looks()
    assert entry.action == "monitor_canary" and entry.detail["action"] == "promote"
    assert entry.detail["tests"][0]["delta"] == pytest.approx(rate["delta"])
    assert entry.detail["severity"] == "NOTICE" and entry.detail["report"] == decision.report
    assert line["severity"] == "NOTICE"
    assert line["monitor"]["action"] == "promote" and "promoted" in line["message"]
    page = Path(decision.report).read_text()
    assert "canary v2 promoted" in page and "<svg" in page and "non inferior" in page
    # how sure each arm was, hour by hour, on all of its requests: v1 wrong (and unsure) more often
    hours = {(p["version"], p["at"]): p for p in decision.confidence}
    assert {v for v, _ in hours} == {"1", "2"} and "Confidence by hour" in page
    for (version, at), p in hours.items():
        other = hours.get(("2" if version == "1" else "1", at))
        if other is not None and version == "2":
            assert p["mean"] > other["mean"] and 0.3 <= p["p10"] <= p["median"] <= 0.9


def test_a_bad_canary_is_rolled_back_and_alerted(world_factory: Any, webhook: str) -> None:
    world = world_factory(alert_webhook=webhook)
    t0 = _canary(world)
    world.traffic(1, 400, 0.10, t0, t0 + timedelta(hours=1))
    world.traffic(2, 400, 0.45, t0, t0 + timedelta(hours=1))
    decision, line = world.monitor(t0 + timedelta(hours=2))
    assert decision.action == "rollback", decision.reasons
    assert world.endpoint.traffic() == {1: 100}
    assert world.registry.aliases() == {"default": 1}
    rate = decision.tests[0]
    assert rate["verdict"] == "worse" and rate["low"] > 0 and rate["delta"] > 0.05
    assert line["severity"] == "WARNING" and "rolled back" in line["message"]
    (message,) = Receiver.received
    assert "canary v2 rolled back" in message["text"] and message["blocks"][0]["type"] == "section"
    assert decision.alert == {"sent": True, "host": webhook.split("/")[2], "status": 200}
    # the next look finds no canary: it watches the default and does nothing twice
    again, _ = world.monitor(t0 + timedelta(hours=3))
    assert again.kind == "default" and not again.acted
    assert len([e for e in world.looks() if e.detail["action"] == "rollback"]) == 1


def test_a_canary_short_of_labels_waits_then_meets_the_deadline(tmp_path: Path, model_dir: Path) -> None:
    world = World("local", FlywheelConfig.model_validate(_config(tmp_path)), model_dir)
    t0 = _canary(world, percent=10)
    world.traffic(1, 300, 0.2, t0, t0 + timedelta(hours=1))
    world.traffic(2, 30, 0.2, t0, t0 + timedelta(hours=1))
    for hours in (2, 3, 4):
        decision, line = world.monitor(t0 + timedelta(hours=hours))
        assert decision.action == "wait" and decision.look is None
        assert "waiting for labels" in decision.reasons[0] and line["severity"] == "INFO"
    assert world.endpoint.traffic() == {1: 90, 2: 10}
    late, line = world.monitor(t0 + timedelta(hours=25))
    assert late.action == "rollback" and "deadline" in late.reasons[-1]
    assert "fail closed" in late.summary and line["severity"] == "WARNING"
    assert world.endpoint.traffic() == {1: 100}
    assert [e.detail["action"] for e in world.looks()] == ["wait", "wait", "wait", "rollback"]


def test_the_hold_policy_keeps_the_canary_and_alerts(tmp_path: Path, model_dir: Path, webhook: str) -> None:
    raw = _config(tmp_path, deadline_policy="hold", alert_webhook=webhook)
    world = World("local", FlywheelConfig.model_validate(raw), model_dir)
    t0 = _canary(world)
    decision, line = world.monitor(t0 + timedelta(hours=30))
    assert decision.action == "hold" and not decision.acted
    assert world.endpoint.traffic() == {1: 50, 2: 50}
    assert line["severity"] == "WARNING" and "a person must decide" in Receiver.received[0]["text"]


def test_an_inconclusive_canary_spends_its_looks_then_fails_closed(tmp_path: Path, model_dir: Path) -> None:
    world = World("local", FlywheelConfig.model_validate(_config(tmp_path, max_looks=2)), model_dir)
    t0 = _canary(world)
    # the same quality in both arms, with a margin too tight for this much evidence to clear
    world.config.monitor.correction_rate_margin = 0.0
    world.traffic(1, 300, 0.3, t0, t0 + timedelta(hours=1))
    world.traffic(2, 300, 0.3, t0, t0 + timedelta(hours=1))
    first, _ = world.monitor(t0 + timedelta(hours=2))
    assert first.action == "continue" and first.look == 1
    second, _ = world.monitor(t0 + timedelta(hours=3))
    assert second.look == 2 and second.action == "rollback"
    assert "2 testing looks are spent" in second.reasons[-1]


def test_progressive_steps_are_each_gated(tmp_path: Path, model_dir: Path) -> None:
    world = World(
        "local", FlywheelConfig.model_validate(_config(tmp_path, canary_steps=[10, 50, 100])), model_dir
    )
    t0 = _canary(world, percent=10)
    world.traffic(1, 600, 0.40, t0, t0 + timedelta(hours=1))
    world.traffic(2, 400, 0.08, t0, t0 + timedelta(hours=1))
    step, _ = world.monitor(t0 + timedelta(hours=2))
    assert step.action == "step" and "now 50 %" in step.summary
    assert world.endpoint.traffic() == {1: 50, 2: 50}
    assert world.registry.aliases()["default"] == 1
    # the next step counts only what was served since the split changed
    t1 = world.looks()[-1].at
    waiting, _ = world.monitor(t1 + timedelta(hours=1))
    assert waiting.action == "wait" and waiting.window["start"] == t1.isoformat()
    world.traffic(1, 300, 0.40, t1 + timedelta(minutes=1), t1 + timedelta(hours=1))
    world.traffic(2, 300, 0.08, t1 + timedelta(minutes=1), t1 + timedelta(hours=1))
    done, _ = world.monitor(t1 + timedelta(hours=2))
    assert done.action == "promote" and done.look == 1  # a new step has its own looks
    assert world.endpoint.traffic() == {2: 100}


def test_a_degraded_default_is_rolled_back(world_factory: Any, webhook: str) -> None:
    world = world_factory(alert_webhook=webhook, baseline_hours=24)
    before = datetime.now(UTC)
    world.traffic(1, 400, 0.10, before - timedelta(hours=20), before - timedelta(hours=2))
    v2 = world.register("run-2")
    replace_deployment(world.registry, world.endpoint, v2, "pipeline run run-2")
    p = datetime.now(UTC)
    world.traffic(2, 400, 0.40, p, p + timedelta(hours=2))
    decision, line = world.monitor(p + timedelta(hours=3))
    assert decision.kind == "default" and decision.action == "degraded", decision.reasons
    assert decision.baseline == "v1's last 24 h"
    assert decision.acted and "rolled back to v1" in decision.summary
    assert world.endpoint.traffic() == {1: 100}
    assert world.registry.aliases()["default"] == 1
    assert line["severity"] == "ERROR"
    assert "degraded" in Receiver.received[0]["text"]
    assert [e.action for e in world.looks()] == ["monitor_default"]


def test_a_degraded_default_without_auto_rollback_only_alerts(tmp_path: Path, model_dir: Path) -> None:
    raw = _config(tmp_path, auto_rollback=False, baseline_hours=24)
    world = World("local", FlywheelConfig.model_validate(raw), model_dir)
    before = datetime.now(UTC)
    world.traffic(1, 400, 0.10, before - timedelta(hours=20), before - timedelta(hours=2))
    replace_deployment(world.registry, world.endpoint, world.register("run-2"), "run-2")
    p = datetime.now(UTC)
    world.traffic(2, 400, 0.40, p, p + timedelta(hours=2))
    decision, line = world.monitor(p + timedelta(hours=3))
    assert decision.action == "degraded" and not decision.acted
    assert line["severity"] == "CRITICAL" and "alerting only" in decision.summary
    assert world.endpoint.traffic() == {2: 100}


def test_a_healthy_default_is_left_alone(tmp_path: Path, model_dir: Path) -> None:
    world = World("local", FlywheelConfig.model_validate(_config(tmp_path, baseline_hours=24)), model_dir)
    before = datetime.now(UTC)
    world.traffic(1, 400, 0.20, before - timedelta(hours=20), before - timedelta(hours=2))
    replace_deployment(world.registry, world.endpoint, world.register("run-2"), "run-2")
    p = datetime.now(UTC)
    world.traffic(2, 400, 0.18, p, p + timedelta(hours=2))
    decision, line = world.monitor(p + timedelta(hours=3))
    assert decision.action == "healthy" and not decision.acted
    assert line["severity"] == "INFO" and world.looks() == []


def test_a_dry_run_decides_and_changes_nothing(tmp_path: Path, model_dir: Path) -> None:
    world = World("local", FlywheelConfig.model_validate(_config(tmp_path)), model_dir)
    t0 = _canary(world)
    world.traffic(1, 400, 0.40, t0, t0 + timedelta(hours=1))
    world.traffic(2, 400, 0.08, t0, t0 + timedelta(hours=1))
    decision, _ = world.monitor(t0 + timedelta(hours=2), act=False)
    assert decision.action == "promote" and decision.dry_run and not decision.acted
    assert world.endpoint.traffic() == {1: 50, 2: 50} and world.looks() == []


def _monitor_process(config_json: str, now: str, barrier: Any, out: Any) -> None:
    config = FlywheelConfig.model_validate_json(config_json)
    barrier.wait()
    decision = run_monitor(config, now=datetime.fromisoformat(now))
    out.put((decision.kind, decision.action, decision.acted))


def test_two_monitors_at_once_act_once(tmp_path: Path, model_dir: Path) -> None:
    world = World("local", FlywheelConfig.model_validate(_config(tmp_path)), model_dir)
    ctx = multiprocessing.get_context("fork")
    for round_ in range(3):
        version = world.register(f"run-{round_ + 2}")
        start_canary(world.registry, world.endpoint, version, 50, f"round {round_}")
        t0 = datetime.now(UTC)
        default = world.registry.aliases()["default"]
        world.traffic(default, 400, 0.40, t0, t0 + timedelta(hours=1))
        world.traffic(version, 400, 0.08, t0, t0 + timedelta(hours=1))
        barrier, out = ctx.Barrier(2), ctx.Queue()
        procs = [
            ctx.Process(
                target=_monitor_process,
                args=(world.config.model_dump_json(), (t0 + timedelta(hours=2)).isoformat(), barrier, out),
            )
            for _ in range(2)
        ]
        for p in procs:
            p.start()
        results = [out.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(timeout=60)
        assert sum(acted for _, _, acted in results) == 1, results
        assert world.endpoint.traffic() == {version: 100}
        promotions = [e for e in world.looks() if e.detail["action"] == "promote"]
        assert len(promotions) == round_ + 1


# -- the rule itself, on hand-made arms --------------------------------------------------------


def _arm(
    version: str, requests: int, corrected: int, errors: int, words: int, scored: int, users: int = 100
) -> Arm:
    import numpy as np

    per = np.zeros(scored, np.int64)
    per[:errors] = 1
    labelled = max(corrected, scored)
    words_each = np.full(scored, words // max(scored, 1))
    fixes = np.zeros(requests, np.int64)
    fixes[:corrected] = 1
    return Arm(
        version,
        requests,
        labelled,
        corrected,
        scored,
        per,
        words_each,
        users=users,
        requesters=[f"u{i % users}" for i in range(requests)],
        corrections=fixes,
        scorers=[f"u{i % users}" for i in range(scored)],
    )


def _state(looks: int = 0, age_h: float = 1.0, next_share: int = 100) -> CanaryState:
    now = datetime(2026, 11, 27, 12, tzinfo=UTC)
    return CanaryState(
        2, 1, 50, next_share, now - timedelta(hours=age_h), now - timedelta(hours=age_h), looks
    )


NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)


def test_the_rule_on_hand_made_arms() -> None:
    s = MonitorSettings(
        min_labelled_per_arm=50, min_scored_per_arm=50, max_looks=3, correction_rate_margin=0.02
    )
    same = _arm("2", 1000, 100, 100, 400, 100), _arm("1", 1000, 100, 100, 400, 100)
    # equal arms: the interval straddles the margin at this size → keep collecting
    j = decide_canary(_state(), *same, s, NOW)
    assert j.action == "continue" and j.look == 1
    # the third testing look with nothing decided spends the budget → deadline policy (rollback)
    assert decide_canary(_state(looks=2), *same, s, NOW).action == "rollback"
    # much better candidate → promote; below 100 % it is a step
    better = _arm("2", 1000, 20, 20, 400, 100), _arm("1", 1000, 100, 100, 400, 100)
    assert decide_canary(_state(), *better, s, NOW).action == "promote"
    assert decide_canary(_state(next_share=50), *better, s, NOW).action == "step"
    # a WER that cannot be measured (too few scored) never promotes
    thin = _arm("2", 1000, 60, 2, 40, 10), _arm("1", 1000, 100, 10, 40, 10)
    j = decide_canary(_state(), *thin, s, NOW)
    assert j.action == "continue" and j.tests[1].verdict == "not_measured"
    # worse beyond the margin with the interval above zero → roll back
    worse = _arm("2", 1000, 200, 200, 400, 200), _arm("1", 1000, 100, 100, 400, 100)
    j = decide_canary(_state(), *worse, s, NOW)
    assert j.action == "rollback" and j.tests[0].verdict == "worse"
    # worse but within the margin is not a rollback (the interval excludes zero, the estimate does not pass the margin)
    s_wide = s.model_copy(update={"correction_rate_margin": 0.2, "wer_margin": 0.5})
    assert decide_canary(_state(), *worse, s_wide, NOW).action == "promote"
    # too few labels: wait, and spend no look
    few = _arm("2", 100, 10, 10, 40, 10), _arm("1", 1000, 100, 100, 400, 100)
    assert few[0].labelled < s.min_labelled_per_arm
    j = decide_canary(_state(looks=2), *few, s, NOW)
    assert j.action == "wait" and j.look is None
    assert decide_canary(_state(age_h=80), *few, s, NOW).action == "rollback"


def test_canary_state_from_the_audit_log() -> None:
    t = datetime(2026, 11, 27, 8, tzinfo=UTC)

    def e(kind: str, minutes: int, **detail: Any) -> AuditEntry:
        at = t + timedelta(minutes=minutes)
        return AuditEntry(at=at, model="m", action=kind, version=3, detail=detail)

    log = [
        AuditEntry(at=t - timedelta(days=2), model="m", action="deploy", version=2, detail={}),
        e("deploy", 0),
        e("monitor_canary", 60, action="wait", look=None),
        e("monitor_canary", 120, action="continue", look=1),
        e("monitor_canary", 180, action="step", look=2, acted=True),
        e("monitor_canary", 240, action="continue", look=1),
    ]
    st = canary_state(log, 3, 2, 50, [10, 50, 100], t + timedelta(hours=5))
    assert st.started_at == t and st.step_started_at == t + timedelta(minutes=180)
    assert (st.looks_done, st.share, st.next_share) == (1, 50, 100)
    assert canary_state(log, 3, 2, 10, [10, 50, 100], t).next_share == 50
    assert canary_state(log, 3, 2, 10, [], t).next_share == 100


def test_the_log_line_is_one_json_object_per_look(tmp_path: Path, model_dir: Path) -> None:
    world = World("local", FlywheelConfig.model_validate(_config(tmp_path)), model_dir)
    stream = io.StringIO()
    run_monitor(world.config, log_stream=stream)
    (line,) = stream.getvalue().splitlines()
    record = orjson.loads(line)
    assert record["severity"] == "INFO"
    assert record["logging.googleapis.com/labels"] == {"app": "stt-flywheel", "component": "monitor"}
    assert record["monitor"]["kind"] == "default"


def _good_canary_in_real_time(tmp_path: Path, model_dir: Path) -> tuple[Path, World]:
    """A config file, and a good canary whose traffic is settled by now (for runs that read the clock)."""
    raw = _config(tmp_path)
    raw["feedback"]["label_window_hours"] = 0.0
    path = tmp_path / "flywheel.yaml"
    path.write_text(json.dumps(raw))
    world = World("local", load_config(path), model_dir)
    t0 = _canary(world)
    world.traffic(1, 400, 0.40, t0, t0 + timedelta(seconds=1))
    world.traffic(2, 400, 0.08, t0, t0 + timedelta(seconds=1))
    time.sleep(max(0.0, (t0 + timedelta(seconds=1.5) - datetime.now(UTC)).total_seconds()))
    return path, world


def test_the_compiled_monitor_pipeline_promotes_with_kfp_local(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from flywheel_pipelines.local_run import run_monitor_locally

    path, world = _good_canary_in_real_time(tmp_path, model_dir)
    (written,) = run_monitor_locally(path)
    decision = json.loads(written.read_text())
    assert decision["action"] == "promote" and decision["acted"]
    assert decision["holder"].startswith("stt-flywheel-monitor-")  # the pipeline job's name
    assert world.endpoint.traffic() == {2: 100}
    pipeline_root = Path(str(world.config.paths.pipeline_root))
    (report,) = pipeline_root.glob("stt-flywheel-monitor-*/monitor-deployment/report")
    assert "canary v2 promoted" in report.read_text()
    # the task's stdout (kfp.local relays it; on Vertex it goes to Cloud Logging) has the log line
    out = capsys.readouterr()
    logged = (world.config.paths.root / "logs").glob("monitor-*.log")
    text = "\n".join([out.out, out.err, *(p.read_text() for p in logged)])
    line = next(json.loads(x[x.index("{") :]) for x in text.splitlines() if '{"severity"' in x)
    assert line["severity"] == "NOTICE" and line["monitor"]["action"] == "promote"


def test_the_monitor_command(tmp_path: Path, model_dir: Path, cli: Any) -> None:
    path, world = _good_canary_in_real_time(tmp_path, model_dir)
    code, out, err = cli("monitor", "--config", str(path), "--dry-run", "--json")
    assert code == 0, err
    dry = json.loads(out)
    assert dry["action"] == "promote" and dry["dry_run"] and not dry["acted"]
    assert dry["report"] is None and not (Path(str(world.config.paths.reports)) / "monitor").exists()
    code, out, err = cli("monitor", "--config", str(path), "--log-line")
    assert code == 0, err
    assert "canary v2 promoted" in out and "correction rate v2" in out and "v1 50 %" in out
    assert json.loads(err.strip().splitlines()[-1])["severity"] == "NOTICE"
    assert world.endpoint.traffic() == {2: 100}
    code, out, err = cli("status", "--config", str(path))
    flat = " ".join(out.split())  # Rich wraps at the terminal's width
    assert code == 0 and "Monitor" in flat and "canary v2 promoted" in flat and "(NOTICE)" in flat
    code, out, err = cli("monitor", "--config", str(path))
    assert code == 0 and "default v2" in out
    code, _, err = cli("monitor", "--config", str(tmp_path / "missing.yaml"))
    assert code == 1 and "config file not found" in err and "Traceback" not in err
    code, _, err = cli("monitor", "--bogus")
    assert code == 2 and "No such option" in err


def test_a_promotion_killed_half_way_is_finished_by_the_next_look(tmp_path: Path, model_dir: Path) -> None:
    """`kill -9` after the traffic moved but before the aliases did: the next look completes it."""
    world = World("local", FlywheelConfig.model_validate(_config(tmp_path)), model_dir)
    t0 = _canary(world)
    world.endpoint.set_traffic({1: 0, 2: 100}, reason="the first step of promote_canary, then kill -9")
    assert world.registry.aliases() == {"default": 1, "candidate": 2}
    decision, _ = world.monitor(t0 + timedelta(minutes=5))
    assert decision.action == "promote" and decision.acted
    assert "interrupted promotion" in decision.summary
    assert world.registry.aliases() == {"default": 2, "previous": 1}
    assert world.endpoint.traffic() == {2: 100}


def test_a_few_users_decide_nothing_however_much_they_send() -> None:
    """Arms served to three users wait, whatever their numbers say; in an arm, one user's flood
    of requests and confirmations counts as `max_predictions_per_user` of them."""
    from stt_flywheel.monitoring.canary import measure_arm
    from stt_flywheel.monitoring.live import LiveRow

    settings = MonitorSettings(min_labelled_per_arm=10, min_scored_per_arm=10)
    few = decide_canary(
        _state(),
        _arm("2", 800, 8, 8, 4000, 400, users=3),
        _arm("1", 800, 80, 80, 4000, 400, users=3),
        settings,
        NOW,
    )
    assert few.action == "wait" and "waiting for users: v2 served 3, v1 3" in few.reasons[0]
    t0 = NOW - timedelta(hours=1)
    honest = [
        LiveRow("2", t0 + timedelta(seconds=i), WRONG, {}, "corrected", RIGHT, f"u{i % 40}", True)
        for i in range(80)
    ]
    flood = [
        LiveRow("2", t0 + timedelta(seconds=100 + i), RIGHT, {}, "confirmed", RIGHT, "mallory", True)
        for i in range(900)
    ]
    arm = measure_arm("2", honest + flood, "whisper-en/1", max_per_user=25)
    assert (arm.requests, arm.capped, arm.users) == (80 + 25, 875, 41)
    assert arm.correction_rate == 80 / 105  # the flood of confirmations does not wash the corrections out
    assert measure_arm("2", honest + flood, "whisper-en/1").correction_rate == 80 / 980


def test_a_canary_flooded_by_a_few_users_is_not_promoted_on_its_numbers() -> None:
    """The candidate's arm is 25 users' traffic (each at the cap), five of whom correct
    everything: counted as 625 independent requests, its correction rate is non-inferior; with
    users resampled whole, the interval is as wide as 25 users allow, and the canary waits."""
    from stt_flywheel.monitoring.canary import compare_arms, measure_arm
    from stt_flywheel.monitoring.live import LiveRow

    t0 = NOW - timedelta(hours=2)

    def rows(version: str, users: int, per_user: int, correcting: int) -> list[LiveRow]:
        return [
            LiveRow(
                version,
                t0 + timedelta(seconds=u * per_user + i),
                WRONG if u < correcting else RIGHT,
                {},
                "corrected" if u < correcting else "confirmed",
                RIGHT,
                f"{version}-u{u}",
                True,
            )
            for u in range(users)
            for i in range(per_user)
        ]

    candidate = measure_arm("2", rows("2", 25, 25, 5), "whisper-en/1", max_per_user=25)
    baseline = measure_arm("1", rows("1", 625, 1, 125), "whisper-en/1", max_per_user=25)
    assert candidate.correction_rate == baseline.correction_rate == 0.2
    kwargs = {"correction_margin": 0.1, "wer_margin": 0.5, "min_scored": 10, "confidence": 0.95}
    rate, wer = compare_arms(candidate, baseline, **kwargs)
    assert (
        rate.difference.method == "newcombe ∪ cluster bootstrap"
        and wer.difference.method == "cluster bootstrap"
    )
    assert rate.verdict == "inconclusive" and rate.difference.high > 0.1
    independent = proportion_difference(125, 625, 125, 625)
    assert independent.high < 0.1  # what the test said before users were resampled whole
    assert rate.difference.high - rate.difference.low > 3 * (independent.high - independent.low)


def test_only_what_a_serving_process_signed_decides(tmp_path: Path, model_dir: Path) -> None:
    """Predictions written by `errors ingest` (or anyone without the key) never fill an arm."""
    from stt_flywheel.monitoring.live import read_live

    world = World("local", FlywheelConfig.model_validate(_config(tmp_path)), model_dir)
    t0 = datetime.now(UTC) - timedelta(hours=3)
    world.traffic(1, 50, 0.2, t0, t0 + timedelta(hours=1))
    forged = {
        **record(1),
        "model_version": "1",
        "timestamp": (t0 + timedelta(minutes=5)).isoformat(),
        "user": "mallory",
    }
    assert world.store.ingest([forged]).accepted == 1
    rows = read_live(world.store, t0, t0 + timedelta(hours=2), datetime.now(UTC), verify=True)
    assert len(rows) == 51
    assert [r.user for r in rows if not r.signed] == [world.store.senders.pseudonym("mallory")]
