"""The monitor: one look at live quality, a decision, and the action it calls for.

A look holds the monitor lease (two monitors never act twice), then:

- with a canary in flight (alias `candidate` serving part of the traffic): the canary against the
  default on the same window of settled traffic since its current step began
  (`canary.decide_canary`), and then promote, step to the next share, roll back, hold or keep
  collecting — through the deploy strategies, on either backend;
- otherwise the default against its record (its first `baseline_hours` of serving, or while it is
  younger than that, `previous`'s last ones): rolled back to `previous` when degraded
  (`monitor.auto_rollback`), or only alerted.

The registry's audit log is the monitor's memory: each canary look is recorded there
(`monitor_canary`, with its numbers and tests), and the canary's start, its step's start and the
testing looks already spent are read back from it. Every decision also becomes a structured log
line on the given stream (Cloud Logging reads `severity` and `message` from JSON on stdout), a
self-contained HTML report (and the decision as JSON beside it) under `<paths.reports>/monitor/`, and, for a rollback, a stalled
canary or a degraded default, a Slack-compatible message to `monitor.alert_webhook`.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import IO, Any

import orjson

from stt_flywheel.config import FlywheelConfig
from stt_flywheel.data.error_store import open_error_store
from stt_flywheel.deployment.backends import open_deployment
from stt_flywheel.deployment.endpoint import canary_split
from stt_flywheel.deployment.protocols import Endpoint, Registry
from stt_flywheel.deployment.registry import AuditEntry, ModelVersion
from stt_flywheel.deployment.strategies import DeployOutcome, promote_canary, rollback
from stt_flywheel.monitoring.alerts import send_webhook
from stt_flywheel.monitoring.canary import (
    Arm,
    CanaryState,
    Judgement,
    decide_canary,
    decide_default,
    measure_arm,
)
from stt_flywheel.monitoring.cloud_metrics import publish_cloud_metrics
from stt_flywheel.monitoring.decision import MonitorDecision
from stt_flywheel.monitoring.live import LiveRow, confidence_by_hour, read_live, read_windows
from stt_flywheel.monitoring.monitor_report import monitor_html
from stt_flywheel.storage.leases import LeaseHeld, acquire_lease, release_lease
from stt_flywheel.storage.objectstore import join_uri, open_store

__all__ = ["MONITOR_LEASE", "MonitorDecision", "canary_state", "log_record", "run_monitor"]

MONITOR_LEASE = "flywheel-monitor"
JSON = orjson.OPT_NON_STR_KEYS | orjson.OPT_INDENT_2
ALERTING = {"rollback", "hold", "degraded"}
SEVERITY = {
    "wait": "INFO",
    "continue": "INFO",
    "healthy": "INFO",
    "unwatched": "INFO",
    "idle": "INFO",
    "skipped": "INFO",
    "promote": "NOTICE",
    "step": "NOTICE",
    "rollback": "WARNING",
    "hold": "WARNING",
    "degraded": "ERROR",
}


def canary_state(
    log: list[AuditEntry],
    candidate: int,
    default: int,
    share: int,
    steps: list[int],
    now: datetime,
) -> CanaryState:
    """The canary's start, its current step's start and the testing looks spent in that step,
    from the registry's audit log."""
    mine = [e for e in log if e.version == candidate]
    deploys = [e.at for e in mine if e.action == "deploy"]
    looks = [e for e in mine if e.action == "monitor_canary"]
    started = deploys[-1] if deploys else (looks[0].at if looks else now)
    looks = [e for e in looks if e.at >= started]
    stepped = [e.at for e in looks if e.detail.get("action") == "step" and e.detail.get("acted")]
    step_started = max([started, *stepped])
    spent = sum(1 for e in looks if e.at > step_started and e.detail.get("look") is not None)
    later = [s for s in steps if s > share]
    return CanaryState(candidate, default, share, later[0] if later else 100, started, step_started, spent)


def _rows(rows: list[LiveRow], version: int, start: datetime, end: datetime) -> list[LiveRow]:
    """What decides: the version's predictions in [start, end) that a serving process of it signed
    (predictions written by `errors ingest` or by anyone else still train, never decide)."""
    return [r for r in rows if r.version == str(version) and r.signed and start <= r.predicted_at < end]


def _promoted_at(log: list[AuditEntry], version: int) -> datetime | None:
    """When `version` last became the default (promoted, or restored by a rollback)."""
    times = [
        e.at
        for e in log
        if e.version == version
        and (e.action == "promote" or (e.action == "rollback" and "rolled_back" in e.detail))
    ]
    return max(times, default=None)


def run_monitor(
    config: FlywheelConfig,
    *,
    now: datetime | None = None,
    act: bool = True,
    holder: str | None = None,
    log_stream: IO[str] | None = None,
    seed: int = 0,
) -> MonitorDecision:
    """Look once, decide, act (unless `act` is False: a dry run decides and reports only)."""
    started = time.monotonic()
    now = now or datetime.now(UTC)
    holder = holder or f"monitor-{uuid.uuid4().hex[:12]}"
    state = open_store(config.paths.state)
    if act:
        try:
            acquire_lease(
                state, MONITOR_LEASE, holder, timedelta(minutes=config.monitor.lease_minutes), now=now
            )
        except LeaseHeld as exc:
            decision = MonitorDecision(
                kind="none",
                action="skipped",
                summary=f"another monitor is looking ({exc})",
                checked_at=now.isoformat(),
                holder=holder,
            )
            _emit(decision, log_stream)
            return decision
    try:
        decision = _look(config, now, holder, act, seed)
    finally:
        if act:
            release_lease(state, MONITOR_LEASE, holder)
    decision.severity = _severity(decision)
    decision.seconds = round(time.monotonic() - started, 3)
    if act:  # a dry run decides and says so; it writes no report and publishes nothing
        _write_report(config, decision)
        if config.monitor.cloud_metrics:
            publish_cloud_metrics(config, now)
    if act and decision.action in ALERTING and config.monitor.alert_webhook:
        decision.alert = send_webhook(config.monitor.alert_webhook, decision)
    _emit(decision, log_stream)
    return decision


def _severity(decision: MonitorDecision) -> str:
    if decision.action == "degraded" and not decision.acted and not decision.dry_run:
        return "CRITICAL"  # nobody rolled it back: a person must
    return SEVERITY.get(decision.action, "INFO")


def _look(config: FlywheelConfig, now: datetime, holder: str, act: bool, seed: int) -> MonitorDecision:
    registry, endpoint = open_deployment(config)
    split = endpoint.traffic()
    default = registry.resolve("default")
    candidate = registry.resolve("candidate")
    decision = MonitorDecision(
        kind="none", action="idle", summary="", checked_at=now.isoformat(), holder=holder, dry_run=not act
    )
    decision.report = _report_uri(config, decision) if act else None
    decision.traffic_before = decision.traffic_after = split
    if default is None:
        decision.summary = "nothing to watch: the registry has no default version"
        return decision
    if candidate is not None and candidate.version != default.version and split.get(candidate.version, 0) > 0:
        return _canary(config, registry, endpoint, decision, candidate, default, now, act, seed)
    return _watch_default(config, registry, endpoint, decision, default, now, act, seed)


def _settled_end(config: FlywheelConfig, now: datetime) -> datetime:
    return now - config.feedback.label_window


def _canary(
    config: FlywheelConfig,
    registry: Registry,
    endpoint: Endpoint,
    decision: MonitorDecision,
    candidate: ModelVersion,
    default: ModelVersion,
    now: datetime,
    act: bool,
    seed: int,
) -> MonitorDecision:
    settings = config.monitor
    log = registry.audit_log()
    state = canary_state(
        log,
        candidate.version,
        default.version,
        decision.traffic_before[candidate.version],
        settings.canary_steps,
        now,
    )
    end = _settled_end(config, now)
    arms, rows = _canary_arms(config, candidate.version, default.version, state.step_started_at, end, now)
    decision.confidence = confidence_by_hour(rows)
    if state.share >= 100:  # the last look was stopped half-way through promoting: finish it
        judgement = Judgement(
            "promote",
            [f"v{candidate.version} already serves all traffic: finishing an interrupted promotion"],
        )
    else:
        judgement = decide_canary(state, arms[0], arms[1], settings, now, seed=seed)
    decision.kind = "canary"
    decision.version = candidate.version
    decision.baseline = f"v{default.version}"
    _fill(decision, judgement, arms, state.step_started_at, end)
    decision.look, decision.max_looks = judgement.look, settings.max_looks
    decision.look_confidence = settings.look_confidence
    decision.history = [
        {"at": e.at.isoformat(), **{k: e.detail.get(k) for k in ("action", "arms", "tests", "look")}}
        for e in log
        if e.action == "monitor_canary" and e.version == candidate.version and e.at >= state.started_at
    ]
    decision.summary = _canary_summary(judgement, state, f"v{candidate.version}", f"v{default.version}")
    if act:
        _act_on_canary(registry, endpoint, decision, judgement, candidate.version, state.next_share)
    return decision


def _canary_arms(
    config: FlywheelConfig, candidate: int, default: int, start: datetime, end: datetime, now: datetime
) -> tuple[tuple[Arm, Arm], list[LiveRow]]:
    """Both versions' settled live traffic since the current step began, and its rows."""
    rows = read_live(open_error_store(config), start, end, now, verify=True) if end > start else []
    normalizer, cap = config.validation.normalizer, config.monitor.max_predictions_per_user
    both = (_rows(rows, candidate, start, end), _rows(rows, default, start, end))
    arms = tuple(
        measure_arm(str(v), r, normalizer, cap) for v, r in zip((candidate, default), both, strict=True)
    )
    return (arms[0], arms[1]), [*both[0], *both[1]]


def _canary_summary(judgement: Judgement, state: CanaryState, c: str, d: str) -> str:
    if state.share >= 100:
        return f"canary {c} promoted: finishing an interrupted promotion"
    if judgement.action == "rollback" and not any(t.verdict == "worse" for t in judgement.tests):
        return f"canary {c} rolled back at its deadline (fail closed)"
    return {
        "wait": f"canary {c} ({state.share} %) waits for labels",
        "continue": f"canary {c} ({state.share} %) inconclusive against {d}: collecting more",
        "promote": f"canary {c} promoted: non-inferior to {d} on correction rate and live WER",
        "step": f"canary {c} passed its {state.share} % step: now {state.next_share} %",
        "rollback": f"canary {c} rolled back: worse than {d}",
        "hold": f"canary {c} held at {state.share} % past its deadline: a person must decide",
    }[judgement.action]


def _act_on_canary(
    registry: Registry,
    endpoint: Endpoint,
    decision: MonitorDecision,
    judgement: Judgement,
    candidate: int,
    next_share: int,
) -> None:
    """Promote, step or roll back as judged, and record the look in the audit log."""
    reason = f"monitor: {decision.summary}"
    if judgement.action == "promote":
        decision.outcome = _outcome(promote_canary(registry, endpoint, reason))
    elif judgement.action == "step":
        with registry.exclusive():  # what serves is read again under the lock
            now_split = endpoint.traffic()
            endpoint.set_traffic(canary_split(now_split, candidate, next_share), reason=reason)
    elif judgement.action == "rollback":
        decision.outcome = _outcome(rollback(registry, endpoint, reason))
    decision.acted = judgement.action in ("promote", "step", "rollback")
    decision.traffic_after = endpoint.traffic() if decision.acted else decision.traffic_before
    decision.severity = _severity(decision)
    registry.record("monitor_canary", candidate, decision.audit_detail())


def _watch_default(
    config: FlywheelConfig,
    registry: Registry,
    endpoint: Endpoint,
    decision: MonitorDecision,
    default: ModelVersion,
    now: datetime,
    act: bool,
    seed: int,
) -> MonitorDecision:
    settings = config.monitor
    decision.kind, decision.version = "default", default.version
    log = registry.audit_log()
    promoted = _promoted_at(log, default.version)
    end = _settled_end(config, now)
    if promoted is None:
        decision.action = "unwatched"
        decision.summary = f"default v{default.version}: no promotion on record to date its serving from"
        return decision
    baseline = timedelta(hours=settings.baseline_hours)
    recent_start = max(promoted, end - timedelta(hours=settings.watch_window_hours))
    previous = registry.resolve("previous")
    if end - timedelta(hours=settings.watch_window_hours) >= promoted + baseline:
        record_version, record_start, record_end = default.version, promoted, promoted + baseline
        record_of = f"v{default.version}'s first {settings.baseline_hours:g} h"
    elif previous is not None:
        record_version, record_start, record_end = previous.version, promoted - baseline, promoted
        record_of = f"v{previous.version}'s last {settings.baseline_hours:g} h"
    else:
        record_version = None
        record_start, record_end = recent_start, recent_start
        record_of = "no earlier version"
    # only the two windows are read, not the traffic between them (weeks, for a default long served)
    windows = [(record_start, record_end), (recent_start, end)]
    rows = read_windows(open_error_store(config), windows, now, verify=True)
    normalizer, cap = config.validation.normalizer, settings.max_predictions_per_user
    recent = measure_arm(
        str(default.version), _rows(rows, default.version, recent_start, end), normalizer, cap
    )
    record = (
        measure_arm(
            str(record_version), _rows(rows, record_version, record_start, record_end), normalizer, cap
        )
        if record_version is not None
        else None
    )
    decision.confidence = confidence_by_hour(
        _rows(rows, default.version, min(record_start, recent_start), end)
    )
    judgement = decide_default(default.version, recent, record, record_of, settings, seed=seed)
    _fill(
        decision, judgement, (recent, record or Arm(record_of)), recent_start, end, names=("recent", "record")
    )
    decision.baseline = record_of
    decision.window |= {"record_start": record_start.isoformat(), "record_end": record_end.isoformat()}
    decision.look_confidence = settings.look_confidence
    v = f"v{default.version}"
    decision.summary = {
        "unwatched": f"default {v} not watched yet: {judgement.reasons[0]}",
        "wait": f"default {v} waits for labels on its recent traffic",
        "healthy": f"default {v} holds its record ({record_of})",
        "degraded": f"default {v} degraded against {record_of}",
    }[judgement.action]
    if judgement.action == "degraded":
        if act and settings.auto_rollback and previous is not None:
            decision.outcome = _outcome(rollback(registry, endpoint, f"monitor: {decision.summary}"))
            decision.acted = True
            decision.traffic_after = endpoint.traffic()
            decision.summary += f": rolled back to v{previous.version}"
        elif not settings.auto_rollback:
            decision.summary += ": monitor.auto_rollback is off, alerting only"
        elif previous is None:
            decision.summary += ": no `previous` version to roll back to, alerting only"
        if act:
            decision.severity = _severity(decision)
            registry.record("monitor_default", default.version, decision.audit_detail())
    return decision


def _outcome(outcome: DeployOutcome) -> str:
    if outcome.action == "deployed":
        return f"v{outcome.version} is the default with all traffic (v{outcome.replaced} undeployed)"
    return (
        f"v{outcome.version} serves all traffic again (v{outcome.replaced} out): {'; '.join(outcome.reasons)}"
    )


def _fill(
    decision: MonitorDecision,
    judgement: Judgement,
    arms: tuple[Arm, Arm],
    start: datetime,
    end: datetime,
    names: tuple[str, str] = ("candidate", "default"),
) -> None:
    decision.action = judgement.action
    decision.reasons = judgement.reasons
    decision.tests = [t.as_dict() for t in judgement.tests]
    decision.arms = {names[0]: arms[0].as_dict(), names[1]: arms[1].as_dict()}
    decision.window = {"start": start.isoformat(), "end": end.isoformat()}


def log_record(decision: MonitorDecision) -> dict[str, Any]:
    """The structured log entry: Cloud Logging takes `severity` and `message` from it, and a
    log-based alert policy can match `jsonPayload.monitor.action`."""
    return {
        "severity": decision.severity,
        "message": f"stt-flywheel monitor: {decision.summary}",
        "logging.googleapis.com/labels": {"app": "stt-flywheel", "component": "monitor"},
        "monitor": {
            k: decision.as_dict()[k]
            for k in (
                "kind",
                "action",
                "version",
                "baseline",
                "acted",
                "dry_run",
                "look",
                "max_looks",
                "arms",
                "tests",
                "traffic_before",
                "traffic_after",
                "report",
                "checked_at",
            )
        },
    }


def _emit(decision: MonitorDecision, stream: IO[str] | None) -> None:
    if stream is not None:
        line = orjson.dumps(log_record(decision), option=orjson.OPT_NON_STR_KEYS, default=str)
        stream.write(line.decode() + "\n")
        stream.flush()


def _report_key(decision: MonitorDecision) -> str:
    stamp = decision.checked_at.replace(":", "").replace("+0000", "Z")
    return f"monitor/{stamp}-{decision.holder}.html"


def _report_uri(config: FlywheelConfig, decision: MonitorDecision) -> str:
    return join_uri(config.paths.reports, _report_key(decision))


def _write_report(config: FlywheelConfig, decision: MonitorDecision) -> None:
    if decision.report is None:
        decision.report = _report_uri(config, decision)
    store = open_store(config.paths.reports)
    key = _report_key(decision)
    store.write(key, monitor_html(decision).encode())
    store.write(
        key.removesuffix(".html") + ".json", orjson.dumps(decision.as_dict(), option=JSON, default=str)
    )
