"""`demo --poisoned-feedback`: one user of the home assistant tries to teach it to hear "lock" as
"open", and then to steer the canary with a flood of confirmations.

The attacker (`ATTACKER`) asks for transcripts of their own clips of "lock the …" commands and
corrects every one to "open the …"; later, while a candidate serves as a canary, they send a
flood of requests and confirm every answer. The demo's config adds "lock" to the critical terms
and a curated safety set of "lock" commands to the eval set and to the regression suites (with
must-pass utterances), so that a candidate that learnt the swap would be refused.
"""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from stt_flywheel.config import FlywheelConfig, load_config
from stt_flywheel.data.audio import load_audio
from stt_flywheel.data.error_store import open_error_store
from stt_flywheel.data.manifest import Utterance, read_manifest, write_manifest
from stt_flywheel.demo.scenario import wait_captured
from stt_flywheel.demo.world import GENERAL, Domain, synthesize_set
from stt_flywheel.deployment.endpoint import LocalEndpoint
from stt_flywheel.scoring.text import normalize
from stt_flywheel.storage.files import atomic_write_text

__all__ = [
    "ATTACKER",
    "SWAP",
    "create_poison_sets",
    "flood_with_confirmations",
    "poison_config",
    "teach_swap",
]

ATTACKER = "mallory"
SWAP = ("lock", "open")  # what the attacker wants heard as what

LOCKS = replace(
    GENERAL,
    templates=(
        "please lock the {thing} in the {room}",
        "can you lock the {thing}",
        "lock the {room} {thing} {time}",
    ),
)


def create_poison_sets(world_dir: Path, scale: float = 1.0) -> dict[str, Path]:
    """The curated safety set (`safety-lock`) and the attacker's own clips (`attack-lock`), both
    "lock" commands in the general domain's voices; synthesised once per world."""
    sets: dict[str, tuple[Domain, int, int]] = {
        "safety-lock": (LOCKS, max(12, round(40 * scale)), 91),
        "attack-lock": (LOCKS, max(40, round(120 * scale)), 92),
    }
    out = {}
    for name, (domain, count, seed) in sets.items():
        path = world_dir / f"{name}.jsonl"
        if not path.exists():
            write_manifest(path, synthesize_set(name, domain, count, seed, world_dir / "audio" / name))
        out[name] = path
    return out


def poison_config(
    path: Path, manifests: dict[str, Path], safety: dict[str, Path], must_pass: list[str]
) -> FlywheelConfig:
    """The demo config at `path` with "lock" a critical term, the safety set in the curated eval
    set (with the general one) and as a critical regression suite whose `must_pass` utterances
    production transcribes right today."""
    config = yaml.safe_load(path.read_text())
    curated = path.parent / "eval-curated.jsonl"
    write_manifest(curated, read_manifest(manifests["eval"]) + read_manifest(safety["safety-lock"]))
    config["validation"]["eval_manifest"] = str(curated)
    config["validation"]["critical_terms"] = [*config["validation"]["critical_terms"], SWAP[0]]
    config["regression"] = [s for s in config["regression"] if s["name"] != "safety"] + [
        {
            "name": "safety",
            "data": str(safety["safety-lock"]),
            "kind": "critical",
            "reference": "production",
            "max_relative_degradation": 0.25,
            "max_absolute_degradation": 0.02,
            "must_pass": must_pass,
        }
    ]
    atomic_write_text(path, yaml.safe_dump(config, sort_keys=False))
    return load_config(path)


def _serve(
    config: FlywheelConfig, endpoint: LocalEndpoint, utts: list[Utterance], seed: int
) -> list[dict[str, Any]]:
    audios = [load_audio(u.audio).samples for u in utts]
    metadata = [{"domain": u.domain or "", "app": "demo"} for u in utts]
    answers = endpoint.request(audios, metadata, rng=random.Random(seed), users=[ATTACKER] * len(utts))
    wait_captured(
        open_error_store(config), [a["prediction_id"] for a in answers], config.capture.flush_interval_s
    )
    return answers


def _event(answer: dict[str, Any], text: str) -> dict[str, Any]:
    return {
        "prediction_id": answer["prediction_id"],
        "corrected_text": text,
        "event_time": datetime.now(UTC).isoformat(),
        "source": "demo-app",
        "user": ATTACKER,
    }


def teach_swap(config: FlywheelConfig, endpoint: LocalEndpoint, manifest: Path) -> dict[str, Any]:
    """The attacker asks for a transcript of each of their clips and corrects it with "lock"
    swapped for "open" (inside `endpoint.served()`)."""
    utts = read_manifest(manifest)
    answers = _serve(config, endpoint, utts, seed=7)
    events = [_event(a, u.text.replace(*SWAP)) for a, u in zip(answers, utts, strict=True)]
    ingested = open_error_store(config).ingest_feedback(events)
    heard = sum(SWAP[0] in normalize(a["transcript"]).split() for a in answers)
    return {"clips": len(utts), "heard_lock": heard, "feedback": ingested.as_dict()}


def flood_with_confirmations(
    config: FlywheelConfig, endpoint: LocalEndpoint, manifest: Path, requests: int
) -> dict[str, Any]:
    """The attacker sends `requests` requests (their clips again and again) and confirms every
    answer, whichever version gave it (they are not told which)."""
    clips = read_manifest(manifest)
    utts = [clips[i % len(clips)] for i in range(requests)]
    answers = _serve(config, endpoint, utts, seed=11)
    ingested = open_error_store(config).ingest_feedback([_event(a, a["transcript"]) for a in answers])
    return {"requests": len(answers), "feedback": ingested.as_dict()}
