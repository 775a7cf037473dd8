"""Runs that train on a person's say-so (`run.approval`): a fired trigger's proposal when
`trigger.require_approval` is on, and a retraining without the people a `forget` removed.

A model fine-tuned on a person's corrections keeps what it learnt from them after their rows are
deleted, and so does every version fine-tuned from it. `forget --propose-retraining` proposes a
run that starts from the newest version on the default's line that learnt nothing from anyone a
retraining proposal names (the base model when there is none), on a dataset rebuilt from all
history, which the tombstones already keep them out of. Once approved, the next run trains on it
whatever the trigger's thresholds say; the candidate still passes every gate before it serves.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from stt_flywheel.config import FlywheelConfig
from stt_flywheel.deployment.backends import open_registry
from stt_flywheel.deployment.registry import ModelVersion
from stt_flywheel.run.approval import RETRAIN, Proposal, claim_approved, list_proposals, propose
from stt_flywheel.run.costs import typical_run_cost
from stt_flywheel.run.entries import TriggerEntry
from stt_flywheel.run.lease import release_run_lease, run_state
from stt_flywheel.run.ledger import read_ledger
from stt_flywheel.run.trigger import TriggerDecision

__all__ = [
    "approved_retraining",
    "clean_start",
    "propose_retraining",
    "require_approval",
    "start_version",
    "take_retraining",
]


def clean_start(config: FlywheelConfig, learnt: set[int] | None = None) -> ModelVersion | None:
    """The newest version on the default's line (itself, its parent, …) that neither learnt from
    the people of any retraining proposal (nor of `learnt`) nor descends from one that did; None:
    none is left, start from the base model."""
    learnt = set(learnt or ())
    for proposal in list_proposals(run_state(config)):
        if proposal.kind == RETRAIN:
            learnt |= set(proposal.evidence.get("learnt_by_versions", []))
    registry = open_registry(config)
    versions = {v.version: v for v in registry.versions()}
    line: list[ModelVersion] = []
    current = registry.resolve("default")
    while current is not None and current not in line:
        line.append(current)
        parent = current.lineage.get("parent_version")
        current = versions.get(int(parent)) if parent is not None else None
    tainted = [i for i, v in enumerate(line) if v.version in learnt]
    clean = line[max(tainted) + 1 :] if tainted else line  # below the oldest that learnt from them
    return clean[0] if clean else None


def _estimate(config: FlywheelConfig) -> dict[str, Any] | None:
    measured = typical_run_cost(config)
    return measured.model_dump() if measured else None


def propose_retraining(
    config: FlywheelConfig, *, request: str, learnt_by: list[int], run_id: str, now: datetime
) -> tuple[Proposal, bool]:
    """A retraining without the people of forget request `request`, for a person to approve."""
    start = clean_start(config, set(learnt_by))
    return propose(
        run_state(config),
        run_id=run_id,
        kind=RETRAIN,
        evidence={
            "summary": f"retrain without what forget request {request[:12]} removed",
            "forget_request": request,
            "learnt_by_versions": sorted(learnt_by),
        },
        dataset={
            "start_from_version": start.version if start else None,
            "history": "all, without the forgotten",
        },
        machine={},
        ttl=timedelta(hours=config.trigger.approval_expiry_hours),
        now=now,
        cost=_estimate(config),
    )


def approved_retraining(config: FlywheelConfig, now: datetime | None) -> Proposal | None:
    """An approved retraining waiting for a run; it makes this run train (forced)."""
    at = now or datetime.now(UTC)
    waiting = [
        p for p in list_proposals(run_state(config)) if p.kind == RETRAIN and p.state(at) == "approved"
    ]
    return waiting[-1] if waiting else None  # the oldest first


def take_retraining(
    config: FlywheelConfig, run_id: str, decision: TriggerDecision, proposal: Proposal, now: datetime | None
) -> None:
    """Claim the approved retraining for this run (it holds the run lease), with the version it
    starts from, chosen now; another run that claimed it first stops this one."""
    start = clean_start(config)
    claimed = claim_approved(
        run_state(config),
        run_id,
        now=now,
        kind=RETRAIN,
        only=proposal.id,
        start_from_version=start.version if start else None,
    )
    if claimed is None:
        decision.block(f"retraining {proposal.id} was claimed by another run")
        release_run_lease(config, run_id)
        return
    decision.proposal = claimed.as_dict(now)


def start_version(config: FlywheelConfig, run_id: str) -> ModelVersion | None:
    """The version a run trains from: the default, or for a retraining the clean version its claim
    names (None: the base model)."""
    registry = open_registry(config)
    trigger = read_ledger(config, run_id, TriggerEntry)
    proposal: dict[str, Any] = (trigger.proposal if trigger else None) or {}
    if proposal.get("kind") != RETRAIN or not proposal.get("claimed"):
        return registry.resolve("default")
    number = proposal["claimed"].get("start_from_version")
    return registry.get(int(number)) if number is not None else None


def require_approval(
    config: FlywheelConfig,
    run_id: str,
    decision: TriggerDecision,
    machine: dict[str, Any],
    now: datetime | None,
) -> None:
    """Train on an approved proposal (claiming it), or propose and stop (freeing the run lease)."""
    state = run_state(config)
    approved = claim_approved(state, run_id, now=now)
    if approved is not None:
        decision.proposal = approved.as_dict(now)
        return
    stats = decision.as_dict()["stats"]
    proposal, new = propose(
        state,
        run_id=run_id,
        evidence={"summary": decision.summary, "checks": decision.as_dict()["checks"], "stats": stats},
        dataset={
            "from_watermark": decision.previous_watermark,
            "to_watermark": decision.watermark,
            "corrected_cases": decision.stats.new_corrected_cases,
            "replay_manifest": str(config.dataset.replay_manifest or "") or None,
            "replay_share": config.dataset.replay_share,
        },
        machine=machine,
        ttl=timedelta(hours=config.trigger.approval_expiry_hours),
        now=now,
        cost=_estimate(config),
    )
    decision.proposal = proposal.as_dict(now)
    said = "recorded" if new else f"waiting since {proposal.created_at[:16]}"
    decision.block(
        f"needs approval: proposal {proposal.id} {said} "
        f"(`stt-flywheel approve {proposal.id}`; it lapses at {proposal.expires_at[:16]})"
    )
    release_run_lease(config, run_id)
