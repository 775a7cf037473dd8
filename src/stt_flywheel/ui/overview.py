"""The pages that look at the whole wheel: what serves now and whether it is well (`/`), the
versions side by side (`/versions`, `/versions/N`), canaries and rollbacks (`/canaries`), and live
quality by the hour with every change to what serves marked (`/live`)."""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from stt_flywheel.config import FlywheelConfig
from stt_flywheel.data.error_store import open_error_store
from stt_flywheel.deployment.backends import open_deployment
from stt_flywheel.deployment.registry import AuditEntry, RegistryError
from stt_flywheel.errors import InputError, InputNotFound
from stt_flywheel.monitoring.live import hourly_trend
from stt_flywheel.monitoring.status import (
    SystemStatus,
    VersionStatus,
    fraction_interval,
    percent_interval,
    shared_columns,
)
from stt_flywheel.reporting import figure, pyplot, svg, table
from stt_flywheel.run.ledger import STAGES
from stt_flywheel.storage.objectstore import join_uri
from stt_flywheel.ui.kit import Html, esc, facts, frame, link, para, scrolling, section
from stt_flywheel.ui.queries import serving_changes

__all__ = ["canaries_page", "home_page", "live_page", "report_link", "version_page", "versions_page"]

MAX_WINDOW = timedelta(days=90)
MARKED = ("deploy", "promote", "rollback")  # drawn on the plot; every change is in the table


def report_link(config: FlywheelConfig, uri: str | None, text: str = "report") -> Any:
    """A link to a report under `paths.reports` as this server serves it; the URI as text else."""
    root = join_uri(config.paths.reports, "")
    if uri and uri.startswith(root):
        return link("/reports/" + uri[len(root) :], text)
    return uri or "–"


def _since(entries: list[AuditEntry], version: int) -> AuditEntry | None:
    """The change that made `version` serve as it does: the last serving change naming it."""
    named = [
        e
        for e in entries
        if e.version == version
        and e.action in ("deploy", "promote", "rollback", "monitor_canary", "register")
    ]
    return named[-1] if named else None


def _said(entry: AuditEntry) -> str:
    """Who made a change and why, as the audit entry says it."""
    d = entry.detail
    why = d.get("summary") or d.get("reason") or ""
    if entry.action.startswith("monitor_"):
        return f"the monitor decided: {why}"
    return f"{entry.action}: {why}" if why else entry.action


def home_page(config: FlywheelConfig, view: SystemStatus, held: int) -> str:
    """What serves now and since when, who decided it, whether it is well, what the next trigger
    check would do; the versions, the last runs and the trend."""
    registry, _ = open_deployment(config)
    log = registry.audit_log()  # oldest first
    default = next((v for v in view.registry.versions if "default" in v.aliases), None)
    parts: list[Any] = []
    if default is None:
        parts.append(para("Nothing serves yet: no version is registered as the default."))
    else:
        since = _since(log, default.version)
        parts.append(
            para(
                link(f"/versions/{default.version}", f"v{default.version}"),
                f" serves {default.traffic if default.traffic is not None else '–'} % as the default",
                f" since {since.at:%Y-%m-%d %H:%M} UTC — {_said(since)}" if since else "",
                ".",
                cls="headline",
            )
        )
    canary = next((v for v in view.registry.versions if "candidate" in v.aliases and v.traffic), None)
    if canary is not None:
        parts.append(
            para(
                "Canary: ",
                link(f"/versions/{canary.version}", f"v{canary.version}"),
                f" serves {canary.traffic} % while the monitor decides (",
                link("/canaries", "history"),
                ").",
            )
        )
    m = view.monitor
    if m is None:
        parts.append(para("Health: the monitor has not looked yet (stt-flywheel monitor)."))
    else:
        cls = {"NOTICE": "ok", "INFO": "ok", "WARNING": "warn"}.get(str(m.severity), "bad")
        parts.append(
            para(
                Html(f"Health: <span class='{cls}'>{esc(m.severity)}</span> — "),
                f"the monitor's last look, {m.at[:16].replace('T', ' ')} UTC: {m.summary} (",
                report_link(config, m.report),
                ").",
            )
        )
    t = view.trigger
    parts.append(para(f"Next trigger check: {t.summary}."))
    if held:
        parts.append(para(link("/review", f"{held} corrections held for review"), " wait for a person."))
    for p in view.proposals:
        parts.append(para(f"Proposal {p['id']} {p['state']}: {p['what']} — stt-flywheel approve {p['id']}."))
    parts.append(section("Versions", versions_table(view.registry.versions, view.live.window_hours)))
    parts.append(para(view.live.selection_bias, cls="meta"))
    parts.append(section("Last runs", _runs_table(view)))
    parts.append(
        para(
            link("/runs", "every run"),
            " · ",
            link("/live", "live quality by the hour"),
            " · ",
            link("/canaries", "canaries and rollbacks"),
        )
    )
    return frame("Now", parts, here="/")


def versions_table(versions: list[VersionStatus], window_hours: float) -> Html:
    """Each version on the sets they all share (the fixed eval set, the suites) and live."""
    shared = shared_columns(versions)
    headers = [
        "version",
        "aliases",
        "traffic %",
        *(header for _, header in shared),
        "requests",
        "awaiting feedback",
        "correction rate",
        "live WER",
    ]
    rows = []
    for v in versions:
        live = v.live or {}
        rows.append(
            (
                link(f"/versions/{v.version}", f"v{v.version}"),
                ", ".join(v.aliases) or "–",
                "–" if v.traffic is None else v.traffic,
                *(v.shared.get(k, "–") for k, _ in shared),
                live.get("requests", 0),
                live.get("pending", 0),
                percent_interval(live.get("correction_rate")),
                fraction_interval(live.get("wer")),
            )
        )
    return Html(
        para(
            f"WER as a fraction, rates in per cent; live figures over the last {window_hours:g} h of traffic.",
            cls="meta",
        )
        + scrolling(table(headers, rows))
    )


def _runs_table(view: SystemStatus) -> Html:
    rows = [
        (
            link(f"/runs/{r.run_id}", r.run_id),
            *((r.stages[k] or "–").split(";")[0] for k in STAGES),  # the first reason; the run's page has all
            "–" if r.cost is None else f"{r.cost:.2f}",
        )
        for r in view.runs
    ]
    return scrolling(table(["run", *STAGES, "cost (est.)"], rows))


def versions_page(config: FlywheelConfig, view: SystemStatus) -> str:
    return frame(
        "Versions", [versions_table(view.registry.versions, view.live.window_hours)], here="/versions"
    )


def version_page(config: FlywheelConfig, view: SystemStatus, version: int) -> str:
    """One version: where it came from (run, dataset, parent), how it does, what happened to it."""
    registry, endpoint = open_deployment(config)
    try:
        v = registry.get(version)
    except RegistryError:
        raise InputNotFound(f"no version {version} in the registry") from None
    status = next((s for s in view.registry.versions if s.version == version), None)
    run = v.source_run
    parent = v.lineage.get("parent_version")
    known: list[tuple[str, Any]] = [
        ("aliases", ", ".join(v.aliases) or "–"),
        ("traffic", f"{endpoint.traffic().get(version, 0)} %"),
        ("registered", v.created_at[:19].replace("T", " ")),
        ("by run", link(f"/runs/{run}", run) if run else "– (registered outside a run: a base model)"),
        (
            "trained on",
            link(f"/datasets/{v.dataset_version}", v.dataset_version) if v.dataset_version else "–",
        ),
        ("trained from", link(f"/versions/{parent}", f"v{parent}") if parent is not None else "–"),
        ("data up to", v.data_watermark or "–"),
        ("model", v.uri),
    ]
    parts: list[Any] = [facts(known)]
    if status is not None:
        parts.append(section("Quality", versions_table([status], view.live.window_hours)))
    history = [
        e
        for e in registry.audit_log()
        if e.version == version or e.detail.get("rolled_back") == version or e.detail.get("canary") == version
    ]
    rows = [
        (
            f"{e.at:%Y-%m-%d %H:%M:%S}",
            e.action,
            e.detail.get("summary") or e.detail.get("reason") or "",
            report_link(config, e.detail.get("report")) if e.detail.get("report") else "",
        )
        for e in history
    ]
    parts.append(
        section("What happened to it", scrolling(table(["at (UTC)", "action", "why", "report"], rows)))
    )
    return frame(f"Version {version}", parts, here="/versions")


def canaries_page(config: FlywheelConfig) -> str:
    """Every canary started, every look the monitor took, every promotion and rollback."""
    registry, _ = open_deployment(config)
    rows = []
    for e in reversed(serving_changes(registry)):
        d = e.detail
        rows.append(
            (
                f"{e.at:%Y-%m-%d %H:%M}",
                link(f"/versions/{e.version}", f"v{e.version}") if e.version else "–",
                e.action
                + (f" · {d['action']}" if e.action.startswith("monitor_") and d.get("action") else ""),
                _traffic(d),
                d.get("summary") or d.get("reason") or "",
                report_link(config, d.get("report")) if d.get("report") else "",
            )
        )
    body = [
        para("Newest first: what changed which version serves, and each look the monitor took.", cls="meta"),
        scrolling(table(["at (UTC)", "version", "action", "traffic", "why", "report"], rows)),
    ]
    return frame("Canaries and rollbacks", body, here="/canaries")


def _traffic(detail: dict[str, Any]) -> str:
    after = detail.get("traffic_after") or detail.get("traffic")
    if isinstance(after, dict) and after:
        return ", ".join(f"v{k} {p} %" for k, p in sorted(after.items(), key=lambda kv: str(kv[0])))
    return f"{detail['percent']} %" if "percent" in detail else ""


def parse_window(
    hours: str | None, since: str | None, until: str | None, now: datetime
) -> tuple[datetime, datetime]:
    """The window a request names: `hours` back from now (48 by default), or `since`/`until`."""
    try:
        end = datetime.fromisoformat(until) if until else now
        start = datetime.fromisoformat(since) if since else end - timedelta(hours=float(hours or 48))
    except ValueError as exc:
        raise InputError(f"a window is hours=N or since=/until= as ISO times: {exc}") from None
    start, end = (t if t.tzinfo else t.replace(tzinfo=UTC) for t in (start, end))
    if not start < end or end - start > MAX_WINDOW:
        raise InputError(f"the window must end after it starts and span at most {MAX_WINDOW.days} days")
    return start, end


def live_page(config: FlywheelConfig, start: datetime, end: datetime, now: datetime) -> str:
    """Each version's requests, correction rate, live WER and median confidence by the hour,
    changes to what serves marked."""
    store = open_error_store(config)
    points = hourly_trend(
        store,
        start=start,
        end=end,
        now=now,
        label_window=config.feedback.label_window,
        normalizer=config.validation.normalizer,
        max_per_user=config.monitor.max_predictions_per_user,
    )
    registry, _ = open_deployment(config)
    changes = [e for e in serving_changes(registry) if start <= e.at < end]
    marks = [e for e in changes if e.action in MARKED]
    windows = " · ".join(
        str(link(f"/live?hours={h}", f"last {label}"))
        for h, label in ((24, "day"), (72, "3 days"), (168, "week"), (720, "30 days"))
    )
    body: list[Any] = [
        para(Html(windows)),
        para(
            f"{start:%Y-%m-%d %H:%M} → {end:%Y-%m-%d %H:%M} UTC; any window: /live?since=…&until=… "
            "(ISO times). Dashed lines: changes to what serves.",
            cls="meta",
        ),
    ]
    body.append(Html(figure(_hourly_plot(points, marks, start, end), "Live quality by hour, per version.")))
    rows = [
        (
            p["at"].replace("T", " "),
            f"v{p['version']}",
            p["requests"],
            p["pending"],
            "–" if math.isnan(p["correction_rate"]) else f"{p['correction_rate']:.1%}",
            "–" if math.isnan(p["wer"]) else f"{p['wer']:.3f}",
            "–" if math.isnan(p.get("confidence", math.nan)) else f"{p['confidence']:.3f}",
        )
        for p in reversed(points)
    ]
    body.append(
        section(
            "By hour",
            scrolling(
                table(
                    [
                        "hour (UTC)",
                        "version",
                        "requests",
                        "awaiting feedback",
                        "correction rate",
                        "live WER",
                        "median confidence",
                    ],
                    rows,
                )
            ),
        )
    )
    body.append(
        section(
            "Changes in the window",
            scrolling(
                table(
                    ["at (UTC)", "version", "action", "why"],
                    [
                        (
                            f"{e.at:%Y-%m-%d %H:%M}",
                            f"v{e.version}" if e.version else "–",
                            e.action,
                            e.detail.get("summary") or e.detail.get("reason") or "",
                        )
                        for e in changes
                    ],
                )
            ),
        )
    )
    return frame("Live quality", body, here="/live")


def _hourly_plot(
    points: list[dict[str, Any]], marks: list[AuditEntry], start: datetime, end: datetime
) -> str:
    plt = pyplot()
    fig, axes = plt.subplots(3, 1, figsize=(8, 6.4), sharex=True)
    series: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for p in points:
        series[p["version"]].append(p)
    for version, ps in sorted(series.items(), key=lambda kv: int(kv[0])):
        xs = [datetime.fromisoformat(p["at"].replace("Z", "+00:00")) for p in ps]
        axes[0].plot(xs, [p["correction_rate"] for p in ps], "o-", ms=3, label=f"v{version}")
        axes[1].plot(xs, [p["wer"] for p in ps], "o-", ms=3, label=f"v{version}")
        axes[2].plot(xs, [p.get("confidence", math.nan) for p in ps], "o-", ms=3, label=f"v{version}")
    for e in marks:
        for ax in axes:
            ax.axvline(e.at, color="#5f6368", linestyle="--", linewidth=0.8)
        axes[0].annotate(
            f"{e.action} v{e.version}" if e.version else e.action,
            (e.at, 1.0),
            xycoords=("data", "axes fraction"),
            rotation=90,
            fontsize=7,
            va="top",
            ha="right",
        )
    axes[0].set_ylabel("correction rate")
    axes[1].set_ylabel("live WER")
    axes[2].set_ylabel("median confidence")
    axes[2].set_xlim(start, end)
    axes[2].set_xlabel("hour (UTC)")
    fig.autofmt_xdate()
    if series:
        axes[0].legend(fontsize=8)
    return svg(fig)
