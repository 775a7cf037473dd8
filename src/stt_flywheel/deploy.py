"""Stage 6: register the candidate and move traffic to it — only when both verdicts passed.

The deployer re-checks the verdicts itself (a gate skipped upstream must not deploy anything), and
a retried deploy of the same run re-uses the version it registered the first time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stt_flywheel.endpoint import LocalEndpoint
from stt_flywheel.registry import LocalRegistry, RegistryError

__all__ = ["DeployOutcome", "manual_promotion", "promote_candidate"]


@dataclass
class DeployOutcome:
    action: str  # deployed | registered | rejected
    version: int | None
    replaced: int | None
    reasons: list[str] = field(default_factory=list)
    pruned: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def to_markdown(self) -> str:
        head = {
            "deployed": f"**Deployed version {self.version}** (replacing {self.replaced}).",
            "registered": f"**Registered version {self.version}** with alias `candidate`; not deployed.",
            "rejected": "**Not deployed.**",
        }[self.action]
        lines = ["# Deployment", "", head, ""] + [f"- {r}" for r in self.reasons]
        if self.pruned:
            lines.append(f"- pruned versions: {', '.join(map(str, self.pruned))}")
        return "\n".join(lines) + "\n"


def promote_candidate(
    registry: LocalRegistry,
    endpoint: LocalEndpoint,
    candidate_dir: str,
    *,
    validation: dict[str, Any],
    regression: dict[str, Any],
    auto_deploy: bool,
    keep_versions: int,
    dataset_version: str | None,
    data_watermark: str | None,
    run_id: str | None,
    metrics: dict[str, Any],
) -> DeployOutcome:
    failed = [v for v in (validation, regression) if not v.get("passed")]
    if failed:
        reasons = [
            f"{v.get('stage', 'verdict')}: {r}" for v in failed for r in v.get("reasons", ["missing verdict"])
        ]
        return DeployOutcome("rejected", None, None, reasons)
    production = registry.resolve("default")
    version = registry.register(
        candidate_dir,
        dataset_version=dataset_version,
        data_watermark=data_watermark,
        source_run=run_id,
        metrics=metrics,
        lineage={"parent_version": production.version if production else None, "run": run_id},
        evaluation={"validation": validation, "regression": regression},
    )
    if not auto_deploy:
        registry.set_alias("candidate", version.version)
        return DeployOutcome("registered", version.version, None, ["auto_deploy is off"])
    replaced = registry.promote(version.version, reason=f"pipeline run {run_id}")
    endpoint.deploy(version.version, reason=f"pipeline run {run_id}")
    pruned = registry.prune(keep_versions)
    return DeployOutcome(
        "deployed", version.version, replaced, ["validation and regression suites passed"], pruned
    )


def _failed_gates(evaluation: dict[str, Any]) -> list[str]:
    """Names of the failed gates in a stored evaluation; a missing verdict counts as failed."""
    failed = []
    for stage in ("validation", "regression"):
        verdict = evaluation.get(stage)
        if not isinstance(verdict, dict) or "passed" not in verdict:
            failed.append(f"{stage}: no verdict")
        elif not verdict["passed"]:
            failed += [f"{stage}: {g['name']}" for g in verdict.get("gates", []) if not g.get("passed")] or [
                f"{stage}: rejected"
            ]
    return failed


def manual_promotion(
    registry: LocalRegistry,
    endpoint: LocalEndpoint,
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
    replaced = registry.promote(version, reason=reason)
    endpoint.deploy(version, reason=reason)
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
