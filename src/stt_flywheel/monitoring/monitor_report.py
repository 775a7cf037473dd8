"""The monitor's report: one self-contained HTML page per look — the decision, both arms, each
test's interval against its margin, and the arms over the canary's looks (inline SVG)."""

from __future__ import annotations

import html
import math
from datetime import datetime
from typing import Any

from stt_flywheel.monitoring.decision import MonitorDecision
from stt_flywheel.monitoring.live import SELECTION_BIAS
from stt_flywheel.reporting import figure, page, pyplot, svg, table

__all__ = ["monitor_html", "monitor_markdown"]

LABEL = {"correction_rate": "correction rate", "wer": "live WER"}


def _num(x: Any, digits: int = 3) -> str:
    return f"{x:.{digits}f}" if isinstance(x, float) and math.isfinite(x) else "–"


def interval_plot(tests: list[dict[str, Any]]) -> str:
    """Each test's difference and interval, with zero and its margin."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.9 + 0.7 * len(tests)))
    for i, t in enumerate(tests):
        if isinstance(t["low"], float) and math.isfinite(t["low"]):
            ax.plot([t["low"], t["high"]], [i, i], "-", lw=4, color="#4878a8")
            ax.plot([t["delta"]], [i], "o", color="black")
        ax.plot([t["margin"]], [i], "|", ms=22, mew=2, color="#c0392b")
    ax.axvline(0, color="grey", lw=1)
    ax.set_yticks(range(len(tests)), [LABEL.get(t["metric"], t["metric"]) for t in tests])
    ax.set_ylim(-0.7, len(tests) - 0.3)
    ax.set_xlabel("difference (first arm − second); red tick: the margin")
    return svg(fig)


def looks_plot(history: list[dict[str, Any]], names: tuple[str, str]) -> str:
    """Per look: both arms' correction rate and live WER, and each test's difference with its
    interval against the margin."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    labels = [datetime.fromisoformat(h["at"]).strftime("%m-%d %H:%M") for h in history]
    x = list(range(len(history)))
    for name in names:
        for ax, metric in zip(axes[:2], ("correction_rate", "wer"), strict=True):
            values = [(h.get("arms") or {}).get(name, {}).get(metric, math.nan) for h in history]
            ax.plot(x, values, "o-", label=name)
    for ax, metric in zip(axes[:2], ("correction_rate", "wer"), strict=True):
        ax.set_ylabel(LABEL[metric])
    for offset, metric in ((-0.1, "correction_rate"), (0.1, "wer")):
        for i, h in enumerate(history):
            test = next((t for t in h.get("tests") or [] if t["metric"] == metric), None)
            if test is None or not (isinstance(test["low"], float) and math.isfinite(test["low"])):
                continue
            colour = "#4878a8" if metric == "correction_rate" else "#d08030"
            axes[2].plot([i + offset] * 2, [test["low"], test["high"]], "-", lw=3, color=colour)
            axes[2].plot(
                [i + offset], [test["delta"]], "o", color=colour, label=LABEL[metric] if i == 0 else None
            )
            axes[2].plot([i + offset - 0.08, i + offset + 0.08], [test["margin"]] * 2, "-", color="#c0392b")
    axes[2].axhline(0, color="grey", lw=1)
    axes[2].set_ylabel("difference (red: margin)")
    for ax in axes:
        ax.set_xticks(x, labels, rotation=30, ha="right")
        ax.set_xlim(-0.5, len(x) - 0.5)
        ax.set_xlabel("look (UTC)")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return svg(fig)


def monitor_html(d: MonitorDecision) -> str:
    parts = [
        f"<p class='meta'>checked at {html.escape(d.checked_at)} by {html.escape(d.holder)}"
        + (" — dry run: nothing was changed" if d.dry_run else "")
        + "</p>",
        f"<h2>Decision: {html.escape(d.action)}</h2><p><b>{html.escape(d.summary)}</b></p>",
        table(
            ["kind", "severity", "acted", "look", "confidence per look", "window"],
            [
                (
                    d.kind,
                    d.severity,
                    "yes" if d.acted else "no",
                    f"{d.look} of {d.max_looks}" if d.look else "–",
                    f"{d.look_confidence:.2%}" if d.look_confidence else "–",
                    f"{d.window.get('start', '–')} → {d.window.get('end', '–')}",
                )
            ],
        ),
        "<h2>Traffic</h2>",
        table(
            ["version", "before %", "after %"],
            [
                (f"v{v}", d.traffic_before.get(v, 0), d.traffic_after.get(v, 0))
                for v in sorted(set(d.traffic_before) | set(d.traffic_after))
            ],
        ),
    ]
    parts.append(_arms_section(d))
    parts.append(_tests_section(d))
    looks = [h for h in d.history if h.get("arms")]
    if d.kind == "canary" and d.arms:
        looks.append({"at": d.checked_at, "arms": d.arms, "tests": d.tests})
        parts.append("<h2>Over the canary's looks</h2>")
        parts.append(
            figure(
                looks_plot(looks, ("candidate", "default")),
                "Both arms at each look of this canary, and each look's differences with their intervals (red: the margin).",
            )
        )
    parts.append(_confidence_section(d.confidence))
    parts.append("<h2>Reasons</h2><ul>" + "".join(f"<li>{html.escape(r)}</li>" for r in d.reasons) + "</ul>")
    if d.outcome:
        parts.append(f"<h2>Action taken</h2><p>{html.escape(d.outcome)}</p>")
    parts.append(f"<p class='meta'>{html.escape(SELECTION_BIAS)}</p>")
    return page("stt-flywheel monitor", "".join(parts))


def _arms_section(d: MonitorDecision) -> str:
    """The arms the look compared, each with its live evidence."""
    if not d.arms:
        return ""
    return "<h2>Arms</h2>" + table(
        [
            "arm",
            "version",
            "settled requests",
            "labelled",
            "corrected",
            "correction rate",
            "scored",
            "live WER",
        ],
        [
            (
                name,
                f"v{a['version']}",
                a["requests"],
                a["labelled"],
                a["corrected"],
                _num(a["correction_rate"]),
                a["scored"],
                _num(a["wer"]),
            )
            for name, a in d.arms.items()
        ],
    )


def _tests_section(d: MonitorDecision) -> str:
    """Each test: the difference, its interval, the margin and the verdict."""
    if not d.tests:
        return ""
    return (
        "<h2>Tests</h2>"
        + table(
            [
                "metric",
                "first arm",
                "second arm",
                "Δ",
                "interval",
                "margin",
                "verdict",
                "p (non-inferior)",
                "p (worse)",
            ],
            [
                (
                    LABEL[t["metric"]],
                    _num(t["a"]),
                    _num(t["b"]),
                    _num(t["delta"]),
                    f"[{_num(t['low'])}, {_num(t['high'])}] at {t['confidence']:.2%}",
                    _num(t["margin"]),
                    t["verdict"].replace("_", " "),
                    _num(t["p_non_inferior"], 4),
                    _num(t["p_worse"], 4),
                )
                for t in d.tests
            ],
        )
        + figure(interval_plot(d.tests), "Each difference with its interval, zero, and its margin.")
    )


def monitor_markdown(d: MonitorDecision) -> str:
    """The decision in a few lines (the pipeline's Markdown artifact)."""
    lines = [f"# Monitor: {d.action}", "", f"**{d.summary}**", ""]
    lines += [f"- {r}" for r in d.reasons]
    traffic = ", ".join(f"v{v} {p} %" for v, p in sorted(d.traffic_after.items()))
    lines += [
        "",
        f"Traffic now: {traffic or 'none'}. Severity {d.severity}; acted: {'yes' if d.acted else 'no'}.",
    ]
    if d.report:
        lines.append(f"Report: {d.report}")
    return "\n".join(lines) + "\n"


def _confidence_section(points: list[dict[str, Any]]) -> str:
    """Each watched version's confidence by hour: the median and the 10th percentile over all of
    its requests, labelled or not (a drift the correction rate sees only later)."""
    if not points:
        return ""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 2.8))
    by_version: dict[str, list[dict[str, Any]]] = {}
    for p in points:
        by_version.setdefault(p["version"], []).append(p)
    for version, ps in sorted(by_version.items()):
        xs = [datetime.fromisoformat(p["at"].replace("Z", "+00:00")) for p in ps]
        (line,) = ax.plot(xs, [p["median"] for p in ps], "o-", ms=3, label=f"v{version} median")
        ax.plot(xs, [p["p10"] for p in ps], ":", color=line.get_color(), label=f"v{version} 10th percentile")
    ax.set(ylim=(0, 1.02), ylabel="confidence", xlabel="hour (UTC)")
    ax.legend(fontsize=7)
    fig.autofmt_xdate()
    caption = (
        "How sure each version was of its requests, hour by hour (all of them, labelled or not): "
        "a fall is a drift the correction rate shows only once users answer."
    )
    return "<h2>Confidence by hour</h2>" + figure(svg(fig), caption)
