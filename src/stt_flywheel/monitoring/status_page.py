"""The status view as one self-contained HTML page: tables, and each version's live WER and
correction rate by day as inline SVG (the same page rules as the stage reports)."""

from __future__ import annotations

import html
from collections import defaultdict
from pathlib import Path
from typing import Any

from stt_flywheel.monitoring.status import (
    StoreStatus,
    SystemStatus,
    VersionStatus,
    fraction_interval,
    percent_interval,
    shared_columns,
)
from stt_flywheel.reporting import figure, page, pyplot, svg, table
from stt_flywheel.run.costs import MonthlyCost
from stt_flywheel.run.entries import TriggerEntry
from stt_flywheel.run.ledger import STAGES
from stt_flywheel.storage.files import atomic_write_text

__all__ = ["status_html", "write_status_page"]


def trend_plot(trend: list[dict[str, Any]]) -> str:
    """Two panels, one line per version: live WER and correction rate by day."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    series: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for point in trend:
        series[point["version"]].append(point)
    for version, points in sorted(series.items()):
        days = [p["day"][5:] for p in points]
        axes[0].plot(days, [p["wer"] for p in points], "o-", label=f"v{version}")
        axes[1].plot(days, [p["correction_rate"] for p in points], "o-", label=f"v{version}")
    axes[0].set_ylabel("live WER (corrected predictions)")
    axes[1].set_ylabel("correction rate")
    for ax in axes:
        ax.set_xlabel("day (UTC)")
        ax.tick_params(axis="x", rotation=45)
        if series:
            ax.legend()
    return svg(fig)


def status_html(view: SystemStatus) -> str:
    parts = [f"<p class='meta'>checked at {html.escape(str(view.checked_at))}</p>"]
    parts.append(_store_section(view.store))
    parts.append(_trigger_section(view.trigger))
    parts.append(_proposals_section(view.proposals))
    monitor = view.monitor
    if monitor:
        parts.append(
            f"<h2>Monitor</h2><p>{html.escape(monitor.at[:19])}: {html.escape(str(monitor.summary))} "
            f"({html.escape(str(monitor.severity))}); report {html.escape(str(monitor.report))}</p>"
        )
    parts.append(_versions_section(view.registry.versions))
    parts.append(f"<p class='meta'>{html.escape(view.live.selection_bias)}</p>")
    parts.append("<h2>Trend</h2>")
    parts.append(figure(trend_plot(view.trend), "Each version's live WER and correction rate by day."))
    parts.append("<h2>Last runs</h2>")
    parts.append(
        table(
            ["run", *STAGES, "cost (est.)"],
            [(r.run_id, *(r.stages[k] or "–" for k in STAGES), _money(r.cost)) for r in view.runs],
        )
    )
    if view.costs:
        parts.append(_costs_section(view.costs))
    return page("stt-flywheel status", "".join(parts))


def _money(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _costs_section(c: MonthlyCost) -> str:
    """A month at today's rate, each part with what it counts."""
    return (
        f"<h2>Cost a month (estimate, {html.escape(c.currency)}, list prices of {html.escape(c.prices_as_of)})</h2>"
        + table(
            ["serving", "runs (last 30 days)", "monitor (last 30 days)", "storage", "total"],
            [
                (
                    f"{_money(c.serving)} ({c.serving_basis})",
                    f"{c.runs:.2f} ({c.runs_counted} runs)",
                    f"{c.monitor:.2f} ({c.monitor_looks} looks)",
                    f"{c.store:.2f} ({c.store_gb:.2f} GB)",
                    f"{c.total:.2f}",
                )
            ],
        )
    )


def _store_section(st: StoreStatus) -> str:
    fb = st.feedback_events
    return "<h2>Error store</h2>" + table(
        [
            "predictions",
            "feedback read",
            "applied",
            "superseded",
            "duplicates",
            "waiting for their prediction",
            "quarantined",
            "since watermark",
        ],
        [
            (
                st.predictions,
                fb.read,
                fb.applied,
                fb.superseded,
                fb.duplicate,
                fb.pending,
                fb.quarantined + fb.rejected_at_ingest,
                st.since_watermark.feedback_events,
            )
        ],
    )


def _trigger_section(trigger: TriggerEntry) -> str:
    return f"<h2>Next trigger check</h2><p>{html.escape(trigger.summary)}</p>" + table(
        ["check", "value", "threshold", "passed", "why"],
        [
            (
                c.name,
                f"{c.value:.4g}{c.unit}",
                f"{c.threshold:.4g}{c.unit}",
                "yes" if c.passed else "no",
                c.reason,
            )
            for c in trigger.checks
        ],
    )


def _proposals_section(proposals: list[dict[str, Any]]) -> str:
    if not proposals:
        return ""
    return "<h2>Training proposals</h2>" + table(
        ["proposal", "state", "lapses", "what", "machine", "cost", "approved by"],
        [
            (
                p["id"],
                p["state"],
                p["expires_at"][:16],
                p["what"],
                p["machine"].get("accelerator", "–"),
                p.get("cost_line", "–"),
                (p["approval"] or {}).get("by", f"waiting: stt-flywheel approve {p['id']}"),
            )
            for p in proposals
        ],
    )


def _versions_section(versions: list[VersionStatus]) -> str:
    shared = shared_columns(versions)
    rows = []
    for v in versions:
        live = v.live or {}
        rows.append(
            (
                v.version,
                ", ".join(v.aliases) or "–",
                v.traffic if v.traffic is not None else "–",
                *(v.shared.get(k, "–") for k, _ in shared),
                live.get("requests", 0),
                live.get("pending", 0),
                percent_interval(live.get("feedback_share")),
                percent_interval(live.get("correction_rate")),
                percent_interval(live.get("flag_rate")),
                fraction_interval(live.get("wer")),
                fraction_interval(live.get("cer")),
            )
        )
    headers = [
        "version",
        "aliases",
        "traffic %",
        *(header for _, header in shared),
        "requests",
        "awaiting feedback",
        "with feedback",
        "correction rate",
        "flag rate",
        "live WER",
        "live CER",
    ]
    return "<h2>Versions</h2><p class='meta'>WER and CER as fractions, rates in per cent.</p>" + table(
        headers, rows
    )


def write_status_page(view: SystemStatus, path: str | Path) -> None:
    atomic_write_text(path, status_html(view))
