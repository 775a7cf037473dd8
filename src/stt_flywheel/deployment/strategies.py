"""Stage 6: register the candidate and move traffic to it — only when both verdicts passed.

The deployer re-checks the verdicts itself (a gate skipped upstream must not deploy anything), and
a retried deploy of the same run re-uses the version it registered the first time.

Strategies work on any registry + endpoint pair (embedded or Vertex AI, see `Registry` and
`Endpoint`):

- `replace`: the candidate takes 100 % of traffic, the others are undeployed, then `default` moves
  to it and `previous` to the old default. A failed deploy leaves the old model at 100 %.
- `canary`: the candidate serves `canary_percent` beside the models already serving (their shares
  scaled down) and carries the alias `candidate`; `promote_canary` gives it 100 %, undeploys the
  rest and moves the aliases; `rollback` ends a canary (traffic back, candidate undeployed) or, with
  none in flight, points `default` back at `previous` and its traffic with it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

from stt_flywheel.deployment.protocols import Endpoint, Registry
from stt_flywheel.deployment.registry import RegistryError
from stt_flywheel.evaluation.gates import StoredVerdict

P = ParamSpec("P")
R = TypeVar("R")

__all__ = [
    "Candidate",
    "DeployOutcome",
    "DeployPolicy",
    "manual_promotion",
    "promote_canary",
    "promote_candidate",
    "replace_deployment",
    "rollback",
    "serving_state",
    "start_canary",
]


def _one_at_a_time(change: Callable[P, R]) -> Callable[P, R]:
    """The change holds the registry's lock over what serves (`Registry.exclusive`), so two at
    once (a scheduled run's promotion beside a person's rollback) run one after the other."""

    @functools.wraps(change)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        registry: Registry = kwargs["registry"] if "registry" in kwargs else args[0]  # type: ignore[assignment]
        with registry.exclusive():
            return change(*args, **kwargs)

    return run


def _whole(registry: Registry, version: int) -> None:
    """Refuse to serve a version whose files are not those it was registered with."""
    problems = registry.verify(version)
    if problems:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        raise RegistryError(f"version {version}'s files are damaged ({shown}); it was not deployed")


@_one_at_a_time
def replace_deployment(registry: Registry, endpoint: Endpoint, version: int, reason: str) -> int | None:
    """`version` takes all traffic, the rest is undeployed, then the aliases move. Returns the old default."""
    _whole(registry, version)
    endpoint.deploy(version, 100, reason=reason)
    undeployed = [v for v in endpoint.traffic() if v != version]
    for other in undeployed:
        endpoint.undeploy(other, reason=f"replaced by v{version}")
    replaced = registry.promote(version, reason=reason)
    _end_stale_canary(registry, version, undeployed)
    return replaced


@_one_at_a_time
def start_canary(registry: Registry, endpoint: Endpoint, version: int, percent: int, reason: str) -> None:
    """`version` serves `percent` beside the default and becomes the `candidate`."""
    default = registry.resolve("default")
    if default is not None and default.version == version:  # read under the lock: it may have just moved
        raise RegistryError(f"v{version} is the default already; a canary needs another version")
    current = registry.resolve("candidate")
    if current is not None and current.version != version and endpoint.traffic().get(current.version):
        raise RegistryError(f"canary v{current.version} is in flight; promote it or roll it back first")
    _whole(registry, version)
    endpoint.deploy(version, percent, reason=reason)
    registry.set_alias("candidate", version)


@_one_at_a_time
def promote_canary(registry: Registry, endpoint: Endpoint, reason: str) -> DeployOutcome:
    candidate = registry.resolve("candidate")
    if candidate is None or candidate.version not in endpoint.traffic():
        raise RegistryError("no canary to promote: no deployed version carries the alias 'candidate'")
    split = endpoint.traffic()
    endpoint.set_traffic({v: (100 if v == candidate.version else 0) for v in split}, reason=reason)
    for other in [v for v in split if v != candidate.version]:
        endpoint.undeploy(other, reason=f"canary v{candidate.version} promoted")
    replaced = registry.promote(candidate.version, reason=reason)
    return DeployOutcome("deployed", candidate.version, replaced, [f"canary promoted: {reason}"])


@_one_at_a_time
def rollback(registry: Registry, endpoint: Endpoint, reason: str) -> DeployOutcome:
    """End a canary in flight, or else put `previous` back as `default` with all the traffic."""
    split = endpoint.traffic()
    candidate = registry.resolve("candidate")
    default = registry.resolve("default")
    if candidate is not None and candidate.version in split and default is not None:
        if default.version in split:
            endpoint.set_traffic({v: (100 if v == default.version else 0) for v in split}, reason=reason)
        else:
            endpoint.deploy(default.version, 100, reason=reason)
        endpoint.undeploy(candidate.version, reason=f"canary rolled back: {reason}")
        registry.remove_alias("candidate")
        registry.record("rollback", default.version, {"canary": candidate.version, "reason": reason})
        return DeployOutcome("rolled_back", default.version, candidate.version, [f"canary ended: {reason}"])
    bad, good = registry.rollback(reason)
    if good in endpoint.traffic():
        endpoint.set_traffic({v: (100 if v == good else 0) for v in endpoint.traffic()}, reason=reason)
    else:
        endpoint.deploy(good, 100, reason=reason)
    undeployed = [v for v in endpoint.traffic() if v != good]
    for other in undeployed:
        endpoint.undeploy(other, reason=f"rolled back to v{good}")
    _end_stale_canary(registry, good, undeployed)
    return DeployOutcome("rolled_back", good, bad, [reason])


def _end_stale_canary(registry: Registry, serving: int, undeployed: list[int]) -> None:
    """After all traffic went to `serving`, a `candidate` that was undeployed (its canary ended)
    or that is now the default names no canary any more. A candidate registered for a person to
    promote, never deployed, keeps its alias."""
    candidate = registry.resolve("candidate")
    if candidate is not None and (candidate.version == serving or candidate.version in undeployed):
        registry.remove_alias("candidate")


@dataclass
class DeployOutcome:
    action: str  # deployed | canary | registered | rejected | failed | rolled_back
    version: int | None
    replaced: int | None
    reasons: list[str] = field(default_factory=list)
    pruned: list[int] = field(default_factory=list)
    # what served before and after: {"endpoint", "strategy", "traffic": {version: percent}, "aliases"}
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def to_markdown(self, context: str = "") -> str:
        head = {
            "deployed": f"**Deployed version {self.version}** (replacing {self.replaced}).",
            "registered": f"**Registered version {self.version}** with alias `candidate`; not deployed.",
            "canary": f"**Canary: version {self.version}** serves part of the traffic beside the default.",
            "rejected": "**Not deployed.**",
            "failed": f"**Deploying version {self.version} failed**; the endpoint kept its traffic.",
            "rolled_back": f"**Rolled back to version {self.version}** (from {self.replaced}).",
        }[self.action]
        lines = ["# Deployment", ""] + ([context, ""] if context else []) + [head, ""]
        lines += [f"- {r}" for r in self.reasons]
        if self.pruned:
            lines.append(f"- pruned versions: {', '.join(map(str, self.pruned))}")
        if self.before or self.after:
            where = self.after or self.before
            lines += [
                "",
                f"Endpoint `{where.get('endpoint')}`, strategy `{where.get('strategy')}`.",
                "",
                "| | traffic | aliases |",
                "|---|---|---|",
            ]
            for label, state in (("before", self.before), ("after", self.after)):
                lines.append(
                    f"| {label} | {_split(state.get('traffic', {}))} | {_aliases(state.get('aliases', {}))} |"
                )
        return "\n".join(lines) + "\n"


def _split(traffic: dict[Any, int]) -> str:
    return (
        ", ".join(f"v{v} {p} %" for v, p in sorted(traffic.items(), key=lambda x: int(x[0])))
        or "nothing deployed"
    )


def _aliases(aliases: dict[str, int]) -> str:
    return ", ".join(f"{a} → v{v}" for a, v in sorted(aliases.items())) or "none"


def serving_state(registry: Registry, endpoint: Endpoint, strategy: str) -> dict[str, Any]:
    """What serves now: the endpoint, its traffic split and the registry's aliases."""
    return {
        "endpoint": endpoint.name,
        "strategy": strategy,
        "traffic": {str(v): share for v, share in endpoint.traffic().items()},  # JSON keys are strings
        "aliases": registry.aliases(),
    }


@dataclass(frozen=True)
class Candidate:
    """A run's candidate as the deployer registers it: its files, its two stored verdicts (re-checked
    here), the data it learnt from, its headline metrics and how it was made."""

    model_dir: str
    validation: dict[str, Any]
    regression: dict[str, Any]
    dataset_version: str | None
    data_watermark: str | None
    run_id: str | None
    metrics: dict[str, Any] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DeployPolicy:
    """How a candidate that passed reaches traffic (from `deploy.*` and the monitor's steps)."""

    auto_deploy: bool
    keep_versions: int
    strategy: str = "replace"
    canary_percent: int = 10


@_one_at_a_time
def promote_candidate(
    registry: Registry, endpoint: Endpoint, candidate: Candidate, policy: DeployPolicy
) -> DeployOutcome:
    """Register the candidate (with its lineage: how it was made) and deploy it by the policy's
    strategy, or reject it when a verdict did not pass."""
    validation, regression = candidate.validation, candidate.regression
    verdicts = [StoredVerdict.read("validation", validation), StoredVerdict.read("regression", regression)]
    failed = [v for v in verdicts if not v.passed]
    if failed:
        return DeployOutcome("rejected", None, None, [f"{v.stage}: {r}" for v in failed for r in v.reasons])
    production = registry.resolve("default")
    run_id = candidate.run_id
    version = registry.register(
        candidate.model_dir,
        dataset_version=candidate.dataset_version,
        data_watermark=candidate.data_watermark,
        source_run=run_id,
        metrics=candidate.metrics,
        lineage={
            "parent_version": production.version if production else None,
            "run": run_id,
            **candidate.lineage,
        },
        evaluation={"validation": validation, "regression": regression},
    )
    if not policy.auto_deploy:
        registry.set_alias("candidate", version.version)
        return DeployOutcome("registered", version.version, None, ["auto_deploy is off"])
    reason = f"pipeline run {run_id}"
    if policy.strategy == "canary":
        start_canary(registry, endpoint, version.version, policy.canary_percent, reason)
        pruned = registry.prune(policy.keep_versions)
        return DeployOutcome(
            "canary",
            version.version,
            None,
            [f"validation and regression suites passed; serving {policy.canary_percent}% as a canary"],
            pruned,
        )
    try:
        replaced = replace_deployment(registry, endpoint, version.version, reason)
    except RegistryError as exc:  # the endpoint refused: the serving model keeps its traffic
        registry.set_alias("candidate", version.version)
        return DeployOutcome("failed", version.version, None, [f"deploy failed: {exc}"])
    pruned = registry.prune(policy.keep_versions)
    return DeployOutcome(
        "deployed", version.version, replaced, ["validation and regression suites passed"], pruned
    )


def _failed_gates(evaluation: dict[str, Any]) -> list[str]:
    """Names of the failed gates in a stored evaluation; a missing verdict counts as failed."""
    failed = []
    for stage in ("validation", "regression"):
        if stage not in evaluation:
            failed.append(f"{stage}: no verdict")
            continue
        verdict = StoredVerdict.read(stage, evaluation[stage])
        if not verdict.passed:
            failed += [f"{stage}: {name}" for name in verdict.failed_gates()] or [f"{stage}: rejected"]
    return failed


@_one_at_a_time
def manual_promotion(
    registry: Registry,
    endpoint: Endpoint,
    *,
    reason: str,
    version: int | None = None,
    candidate_dir: str | None = None,
    evaluation: dict[str, Any] | None = None,
    run_id: str | None = None,
    force: bool = False,
) -> DeployOutcome:
    """Promote and deploy a version by hand: a registered one, or a run's candidate (registered first,
    with the evaluation that judged it).

    A version whose evaluation did not pass both stages is promoted only with `force` and a reason;
    the audit log records the reason, the failed gates and the version it overrode.
    """
    if not reason.strip():
        raise RegistryError("a manual promotion needs a reason (it goes into the audit log)")
    if version is None:
        if candidate_dir is None:
            raise RegistryError("name a registered version or a run whose candidate to promote")
        evaluation = evaluation or {}
        registered = registry.register(
            candidate_dir,
            source_run=run_id,
            metrics=evaluation.get("validation", {}).get("metrics", {}),
            lineage={"run": run_id, "registered_by": "manual promotion"},
            evaluation=evaluation,
        )
        version = registered.version
    current = registry.get(version)
    failed = _failed_gates(current.evaluation)
    if failed and not force:
        raise RegistryError(
            f"version {version} did not pass its evaluation ({'; '.join(failed[:4])}); "
            "promoting it anyway needs --force with a --reason"
        )
    replaced = replace_deployment(registry, endpoint, version, reason)
    if failed:
        registry.record(
            "forced_promotion", version, {"overrode": replaced, "reason": reason, "failed_gates": failed}
        )
    return DeployOutcome(
        "deployed",
        version,
        replaced,
        [f"forced past {len(failed)} failed gates: {reason}" if failed else f"manual promotion: {reason}"],
    )
