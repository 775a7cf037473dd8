"""Reports people read: one self-contained HTML page per validation and per regression run.

Vertex renders an HTML artifact inline, so a page carries everything itself: CSS in a `<style>`
block and plots as inline SVG (matplotlib, Agg backend), no scripts and no external files.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from stt_flywheel.evaluation.gates import Verdict
from stt_flywheel.reporting import cell, figure, page, pyplot, svg, table

__all__ = ["ReportContext", "loss_curve_html", "regression_html", "validation_html"]

_SMALL_SLICES_SHOWN = 20


@dataclass(frozen=True)
class ReportContext:
    """What every report names, so that a page saved on its own still says what it judged: the run,
    the production model, the candidate, the dataset, the normaliser and when it was made."""

    run_id: str
    production: str  # "v3", or "none"
    candidate: str  # "v4", or how this run's candidate was made before it has a version
    dataset: str | None = None
    normalizer: str | None = None
    generated_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def parts(self) -> list[tuple[str, str]]:
        items = [("run", self.run_id), ("production", self.production), ("candidate", self.candidate)]
        if self.dataset:
            items.append(("dataset", self.dataset))
        if self.normalizer:
            items.append(("normaliser", self.normalizer))
        return [*items, ("made", self.generated_at)]

    def html(self) -> str:
        return "<p class='meta'>" + " · ".join(f"{k}: {html.escape(v)}" for k, v in self.parts()) + "</p>"

    def markdown(self) -> str:
        return " · ".join(f"{k}: `{v}`" for k, v in self.parts())

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_POLICIES = {
    "paired": "the candidate is judged against the production model on the same utterances",
    "first_run_absolute": "no production model to compare with yet, so absolute thresholds apply",
}


def _verdict_block(verdict: Verdict) -> str:
    cls, word = ("pass", "PASSED") if verdict.passed else ("fail", "REJECTED")
    gates = table(
        ["gate", "value", "threshold", "verdict", "reason"],
        [(g.name, g.value, g.threshold, "pass" if g.passed else "fail", g.reason) for g in verdict.gates],
    )
    policy = (
        f"<p class='meta'>policy: {html.escape(verdict.policy)} — {_POLICIES.get(verdict.policy, '')}</p>"
    )
    return f'<h2>Verdict: <span class="{cls}">{word}</span></h2>{policy}{gates}'


def interval_plot(items: Sequence[tuple[str, float, float, float, float | None]]) -> str:
    """Forest plot: one row per (label, ΔWER, low, high, margin); a dashed mark at each margin."""
    plt = pyplot()
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
    drawn = any(m is not None and not math.isnan(m) for *_, m in items)
    ax.set_xlabel("ΔWER (candidate − reference)" + ("; dashed red: margin" if drawn else ""))
    return svg(fig)


def loss_curve_html(
    log_history: Sequence[dict[str, Any]],
    context: ReportContext | None = None,
    *,
    saved_eval_loss: float | None = None,
    wise_ft_alpha: float = 1.0,
) -> str:
    """The training loss (and held-out loss, when evaluated) by step, as the train stage's report.
    With WiSE-FT (`wise_ft_alpha` < 1) the saved model is not the one the curve follows: the page
    says so, and gives the saved weights' held-out loss (`saved_eval_loss`) beside the other."""
    train = [(e["step"], e["loss"]) for e in log_history if "loss" in e and "step" in e]
    held = [(e["step"], e["eval_loss"]) for e in log_history if "eval_loss" in e and "step" in e]
    body = context.html() if context else ""
    if not train and not held:
        return page(
            "Training loss", body + "<p>No loss was logged (a run shorter than one logging interval).</p>"
        )
    wise = wise_ft_alpha < 1.0
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.0))
    if train:
        ax.plot(*zip(*train, strict=True), color="#1a73e8", label="training loss (per logging interval)")
    if held:
        label = "held-out loss, fine-tuned weights" if wise else "held-out loss"
        ax.plot(*zip(*held, strict=True), "o-", color="#c5221f", label=label)
    if wise and held and saved_eval_loss is not None:
        ax.plot([held[-1][0]], [saved_eval_loss], "s", color="#137333", label="held-out loss, saved weights")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    said = [f"last logged training loss {cell(float(train[-1][1]))} at step {train[-1][0]}"] if train else []
    if held:
        which = "of the fine-tuned weights " if wise else ""
        said.append(f"held-out loss {which}{cell(float(held[-1][1]))} at step {held[-1][0]}")
    body += figure(svg(fig), "; ".join(said))
    if wise:
        saved = "" if saved_eval_loss is None else f" Their held-out loss is {cell(float(saved_eval_loss))}."
        body += (
            f"<p>WiSE-FT: the model saved and validated is the interpolation "
            f"{cell(float(wise_ft_alpha))} × fine-tuned + {cell(1.0 - float(wise_ft_alpha))} × starting "
            f"weights, not the weights this curve follows.{saved}</p>"
        )
    return page("Training loss", body)


def slice_plot(slices: Sequence[dict[str, Any]]) -> str:
    """Grouped bars: production vs candidate WER per slice."""
    plt = pyplot()
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
    return svg(fig)


def delta_histogram(deltas: Sequence[float]) -> str:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 2.6))
    ax.hist(list(deltas), bins=40, color="#1a73e8")
    ax.axvline(0, color="#5f6368", lw=0.8)
    ax.set_xlabel("per-utterance ΔWER (candidate − production); left of 0 is better")
    ax.set_ylabel("utterances")
    return svg(fig)


def _alignment(entry: dict[str, Any]) -> str:
    if "candidate_alignment" not in entry:
        return "<p class='meta'>transcripts left out (reports.include_transcripts: false)</p>"
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
        f"<tr><td>{html.escape(str(e['id']))}</td><td>{cell(e.get(key, ''))}</td><td>{_alignment(e)}</td></tr>"
        for e in entries
    )
    return f"<h3>{html.escape(title)}</h3><table><tr><th>id</th><th>{html.escape(key)}</th><th>alignments</th></tr>{rows}</table>"


def _pair(production: float, candidate: float) -> str:
    return f"{cell(production)} → {cell(candidate)}"


def validation_html(
    metrics: dict[str, float],
    verdict: Verdict,
    comparisons: Sequence[Any],
    details: dict[str, Any] | None = None,
    context: ReportContext | None = None,
) -> str:
    details = details or {}
    body = context.html() if context else ""
    body += _verdict_block(verdict)
    if context is None or not context.normalizer:
        body += f"<p class='meta'>normaliser: {html.escape(str(details.get('normalizer', 'n/a')))}</p>"
    body += _sets_section(comparisons)
    body += _interval_section(details.get("interval"))
    body += _tests_section(details.get("tests", {}))
    body += _slices_section(details.get("slices", []), details.get("slice_margin"))
    deltas = details.get("utterance_delta_wer", [])
    if deltas:
        body += "<h2>Per-utterance ΔWER</h2>" + figure(delta_histogram(deltas), f"{len(deltas)} utterances")
    body += _signatures_section(details.get("signatures", {}))
    body += _critical_section(details.get("critical_terms"))
    body += _calibration_section(details.get("calibration"))
    body += _churn_section(details.get("churn", {}))
    worst = details.get("worst_regressions", [])
    body += _alignments_section("Largest regressions", worst, "delta_errors")
    best = details.get("largest_improvements", [])
    body += _alignments_section("Largest improvements", best, "delta_errors")
    return page("Validation: candidate vs production", body)


def _sets_section(comparisons: Sequence[Any]) -> str:
    rows = []
    for comp in comparisons:
        prod = comp.production
        c = comp.candidate
        rows.append(
            (
                comp.name,
                c.utterances,
                _pair(prod.wer if prod else math.nan, c.wer),
                _pair(prod.raw_wer if prod else math.nan, c.raw_wer),
                _pair(prod.cer if prod else math.nan, c.cer),
                f"{c.hits}/{c.substitutions}/{c.deletions}/{c.insertions}",
            )
        )
    return "<h2>Sets</h2><p class='meta'>Each pair is production → candidate.</p>" + table(
        ["set", "utterances", "WER", "raw WER", "CER", "candidate H/S/D/I"], rows
    )


def _interval_section(iv: dict[str, Any] | None) -> str:
    if not iv:
        return ""
    return (
        f"<h2>ΔWER on the held-out split</h2><p>ΔWER {cell(iv['delta'])}, {iv['confidence']:.0%} bootstrap "
        f"interval [{cell(iv['low'])}, {cell(iv['high'])}] ({iv['resamples']} resamples by {iv['unit']}, "
        f"{iv['units']} {iv['unit']}s); probability of improvement {cell(iv['prob_improvement'])} "
        "(the share of resamples in which the candidate's WER is lower than production's).</p>"
    )


def _tests_section(tests: dict[str, Any]) -> str:
    if not tests:
        return ""
    return "<h2>Paired tests</h2>" + table(
        ["test", "p-value", "statistic", "n", "better", "worse"],
        [(t["name"], t["p_value"], t["statistic"], t["n"], t["better"], t["worse"]) for t in tests.values()],
    )


def _slices_section(all_slices: list[dict[str, Any]], margin: float | None) -> str:
    """Every slice large enough to gate (tabled and plotted), and some of the small ones (tabled)."""
    if not all_slices:
        return ""
    slices = [s for s in all_slices if s["gated"]]
    small = [s for s in all_slices if not s["gated"]]
    body = (
        f"<h2>Slices</h2><p class='meta'>{len(slices)} slices large enough to gate are plotted; "
        f"{len(small)} smaller ones are listed (at most {_SMALL_SLICES_SHOWN}), not gated.</p>"
    )
    body += table(
        ["field", "value", "utterances", "production WER", "candidate WER", "ΔWER", "interval", "gated"],
        [
            (
                s["field"],
                s["value"],
                s["utterances"],
                s.get("production_wer", math.nan),
                s["candidate_wer"],
                s.get("delta_wer", math.nan),
                f"[{cell(s.get('low', math.nan))}, {cell(s.get('high', math.nan))}]",
                "yes" if s["gated"] else "no (too small)",
            )
            for s in slices + small[:_SMALL_SLICES_SHOWN]
        ],
    )
    if len(small) > _SMALL_SLICES_SHOWN:
        body += f"<p class='meta'>{len(small) - _SMALL_SLICES_SHOWN} more small slices in verdict.json.</p>"
    if not slices:
        return body
    items = [
        (
            f"{s['field']}={s['value']} ({s['utterances']})",
            s.get("delta_wer", math.nan),
            s.get("low", math.nan),
            s.get("high", math.nan),
            margin,
        )
        for s in slices
    ]
    body += figure(slice_plot(slices), "WER per slice, production vs candidate")
    caption = "ΔWER interval per slice"
    if margin is not None:
        caption += f"; a slice fails above +{margin:g} (dashed) with its interval above 0"
    return body + figure(interval_plot(items), caption)


def _signatures_section(sig: dict[str, Any]) -> str:
    if not sig:
        return ""
    return "<h2>Failure signatures</h2>" + table(
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


def _critical_section(crit: dict[str, Any] | None) -> str:
    if not crit:
        return ""
    return "<h2>Critical terms</h2>" + table(
        ["model", "recall", "occurrences"],
        [(m, crit[m]["recall"], crit[m]["occurrences"]) for m in ("production", "candidate") if m in crit],
    )


def _churn_section(churn: dict[str, Any]) -> str:
    if not churn:
        return ""
    body = (
        f"<h2>Churn</h2><p>newly broken (production exact, candidate wrong): {churn['newly_broken']}; "
        f"newly fixed: {churn['newly_fixed']}.</p>"
    )
    body += _alignments_section("Newly broken", churn["broken"], "candidate_errors")
    return body + _alignments_section("Newly fixed", churn["fixed"], "production_errors")


def regression_html(results: Sequence[Any], verdict: Verdict, context: ReportContext | None = None) -> str:
    body = context.html() if context else ""
    body += _verdict_block(verdict)
    body += "<h2>Suites</h2>" + table(
        [
            "suite (kind)",
            "utterances",
            "WER: reference → candidate",
            "ΔWER [interval]",
            "upper bound (Holm level) / margin",
            "Holm p",
            "newly broken / fixed",
            "must-pass failures",
            "verdict",
        ],
        [
            (
                f"{r.name} ({r.kind})",
                r.utterances,
                _pair(r.reference_wer, r.candidate_wer),
                f"{cell(r.delta_wer)} [{cell(r.low)}, {cell(r.high)}]",
                f"{cell(r.adjusted_high)} / {cell(r.allowed_wer - r.reference_wer)}",
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
        body += figure(interval_plot(items), "ΔWER interval per suite against its non-inferiority margin")
    for r in results:
        if r.newly_broken:
            shown = (
                f" (the first {len(r.broken_examples)})" if len(r.broken_examples) < r.newly_broken else ""
            )
            body += _alignments_section(
                f"Newly broken in {r.name}: {r.newly_broken}{shown}", r.broken_examples, "candidate_errors"
            )
    return page("Regression suites", body)


def reliability_plot(before: Sequence[dict[str, float]], after: Sequence[dict[str, float]]) -> str:
    """Accuracy against confidence per bin, at T = 1 and at the fitted T; the diagonal is perfect."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    ax.plot([0, 1], [0, 1], color="#5f6368", ls="--", lw=1)
    for points, color, label in ((before, "#9aa0a6", "T = 1"), (after, "#1a73e8", "fitted T")):
        if points:
            ax.plot(
                [p["confidence"] for p in points],
                [p["accuracy"] for p in points],
                "o-",
                color=color,
                label=label,
            )
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="word confidence (bin mean)", ylabel="share of words right")
    ax.legend(loc="upper left", fontsize=8)
    return svg(fig)


def _calibration_section(calibration: dict[str, Any] | None) -> str:
    if not calibration:
        return ""
    t = calibration.get("temperature", 1.0)
    body = (
        "<h2>Word confidence</h2><p class='meta'>The candidate's softmax temperature, fitted by the "
        f"trainer on {calibration.get('words', 0)} held-out words (their share right: "
        f"{cell(calibration.get('accuracy'))}): T = {t:.2f}. Expected calibration error (the mean gap "
        f"between confidence and accuracy, over ten bins) {cell(calibration.get('ece_before'))} at T = 1, "
        f"{cell(calibration.get('ece_after'))} at T = {t:.2f}.</p>"
    )
    before, after = calibration.get("reliability_before") or [], calibration.get("reliability_after") or []
    return body + figure(reliability_plot(before, after), "reliability: held-out words by confidence bin")
