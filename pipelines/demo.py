"""`make demo`: build the demo world and turn the flywheel once, locally, for real."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from flywheel_pipelines.compile import compile_pipeline
from flywheel_pipelines.local_run import run_local
from stt_flywheel.config import load_config
from stt_flywheel.data.error_store import open_error_store
from stt_flywheel.demo.scenario import (
    DEMO_MAX_STEPS,
    WorldSizes,
    create_world,
    pick_must_pass,
    simulate_traffic,
    write_demo_config,
)
from stt_flywheel.demo.world import NEW_DOMAIN
from stt_flywheel.deployment.backends import open_endpoint
from stt_flywheel.monitoring.live import live_quality
from stt_flywheel.run.ledger import summarize_run
from stt_flywheel.run.stages import bootstrap_registry
from stt_flywheel.storage.files import atomic_write_json

__all__ = ["print_feedback", "print_live", "print_summary", "run_demo"]


def run_demo(
    work_dir: Path,
    *,
    scale: float = 1.0,
    max_steps: int = DEMO_MAX_STEPS,
    min_error_cases: int = 50,
    console: Console | None = None,
) -> dict[str, Any]:
    console = console or Console()
    started = time.perf_counter()
    work_dir = work_dir.resolve()
    world_dir = work_dir / "world"
    config_path = work_dir / "flywheel.yaml"
    with console.status("Synthesising the demo world with espeak-ng…"):
        manifests = create_world(world_dir, WorldSizes(scale))
    fresh = not config_path.exists()
    if fresh:
        write_demo_config(config_path, work_dir / "state", manifests, [], max_steps, min_error_cases)
    config = load_config(config_path)
    v1 = bootstrap_registry(config)
    console.print(f"Registry: version {v1.version} is [bold]default[/] and serves the local endpoint.")
    if fresh:
        # In this process, not through the serving process: a test set is not production traffic
        # and must not be captured as such.
        with console.status("Picking the critical suite's must-pass utterances…"):
            must_pass = pick_must_pass(config, manifests["suite-critical"])
        write_demo_config(config_path, work_dir / "state", manifests, must_pass, max_steps, min_error_cases)
        config = load_config(config_path)
    # The local endpoint serves each version with the serving image's HTTP server in its own process.
    with open_endpoint(config).served() as endpoint:
        with console.status("Starting the serving process and simulating production traffic…"):
            traffic = simulate_traffic(config, manifests, world_dir, endpoint=endpoint)
        urls = [endpoint.server_url(v) for v in traffic["served_by_version"]]
    via = f" over HTTP by the serving process at {', '.join(u for u in urls if u)}" if any(urls) else ""
    versions = ", ".join(f"v{v}" for v in traffic["served_by_version"])
    console.print(
        f"Traffic: {traffic['utterances']} requests served by {versions}{via}; {traffic['captured']} captured "
        f"with their audio into the error store ({config.paths.error_store}); {traffic['wrong']} transcripts wrong."
    )
    print_feedback(traffic, console)
    live = live_quality(
        open_error_store(config),
        label_window=config.feedback.label_window,
        normalizer=config.validation.normalizer,
        slice_by=["domain"],
    )
    traffic["live_before"] = {v: q.as_dict() for v, q in live.items()}
    print_live(traffic["live_before"], console)
    package = compile_pipeline(work_dir / "pipeline.yaml")
    console.print(f"Compiled pipeline: {package}. Running it with kfp.local (SubprocessRunner)…")
    pipeline_started = time.perf_counter()
    config, run_id = run_local(config_path, package=package)
    summary = summarize_run(config, run_id, new_domain=NEW_DOMAIN.name)
    summary["traffic"] = traffic
    summary["timings_s"] = {
        "pipeline": round(time.perf_counter() - pipeline_started, 1),
        "demo_total": round(time.perf_counter() - started, 1),
    }
    summary["reports"] = {
        "run_ledger": summary["run_dir"],
        "pipeline_root": str(config.paths.pipeline_root),
        "html": sorted(str(p) for p in Path(str(config.paths.pipeline_root)).glob(f"{run_id}/**/report*")),
    }
    atomic_write_json(work_dir / "summary.json", summary)
    print_summary(summary, console)
    console.print(f"\nSummary written to {work_dir / 'summary.json'}")
    return summary


def print_feedback(traffic: dict[str, Any], console: Console) -> None:
    for name, batch in zip(("Feedback", "Late feedback"), traffic["feedback"], strict=True):
        states = ", ".join(f"{k} {v}" for k, v in batch["states"].items() if v)
        console.print(f"{name}: {batch['read']} events by prediction id — {states}.")
    legacy = traffic["legacy_import"]
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
                str(r["requests"]),
                str(r["labeled"]),
                _interval(r["correction_rate"]),
                _interval(r["flag_rate"]),
                _interval(r["wer"]),
                _interval(r["cer"]),
            )
    console.print(table)
    console.print("Live WER is over the corrected predictions only (what users chose to correct).")


def _f(x: Any) -> str:
    return f"{x:.3f}" if isinstance(x, float) else ("—" if x is None else str(x))


def print_summary(s: dict[str, Any], console: Console) -> None:
    console.rule("stt-flywheel run summary")
    trig = s["trigger"]
    console.print(f"[bold]Trigger[/]: {'fired' if trig['fired'] else 'did not fire'} — {trig['summary']}")
    if not trig["fired"]:
        console.print(
            f"[bold]Registry[/]: default = v{s['deployed_version']}, aliases {s['registry']['aliases']}"
        )
        return
    d = s["dataset"]
    if d:
        console.print(
            f"[bold]Dataset[/] {d['version']}: read {d['read']} corrected error cases → accepted {d['accepted']}, "
            f"duplicates {d['duplicates']}, quarantined {d['quarantined']} {d['quarantine_reasons']}; "
            f"splits {d['splits']} (train includes {d['replay']} replay)."
        )
        if not d["usable"]:
            console.print(f"[bold]Not training[/]: {d['usable_reason']}.")
    if s.get("training"):
        t = s["training"]
        console.print(
            f"[bold]Training[/]: {int(t['steps'])} steps on {t['device']} in {t['train_runtime_s']:.0f} s, "
            f"final train loss {t['train_loss']:.3f}."
        )
    table = Table(title="Production vs candidate")
    for col in ("set", "production WER", "candidate WER"):
        table.add_column(col)
    table.add_row(
        "held-out new domain", _f(s["production"]["new_domain_wer"]), _f(s["candidate"]["new_domain_wer"])
    )
    table.add_row("general suite", _f(s["production"]["general_wer"]), _f(s["candidate"]["general_wer"]))
    table.add_row("standard eval set", _f(s["production"]["eval_wer"]), _f(s["candidate"]["eval_wer"]))
    console.print(table)
    ev = s.get("evaluation") or {}
    iv = ev.get("interval")
    if iv:
        pv = ", ".join(f"{k} {v:.3g}" for k, v in ev["p_values"].items() if isinstance(v, float))
        console.print(
            f"Held-out ΔWER {iv['delta']:+.3f}, {iv['confidence']:.0%} interval [{iv['low']:+.3f}, {iv['high']:+.3f}] "
            f"(bootstrap by {iv['unit']}, {iv['units']} {iv['unit']}s); p-values: {pv}; normaliser {ev['normalizer']}."
        )
        console.print(
            f"Churn: {ev['newly_broken']} utterances newly broken, {ev['newly_fixed']} newly fixed; "
            f"critical-term recall {_f(ev['critical_recall']['production'])} → {_f(ev['critical_recall']['candidate'])}."
        )
    gated = [sl for sl in ev.get("slices", []) if sl["gated"]]
    if gated:
        hidden = len(ev["slices"]) - len(gated)
        slices = Table(title=f"Held-out slices large enough to gate ({hidden} smaller ones in the report)")
        for col in ("slice", "utts", "production WER", "candidate WER", "interval"):
            slices.add_column(col)
        for sl in gated:
            slices.add_row(
                f"{sl['field']}={sl['value']}",
                str(sl["utterances"]),
                _f(sl.get("production_wer")),
                _f(sl["candidate_wer"]),
                f"[{sl['low']:+.3f}, {sl['high']:+.3f}]" if isinstance(sl.get("low"), float) else "—",
            )
        console.print(slices)
    if ev.get("suites"):
        suites = Table(title="Regression suites (non-inferiority, Holm-adjusted)")
        for col in (
            "suite",
            "reference WER",
            "candidate WER",
            "ΔWER interval",
            "upper bound ≤ margin",
            "broken/fixed",
            "verdict",
        ):
            suites.add_column(col)
        for su in ev["suites"]:
            suites.add_row(
                su["name"],
                _f(su["reference_wer"]),
                _f(su["candidate_wer"]),
                f"[{su['low']:+.4f}, {su['high']:+.4f}]",
                f"{su['adjusted_high']:+.4f} ≤ {su['allowed_wer'] - su['reference_wer']:+.4f}",
                f"{su['newly_broken']}/{su['newly_fixed']}",
                "[green]pass[/]" if su["passed"] else "[red]fail[/]",
            )
        console.print(suites)
    for stage, gate in s["gates"].items():
        if gate:
            mark = "[green]PASS[/]" if gate["passed"] else "[red]REJECT[/]"
            console.print(f"[bold]{stage}[/] {mark}: " + "; ".join(gate["reasons"]))
    dep = s.get("deploy")
    console.print(
        f"[bold]Deploy[/]: {dep['action'] if dep else 'skipped (a gate rejected the candidate)'}; "
        f"default = v{s['deployed_version']}, aliases {s['registry']['aliases']}, versions {s['registry']['versions']}"
    )
    console.print(f"[bold]Reports[/]: {s['run_dir']} and the HTML under {s['reports']['pipeline_root']}")
