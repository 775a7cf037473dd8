"""`stt-flywheel demo --poisoned-feedback`: the demo's first turn with an attacker among the users.

Round 0 is served and corrected by the demo's users as in `make demo`; the attacker
(`stt_flywheel.demo.poison`) corrects their own clips of "lock the …" to "open the …". The turn
then runs the compiled pipeline; while its candidate serves as a canary, the attacker floods the
endpoint with requests and confirms every answer, and the monitor decides. What is printed: the
corrections held for review, what the dataset kept of the attacker's, the curated critical-term
recall of production and the candidate, what the flood counted for in each arm, and the decision.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from flywheel_pipelines.compile import compile_pipeline
from flywheel_pipelines.demo import demo_config, print_turns, run_turn, serve_round_of
from stt_flywheel.data.error_store import open_error_store
from stt_flywheel.data.review import Screen, held_corrections
from stt_flywheel.demo.models import pick_must_pass
from stt_flywheel.demo.poison import (
    ATTACKER,
    SWAP,
    create_poison_sets,
    flood_with_confirmations,
    poison_config,
)
from stt_flywheel.demo.poison import teach_swap as teach
from stt_flywheel.demo.scenario import WorldSizes, create_world
from stt_flywheel.deployment.backends import open_endpoint
from stt_flywheel.run.entries import DatasetEntry, ValidationEntry
from stt_flywheel.run.ledger import read_ledger
from stt_flywheel.storage.files import atomic_write_json

__all__ = ["POISONED_MAX_STEPS", "run_poisoned_demo"]

POISONED_MAX_STEPS = 150  # one turn in a few minutes on two CPU cores
FLOOD_REQUESTS = 400  # with the 120 corrections: within `feedback.max_events_per_user_per_hour`


def run_poisoned_demo(
    work_dir: Path, *, scale: float, max_steps: int, min_error_cases: int, console: Console
) -> dict[str, Any]:
    started = time.perf_counter()
    world_dir = work_dir / "world"
    with console.status("Synthesising the demo world with espeak-ng…"):
        sizes = WorldSizes(scale)
        manifests = create_world(world_dir, sizes)
        safety = create_poison_sets(world_dir, scale)
    home = work_dir / "poisoned-feedback"
    if home.exists():
        shutil.rmtree(home)  # a scenario of its own, run from scratch each time
    config_path = home / "flywheel.yaml"
    config = demo_config(config_path, manifests, max_steps, min_error_cases, console)
    with console.status("Picking the safety suite's must-pass utterances…"):
        must_pass = pick_must_pass(config, safety["safety-lock"])
    config = poison_config(config_path, manifests, safety, must_pass)
    console.print(
        f"Critical terms now include [bold]{SWAP[0]}[/]; the curated eval set holds "
        f"{len(must_pass)} must-pass safety utterances production gets right."
    )
    summary: dict[str, Any] = {"rounds": [], "turns": []}
    rounds = iter(range(sizes.traffic_rounds))

    def serve_round(title: str) -> dict[str, Any] | None:
        r = next(rounds, None)
        if r is None:
            return None
        traffic = serve_round_of(config, manifests, world_dir, r, title, console)
        summary["rounds"].append(traffic)
        if r > 0:  # a canary serves: the attacker floods it
            with (
                console.status(f"{ATTACKER} floods the endpoint and confirms every answer…"),
                open_endpoint(config).served() as endpoint,
            ):
                summary["flood"] = flood_with_confirmations(
                    config, endpoint, safety["attack-lock"], FLOOD_REQUESTS
                )
            console.print(
                f"[bold]{ATTACKER}[/] sent {summary['flood']['requests']} requests and confirmed every answer."
            )
        return traffic

    serve_round("Round 0")
    with (
        console.status(f"{ATTACKER} corrects their own clips, '{SWAP[0]}' → '{SWAP[1]}'…"),
        open_endpoint(config).served() as endpoint,
    ):
        summary["attack"] = teach(config, endpoint, safety["attack-lock"])
    held = list(held_corrections(open_error_store(config), Screen.of(config)))
    summary["held"] = _print_attack(summary["attack"], held, console)
    package = compile_pipeline(home / "pipeline.yaml")
    turn = run_turn(1, config_path, package, serve_round, summary, console)
    summary["turns"].append(turn)
    summary["outcome"] = _outcome(config, turn, summary, console)
    summary["timings_s"] = {"demo_total": round(time.perf_counter() - started, 1)}
    atomic_write_json(home / "summary.json", summary)
    print_turns(summary["turns"], console)
    console.print(
        f"Demo total {summary['timings_s']['demo_total']:.0f} s. Summary written to {home / 'summary.json'}"
    )
    return summary


def _print_attack(attack: dict[str, Any], held: list[Any], console: Console) -> dict[str, int]:
    by_reason: dict[str, int] = {}
    for h in held:
        for reason in h.reasons:
            by_reason[reason] = by_reason.get(reason, 0) + 1
    console.print(
        f"[bold]{ATTACKER}[/] asked for {attack['clips']} transcripts of their own '{SWAP[0]} the …' clips "
        f"(production heard '{SWAP[0]}' in {attack['heard_lock']}) and corrected each to '{SWAP[1]} the …'; "
        f"ingest: {', '.join(f'{k} {v}' for k, v in attack['feedback']['states'].items() if v)}."
    )
    console.print(
        f"Held for review: {len(held)} corrections "
        f"({', '.join(f'{k} {v}' for k, v in sorted(by_reason.items())) or 'none'}); "
        "`stt-flywheel review list` shows them, and none trains until a person accepts it."
    )
    return {"corrections": len(held), **by_reason}


def _outcome(config: Any, turn: dict[str, Any], summary: dict[str, Any], console: Console) -> dict[str, Any]:
    """What the attack came to, from the run's ledger and the monitor's arms."""
    run_id = turn["run_id"]
    dataset = read_ledger(config, run_id, DatasetEntry)
    validation = read_ledger(config, run_id, ValidationEntry)
    reasons = dataset.quarantine_reasons if dataset else {}
    m = validation.metrics if validation else None
    outcome = {
        "held_for_review": reasons.get("held_for_review", 0),
        "over_user_share": reasons.get("over_user_share", 0),
        "curated_critical_recall": {
            "production": m.eval_production_critical_recall if m else None,
            "candidate": m.eval_critical_recall if m else None,
        },
        "arms": {
            name: {k: arm.get(k) for k in ("requests", "users", "capped")}
            for name, arm in (turn.get("live") or {}).items()
        },
        "decision": turn["decision"],
    }
    table = Table(title=f"What {ATTACKER}'s attack came to")
    table.add_column("step")
    table.add_column("outcome")
    table.add_row(
        "dataset",
        f"{outcome['held_for_review']} corrections quarantined held_for_review, "
        f"{outcome['over_user_share']} over_user_share",
    )
    recall = outcome["curated_critical_recall"]
    table.add_row(
        "curated critical-term recall",
        f"production {_f(recall['production'])} → candidate {_f(recall['candidate'])}",
    )
    for name, arm in outcome["arms"].items():
        table.add_row(
            f"canary arm {name}",
            f"{arm['requests']} predictions counted from {arm['users']} users; "
            f"{arm['capped']} left out past the per-user cap",
        )
    table.add_row("decision", str(turn["decision"]))
    console.print(table)
    return outcome


def _f(x: Any) -> str:
    return f"{x:.3f}" if isinstance(x, float) else "–"
