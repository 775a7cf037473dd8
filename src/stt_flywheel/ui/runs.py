"""The pages of runs and what they made: every run (`/runs`), one run's own story with a link to
everything it touched (`/runs/ID`), its validation in full with each utterance linked
(`/runs/ID/validation`), a dataset (`/datasets/V`), and the reports the stages kept."""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import quote

import orjson

from stt_flywheel.config import FlywheelConfig
from stt_flywheel.deployment.backends import open_registry
from stt_flywheel.errors import InputNotFound
from stt_flywheel.reporting import table
from stt_flywheel.run.entries import ValidationEntry
from stt_flywheel.run.ledger import STAGES, list_runs, read_ledger, run_reports
from stt_flywheel.run.lineage import dataset_dir
from stt_flywheel.run.summary import RunSummary, resolve_run, run_outcome, summarize_run
from stt_flywheel.ui.kit import Html, facts, frame, link, para, scrolling, section
from stt_flywheel.ui.overview import report_link
from stt_flywheel.ui.queries import dataset_runs

__all__ = ["dataset_page", "run_page", "runs_page", "validation_page"]


def _f(x: Any) -> str:
    return f"{x:.3f}" if isinstance(x, float) and math.isfinite(x) else "–"


def runs_page(config: FlywheelConfig) -> str:
    rows = []
    for r in (run_outcome(config, r) for r in reversed(list_runs(config))):
        started = str(r.checked_at or "–")[:16].replace("T", " ")
        stages = [
            (r.stages[s] or "–") if s != "trigger" else (r.stages[s] or "–").split(";")[0] for s in STAGES
        ]
        rows.append((link(f"/runs/{r.run_id}", r.run_id), started, *stages))
    body = [
        para("Every run that got past its trigger check, newest first.", cls="meta"),
        scrolling(table(["run", "started (UTC)", *STAGES], rows)),
    ]
    return frame("Runs", body, here="/runs")


def _reports(s: RunSummary) -> Html:
    links = [link(f"/runs/{s.run_id}/reports/{stage}", f"{stage} report") for stage in s.reports]
    return Html(" · ".join(str(x) for x in links) or "no reports kept")


def run_page(config: FlywheelConfig, ref: str) -> str:
    """One run's own story, from its ledger, every id a link."""
    s = summarize_run(config, resolve_run(config, ref))
    parts: list[Any] = [para(f"Trigger: {s.trigger.summary}")]
    if s.dataset:
        d = s.dataset
        parts.append(
            para(
                "Dataset ",
                link(f"/datasets/{d.version}", d.version),
                f": read {d.read} corrected error cases → accepted {d.accepted}, duplicates "
                f"{d.duplicates}, quarantined {d.quarantined}; splits {d.splits}.",
            )
        )
    if s.training:
        t = s.training
        parts.append(
            para(
                f"Training: {int(t.steps)} steps on {t.device} in {t.train_runtime_s:.0f} s, mean "
                f"training loss {t.train_loss:.3f}, from ",
                link(f"/versions/{t.started_from_version}", f"v{t.started_from_version}")
                if t.started_from_version is not None
                else t.started_from,
                ".",
            )
        )
    if s.trigger.fired:
        rows = [(name, _f(production), _f(candidate)) for name, production, candidate in s.wer_rows()]
        parts.append(
            section(
                "Production against the candidate (WER)",
                scrolling(table(["set", "production", "candidate"], rows)),
            )
        )
        for stage, gate in s.gates.items():
            if gate:
                word = Html(
                    "<span class='pass'>PASS</span>" if gate.passed else "<span class='fail'>REJECT</span>"
                )
                parts.append(para(f"{stage} ", word, ": " + "; ".join(gate.reasons)))
        if s.gates.get("validation"):
            parts.append(para(link(f"/runs/{s.run_id}/validation", "Validation, utterance by utterance")))
    parts.append(section("Deploy", _deploy(config, s)))
    parts.append(section("Reports", para(_reports(s))))
    if s.cost:
        parts.append(para(f"Cost on Vertex AI (estimate): {s.cost.line()}", cls="meta"))
    return frame(f"Run {s.run_id}", parts, here="/runs")


def _deploy(config: FlywheelConfig, s: RunSummary) -> Html:
    aliases = ", ".join(
        f"{a} " + str(link(f"/versions/{v}", f"v{v}")) for a, v in sorted(s.registry.aliases.items())
    )
    traffic = ", ".join(f"v{v} {p} %" for v, p in sorted(s.registry.traffic.items()))
    if s.deploy is None:
        head = para(
            "Not deployed"
            + (" (a gate rejected the candidate)" if s.trigger.fired else "")
            + "; the run left ",
            Html(aliases or "no version"),
            ".",
        )
        return head
    version = s.deploy.version
    out = para(
        f"{s.deploy.action}",
        " ",
        link(f"/versions/{version}", f"v{version}") if version else "",
        "; the run left ",
        Html(aliases),
        f"; traffic {traffic}." if traffic else ".",
    )
    if version is None:
        return out
    looks = [
        e for e in open_registry(config).audit_log() if e.action == "monitor_canary" and e.version == version
    ]
    if looks:
        rows = [
            (
                f"{e.at:%Y-%m-%d %H:%M}",
                e.detail.get("action", ""),
                e.detail.get("summary", ""),
                report_link(config, e.detail.get("report")),
            )
            for e in looks
        ]
        out = Html(
            out
            + para("The monitor's looks at it:")
            + scrolling(table(["at (UTC)", "action", "summary", "report"], rows))
        )
    return out


def validation_page(config: FlywheelConfig, ref: str) -> str:
    """The validator's evidence with every utterance it names linked to its page."""
    run_id = resolve_run(config, ref)
    entry = read_ledger(config, run_id, ValidationEntry)
    if entry is None:
        raise InputNotFound(f"run {run_id} did not validate a candidate")
    m, ev = entry.metrics, entry.evaluation
    word = Html("<span class='pass'>PASS</span>" if entry.passed else "<span class='fail'>REJECT</span>")
    parts: list[Any] = [
        para(word, ": " + "; ".join(entry.reasons)),
        para(
            "Run ",
            link(f"/runs/{run_id}", run_id),
            " · ",
            link(f"/runs/{run_id}/reports/validation", "the report as the pipeline wrote it"),
        ),
    ]
    iv = ev.interval
    parts.append(
        scrolling(
            table(
                ["", "production", "candidate"],
                [
                    ("held-out WER", _f(m.production_wer), _f(m.wer)),
                    ("held-out CER", _f(m.production_cer), _f(m.cer)),
                    ("eval set WER", _f(m.eval_production_wer), _f(m.eval_wer)),
                ],
            )
        )
    )
    if iv:
        parts.append(
            para(
                f"ΔWER {iv['delta']:+.3f}, {iv['confidence']:.0%} interval [{iv['low']:+.3f}, {iv['high']:+.3f}] "
                f"(bootstrap by {iv['unit']}, {iv['units']} {iv['unit']}s); normaliser {ev.normalizer}."
            )
        )
    for title, key in (
        ("Worst regressions", "worst_regressions"),
        ("Largest improvements", "largest_improvements"),
    ):
        rows: list[tuple[Any, ...]] = [
            (link(f"/utterances/{quote(e['id'], safe='')}", e["id"]), e.get("delta_errors", ""))
            for e in getattr(ev, key)
        ]
        parts.append(
            section(title, scrolling(table(["utterance", "Δ errors"], rows)) if rows else para("none"))
        )
    churn = ev.churn
    for title, key in (("Newly broken", "broken"), ("Newly fixed", "fixed")):
        rows = [
            (
                link(f"/utterances/{quote(e['id'], safe='')}", e["id"]),
                e.get("production_errors", ""),
                e.get("candidate_errors", ""),
            )
            for e in churn.get(key, [])
        ]
        if rows:
            parts.append(
                section(title, scrolling(table(["utterance", "production errors", "candidate errors"], rows)))
            )
    if ev.slices:
        rows = [
            (
                f"{sl.field}={sl.value}",
                sl.utterances,
                _f(sl.production_wer),
                _f(sl.candidate_wer),
                "gates" if sl.gated else "too small to gate",
            )
            for sl in ev.slices
        ]
        parts.append(
            section("Slices", scrolling(table(["slice", "utterances", "production", "candidate", ""], rows)))
        )
    return frame(f"Validation of run {run_id}", parts, here="/runs")


def dataset_page(config: FlywheelConfig, version: str) -> str:
    """A published dataset: its counts, splits and quarantine, the runs that built it and the
    versions trained on it."""
    try:
        manifest = orjson.loads((dataset_dir(config, version) / "manifest.json").read_bytes())
    except (InputNotFound, FileNotFoundError):
        raise InputNotFound(f"no dataset {version} under {config.paths.datasets}") from None
    runs = dataset_runs(config, version)
    trained = [v.version for v in open_registry(config).versions() if v.dataset_version == version]
    known: list[tuple[str, Any]] = [
        ("created", manifest.get("created_at", "–")),
        ("content hash", manifest.get("content_hash", "–")),
        ("data up to", manifest.get("watermark") or "–"),
        ("counts", manifest.get("counts")),
        ("quarantined, by reason", manifest.get("quarantine_reasons") or "none"),
        ("splits", manifest.get("splits")),
        ("replay", manifest.get("replay")),
        ("built by", Html(", ".join(str(link(f"/runs/{r}", r)) for r in runs) or "–")),
        (
            "trained",
            Html(", ".join(str(link(f"/versions/{v}", f"v{v}")) for v in trained) or "no version yet"),
        ),
    ]
    if manifest.get("forgotten_into"):
        known.append(
            (
                "written again without a forgotten person as",
                link(f"/datasets/{manifest['forgotten_into']}", manifest["forgotten_into"]),
            )
        )
    parts: list[Any] = [facts(known)]
    if runs and "dataset" in run_reports(config, runs[0]):
        parts.append(para(link(f"/runs/{runs[0]}/reports/dataset", "The dataset stage's report")))
    return frame(f"Dataset {version}", parts)
