"""Approval before spending a GPU: with `trigger.require_approval`, a fired trigger proposes a
training run, and a person says yes before any run trains on it.

A proposal lives in the run-state store as objects that are only ever created, never rewritten,
so it works the same on a directory and on `gs://`, and every race has one winner:

    proposals/<id>/proposal.json   the evidence, the dataset it would build, the machine
    proposals/<id>/approval.json   who said yes, when and why (`stt-flywheel approve`)
    proposals/<id>/claimed.json    the run that trained on it (one run per approval)

A proposal expires `trigger.approval_expiry_hours` after it was made, approved or not; the next
run whose trigger fires then proposes afresh, with the evidence of that moment.

Proposals are of two kinds: a fired trigger's (`trigger`), and a retraining without a person
`forget --propose-retraining` removed (`retrain-without`, `run.proposed`). Each kind waits on its
own: a pending trigger proposal does not hide a retraining, nor the other way round.
"""

from __future__ import annotations

import getpass
import secrets
import socket
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from stt_flywheel.errors import InputError, StateError
from stt_flywheel.storage.objectstore import ObjectStore, PreconditionFailed

__all__ = [
    "RETRAIN",
    "TRIGGER",
    "Proposal",
    "approve",
    "claim_approved",
    "list_proposals",
    "propose",
    "who",
]

PREFIX = "proposals/"
TRIGGER = "trigger"  # a fired trigger's proposal
RETRAIN = "retrain-without"  # a retraining without the people forget requests removed


@dataclass(frozen=True)
class Proposal:
    id: str
    proposed_by_run: str
    created_at: str
    expires_at: str
    evidence: dict[str, Any]  # the trigger's summary, checks and counts
    dataset: dict[str, Any]  # the data it would train on: watermarks, corrected cases
    machine: dict[str, Any]  # the trainer's machine the pipeline asks for
    approval: dict[str, Any] | None = None
    claimed: dict[str, Any] | None = None
    kind: str = TRIGGER
    cost: dict[str, Any] | None = None  # the latest measured run that trained (`RunCost`): an estimate

    def state(self, now: datetime) -> str:
        """pending → approved → trained; or expired (an unclaimed proposal past its time)."""
        if self.claimed:
            return "trained"
        if datetime.fromisoformat(self.expires_at) <= now:
            return "expired"
        return "approved" if self.approval else "pending"

    @property
    def what(self) -> str:
        """What it would train on, in a few words."""
        if self.kind == RETRAIN:
            learnt = ", ".join(f"v{v}" for v in self.evidence.get("learnt_by_versions", []))
            return f"retrain without forget request {self.evidence.get('forget_request', '?')[:12]} ({learnt} learnt from them)"
        return f"{self.dataset.get('corrected_cases', '?')} corrected cases"

    @property
    def cost_line(self) -> str:
        """What a run like it cost last time, or that none was measured yet."""
        c = self.cost
        if not c or c.get("total") is None:
            return "cost not measured yet"
        return f"about {c['total']:.2f} {c['currency']} (as run {c['run_id']} measured; list prices of {c['prices_as_of']})"

    def as_dict(self, now: datetime | None = None) -> dict[str, Any]:
        state = self.state(now or datetime.now(UTC))
        return {**asdict(self), "state": state, "what": self.what, "cost_line": self.cost_line}


def who() -> str:
    """Who is acting, as the audit log names them: user@host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _read(store: ObjectStore, key: str) -> dict[str, Any] | None:
    found = store.read(key)
    return orjson.loads(found.data) if found is not None else None


def _load(store: ObjectStore, proposal_id: str) -> Proposal | None:
    body = _read(store, f"{PREFIX}{proposal_id}/proposal.json")
    if body is None:
        return None
    return Proposal(
        **body,
        approval=_read(store, f"{PREFIX}{proposal_id}/approval.json"),
        claimed=_read(store, f"{PREFIX}{proposal_id}/claimed.json"),
    )


def list_proposals(store: ObjectStore) -> list[Proposal]:
    """Every proposal, newest first."""
    ids = {key[len(PREFIX) :].split("/")[0] for key in store.list(PREFIX) if key.endswith("/proposal.json")}
    found = [p for p in (_load(store, i) for i in ids) if p is not None]
    return sorted(found, key=lambda p: p.created_at, reverse=True)


def propose(
    store: ObjectStore,
    *,
    run_id: str,
    evidence: dict[str, Any],
    dataset: dict[str, Any],
    machine: dict[str, Any],
    ttl: timedelta,
    now: datetime | None = None,
    kind: str = TRIGGER,
    cost: dict[str, Any] | None = None,
) -> tuple[Proposal, bool]:
    """The proposal of this kind waiting for a person: the pending one that has not expired, else
    a new one. Returns it and whether it is new. Callers hold the run lease, so two runs never
    both propose; a retraining is proposed afresh for each forget request (`evidence` differs)."""
    now = now or datetime.now(UTC)
    for existing in list_proposals(store):
        if existing.kind != kind or existing.state(now) not in ("pending", "approved"):
            continue
        if kind == TRIGGER or existing.evidence == evidence:
            return existing, False
    proposal = Proposal(
        id=f"p-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}",
        proposed_by_run=run_id,
        created_at=now.isoformat(),
        expires_at=(now + ttl).isoformat(),
        evidence=evidence,
        dataset=dataset,
        machine=machine,
        kind=kind,
        cost=cost,
    )
    body = {k: v for k, v in asdict(proposal).items() if k not in ("approval", "claimed")}
    store.create(f"{PREFIX}{proposal.id}/proposal.json", orjson.dumps(body))
    return proposal, True


def approve(
    store: ObjectStore, proposal_id: str, reason: str, by: str | None = None, now: datetime | None = None
) -> Proposal:
    """Say yes to a pending proposal. An unknown, expired, already approved or trained proposal is
    a clear error; of two people approving at once, one wins and the other is told."""
    now = now or datetime.now(UTC)
    proposal = _load(store, proposal_id)
    if proposal is None:
        known = [p.id for p in list_proposals(store) if p.state(now) == "pending"]
        hint = f"; pending: {', '.join(known)}" if known else "; none is pending"
        raise InputError(f"no proposal {proposal_id!r}{hint}")
    state = proposal.state(now)
    if state != "pending":
        detail = {
            "approved": f"approved already by {(proposal.approval or {}).get('by')}",
            "trained": f"trained on already by run {(proposal.claimed or {}).get('run_id')}",
            "expired": f"expired at {proposal.expires_at}; the next run whose trigger fires proposes afresh",
        }[state]
        raise StateError(f"proposal {proposal_id} is {state}: {detail}")
    approval = {"by": by or who(), "at": now.isoformat(), "reason": reason}
    try:
        store.create(f"{PREFIX}{proposal_id}/approval.json", orjson.dumps(approval))
    except PreconditionFailed:
        raise StateError(f"proposal {proposal_id} was approved by someone else a moment ago") from None
    return _load(store, proposal_id) or proposal


def claim_approved(
    store: ObjectStore,
    run_id: str,
    now: datetime | None = None,
    kind: str = TRIGGER,
    only: str | None = None,
    **detail: Any,
) -> Proposal | None:
    """The approved, unexpired proposal of this kind (or the one with id `only`) this run may
    train on, claimed for it with `detail` (create-only, so one approval lets one run train);
    None when there is none."""
    now = now or datetime.now(UTC)
    for proposal in list_proposals(store):
        if proposal.kind != kind or proposal.state(now) != "approved" or only not in (None, proposal.id):
            continue
        claim = {"run_id": run_id, "at": now.isoformat(), **detail}
        try:
            store.create(f"{PREFIX}{proposal.id}/claimed.json", orjson.dumps(claim))
        except PreconditionFailed:
            continue  # another run claimed it first
        return _load(store, proposal.id)
    return None
