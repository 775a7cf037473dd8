"""The demo's tables: each round's feedback, live quality before a run, and the turns."""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console
from rich.table import Table

from flywheel_pipelines.views import counted

__all__ = ["print_feedback", "print_live", "print_turns"]


def _pair(a: Any, b: Any) -> str:
    def f(x: Any) -> str:
        return f"{x:.3f}" if isinstance(x, float) and math.isfinite(x) else "–"

    return f"{f(a)} → {f(b)}"


SENDERS = {"demo-app": "users", "label-studio": "reviewers", "errors-ingest": "older log"}


def _taught(corrections: dict[str, int] | None) -> str:
    """How many corrections a turn's dataset kept, and from whom."""
    if not corrections:
        return "–"
    parts = " · ".join(
        f"{SENDERS.get(k, k)} {n}" for k, n in sorted(corrections.items(), key=lambda x: -x[1])
    )
    return f"{sum(corrections.values())}: {parts}"


def print_turns(turns: list[dict[str, Any]], console: Console) -> None:
    """One row per turn: offline WER of production and candidate, each serving version's live
    correction rate and WER during the canary, the decision, and the turn's time."""
    table = Table(title="The flywheel's turns (offline: production → candidate; live: during the canary)")
    for col in (
        "turn",
        "versions",
        "new-domain WER",
        "general WER",
        "critical recall",
        "corrections used",
        "live correction rate",
        "live WER",
        "decision",
        "time",
    ):
        table.add_column(col)
    for t in turns:
        off = t.get("offline") or {}
        prod, cand = off.get("production") or {}, off.get("candidate") or {}
        recall = t.get("critical_recall") or {}
        live = t.get("live") or {}
        p, c = (
            f"v{t['production_version']}",
            f"v{t['candidate_version']}" if t.get("candidate_version") else "–",
        )
        lp, lc = live.get(p, {}), live.get(c, {})
        table.add_row(
            str(t["turn"]),
            f"{p} → {c}",
            _pair(prod.get("new_domain_wer"), cand.get("new_domain_wer")),
            _pair(prod.get("general_wer"), cand.get("general_wer")),
            _pair(recall.get("production"), recall.get("candidate")),
            _taught(t.get("corrections")),
            _pair(lp.get("correction_rate"), lc.get("correction_rate")),
            _pair(lp.get("wer"), lc.get("wer")),
            str(t["decision"]),
            f"{t['seconds']:.0f} s",
        )
    console.print(table)


def print_feedback(traffic: dict[str, Any], console: Console) -> None:
    for name, batch in zip(("Feedback", "Late feedback"), traffic["feedback"], strict=True):
        states = ", ".join(f"{k} {v}" for k, v in batch["states"].items() if v)
        console.print(f"{name}: {batch['read']} events by prediction id — {states}.")
    review = traffic.get("review")
    if review:
        sure = (
            f" (mean confidence {review['mean_confidence']:.3g})"
            if review["mean_confidence"] is not None
            else ""
        )
        console.print(
            f"Review budget: {review['proposed']} of the predictions nobody answered, the least sure first{sure}, "
            f"went to reviewers in Label Studio; they changed {review['corrected']} and confirmed "
            f"{review['confirmed']}; `review import` accepted {review['accepted']}."
        )
    legacy = traffic["legacy_import"]
    if legacy is None:
        return
    console.print(
        f"Older combined log (errors ingest): {legacy['read']} records, {legacy['accepted']} accepted "
        f"with {legacy['feedback_events']} corrections."
    )


def _interval(x: dict[str, Any] | None) -> str:
    if not x or x["value"] != x["value"]:
        return "—"
    return f"{x['value']:.3f} [{x['low']:.3f}, {x['high']:.3f}]"


def print_live(live: dict[str, Any], console: Console) -> None:
    table = Table(title="Live quality before the run (captured traffic + feedback, 95 % bootstrap intervals)")
    for col in (
        "version",
        "slice",
        "requests",
        "users",
        "with feedback",
        "correction rate",
        "flag rate",
        "live WER",
        "live CER",
    ):
        table.add_column(col)
    for version, q in live.items():
        rows = [("all", q)] + [(f"domain={k}", s) for k, s in q["slices"].get("domain", {}).items()]
        for name, r in rows:
            table.add_row(
                f"v{version}",
                name,
                counted(r["requests"], r.get("capped", 0)),
                str(r.get("users", 0)),
                str(r["labeled"]),
                _interval(r["correction_rate"]),
                _interval(r["flag_rate"]),
                _interval(r["wer"]),
                _interval(r["cer"]),
            )
    console.print(table)
    console.print(
        "Live WER is over the corrected predictions only (what users chose to correct); each user counts "
        "with at most monitor.max_predictions_per_user requests of each row."
    )
