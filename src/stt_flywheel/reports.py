"""Reports people read: self-contained HTML (Vertex renders it inline) and Markdown."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

from stt_flywheel.gates import Verdict

__all__ = ["regression_html", "validation_html"]

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#202124}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}
td,th{border:1px solid #dadce0;padding:.3rem .6rem;text-align:left;font-size:.9rem}
th{background:#f1f3f4}.pass{color:#137333;font-weight:600}.fail{color:#c5221f;font-weight:600}
code{font-size:.85rem}
"""


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        return f"{value:.3g}" if value and abs(value) < 1e-3 else f"{value:.4f}"
    return html.escape(str(value))


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _verdict_block(verdict: Verdict) -> str:
    cls, word = ("pass", "PASSED") if verdict.passed else ("fail", "REJECTED")
    gates = _table(
        ["gate", "value", "threshold", "verdict", "reason"],
        [(g.name, g.value, g.threshold, "pass" if g.passed else "fail", g.reason) for g in verdict.gates],
    )
    return f'<h2>Verdict: <span class="{cls}">{word}</span></h2>{gates}'


def _page(title: str, body: str) -> str:
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )


def _worst(rows: Sequence[dict[str, Any]], limit: int = 10) -> str:
    changed = [
        r for r in rows if "production_errors" in r and r["candidate_errors"] != r["production_errors"]
    ]
    changed.sort(key=lambda r: r["production_errors"] - r["candidate_errors"])
    return _table(
        ["id", "reference", "production", "candidate", "Δ errors"],
        [
            (
                r["id"],
                r["ref"],
                r["production_hyp"],
                r["candidate_hyp"],
                r["candidate_errors"] - r["production_errors"],
            )
            for r in changed[:limit]
        ],
    )


def validation_html(metrics: dict[str, float], verdict: Verdict, comparisons: Sequence[Any]) -> str:
    rows = []
    for comp in comparisons:
        prod = comp.production
        rows.append(
            (
                comp.name,
                comp.candidate.utterances,
                prod.wer if prod else math.nan,
                comp.candidate.wer,
                prod.cer if prod else math.nan,
                comp.candidate.cer,
                f"{comp.candidate.substitutions}/{comp.candidate.deletions}/{comp.candidate.insertions}",
            )
        )
    body = _verdict_block(verdict)
    body += "<h2>Sets</h2>" + _table(
        [
            "set",
            "utterances",
            "production WER",
            "candidate WER",
            "production CER",
            "candidate CER",
            "cand. S/D/I",
        ],
        rows,
    )
    body += (
        f"<p>Paired Wilcoxon signed-rank (one-sided), held-out split: p = {_fmt(metrics.get('p_value'))}; "
    )
    body += f"better {_fmt(metrics.get('better_share'))}, worse {_fmt(metrics.get('worse_share'))} of utterances.</p>"
    for comp in comparisons:
        body += f"<h2>Largest regressions, then improvements — {html.escape(comp.name)}</h2>" + _worst(
            comp.rows
        )
    return _page("Validation: candidate vs production", body)


def regression_html(results: Sequence[Any], verdict: Verdict) -> str:
    body = _verdict_block(verdict)
    body += "<h2>Suites</h2>" + _table(
        [
            "suite",
            "kind",
            "utterances",
            "reference WER",
            "allowed WER",
            "candidate WER",
            "must-pass failures",
            "verdict",
        ],
        [
            (
                r.name,
                r.kind,
                r.utterances,
                r.reference_wer,
                r.allowed_wer,
                r.candidate_wer,
                ", ".join(r.must_pass_failures) or "none",
                "pass" if r.passed else "fail",
            )
            for r in results
        ],
    )
    return _page("Regression suites", body)
