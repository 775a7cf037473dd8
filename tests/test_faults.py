"""Faults as normal events, many rounds each: processes racing on the same state.

Every round forks four workers that, at once, ingest (two of them the same file), register
(two of them the same run), promote, start and roll back canaries, take and release the run
lease, and prune; then it checks what must hold whatever the interleaving: one `default`,
traffic only on registered versions and summing to 100 with `default` among them, every
registered version's files whole, each ingested record stored once, and no lease left held.
Run alone with `pytest -m faults`.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.synchronize
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow.compute as pc
import pytest
from conftest import FaultyProxy
from records import record

from stt_flywheel.data.error_store import ErrorStore
from stt_flywheel.deployment.endpoint import LocalEndpoint
from stt_flywheel.deployment.registry import LocalRegistry
from stt_flywheel.deployment.strategies import replace_deployment, rollback, start_canary
from stt_flywheel.errors import FlywheelError
from stt_flywheel.storage.leases import LeaseHeld, acquire_lease, read_lease, release_lease
from stt_flywheel.storage.objectstore import LocalStore

pytestmark = pytest.mark.faults

ROUNDS = 100
WORKERS = 4


def _worker(root: str, model: str, seed: int, barrier: multiprocessing.synchronize.Barrier) -> None:
    rng = random.Random(seed)
    registry = LocalRegistry(f"{root}/reg.sqlite", f"{root}/models", "m")
    endpoint = LocalEndpoint(registry, "ep")
    store = ErrorStore(f"{root}/store")
    state = LocalStore(f"{root}/state")
    barrier.wait(20)
    steps = ["ingest", "register", "replace", "canary", "rollback", "lease", "prune"]
    for step in rng.sample(steps, k=len(steps)):
        try:
            if step == "ingest":
                source = "same" if seed % 2 == 0 else f"own-{seed}"
                store.ingest_file(f"{root}/{source}.jsonl")
            elif step == "register":
                registry.register(model, source_run="shared-run" if seed < 2 else f"run-{seed}")
            elif step == "replace":
                versions = [v.version for v in registry.versions()]
                replace_deployment(registry, endpoint, rng.choice(versions), reason=f"worker {seed}")
            elif step == "canary":
                versions = [v.version for v in registry.versions()]
                default = registry.aliases().get("default")
                others = [v for v in versions if v != default]
                if others:
                    start_canary(registry, endpoint, rng.choice(others), 10, reason=f"worker {seed}")
            elif step == "rollback":
                rollback(registry, endpoint, reason=f"worker {seed}")
            elif step == "lease":
                try:
                    acquire_lease(state, "flywheel-run", f"worker-{seed}", timedelta(minutes=5))
                except LeaseHeld:
                    continue
                release_lease(state, "flywheel-run", f"worker-{seed}")
            elif step == "prune":
                registry.prune(keep=3)
        except FlywheelError:
            continue  # a refusal in words (nothing to roll back to, a version pruned meanwhile): allowed


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_racing_processes_keep_every_invariant(tmp_path: Path, model_dir: Path, round_: int) -> None:
    root = str(tmp_path)
    registry = LocalRegistry(f"{root}/reg.sqlite", f"{root}/models", "m")
    registry.register(model_dir)
    registry.register(model_dir)
    replace_deployment(registry, LocalEndpoint(registry, "ep"), 1, reason="start")
    seeds = [1000 * round_ + k for k in range(WORKERS)]
    expected: set[str] = set()
    for name, first in [("same", 0), *((f"own-{seed}", 100 * (k + 1)) for k, seed in enumerate(seeds))]:
        rows = [record(i) for i in range(first, first + 50)]
        if name == "same" or int(name.split("-")[1]) % 2:  # even seeds ingest "same", odd ones their own
            expected |= {r["id"] for r in rows}
        (tmp_path / f"{name}.jsonl").write_bytes(b"\n".join(orjson.dumps(r) for r in rows) + b"\n")
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(WORKERS)
    procs = [ctx.Process(target=_worker, args=(root, str(model_dir), seed, barrier)) for seed in seeds]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0, f"a worker failed in round {round_}"

    registry = LocalRegistry(f"{root}/reg.sqlite", f"{root}/models", "m")
    versions = {v.version for v in registry.versions()}
    aliases = registry.aliases()
    split = LocalEndpoint(registry, "ep").traffic()
    assert "default" in aliases
    assert set(aliases.values()) <= versions
    assert sum(split.values()) == 100, split
    assert set(split) <= versions, (split, versions)
    assert aliases["default"] in split, (aliases, split)
    if "candidate" in aliases and aliases["candidate"] in split:
        assert len(split) == 2, (
            aliases,
            split,
            [(e.action, e.version, e.detail) for e in registry.audit_log()],
        )
    for v in versions:
        assert registry.verify(v) == [], f"v{v} damaged"
    assert len([v for v in registry.versions() if v.source_run == "shared-run"]) <= 1
    stored = ErrorStore(f"{root}/store").predictions(columns=["prediction_id"])["prediction_id"].to_pylist()
    assert len(stored) == len(set(stored))  # none doubled
    assert set(stored) == expected  # none lost
    lease = read_lease(LocalStore(f"{root}/state"), "flywheel-run")
    assert lease is None or lease.expired(datetime.now(UTC))


def _ingest(root: str, source: str) -> None:
    ErrorStore(root).ingest_file(source)


@pytest.mark.parametrize("round_", range(10))
def test_an_ingest_killed_anywhere_then_run_again_stores_each_record_once(
    tmp_path: Path, round_: int
) -> None:
    import os
    import signal
    import time

    source = tmp_path / "records.jsonl"
    rows = [record(i) for i in range(20_000)]
    source.write_bytes(b"\n".join(orjson.dumps(r) for r in rows) + b"\n")
    root = str(tmp_path / "store")
    ctx = multiprocessing.get_context("fork")
    proc = ctx.Process(target=_ingest, args=(root, str(source)))
    proc.start()
    time.sleep(random.Random(round_).uniform(0.0, 0.6))  # somewhere in parsing, writing, or after
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    again = ctx.Process(target=_ingest, args=(root, str(source)))
    again.start()
    again.join(120)
    assert again.exitcode == 0
    store = ErrorStore(root)
    stored = store.predictions(columns=["prediction_id"])["prediction_id"].to_pylist()
    assert sorted(stored) == sorted(r["id"] for r in rows)
    events = store.feedback()
    assert pc.count_distinct(events["event_id"]).as_py() == len(rows)
    assert store.stats()["since_watermark"]["feedback_events"] == len(rows)


def _build(store_root: str, out: str, roots: list[str]) -> None:
    from stt_flywheel.config import DatasetSettings
    from stt_flywheel.data.dataset import build_dataset

    build_dataset(
        ErrorStore(store_root),
        out,
        DatasetSettings(holdout_fraction=0.3, replay_share=0.0, audio_roots=roots, max_user_share=1.0),
        watermark=None,
    )


@pytest.mark.parametrize("round_", range(5))
def test_a_dataset_build_killed_anywhere_then_run_again_builds_the_same_dataset(
    tmp_path: Path, new_utts: list, round_: int
) -> None:
    import os
    import signal
    import tempfile
    import time

    from stt_flywheel.data.dataset import DatasetManifest

    rows = [
        {**record(i), "audio_uri": u.audio, "corrected_text": u.text, "metadata": {"domain": "pharmacy"}}
        for i, u in enumerate(new_utts)
    ]
    store_root = str(tmp_path / "store")
    ErrorStore(store_root).ingest(rows)
    roots = [tempfile.gettempdir()]
    _build(store_root, str(tmp_path / "reference"), roots)
    reference = DatasetManifest.load(tmp_path / "reference")
    ctx = multiprocessing.get_context("fork")
    proc = ctx.Process(target=_build, args=(store_root, str(tmp_path / "ds"), roots))
    proc.start()
    time.sleep(random.Random(round_).uniform(0.05, 1.5))
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    _build(store_root, str(tmp_path / "ds"), roots)
    again = DatasetManifest.load(tmp_path / "ds")
    assert (again.content_hash, again.counts, again.splits) == (
        reference.content_hash,
        reference.counts,
        reference.splits,
    )
    assert sorted(p.name for p in (tmp_path / "ds").iterdir()) == [
        "data",
        "manifest.json",
        "quarantine.jsonl",
    ]


@pytest.mark.gcs
def test_gcs_errors_on_every_fifth_request_change_no_outcome(
    gcs_bucket: str, tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """503s (before and after the write landed) from a proxy in front of the emulator while the
    error store, leases and the registry work on gs://: the client's retries and the stores'
    idempotent writes give the outcome of a run without faults, nothing lost or doubled."""
    import os

    from stt_flywheel.run.trigger import gather_evidence

    proxy = FaultyProxy(os.environ["STORAGE_EMULATOR_HOST"])
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
    try:
        source = tmp_path / "records.jsonl"
        rows = [record(i) for i in range(300)]
        source.write_bytes(b"\n".join(orjson.dumps(r) for r in rows) + b"\n")
        store = ErrorStore(f"{gcs_bucket}/store")
        store.ingest_file(source)
        store.ingest_file(source)  # again: a retried task
        store.compact()
        stored = store.predictions(columns=["prediction_id"])["prediction_id"].to_pylist()
        assert sorted(stored) == sorted(r["id"] for r in rows)
        assert store.stats()["since_watermark"]["feedback_events"] == len(rows)
        now = datetime.now(UTC) + timedelta(minutes=1)
        stats = gather_evidence(store, None, now, timedelta(days=7))
        assert (stats.new_feedback, stats.new_error_cases) == (300, 300)

        state = f"{gcs_bucket}/runstate"
        from stt_flywheel.storage.objectstore import open_store

        leases = open_store(state)
        for k in range(10):
            acquire_lease(leases, "flywheel-run", f"run-{k}", timedelta(minutes=5))
            release_lease(leases, "flywheel-run", f"run-{k}")
        final = read_lease(leases, "flywheel-run")
        assert final is not None
        assert final.expired(datetime.now(UTC))

        registry = LocalRegistry(tmp_path / "reg.sqlite", f"{gcs_bucket}/models", "m")
        v1 = registry.register(model_dir, source_run="run-1")
        assert registry.register(model_dir, source_run="run-1").version == v1.version
        assert registry.verify(v1.version) == []
    finally:
        proxy.close()
    assert proxy.refused >= 5
    assert proxy.lost >= 3


def _train(examples: list, out: str, steps: int) -> None:
    from stt_flywheel.models.ctc import build_ctc_model
    from stt_flywheel.models.training import TrainSettings, fine_tune

    settings = TrainSettings(max_steps=steps, save_steps=2, batch_size=4, warmup_steps=0, logging_steps=1)
    fine_tune(
        build_ctc_model(hidden_size=32, num_layers=1, num_heads=2, conv_channels=8), examples, out, settings
    )


@pytest.mark.parametrize("round_", range(3))
def test_training_killed_anywhere_then_run_again_finishes_from_a_whole_checkpoint(
    tmp_path: Path, general_utts: list, round_: int
) -> None:
    import os
    import signal
    import time

    from stt_flywheel.data.audio import load_audio
    from stt_flywheel.models import load_model

    examples = [{"audio": load_audio(u.audio).samples, "text": u.text} for u in general_utts[:8]]
    out = str(tmp_path / "run")
    ctx = multiprocessing.get_context("spawn")  # torch's thread pools do not survive a fork
    proc = ctx.Process(target=_train, args=(examples, out, 200))
    proc.start()
    checkpoints = tmp_path / "run" / "checkpoints"
    while not checkpoints.is_dir() or not any(checkpoints.iterdir()):  # training has begun
        time.sleep(0.05)
    time.sleep(random.Random(round_).uniform(0.0, 3.0))  # inside a step, or a checkpoint's write
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    assert not (checkpoints / "checkpoint-200").exists(), "killed too late to test anything"
    again = ctx.Process(target=_train, args=(examples, out, 200))
    again.start()
    again.join(300)
    assert again.exitcode == 0
    assert (checkpoints / "checkpoint-200").is_dir()
    model = load_model(tmp_path / "run" / "model", device="cpu")
    assert len(model.transcribe([examples[0]["audio"]])) == 1


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    """The `stt-flywheel` script itself, as an operator or a cron job runs it."""
    script = Path(sys.executable).with_name("stt-flywheel")
    return subprocess.run([str(script), *args], capture_output=True, timeout=timeout, check=False)


@pytest.mark.parametrize("round_", range(4))
def test_the_clis_ingests_and_exports_exit_cleanly_beside_a_serving_process_just_stopped(
    tmp_path: Path, config_factory: Any, general_utts: list, round_: int
) -> None:
    """Once, `feedback ingest` died after its work with `terminate called without an active
    exception` (exit 134, nothing said) just after a serving process had stopped: Arrow's
    worker threads torn down with the interpreter. Each command's exit code and words, every round."""
    import base64
    import socket
    import time

    import httpx

    from stt_flywheel.config import DEFAULT_BASE_MODEL, load_config

    config_path, _ = config_factory(tmp_path, dataset={"audio_roots": ["/audio"]})  # tests/records.py's audio
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    script = Path(sys.executable).with_name("stt-flywheel")
    server = subprocess.Popen(
        [
            str(script),
            "serve",
            "--model-dir",
            str(DEFAULT_BASE_MODEL),
            "--port",
            str(port),
            "-c",
            str(config_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(240):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.25)
        audio = base64.b64encode(Path(general_utts[round_].audio).read_bytes()).decode()
        answer = httpx.post(url + "/predict", json={"instances": [{"b64": audio}]}, timeout=60).json()
        pid = answer["predictions"][0]["prediction_id"]
    finally:
        server.terminate()
        server.wait(30)
    feedback = tmp_path / "feedback.jsonl"
    feedback.write_text(
        orjson.dumps(
            {
                "prediction_id": pid,
                "corrected_text": "a correction",
                "event_time": datetime.now(UTC),
                "source": "app",
            }
        ).decode()
        + "\n"
    )
    records = tmp_path / "records.jsonl"
    records.write_bytes(b"\n".join(orjson.dumps(record(i)) for i in range(50)) + b"\n")
    runs = {
        "feedback ingest": _cli("feedback", "ingest", str(feedback), "-c", str(config_path), "--json"),
        "errors ingest": _cli("errors", "ingest", str(records), "-c", str(config_path), "--json"),
        "errors export": _cli("errors", "export", "-c", str(config_path)),
    }
    for name, done in runs.items():
        assert done.returncode == 0, (name, done.returncode, done.stderr.decode()[-2000:])
        assert b"terminate called" not in done.stderr
    assert orjson.loads(runs["feedback ingest"].stdout)["accepted"] == 1
    assert orjson.loads(runs["errors ingest"].stdout)["accepted"] == 50
    exported = [orjson.loads(line) for line in runs["errors export"].stdout.splitlines()]
    assert len(exported) == 51 and pid in {e["prediction_id"] for e in exported}
    # what serving captured and the commands wrote holds people's words: this user's alone
    root = Path(load_config(config_path).paths.root)
    opened = [
        f"{p.relative_to(root)} {p.stat().st_mode & 0o777:o}"
        for p in root.rglob("*")  # the state directory itself is the test's
        if p.stat().st_mode & 0o077
    ]
    assert opened == []
