"""Stage 6: register the candidate and move traffic to it — only when both verdicts passed.

The deployer re-checks the verdicts itself (a gate skipped upstream must not deploy anything), and
a retried deploy of the same run re-uses the version it registered the first time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stt_flywheel.endpoint import LocalEndpoint
from stt_flywheel.registry import LocalRegistry

__all__ = ["DeployOutcome", "promote_candidate"]


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
