import multiprocessing
import multiprocessing.synchronize
import threading
from pathlib import Path

import pytest
from conftest import run_at_once

from stt_flywheel.deployment.endpoint import LocalEndpoint, canary_split
from stt_flywheel.deployment.registry import LocalRegistry, RegistryError


@pytest.fixture
def registry(tmp_path: Path) -> LocalRegistry:
    return LocalRegistry(tmp_path / "reg.sqlite", tmp_path / "models", "m")


def test_register_copies_and_numbers_versions(registry: LocalRegistry, model_dir: Path) -> None:
    v1 = registry.register(model_dir, dataset_version="ds-1", metrics={"wer": 0.3})
    v2 = registry.register(model_dir, source_run="run-a")
    assert (v1.version, v2.version) == (1, 2)
    assert Path(v1.uri).is_dir()
    assert (Path(v1.uri) / "weights.bin").exists()
    assert v1.metrics == {"wer": 0.3}
    assert v1.dataset_version == "ds-1"
    # a retried run re-uses its version instead of registering another
    assert registry.register(model_dir, source_run="run-a").version == 2
    with pytest.raises(RegistryError, match="not a saved model"):
        registry.register(model_dir.parent / "nothing")


def test_promote_keeps_previous_and_rollback_restores(registry: LocalRegistry, model_dir: Path) -> None:
    for _ in range(3):
        registry.register(model_dir)
    assert registry.promote(1) is None
    assert registry.promote(2) == 1
    assert registry.aliases() == {"default": 2, "previous": 1}
    assert registry.rollback("bad canary") == (2, 1)
    assert registry.aliases() == {"default": 1}
    with pytest.raises(RegistryError, match="nothing to roll back"):
        registry.rollback()
    actions = [e.action for e in registry.audit_log()]
    assert actions.count("register") == 3
    assert "rollback" in actions
    assert registry.audit_log()[-1].detail["reason"] == "bad canary"


def test_prune_never_removes_aliased_or_deployed(registry: LocalRegistry, model_dir: Path) -> None:
    for _ in range(6):
        registry.register(model_dir)
    registry.promote(2)
    registry.promote(6)  # default 6, previous 2
    LocalEndpoint(registry, "ep").deploy(1)
    pruned = registry.prune(keep=2)
    assert pruned == [4, 3]
    assert [v.version for v in registry.versions()] == [1, 2, 5, 6]
    assert not (Path(registry.models_root) / "m" / "v3").exists()


def test_endpoint_replace_and_predict_requires_deployment(registry: LocalRegistry, model_dir: Path) -> None:
    registry.register(model_dir)
    registry.register(model_dir)
    endpoint = LocalEndpoint(registry, "ep")
    with pytest.raises(RegistryError, match="no deployed model"):
        endpoint.predict([])
    endpoint.deploy(1)
    endpoint.deploy(2, 10)
    assert endpoint.traffic() == {1: 90, 2: 10}
    endpoint.deploy(2)
    assert endpoint.traffic() == {1: 0, 2: 100}
    with pytest.raises(RegistryError, match="must sum to 100"):
        endpoint.set_traffic({1: 50, 2: 40})
    with pytest.raises(RegistryError, match="still serves"):
        endpoint.undeploy(2)
    endpoint.undeploy(1)
    assert endpoint.traffic() == {2: 100}
    assert endpoint.last_deployed_at() is not None
    with pytest.raises(RegistryError):
        endpoint.deploy(9)


@pytest.mark.parametrize(
    ("current", "percent", "expected"),
    [
        ({}, 10, {"new": 100}),
        ({"a": 100}, 10, {"a": 90, "new": 10}),
        ({"a": 50, "b": 50}, 33, {"a": 34, "b": 33, "new": 33}),
        ({"a": 90, "b": 10}, 25, {"a": 68, "b": 7, "new": 25}),  # tie: the earlier model
        ({"a": 0, "b": 100}, 100, {"a": 0, "b": 0, "new": 100}),
        ({"a": 0}, 10, {"a": 90, "new": 10}),
    ],
)
def test_canary_split_sums_to_100(current: dict, percent: int, expected: dict) -> None:
    split = canary_split(current, "new", percent)
    assert split == expected
    assert sum(split.values()) == 100


def test_concurrent_registrations_get_distinct_versions(registry: LocalRegistry, model_dir: Path) -> None:
    results: list[int] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.append(
                LocalRegistry(registry.db_path, registry.models_root, "m").register(model_dir).version
            )
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(results) == [1, 2, 3, 4, 5, 6]


def _register_run(
    db: str, models: str, model_dir: str, barrier: "multiprocessing.synchronize.Barrier"
) -> None:
    registry = LocalRegistry(db, models, "m")
    barrier.wait(10)
    registry.register(model_dir, source_run="run-7")


@pytest.mark.parametrize("round_", range(10))
def test_one_run_registered_from_two_processes_at_once_is_one_version(
    tmp_path: Path, model_dir: Path, round_: int
) -> None:
    """A retried deploy task beside the original (Vertex retries a task it thinks lost)."""
    db, models = str(tmp_path / "reg.sqlite"), str(tmp_path / "models")
    LocalRegistry(db, models, "m")  # the schema, once
    barrier = multiprocessing.get_context("fork").Barrier(2)
    assert run_at_once(_register_run, [(db, models, str(model_dir), barrier)] * 2) == [0, 0]
    registry = LocalRegistry(db, models, "m")
    assert [v.version for v in registry.versions()] == [1]
    assert [e.action for e in registry.audit_log()].count("register") == 1


def _replace_with(db: str, models: str, version: int, barrier: "multiprocessing.synchronize.Barrier") -> None:
    from stt_flywheel.deployment.strategies import replace_deployment

    registry = LocalRegistry(db, models, "m")
    barrier.wait(10)
    replace_deployment(registry, LocalEndpoint(registry, "ep"), version, reason=f"to v{version}")


@pytest.mark.parametrize("round_", range(15))
def test_two_promotions_at_once_leave_default_and_traffic_on_one_version(
    tmp_path: Path, model_dir: Path, round_: int
) -> None:
    """Once, 7 of 15 rounds left `default` on v2 while v3 served 100 %, both reporting success."""
    db, models = str(tmp_path / "reg.sqlite"), str(tmp_path / "models")
    registry = LocalRegistry(db, models, "m")
    for _ in range(3):
        registry.register(model_dir)
    registry.promote(1)
    LocalEndpoint(registry, "ep").deploy(1)
    barrier = multiprocessing.get_context("fork").Barrier(2)
    assert run_at_once(_replace_with, [(db, models, v, barrier) for v in (2, 3)]) == [0, 0]
    registry = LocalRegistry(db, models, "m")
    split = LocalEndpoint(registry, "ep").traffic()
    default = registry.aliases()["default"]
    assert split == {default: 100}, (split, registry.aliases())
    assert default in (2, 3)


def test_a_damaged_version_is_not_deployed(tmp_path: Path, model_dir: Path) -> None:
    from stt_flywheel.deployment.strategies import replace_deployment

    registry = LocalRegistry(tmp_path / "reg.sqlite", tmp_path / "models", "m")
    v1 = registry.register(model_dir)
    v2 = registry.register(model_dir)
    endpoint = LocalEndpoint(registry, "ep")
    replace_deployment(registry, endpoint, v1.version, reason="first")
    assert registry.verify(v2.version) == []
    weights = Path(v2.uri) / "weights.bin"
    weights.write_bytes(bytes(b ^ 0xFF for b in weights.read_bytes()))  # same size, other bytes
    (Path(v2.uri) / "config.json").unlink()
    assert sorted(registry.verify(v2.version)) == ["config.json is missing", "weights.bin changed"]
    with pytest.raises(RegistryError, match="version 2's files are damaged"):
        replace_deployment(registry, endpoint, v2.version, reason="second")
    assert endpoint.traffic() == {1: 100}
    assert registry.aliases() == {"default": 1}


def _prune_forever(db: str, models: str) -> None:
    registry = LocalRegistry(db, models, "m")
    registry.prune(keep=2)


@pytest.mark.parametrize("round_", range(5))
def test_a_prune_killed_midway_leaves_every_remaining_version_whole(tmp_path: Path, round_: int) -> None:
    """Once, a kill -9 during pruning deleted files before the commit: the row survived with
    most of its files gone, and still looked valid."""
    import os
    import signal
    import time

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    for i in range(3000):
        (model / f"shard-{i:04d}.bin").write_bytes(b"\x00" * 64)
    db, models = str(tmp_path / "reg.sqlite"), str(tmp_path / "models")
    registry = LocalRegistry(db, models, "m")
    for _ in range(4):
        registry.register(model)
    ctx = multiprocessing.get_context("fork")
    proc = ctx.Process(target=_prune_forever, args=(db, models))
    proc.start()
    time.sleep(0.05 + 0.03 * round_)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    registry = LocalRegistry(db, models, "m")
    for v in registry.versions():
        assert registry.verify(v.version) == [], f"v{v.version} is registered but damaged"


def test_a_register_killed_mid_copy_leaves_nothing_behind(tmp_path: Path, model_dir: Path) -> None:
    import subprocess
    import sys

    models = tmp_path / "models"
    partial = models / "m" / ".v1.999999999.tmp"  # the copy a dead process was making
    partial.mkdir(parents=True)
    (partial / "weights.bin").write_bytes(b"\x00" * 1024)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    partial_of_dead_pid = models / "m" / f".v2.{dead.pid}.tmp"
    partial_of_dead_pid.mkdir()
    LocalRegistry(tmp_path / "reg.sqlite", models, "m")
    assert not partial_of_dead_pid.exists()
    assert not partial.exists()


def test_only_the_model_that_was_trained_is_registered(tmp_path: Path, model_dir: Path) -> None:
    """The digest training recorded travels in the lineage; a directory whose content changed
    since (a file swapped between the stages) is refused, and nothing is registered."""
    from stt_flywheel.errors import FlywheelError
    from stt_flywheel.storage.files import tree_digest

    registry = LocalRegistry(tmp_path / "reg.sqlite", tmp_path / "models", "m")
    trained = tree_digest(model_dir)
    (model_dir / "weights.bin").write_bytes(b"\x02" * 64)  # swapped after training
    with pytest.raises(FlywheelError, match="not the model that was trained"):
        registry.register(model_dir, source_run="r1", lineage={"model_digest": trained})
    assert registry.versions() == []
    v = registry.register(model_dir, source_run="r1", lineage={"model_digest": tree_digest(model_dir)})
    assert v.version == 1 and registry.verify(1) == []


def test_a_stage_refuses_a_model_that_changed_since_training(
    tmp_path: Path, flywheel_config: tuple, model_dir: Path
) -> None:
    from entries import train_entry

    from stt_flywheel.errors import StateError
    from stt_flywheel.run.entries import TrainEntry
    from stt_flywheel.run.ledger import read_ledger, write_ledger
    from stt_flywheel.run.stages import _check_trained
    from stt_flywheel.storage.files import tree_digest

    _, config = flywheel_config
    artifact = tmp_path / "artifact"
    (artifact / "model").mkdir(parents=True)
    for f in model_dir.iterdir():
        (artifact / "model" / f.name).write_bytes(f.read_bytes())
    write_ledger(config, "run-9", train_entry(model_digest=tree_digest(artifact / "model")))
    trained = read_ledger(config, "run-9", TrainEntry)
    assert _check_trained(trained, "run-9", artifact) == tree_digest(artifact / "model")
    (artifact / "model" / "weights.bin").write_bytes(b"tampered")
    with pytest.raises(StateError, match="not what training saved"):
        _check_trained(trained, "run-9", artifact)
