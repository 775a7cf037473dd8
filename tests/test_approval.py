"""Approval before spending a GPU (`trigger.require_approval`): propose, approve, train once, lapse."""

import multiprocessing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import Cli, run_at_once

from stt_flywheel.config import FlywheelConfig
from stt_flywheel.deployment.backends import open_registry
from stt_flywheel.errors import FlywheelError
from stt_flywheel.monitoring.status import system_status
from stt_flywheel.run.approval import approve, claim_approved, list_proposals, propose
from stt_flywheel.run.entries import TriggerEntry
from stt_flywheel.run.lease import RUN_LEASE
from stt_flywheel.run.ledger import read_ledger
from stt_flywheel.run.stages import bootstrap_registry, stage_check_trigger
from stt_flywheel.storage.leases import read_lease
from stt_flywheel.storage.objectstore import LocalStore, open_store

MACHINE = {"accelerator": "1 x NVIDIA_L4", "cpu": "8", "memory": "32G"}


@pytest.fixture
def gated(tmp_path: Path, config_factory) -> tuple[Path, FlywheelConfig]:  # type: ignore[no-untyped-def]
    """A config whose trigger always fires (forced) and needs approval before training."""
    path, config = config_factory(tmp_path, trigger={"force": True, "require_approval": True})
    bootstrap_registry(config)
    return path, config


def _lease_free(config: FlywheelConfig, now: datetime) -> bool:
    lease = read_lease(open_store(config.paths.state), RUN_LEASE)
    return lease is None or lease.expired(now)


def test_a_fired_trigger_proposes_and_the_run_ends_without_training(gated: tuple) -> None:
    _, config = gated
    first = stage_check_trigger(config, "run-1", machine=MACHINE)
    assert first.should_train is False
    assert first.proposal is not None
    pid = first.proposal["id"]
    assert first.blocked_by is not None
    assert f"needs approval: proposal {pid} recorded" in first.blocked_by
    assert f"stt-flywheel approve {pid}" in first.blocked_by
    assert first.proposal["machine"] == MACHINE
    assert first.proposal["state"] == "pending"
    assert "forced" in first.proposal["evidence"]["summary"]
    assert _lease_free(config, datetime.now(UTC))  # proposing holds nothing
    ledger = read_ledger(config, "run-1", TriggerEntry)
    assert ledger is not None and ledger.proposal is not None
    assert ledger.proposal["id"] == pid
    second = stage_check_trigger(config, "run-2", machine=MACHINE)  # the next tick waits on the same one
    assert second.should_train is False
    assert second.proposal is not None
    assert second.proposal["id"] == pid
    assert second.blocked_by is not None
    assert "waiting since" in second.blocked_by
    assert len(list_proposals(open_store(config.paths.state))) == 1


def test_a_proposal_quotes_what_the_last_run_that_trained_cost(gated: tuple, cli: Cli) -> None:
    from stt_flywheel.run.costs import record_stage_time

    path, config = gated
    open_store(config.paths.reports).write("run-0/trigger.json", b"{}")
    record_stage_time(config, "run-0", "train", 1800.0)  # half an hour on the default g2-standard-8
    proposal = stage_check_trigger(config, "run-1", machine=MACHINE).proposal
    assert proposal is not None
    assert proposal["cost_line"].startswith("about 0.52 USD (as run run-0 measured")
    code, out, _ = cli("proposals", "list", "--config", str(path))
    assert code == 0 and "about 0.52 USD" in out


def test_an_approved_proposal_lets_exactly_one_run_train(gated: tuple, cli: Cli) -> None:
    path, config = gated
    pid = stage_check_trigger(config, "run-1", machine=MACHINE).proposal["id"]  # type: ignore[index]
    view = system_status(config)
    assert [p["id"] for p in view.proposals] == [pid]
    status, out, err = cli("status", "--config", str(path))
    assert status == 0, err
    assert f"Proposal {pid} pending" in out
    assert f"stt-flywheel approve {pid}" in out

    status, out, err = cli("approve", pid, "--config", str(path), "--reason", "budget agreed for November")
    assert status == 0, err
    assert f"approved {pid}" in out
    audit = [e for e in open_registry(config).audit_log() if e.action == "approve"]
    assert len(audit) == 1
    assert audit[0].detail["proposal"] == pid
    assert audit[0].detail["reason"] == "budget agreed for November"
    status, _, err = cli("approve", pid, "--config", str(path))
    assert status == 1
    assert "is approved: approved already by" in err
    assert "Traceback" not in err

    trained = stage_check_trigger(config, "run-2", machine=MACHINE)
    assert trained.should_train is True
    assert trained.proposal is not None
    assert trained.proposal["id"] == pid
    assert trained.proposal["claimed"]["run_id"] == "run-2"
    assert f"approved by {audit[0].detail['by']} (proposal {pid})" in trained.summary
    lease = read_lease(open_store(config.paths.state), RUN_LEASE)
    assert lease is not None
    assert lease.holder == "run-2"  # it trains: it holds the run lease as any run does
    open_store(config.paths.state).delete(f"leases/{RUN_LEASE}.json")  # as run-2's last stage would

    after = stage_check_trigger(config, "run-3", machine=MACHINE)  # one approval, one training run
    assert after.should_train is False
    assert after.proposal is not None
    assert after.proposal["id"] != pid
    status, out, _ = cli("proposals", "list", "--config", str(path))
    assert status == 0
    assert "trained" in out
    assert "pending" in out


def test_proposals_lapse_and_mistakes_are_one_line(gated: tuple, cli: Cli) -> None:
    path, config = gated
    made = datetime(2026, 11, 1, 9, tzinfo=UTC)
    pid = stage_check_trigger(config, "run-1", now=made, machine=MACHINE).proposal["id"]  # type: ignore[index]
    status, _, err = cli("approve", "p-nonesuch", "--config", str(path))
    assert status == 1
    assert f"no proposal 'p-nonesuch'; pending: {pid}" in err or "none is pending" in err
    later = made + timedelta(hours=config.trigger.approval_expiry_hours + 1)
    store = open_store(config.paths.state)
    with pytest.raises(FlywheelError, match="expired at"):
        approve(store, pid, "too late", now=later)
    fresh = stage_check_trigger(config, "run-2", now=later, machine=MACHINE)
    assert fresh.proposal is not None
    assert fresh.proposal["id"] != pid
    assert "recorded" in (fresh.blocked_by or "")
    states = {p.id: p.state(later) for p in list_proposals(store)}
    assert states == {pid: "expired", fresh.proposal["id"]: "pending"}


def _approve_race(root: str, pid: str, who: str, results: "multiprocessing.Queue[str]") -> None:
    try:
        approve(LocalStore(root), pid, "race", by=who)
        results.put(f"won:{who}")
    except FlywheelError as exc:
        results.put(f"lost:{who}:{exc}")


def _claim_race(root: str, run_id: str, results: "multiprocessing.Queue[str]") -> None:
    claimed = claim_approved(LocalStore(root), run_id)
    results.put(f"claimed:{run_id}" if claimed else f"none:{run_id}")


@pytest.mark.parametrize("round_", range(5))
def test_two_approvers_and_two_runs_at_once_have_one_winner_each(tmp_path: Path, round_: int) -> None:
    root = str(tmp_path / "state")
    store = LocalStore(root)
    proposal, new = propose(
        store, run_id="r", evidence={}, dataset={}, machine=MACHINE, ttl=timedelta(hours=1)
    )
    assert new
    results: multiprocessing.Queue[str] = multiprocessing.get_context("fork").Queue()
    run_at_once(_approve_race, [(root, proposal.id, f"u{k}", results) for k in range(2)])
    outcomes = sorted(results.get(timeout=5) for _ in range(2))
    assert [o.split(":")[0] for o in outcomes] == ["lost", "won"], outcomes
    assert "approved" in outcomes[0]  # the loser is told, in words
    run_at_once(_claim_race, [(root, f"run-{k}", results) for k in range(2)])
    claims = sorted(results.get(timeout=5) for _ in range(2))
    assert [c.split(":")[0] for c in claims] == ["claimed", "none"], claims
    (only,) = list_proposals(store)
    assert only.claimed is not None
    assert f"claimed:{only.claimed['run_id']}" in claims
