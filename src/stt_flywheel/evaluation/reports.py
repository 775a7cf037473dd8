"""Reports people read: one self-contained HTML page per validation and per regression run.

Vertex renders an HTML artifact inline, so a page carries everything itself: CSS in a `<style>`
block and plots as inline SVG (matplotlib, Agg backend), no scripts and no external files.
"""

from __future__ import annotations

import html
import io
import math
from collections.abc import Sequence
from typing import Any

from stt_flywheel.evaluation.gates import Verdict

__all__ = ["regression_html", "validation_html"]

_SMALL_SLICES_SHOWN = 20

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#202124;max-width:72rem}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}
td,th{border:1px solid #dadce0;padding:.3rem .6rem;text-align:left;font-size:.9rem;vertical-align:top}
th{background:#f1f3f4}.pass{color:#137333;font-weight:600}.fail{color:#c5221f;font-weight:600}
pre{font-size:.8rem;background:#f8f9fa;padding:.4rem;margin:.2rem 0;overflow-x:auto}
figure{margin:.5rem 0 1.5rem}figcaption{font-size:.85rem;color:#5f6368}
.meta{color:#5f6368;font-size:.85rem}
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
    policy = f"<p class='meta'>policy: {html.escape(verdict.policy)}</p>"
    return f'<h2>Verdict: <span class="{cls}">{word}</span></h2>{policy}{gates}'


def _page(title: str, body: str) -> str:
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )


def _svg(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]


def _figure(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{html.escape(caption)}</figcaption></figure>"


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "stt-flywheel", "font.size": 9})
    import matplotlib.pyplot as plt

    return plt


def interval_plot(items: Sequence[tuple[str, float, float, float, float | None]]) -> str:
    """Forest plot: one row per (label, ΔWER, low, high, margin); a dashed mark at each margin."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 0.45 * len(items) + 0.9))
    for y, (_, delta, low, high, margin) in enumerate(items):
        if not any(math.isnan(v) for v in (delta, low, high)):
            ax.plot([low, high], [y, y], color="#1a73e8", lw=2)
            ax.plot([delta], [y], "o", color="#1a73e8")
        if margin is not None and not math.isnan(margin):
            ax.plot([margin, margin], [y - 0.3, y + 0.3], color="#c5221f", ls="--", lw=1.2)
    ax.axvline(0, color="#5f6368", lw=0.8)
    ax.set_yticks(range(len(items)), [i[0] for i in items])
    ax.invert_yaxis()
    ax.set_xlabel("ΔWER (candidate − reference); dashed red: margin")
    return _svg(fig)


def slice_plot(slices: Sequence[dict[str, Any]]) -> str:
    """Grouped bars: production vs candidate WER per slice."""
    plt = _plt()
    labels = [f"{s['field']}={s['value']}" for s in slices]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.55 * len(slices) + 1.5), 3.0))
    xs = range(len(slices))
    ax.bar(
        [x - 0.2 for x in xs], [s.get("production_wer", math.nan) for s in slices], 0.4, label="production"
    )
    ax.bar([x + 0.2 for x in xs], [s["candidate_wer"] for s in slices], 0.4, label="candidate")
    ax.set_xticks(list(xs), labels, rotation=45, ha="right")
    ax.set_ylabel("WER")
    ax.legend()
    return _svg(fig)


def delta_histogram(deltas: Sequence[float]) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 2.6))
    ax.hist(list(deltas), bins=40, color="#1a73e8")
    ax.axvline(0, color="#5f6368", lw=0.8)
    ax.set_xlabel("per-utterance ΔWER (candidate − production); left of 0 is better")
    ax.set_ylabel("utterances")
    return _svg(fig)


def _alignment(entry: dict[str, Any]) -> str:
    blocks = []
    for model in ("production", "candidate"):
        ref, hyp, ops = entry[f"{model}_alignment"]
        text = f"{model}\nREF:  {ref}\nHYP:  {hyp}\nEval: {ops}"
        blocks.append(f"<pre>{html.escape(text)}</pre>")
    return "".join(blocks)


def _alignments_section(title: str, entries: Sequence[dict[str, Any]], key: str) -> str:
    if not entries:
        return f"<h3>{html.escape(title)}</h3><p>none</p>"
    rows = "".join(
        f"<tr><td>{html.escape(str(e['id']))}</td><td>{_fmt(e.get(key, ''))}</td><td>{_alignment(e)}</td></tr>"
        for e in entries
    )
    return f"<h3>{html.escape(title)}</h3><table><tr><th>id</th><th>{html.escape(key)}</th><th>alignments</th></tr>{rows}</table>"


def validation_html(
    metrics: dict[str, float],
    verdict: Verdict,
    comparisons: Sequence[Any],
    details: dict[str, Any] | None = None,
) -> str:
    details = details or {}
    body = _verdict_block(verdict)
    body += f"<p class='meta'>normaliser: {html.escape(str(details.get('normalizer', 'n/a')))}</p>"
    rows = []
    for comp in comparisons:
        prod = comp.production
        rows.append(
            (
                comp.name,
                comp.candidate.utterances,
                prod.wer if prod else math.nan,
                comp.candidate.wer,
                prod.raw_wer if prod else math.nan,
                comp.candidate.raw_wer,
                prod.cer if prod else math.nan,
                comp.candidate.cer,
                f"{comp.candidate.hits}/{comp.candidate.substitutions}/{comp.candidate.deletions}/{comp.candidate.insertions}",
            )
        )
    body += "<h2>Sets</h2>" + _table(
        [
            "set",
            "utterances",
            "production WER",
            "candidate WER",
            "production raw WER",
            "candidate raw WER",
            "production CER",
            "candidate CER",
            "cand. H/S/D/I",
        ],
        rows,
    )
    iv = details.get("interval")
    if iv:
        body += (
            f"<h2>ΔWER on the held-out split</h2><p>ΔWER {_fmt(iv['delta'])}, {iv['confidence']:.0%} bootstrap "
            f"interval [{_fmt(iv['low'])}, {_fmt(iv['high'])}] ({iv['resamples']} resamples by {iv['unit']}, "
            f"{iv['units']} {iv['unit']}s); probability of improvement {_fmt(iv['prob_improvement'])}.</p>"
        )
    tests = details.get("tests", {})
    if tests:
        body += "<h2>Paired tests</h2>" + _table(
            ["test", "p-value", "statistic", "n", "better", "worse"],
            [
                (t["name"], t["p_value"], t["statistic"], t["n"], t["better"], t["worse"])
                for t in tests.values()
            ],
        )
    all_slices = details.get("slices", [])
    slices = [s for s in all_slices if s["gated"]]
    small = [s for s in all_slices if not s["gated"]]
    if all_slices:
        body += (
            f"<h2>Slices</h2><p class='meta'>{len(slices)} slices large enough to gate are plotted; "
            f"{len(small)} smaller ones are listed (at most {_SMALL_SLICES_SHOWN}), not gated.</p>"
        )
        body += _table(
            ["field", "value", "utterances", "production WER", "candidate WER", "ΔWER", "interval", "gated"],
            [
                (
                    s["field"],
                    s["value"],
                    s["utterances"],
                    s.get("production_wer", math.nan),
                    s["candidate_wer"],
                    s.get("delta_wer", math.nan),
                    f"[{_fmt(s.get('low', math.nan))}, {_fmt(s.get('high', math.nan))}]",
                    "yes" if s["gated"] else "no (too small)",
                )
                for s in slices + small[:_SMALL_SLICES_SHOWN]
            ],
        )
        if len(small) > _SMALL_SLICES_SHOWN:
            body += (
                f"<p class='meta'>{len(small) - _SMALL_SLICES_SHOWN} more small slices in verdict.json.</p>"
            )
    if slices:
        items = [
            (
                f"{s['field']}={s['value']} ({s['utterances']})",
                s.get("delta_wer", math.nan),
                s.get("low", math.nan),
                s.get("high", math.nan),
                None,
            )
            for s in slices
        ]
        body += _figure(slice_plot(slices), "WER per slice, production vs candidate")
        body += _figure(interval_plot(items), "ΔWER interval per slice")
    deltas = details.get("utterance_delta_wer", [])
    if deltas:
        body += "<h2>Per-utterance ΔWER</h2>" + _figure(delta_histogram(deltas), f"{len(deltas)} utterances")
    sig = details.get("signatures", {})
    if sig:
        body += "<h2>Failure signatures</h2>" + _table(
            ["model", "empty", "repetition loops", "insertion bursts"],
            [
                (
                    m,
                    f"{v['empty']} ({v['empty_share']:.1%})",
                    f"{v['loops']} ({v['loop_share']:.1%})",
                    f"{v['bursts']} ({v['burst_share']:.1%})",
                )
                for m, v in sig.items()
            ],
        )
    crit = details.get("critical_terms")
    if crit:
        body += "<h2>Critical terms</h2>" + _table(
            ["model", "recall", "occurrences"],
            [
                (m, crit[m]["recall"], crit[m]["occurrences"])
                for m in ("production", "candidate")
                if m in crit
            ],
        )
    churn = details.get("churn", {})
    if churn:
        body += (
            f"<h2>Churn</h2><p>newly broken (production exact, candidate wrong): {churn['newly_broken']}; "
            f"newly fixed: {churn['newly_fixed']}.</p>"
        )
        body += _alignments_section("Newly broken", churn["broken"], "candidate_errors")
        body += _alignments_section("Newly fixed", churn["fixed"], "production_errors")
    worst = details.get("worst_regressions", [])
    body += _alignments_section("Largest regressions", worst, "delta_errors")
    return _page("Validation: candidate vs production", body)


def regression_html(results: Sequence[Any], verdict: Verdict) -> str:
    body = _verdict_block(verdict)
    body += "<h2>Suites</h2>" + _table(
        [
            "suite",
            "kind",
            "utterances",
            "reference WER",
            "candidate WER",
            "ΔWER",
            "interval",
            "upper bound (Holm level)",
            "margin",
            "Holm p",
            "newly broken / fixed",
            "must-pass failures",
            "verdict",
        ],
        [
            (
                r.name,
                r.kind,
                r.utterances,
                r.reference_wer,
                r.candidate_wer,
                r.delta_wer,
                f"[{_fmt(r.low)}, {_fmt(r.high)}]",
                r.adjusted_high,
                r.allowed_wer - r.reference_wer,
                r.p_holm,
                f"{r.newly_broken} / {r.newly_fixed}",
                ", ".join(r.must_pass_failures) or "none",
                "pass" if r.passed else "fail",
            )
            for r in results
        ],
    )
    if results:
        items = [(r.name, r.delta_wer, r.low, r.high, r.allowed_wer - r.reference_wer) for r in results]
        body += _figure(interval_plot(items), "ΔWER interval per suite against its non-inferiority margin")
    return _page("Regression suites", body)
