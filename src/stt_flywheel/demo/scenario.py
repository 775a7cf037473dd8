"""The demo world: synthetic speech sets, a config that points at them, and production traffic.

`create_world` is idempotent (a finished world is re-used), and `simulate_traffic` runs once per
world: a second demo run finds no new error cases, which is the point.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import yaml

from stt_flywheel.config import ConfigError, FlywheelConfig, load_config
from stt_flywheel.data.audio import TARGET_SAMPLE_RATE, encode_wav, load_audio
from stt_flywheel.data.capture import CapturedPrediction, CaptureWriter
from stt_flywheel.data.error_store import ErrorStore, IngestResult, open_error_store
from stt_flywheel.data.identity import load_identity
from stt_flywheel.data.manifest import Utterance, read_manifest, write_manifest
from stt_flywheel.data.records import new_prediction_id
from stt_flywheel.demo.reviewer import review_round
from stt_flywheel.demo.users import demo_identity_key, demo_user
from stt_flywheel.demo.world import GENERAL, NEW_DOMAIN, synthesize_set
from stt_flywheel.deployment.backends import open_endpoint
from stt_flywheel.deployment.endpoint import LocalEndpoint
from stt_flywheel.scoring.text import normalize
from stt_flywheel.storage.files import atomic_write_json, atomic_write_text, read_json

__all__ = [
    "BAD_CANARY_SHARE",
    "DEMO_MAX_STEPS",
    "DEMO_REVIEW_BUDGET",
    "DEMO_SILENT_SHARE",
    "WorldSizes",
    "create_world",
    "simulate_traffic",
    "traffic_sets",
    "wait_captured",
    "write_demo_config",
]

FAST_SPEED = (195, 230)
DEMO_MAX_STEPS = 500
# `make demo`'s users leave more than a quarter of the wrong transcripts unanswered; the wheel asks
# reviewers for this many corrections a round, where it was least sure (`demo.reviewer`)
DEMO_SILENT_SHARE = 0.3
DEMO_REVIEW_BUDGET = 80
# how far `demo --bad-canary` moves the default towards random weights: at 0.02 its users' own
# corrections could not tell it from the default at the half-size world's 97.5 % looks
BAD_CANARY_SHARE = 0.03


class WorldSizes:
    """Utterance counts per set; the tests use a smaller world than the demo."""

    def __init__(self, scale: float = 1.0) -> None:
        def n(x: int) -> int:
            return max(8, round(x * scale))

        self.replay = n(1200)
        self.eval = n(100)
        self.general_suite = n(100)
        self.critical_suite = n(30)
        self.edge_suite = n(40)
        self.traffic_new = n(480)
        self.traffic_general = n(240)
        # round 0 trains a candidate; the others serve canaries (another round where a first look
        # is inconclusive) and the next turn
        self.traffic_rounds = 5


def traffic_sets(round_: int) -> tuple[str, str]:
    """The new-domain and general traffic sets of one round (fresh utterances every round)."""
    suffix = f"-{round_}" if round_ else ""
    return f"traffic-new{suffix}", f"traffic-general{suffix}"


def create_world(world_dir: Path, sizes: WorldSizes | None = None, seed: int = 0) -> dict[str, Path]:
    """Synthesise every set the demo needs into `world_dir`; returns manifest paths by name. Sets
    already synthesised are kept (each set's seed depends only on its place in the list)."""
    sizes = sizes or WorldSizes()
    done = world_dir / "world.json"
    sets: dict[str, tuple[Any, int, dict[str, Any]]] = {
        "replay": (GENERAL, sizes.replay, {}),
        "eval": (GENERAL, sizes.eval, {}),
        "suite-general": (GENERAL, sizes.general_suite, {}),
        "suite-critical": (GENERAL, sizes.critical_suite, {}),
        "suite-edge": (GENERAL, sizes.edge_suite, {"speed": FAST_SPEED}),
    }
    for r in range(sizes.traffic_rounds):
        new, general = traffic_sets(r)
        sets[new] = (NEW_DOMAIN, sizes.traffic_new, {})
        sets[general] = (GENERAL, sizes.traffic_general, {})
    manifests = {k: Path(v) for k, v in read_json(done)["manifests"].items()} if done.exists() else {}
    if set(sets) <= set(manifests):
        return manifests
    for i, name in enumerate(sets):
        if name in manifests:
            continue
        domain, count, extra = sets[name]
        utts = synthesize_set(name, domain, count, seed * 100 + i + 11, world_dir / "audio" / name, **extra)
        manifests[name] = world_dir / f"{name}.jsonl"
        write_manifest(manifests[name], utts)
    atomic_write_json(done, {"seed": seed, "manifests": {k: str(v) for k, v in manifests.items()}})
    return manifests


def write_demo_config(
    path: Path,
    state_dir: Path,
    manifests: dict[str, Path],
    must_pass: list[str],
    max_steps: int = DEMO_MAX_STEPS,
    min_error_cases: int = 50,
    canary: bool = False,
) -> FlywheelConfig:
    """The demo's config; with `canary`, a candidate serves half the traffic until the monitor
    decides it from live evidence."""
    config: dict[str, Any] = {
        "paths": {"root": str(state_dir)},
        "trigger": {
            "min_error_cases": min_error_cases,
            "min_corrected_cases": max(1, min_error_cases * 3 // 5),
            "error_rate_threshold": 0.05,
        },
        # Fine-tuning a 2 M-parameter model on a new domain forgets the old one fast. 70 % replay,
        # speed perturbation and WiSE-FT (half-way back to the production weights) keep the general,
        # critical and fast-speech suites within their bounds; each alone did not (see the README).
        "dataset": {
            "replay_manifest": str(manifests["replay"]),
            "replay_share": 0.7,
            "holdout_fraction": 0.25,
            # the world's audio: the older combined log names files there
            "audio_roots": [os.path.commonpath([str(m.parent) for m in manifests.values()])],
        },
        "training": {
            "max_steps": max_steps,
            "learning_rate": 3e-4,
            "batch_size": 16,
            "warmup_steps": 30,
            "speed_perturbation": [0.9, 1.0, 1.15, 1.3],
            "wise_ft_alpha": 0.5,
        },
        "validation": {
            "eval_manifest": str(manifests["eval"]),
            "min_wer_improvement": 0.05,
            "max_p_value": 0.05,
            "max_worse_share": 0.2,
            "critical_terms": ["metformin", "ibuprofen", "amoxicillin", "lisinopril", "warfarin"],
        },
        "regression": [
            {
                "name": "general",
                "data": str(manifests["suite-general"]),
                "kind": "benchmark",
                "reference": "production",
                "max_relative_degradation": 0.1,
                "max_absolute_degradation": 0.02,
            },
            {
                "name": "critical",
                "data": str(manifests["suite-critical"]),
                "kind": "critical",
                "reference": "production",
                "max_relative_degradation": 0.25,
                "max_absolute_degradation": 0.02,
                "must_pass": must_pass,
            },
            {
                "name": "fast-speech",
                "data": str(manifests["suite-edge"]),
                "kind": "edge",
                "reference": "production",
                "max_relative_degradation": 0.15,
                "max_absolute_degradation": 0.02,
            },
        ],
        "deploy": {"keep_versions": 5, **({"strategy": "canary", "canary_percent": 50} if canary else {})},
        # The demo's users answer at once: a prediction without feedback is not waiting for any.
        # Its reviewers work in Label Studio (`review import --source label-studio`).
        "feedback": {"label_window_hours": 0.0, "reviewer_sources": ["review", "label-studio"]},
        # A round of demo traffic is ~360 requests per arm, not production's thousands an hour: the
        # margins are wider than production's (0.02), and each canary gets two testing looks. Each
        # of the 64 users makes about six requests per arm; one user past ten is a flood.
        "monitor": {
            "max_predictions_per_user": 10,
            "min_labelled_per_arm": 100,
            "min_scored_per_arm": 50,
            "correction_rate_margin": 0.10,
            "wer_margin": 0.10,
            "max_looks": 2,
        },
    }
    atomic_write_text(path, yaml.safe_dump(config, sort_keys=False))
    demo_identity_key(state_dir)
    return load_config(path)


class _Predicts(Protocol):
    def predict(
        self, audios: Sequence[np.ndarray], rng: random.Random | None = None
    ) -> tuple[int, list[str]]: ...


def _serve(
    config: FlywheelConfig,
    endpoint: LocalEndpoint | _Predicts,
    audios: list[np.ndarray],
    metadata: list[dict[str, str]],
    rng: random.Random,
    users: list[str],
) -> tuple[list[dict[str, Any]], dict[str, dict[str, int]]]:
    """Serve the requests; every answer is captured into the error store. The embedded endpoint
    serves over HTTP from its serving processes, which capture (and flush when they stop); an
    endpoint whose serving containers run elsewhere (the Vertex stand-in runs none) is captured
    here by the same writer."""
    if isinstance(endpoint, LocalEndpoint):
        with endpoint.served():
            answers = endpoint.request(audios, metadata, rng=rng, users=users)
            versions = sorted({int(a["model_version"]) for a in answers})
            counters = {str(v): endpoint.capture_counters(v) for v in versions}
        return answers, counters
    version, hyps = endpoint.predict(audios, rng=rng)
    writer = CaptureWriter.from_settings(
        open_error_store(config), config.capture, config.paths.root / "capture-spill"
    )
    now = datetime.now(UTC)
    answers = []
    identity = load_identity(config.paths.root, settings=config.identity)
    for audio, meta, hyp, user in zip(audios, metadata, hyps, users, strict=True):
        pid = new_prediction_id(now)
        data = encode_wav(audio)
        writer.offer(
            CapturedPrediction(
                pid,
                now,
                str(version),
                config.deploy.endpoint_name,
                hyp,
                meta,
                len(audio) / TARGET_SAMPLE_RATE,
                data,
                user=identity.pseudonym(user),
                signature=identity.sign(str(version), pid, identity.pseudonym(user), hyp),
            )
        )
        answers.append({"transcript": hyp, "prediction_id": pid, "model_version": str(version)})
    return answers, {str(version): writer.close()}


def _feedback_events(
    answers: list[dict[str, Any]],
    utts: list[Utterance],
    rng: random.Random,
    flag_share: float = 0.10,
    silent_share: float = 0.08,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """What the demo's users say, as two batches (the second arrives later): most wrong
    transcripts are corrected, some only flagged, some never reported; a few users first send a
    wrong correction and then the right one; some events are sent twice; a few right transcripts
    are confirmed; two events name predictions this service never made."""
    now = datetime.now(UTC)

    def ev(
        pid: str, user: str | None, text: str | None = None, flagged: bool = False, ago_s: float = 0.0
    ) -> dict[str, Any]:
        at = now - timedelta(seconds=ago_s + rng.uniform(0, 5))
        return {
            "prediction_id": pid,
            "corrected_text": text,
            "flagged": flagged,
            "event_time": at.isoformat(),
            "source": "demo-app",
            "user": user,
        }

    first: list[dict[str, Any]] = []
    late: list[dict[str, Any]] = []
    for answer, utt in zip(answers, utts, strict=True):
        pid, user = answer["prediction_id"], demo_user(utt)
        if normalize(answer["transcript"]) == normalize(utt.text):
            if rng.random() < 0.05:
                first.append(ev(pid, user, answer["transcript"]))  # confirmed
            continue
        r = rng.random()
        if r < flag_share:
            first.append(ev(pid, user, flagged=True))
        elif r < flag_share + silent_share:
            continue  # the user never said
        else:
            batch = late if rng.random() < 0.25 else first
            if rng.random() < 0.08:  # a slip first, the right words a minute later
                batch.append(ev(pid, user, " ".join(utt.text.split()[:-1]), ago_s=60))
            batch.append(ev(pid, user, utt.text))
    late += rng.sample(first, k=min(5, len(first)))  # sent again
    late += [ev(f"other-service-{i}", None, "hello", ago_s=10) for i in range(2)]
    return first, late


def simulate_traffic(
    config: FlywheelConfig,
    manifests: dict[str, Path],
    world_dir: Path,
    seed: int = 0,
    endpoint: LocalEndpoint | _Predicts | None = None,
    flag_share: float = 0.10,
    silent_share: float = 0.08,
    round_: int = 0,
    review_budget: int = 0,
) -> dict[str, Any]:
    """Serve one round of both domains' traffic with the deployed models, split as the endpoint's
    traffic says (every answer captured into the error store), then let users correct it later by
    prediction id (`_feedback_events`). Each round serves fresh utterances, once per world.

    An older log that another team kept as combined records (prediction and correction in one
    line) is ingested too, with a few deliberately bad lines (missing audio, an empty correction,
    a file that is not audio) and resubmissions of captured corrections, which exercise the
    dataset builder's quarantine and de-duplication (round 0 only). `endpoint` (default: the configured one)
    serves the traffic. Of the wrong transcripts, `flag_share` are only flagged and
    `silent_share` never reported; the tests' small world sets both to 0, so that every wrong
    transcript is corrected and the held-out split stays large enough to show significance. With a
    `review_budget`, reviewers then correct that many of what nobody answered (`demo.reviewer`).
    """
    done = config.paths.root / (f"demo-traffic-{round_}.json" if round_ else "demo-traffic.json")
    if done.exists():
        return dict(read_json(done))
    endpoint = endpoint or _embedded_endpoint(config)
    rng = random.Random(seed + 1000 * round_)
    new_set, general_set = traffic_sets(round_)
    utts = read_manifest(manifests[new_set]) + read_manifest(manifests[general_set])
    rng.shuffle(utts)
    metadata = [
        {"domain": u.domain or "", "speaker": u.speaker or "", "app": "demo", "round": str(round_)}
        for u in utts
    ]
    audios = [load_audio(u.audio).samples for u in utts]
    answers, capture = _serve(config, endpoint, audios, metadata, rng, [demo_user(u) for u in utts])
    store = open_error_store(config)
    first, late = _feedback_events(answers, utts, rng, flag_share, silent_share)
    feedback = [store.ingest_feedback(first), store.ingest_feedback(late)]

    # Capture is asynchronous: some events above arrived before their prediction was visible
    # (pending).
    captured = wait_captured(store, [a["prediction_id"] for a in answers], config.capture.flush_interval_s)
    wrong = [
        (a, u) for a, u in zip(answers, utts, strict=True) if normalize(a["transcript"]) != normalize(u.text)
    ]
    imported = _legacy_log(store, captured, wrong, world_dir) if round_ == 0 else None
    review = review_round(config, answers, utts, review_budget) if review_budget else None
    by_domain: dict[str, list[int]] = {}
    for a, u in zip(answers, utts, strict=True):
        by_domain.setdefault(u.domain or "", []).append(int(normalize(a["transcript"]) != normalize(u.text)))
    by_version: dict[str, list[int]] = {}
    for a, u in zip(answers, utts, strict=True):
        by_version.setdefault(a["model_version"], []).append(
            int(normalize(a["transcript"]) != normalize(u.text))
        )
    summary = {
        "round": round_,
        "served_by_version": sorted({int(a["model_version"]) for a in answers}),
        "requests_by_version": {v: len(x) for v, x in sorted(by_version.items())},
        "utterances": len(utts),
        "wrong": len(wrong),
        "error_rate_by_domain": {d: sum(v) / len(v) for d, v in by_domain.items()},
        "error_rate_by_version": {v: sum(x) / len(x) for v, x in sorted(by_version.items())},
        "capture": capture,
        "captured": len(captured),
        "feedback": [f.as_dict() for f in feedback],
        "legacy_import": imported.as_dict() if imported else None,
        "review": review,
    }
    atomic_write_json(done, summary)
    return summary


def wait_captured(store: ErrorStore, ids: list[str], flush_interval_s: float) -> dict[str, dict[str, Any]]:
    """The captured predictions of `ids`, once every one reached the store (capture is
    asynchronous: a serving process writes a batch every `capture.flush_interval_s`)."""
    deadline = time.monotonic() + 10 * flush_interval_s + 30
    while len(captured := {r["prediction_id"]: r for r in store.lookup(ids).to_pylist()}) < len(ids):
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"only {len(captured)} of {len(ids)} served predictions reached the error store"
            )
        time.sleep(0.5)
    return captured


def _legacy_log(
    store: ErrorStore,
    captured: dict[str, dict[str, Any]],
    wrong: list[tuple[dict[str, Any], Utterance]],
    world_dir: Path,
) -> IngestResult:
    """An older log another team kept as combined records: resubmissions and bad lines."""
    bad_dir = world_dir / "audio" / "bad"
    bad_dir.mkdir(parents=True, exist_ok=True)
    (bad_dir / "not-audio.wav").write_bytes(b"this is not a wav file")
    when = datetime.now(UTC).isoformat()

    def legacy(i: int, answer: dict[str, Any], utt: Utterance, **extra: Any) -> dict[str, Any]:
        return {
            "id": f"legacy-{i}",
            "audio_uri": captured[answer["prediction_id"]]["audio_uri"],
            "hypothesis": answer["transcript"],
            "corrected_text": utt.text,
            "model_version": answer["model_version"],
            "timestamp": when,
            "metadata": {"domain": utt.domain or "", "speaker": utt.speaker or ""},
            "user": demo_user(utt),
            **extra,
        }

    rows = [legacy(i, a, u) for i, (a, u) in enumerate(wrong[1:6])]  # the same audio again
    a0, u0 = wrong[0]
    rows += [legacy(10 + i, a0, u0, audio_uri=str(bad_dir / f"missing-{i}.wav")) for i in range(3)]
    rows += [legacy(20, a0, u0, corrected_text="  ...  ")]
    rows += [legacy(21, a0, u0, audio_uri=str(bad_dir / "not-audio.wav"))]
    return store.ingest(rows)


def _embedded_endpoint(config: FlywheelConfig) -> LocalEndpoint:
    endpoint = open_endpoint(config)
    if not isinstance(endpoint, LocalEndpoint):
        raise ConfigError("the demo's traffic is served by the embedded endpoint (deploy.backend: local)")
    return endpoint
