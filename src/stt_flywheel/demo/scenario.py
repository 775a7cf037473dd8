"""The demo world: synthetic speech sets, a config that points at them, and production traffic.

`create_world` is idempotent (a finished world is re-used), and `simulate_traffic` runs once per
world: a second demo run finds no new error cases, which is the point.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from stt_flywheel.config import ConfigError, FlywheelConfig, load_config
from stt_flywheel.data.audio import load_audio
from stt_flywheel.data.error_store import ErrorStore, IngestResult
from stt_flywheel.data.manifest import Utterance, read_manifest, write_manifest
from stt_flywheel.demo.world import GENERAL, NEW_DOMAIN, synthesize_set
from stt_flywheel.deployment.backends import open_endpoint
from stt_flywheel.deployment.endpoint import LocalEndpoint
from stt_flywheel.scoring.text import normalize
from stt_flywheel.storage.files import atomic_write_json, atomic_write_text, read_json
from stt_flywheel.storage.objectstore import join_uri, open_store

__all__ = [
    "DEMO_MAX_STEPS",
    "WorldSizes",
    "create_world",
    "pick_must_pass",
    "simulate_traffic",
    "write_demo_config",
]

FAST_SPEED = (195, 230)
DEMO_MAX_STEPS = 500


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


def create_world(world_dir: Path, sizes: WorldSizes | None = None, seed: int = 0) -> dict[str, Path]:
    """Synthesise every set the demo needs into `world_dir`; returns manifest paths by name."""
    sizes = sizes or WorldSizes()
    done = world_dir / "world.json"
    if done.exists():
        return {k: Path(v) for k, v in read_json(done)["manifests"].items()}
    sets: dict[str, tuple[Any, int, dict[str, Any]]] = {
        "replay": (GENERAL, sizes.replay, {}),
        "eval": (GENERAL, sizes.eval, {}),
        "suite-general": (GENERAL, sizes.general_suite, {}),
        "suite-critical": (GENERAL, sizes.critical_suite, {}),
        "suite-edge": (GENERAL, sizes.edge_suite, {"speed": FAST_SPEED}),
        "traffic-new": (NEW_DOMAIN, sizes.traffic_new, {}),
        "traffic-general": (GENERAL, sizes.traffic_general, {}),
    }
    manifests: dict[str, Path] = {}
    for i, (name, (domain, count, extra)) in enumerate(sets.items()):
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
) -> FlywheelConfig:
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
        "deploy": {"keep_versions": 5},
    }
    atomic_write_text(path, yaml.safe_dump(config, sort_keys=False))
    return load_config(path)


def _corrected(utt: Utterance, hyp: str, version: int, when: datetime, **extra: Any) -> dict[str, Any]:
    wrong = normalize(hyp) != normalize(utt.text)
    return {
        "id": f"tx-{utt.id}",
        "audio_uri": utt.audio,
        "hypothesis": hyp,
        "corrected_text": utt.text if wrong else None,
        "model_version": str(version),
        "timestamp": when.isoformat(),
        "metadata": {"domain": utt.domain or "", "speaker": utt.speaker or ""},
        **extra,
    }


def simulate_traffic(
    config: FlywheelConfig,
    manifests: dict[str, Path],
    world_dir: Path,
    seed: int = 0,
    audio_store: str | None = None,
    endpoint: LocalEndpoint | None = None,
) -> dict[str, Any]:
    """Transcribe both domains' traffic with the deployed model and log every transcript.

    Wrong transcripts carry the user's correction. With `audio_store` (a directory or `gs://`
    prefix) the served audio is first copied there, as a production service keeps it, and the
    records point at those copies. A few deliberately bad submissions (missing
    audio, an empty correction, a file that is not audio, repeated submissions) exercise the
    dataset builder's quarantine and de-duplication. `endpoint` (default: the configured one) is
    what serves the traffic.
    """
    assert config.paths.root
    done = config.paths.root / "demo-traffic.json"
    if done.exists():
        return dict(read_json(done))
    assert config.paths.error_store
    endpoint = endpoint or _embedded_endpoint(config)
    rng = random.Random(seed)
    utts = read_manifest(manifests["traffic-new"]) + read_manifest(manifests["traffic-general"])
    rng.shuffle(utts)
    if audio_store is not None:
        store = open_store(audio_store)
        for u in utts:
            store.upload_file(f"{u.id}.wav", Path(u.audio))
        utts = [u.model_copy(update={"audio": join_uri(audio_store, f"{u.id}.wav")}) for u in utts]
    version, hyps = endpoint.predict([load_audio(u.audio).samples for u in utts], rng=rng)
    now = datetime.now(UTC)
    times = sorted(now - timedelta(seconds=rng.uniform(60, 12 * 3600)) for _ in utts)
    rows = [_corrected(u, h, version, t) for u, h, t in zip(utts, hyps, times, strict=True)]
    errors = [r for r in rows if r["corrected_text"] is not None]
    bad_dir = world_dir / "audio" / "bad"
    bad_dir.mkdir(parents=True, exist_ok=True)
    (bad_dir / "not-audio.wav").write_bytes(b"this is not a wav file")
    base = errors[0]
    rows += [
        {**base, "id": f"bad-missing-{i}", "audio_uri": str(bad_dir / f"missing-{i}.wav")} for i in range(3)
    ]
    rows += [{**base, "id": "bad-empty-correction", "corrected_text": "  ...  "}]
    rows += [{**base, "id": "bad-not-audio", "audio_uri": str(bad_dir / "not-audio.wav")}]
    rows += [{**r, "id": r["id"] + "-resubmitted"} for r in errors[1:6]]
    result: IngestResult = ErrorStore(config.paths.error_store).ingest(rows)
    by_domain: dict[str, list[int]] = {}
    for u, h in zip(utts, hyps, strict=True):
        by_domain.setdefault(u.domain or "", []).append(int(normalize(h) != normalize(u.text)))
    summary = {
        "served_by_version": version,
        "utterances": len(utts),
        "wrong": len(errors),
        "error_rate_by_domain": {d: sum(v) / len(v) for d, v in by_domain.items()},
        "ingest": result.as_dict(),
    }
    atomic_write_json(done, summary)
    return summary


def _embedded_endpoint(config: FlywheelConfig) -> LocalEndpoint:
    endpoint = open_endpoint(config)
    if not isinstance(endpoint, LocalEndpoint):
        raise ConfigError("the demo's traffic is served by the embedded endpoint (deploy.backend: local)")
    return endpoint


def pick_must_pass(
    config: FlywheelConfig, manifest: Path, limit: int = 8, endpoint: LocalEndpoint | None = None
) -> list[str]:
    """Critical-suite utterances the production model transcribes exactly today: they must stay right."""
    utts = read_manifest(manifest)
    _, hyps = (endpoint or _embedded_endpoint(config)).predict([load_audio(u.audio).samples for u in utts])
    right = [u.id for u, h in zip(utts, hyps, strict=True) if normalize(h) == normalize(u.text)]
    return sorted(right)[:limit]
