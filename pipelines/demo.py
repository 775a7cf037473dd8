"""`make demo`: build the demo world and let the flywheel turn by itself, locally, for real.

Round 0 of traffic is served by version 1 and corrected by its users; each turn then runs the
pipeline (trigger → dataset → training → validation ∥ regression → a 50 % canary), serves a round
of traffic split between the default and the canary, and runs the monitor pipeline, which decides
the canary from live evidence; a promoted canary serves the next round alone, whose corrections
feed the next turn. `--bad-canary` instead puts a deliberately degraded model on canary by hand and
lets the monitor roll it back.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from flywheel_pipelines.compile import compile_pipeline
from flywheel_pipelines.demo_tables import print_feedback, print_live, print_turns
from flywheel_pipelines.local_run import run_local, run_monitor_locally
from flywheel_pipelines.views import make_console, print_decision, print_summary
from stt_flywheel.config import FlywheelConfig, load_config
from stt_flywheel.data.error_store import open_error_store
from stt_flywheel.demo.models import degraded_model, pick_must_pass
from stt_flywheel.demo.scenario import (
    BAD_CANARY_SHARE,
    DEMO_MAX_STEPS,
    DEMO_REVIEW_BUDGET,
    DEMO_SILENT_SHARE,
    WorldSizes,
    create_world,
    simulate_traffic,
    write_demo_config,
)
from stt_flywheel.demo.world import NEW_DOMAIN
from stt_flywheel.deployment.backends import open_deployment, open_endpoint
from stt_flywheel.deployment.strategies import start_canary
from stt_flywheel.monitoring.live import live_quality
from stt_flywheel.run.entries import DatasetEntry, TriggerEntry
from stt_flywheel.run.ledger import read_ledger
from stt_flywheel.run.stages import bootstrap_registry
from stt_flywheel.run.summary import Figures, RunSummary, summarize_run
from stt_flywheel.storage.files import atomic_write_json, read_json

__all__ = [
    "decide_canary_round",
    "demo_config",
    "print_feedback",
    "print_live",
    "print_turns",
    "run_demo",
    "run_turn",
    "serve_round_of",
]


def run_demo(
    work_dir: Path,
    *,
    scale: float = 1.0,
    max_steps: int = DEMO_MAX_STEPS,
    min_error_cases: int = 50,
    turns: int = 2,
    bad_canary: bool = False,
    console: Console | None = None,
) -> dict[str, Any]:
    console = console or make_console()
    started = time.perf_counter()
    work_dir = work_dir.resolve()
    world_dir = work_dir / "world"
    with console.status("Synthesising the demo world with espeak-ng…"):
        sizes = WorldSizes(scale)
        manifests = create_world(world_dir, sizes)
    home = work_dir / "bad-canary" if bad_canary else work_dir
    if bad_canary and home.exists():
        shutil.rmtree(home)  # a scenario of its own, run from scratch each time
    config_path = home / "flywheel.yaml"
    if not bad_canary and (home / "summary.json").exists():
        return _already_turned(home, config_path, console)
    config = demo_config(config_path, manifests, max_steps, min_error_cases, console)
    summary: dict[str, Any] = {"rounds": [], "turns": []}
    rounds = iter(range(sizes.traffic_rounds))

    def serve_round(title: str) -> dict[str, Any] | None:
        r = next(rounds, None)
        if r is None:
            console.print(f"[bold]{title}[/]: the world has no more traffic rounds; stopping here.")
            return None
        traffic = serve_round_of(
            config, manifests, world_dir, r, title, console, DEMO_SILENT_SHARE, DEMO_REVIEW_BUDGET
        )
        summary["rounds"].append(traffic)
        return traffic

    first = serve_round("Round 0")
    assert first is not None
    summary["traffic"] = first
    live = live_quality(
        open_error_store(config),
        label_window=config.feedback.label_window,
        normalizer=config.validation.normalizer,
        slice_by=["domain"],
        max_per_user=config.monitor.max_predictions_per_user,
    )
    summary["live_before"] = {v: q.as_dict() for v, q in live.items()}
    print_live(summary["live_before"], console)
    if bad_canary:
        summary["turns"].append(_bad_canary_turn(config_path, serve_round, console))
    else:
        _turn_the_wheel(home, config_path, turns, serve_round, summary, console)
    summary["timings_s"] = {"demo_total": round(time.perf_counter() - started, 1)}
    summary["reports"] = {
        "runs": str(config.paths.reports),
        "pipeline_root": str(config.paths.pipeline_root),
        "monitor": str(Path(str(config.paths.reports)) / "monitor"),
    }
    atomic_write_json(home / "summary.json", summary)
    print_turns(summary["turns"], console)
    console.print(
        f"Demo total {summary['timings_s']['demo_total']:.0f} s. Summary written to {home / 'summary.json'}"
    )
    return summary


def _already_turned(home: Path, config_path: Path, console: Console) -> dict[str, Any]:
    done = read_json(home / "summary.json")
    console.print(
        f"The flywheel already turned {len(done['turns'])} times in {home}; its turns are below, and "
        f"`stt-flywheel status --config {config_path}` shows where it stands. Remove {home} (or pass "
        "another --work-dir) to run the demo afresh."
    )
    print_turns(done["turns"], console)
    return dict(done)


def _turn_the_wheel(
    home: Path,
    config_path: Path,
    turns: int,
    serve_round: Callable[[str], dict[str, Any] | None],
    summary: dict[str, Any],
    console: Console,
) -> None:
    """Up to `turns` runs of the compiled pipeline, each followed by its canary's live decision;
    the wheel stops at the first candidate that is not promoted."""
    package = compile_pipeline(home / "pipeline.yaml")
    console.print(
        f"Compiled pipeline: {package}; each turn runs it with kfp.local (SubprocessRunner).",
        highlight=False,
    )
    for k in range(1, turns + 1):
        turn = run_turn(k, config_path, package, serve_round, summary, console)
        summary["turns"].append(turn)
        if turn["decision"] != "promote":
            return
        if k < turns and serve_round(f"Round after turn {k} (v{turn['candidate_version']} alone)") is None:
            return


def demo_config(
    config_path: Path, manifests: dict[str, Path], max_steps: int, min_error_cases: int, console: Console
) -> FlywheelConfig:
    """Write the demo config (once), register version 1, and pick the must-pass utterances."""
    state = config_path.parent / "state"
    fresh = not config_path.exists()
    if fresh:
        write_demo_config(config_path, state, manifests, [], max_steps, min_error_cases, canary=True)
    config = load_config(config_path)
    v1 = bootstrap_registry(config)
    console.print(f"Registry: version {v1.version} is [bold]default[/] and serves the local endpoint.")
    if fresh:
        # In this process, not through the serving process: a test set is not production traffic
        # and must not be captured as such.
        with console.status("Picking the critical suite's must-pass utterances…"):
            must_pass = pick_must_pass(config, manifests["suite-critical"])
        write_demo_config(config_path, state, manifests, must_pass, max_steps, min_error_cases, canary=True)
        config = load_config(config_path)
    return config


def serve_round_of(
    config: FlywheelConfig,
    manifests: dict[str, Path],
    world_dir: Path,
    round_: int,
    title: str,
    console: Console,
    silent_share: float = 0.08,
    review_budget: int = 0,
) -> dict[str, Any]:
    """Serve a round of traffic and collect its users' feedback (`silent_share` of the wrong
    transcripts unanswered), then its reviewers' corrections (`review_budget`)."""
    # The local endpoint serves each version with the serving image's HTTP server in its own process.
    with open_endpoint(config).served() as endpoint:
        split = ", ".join(f"v{v} {p} %" for v, p in sorted(endpoint.traffic().items()) if p)
        with console.status(f"{title}: serving traffic ({split}) and collecting feedback…"):
            traffic = simulate_traffic(
                config,
                manifests,
                world_dir,
                endpoint=endpoint,
                round_=round_,
                silent_share=silent_share,
                review_budget=review_budget,
            )
        urls = [endpoint.server_url(v) for v in traffic["served_by_version"]]
    via = f" over HTTP by the serving processes at {', '.join(u for u in urls if u)}" if any(urls) else ""
    served = ", ".join(f"v{v} {n}" for v, n in traffic["requests_by_version"].items())
    console.print(
        f"[bold]{title}[/]: {traffic['utterances']} requests ({served}){via}; {traffic['captured']} captured "
        f"with their audio; {traffic['wrong']} transcripts wrong."
    )
    print_feedback(traffic, console)
    return traffic


def _monitor(config_path: Path, console: Console) -> dict[str, Any]:
    with console.status("Running the monitor pipeline with kfp.local…"):
        written = run_monitor_locally(config_path)
    decision = read_json(written[-1])
    print_decision(decision, console)
    return decision


def decide_canary_round(turn: dict[str, Any], config_path: Path, console: Console) -> None:
    """Run the monitor pipeline on the canary round just served; its decision becomes the turn's."""
    decision = _monitor(config_path, console)
    turn["monitor"] = {key: decision[key] for key in ("action", "summary", "tests", "reasons", "report")}
    turn["live"] = {
        f"v{arm['version']}": {
            k: arm.get(k)
            for k in ("requests", "labelled", "correction_rate", "scored", "wer", "users", "capped")
        }
        for arm in decision.get("arms", {}).values()
    }
    turn["decision"] = decision["action"]


def decide_with_more_traffic(
    turn: dict[str, Any], config_path: Path, serve_round: Any, title: str, console: Console
) -> None:
    """The monitor's look at the canary round just served; where it cannot decide yet (too few
    labels, or "collecting more"), the canary serves another round, if the world has one, and the
    monitor looks again."""
    decide_canary_round(turn, config_path, console)
    if turn["decision"] in ("wait", "continue") and serve_round(f"{title}, another round") is not None:
        decide_canary_round(turn, config_path, console)


def run_turn(
    k: int,
    config_path: Path,
    package: Path,
    serve_round: Any,
    summary: dict[str, Any],
    console: Console,
) -> dict[str, Any]:
    started = time.perf_counter()
    console.rule(f"Turn {k}")
    config, run_id = run_local(config_path, package=package, console=console)
    s = summarize_run(config, run_id)
    print_summary(s, console)
    summary.setdefault("runs", []).append(s.model_dump(mode="json"))
    trigger = read_ledger(config, run_id, TriggerEntry)
    dataset = read_ledger(config, run_id, DatasetEntry)
    taught: Counter[str] = Counter()
    for split in (dataset.profile if dataset else {}).values():
        taught.update(split.get("taught_by", {}))
    turn: dict[str, Any] = {
        "turn": k,
        "run_id": run_id,
        "production_version": trigger.production_version if trigger else None,
        "candidate_version": s.deploy.version if s.deploy else None,
        "offline": {"production": _offline(s.production), "candidate": _offline(s.candidate)},
        "critical_recall": s.evaluation.critical_recall.model_dump(),
        "gates": {name: gate.passed if gate else None for name, gate in s.gates.items()},
        "corrections": dict(taught),  # per sender: the app's users, the reviewers, the older log
        "live": {},
        "monitor": None,
    }
    if s.deploy is None or s.deploy.action != "canary":
        turn["decision"] = _why_no_canary(s)
    elif serve_round(f"Turn {k} canary round") is None:
        turn["decision"] = "canary undecided: no traffic left"
    else:
        decide_with_more_traffic(turn, config_path, serve_round, f"Turn {k} canary", console)
    turn["seconds"] = round(time.perf_counter() - started, 1)
    return turn


def _offline(figures: Figures) -> dict[str, float | None]:
    """What the turns table shows of one model: the new domain's held-out slice and the general suite."""
    return {
        "new_domain_wer": figures.domain(NEW_DOMAIN.name),
        "general_wer": figures.suite_wer.get("general"),
    }


def _why_no_canary(s: RunSummary) -> str:
    if not s.trigger.fired:
        return f"not trained: {s.trigger.summary}"
    failed = s.failed_gates()
    if failed:
        return f"rejected by {' and '.join(failed)}"
    if s.dataset and not s.dataset.usable:
        return f"not trained: {s.dataset.usable_reason}"
    return f"no canary ({s.deploy.action if s.deploy else 'no deploy'})"


def _bad_canary_turn(config_path: Path, serve_round: Any, console: Console) -> dict[str, Any]:
    """A candidate the offline gates never saw, put on canary by hand: the monitor must catch it."""
    started = time.perf_counter()
    console.rule("A deliberately bad canary")
    config = load_config(config_path)
    registry, endpoint = open_deployment(config)
    production = registry.resolve("default")
    assert production is not None
    bad_dir = degraded_model(production.uri, config_path.parent / "bad-candidate", BAD_CANARY_SHARE)
    bad = registry.register(
        bad_dir,
        source_run="demo-bad-canary",
        lineage={
            "parent_version": production.version,
            "made_by": f"demo --bad-canary: {BAD_CANARY_SHARE:.0%} towards random weights",
        },
    )
    start_canary(
        registry, endpoint, bad.version, 50, "demo --bad-canary: a degraded model put on canary by hand"
    )
    console.print(
        f"Version {bad.version} is version {production.version} moved {BAD_CANARY_SHARE:.0%} of the way "
        "towards random weights "
        "(it drops letters); it serves 50 % as a canary without passing any offline gate."
    )
    turn: dict[str, Any] = {
        "turn": "bad canary",
        "production_version": production.version,
        "candidate_version": bad.version,
        "offline": None,
        "live": {},
        "monitor": None,
        "decision": "canary undecided: no traffic left",
    }
    if serve_round("Bad canary round") is not None:
        decide_with_more_traffic(turn, config_path, serve_round, "Bad canary", console)
    turn["seconds"] = round(time.perf_counter() - started, 1)
    return turn
