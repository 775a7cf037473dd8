"""Deployment strategies on both backends: the embedded registry + endpoint, and Vertex AI through
the real google-cloud-aiplatform SDK against a local fake of the REST API (model files on
fake-gcs-server). Each cycle is checked the same way on both."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes.vertex import ApiError, VertexFake, running_fake
from google.cloud.aiplatform_v1.types import AcceleratorType

from stt_flywheel.config import FlywheelConfig
from stt_flywheel.deployment.backends import open_endpoint, open_registry
from stt_flywheel.deployment.endpoint import LocalEndpoint
from stt_flywheel.deployment.registry import LocalRegistry, RegistryError
from stt_flywheel.deployment.strategies import (
    Candidate,
    DeployPolicy,
    manual_promotion,
    promote_canary,
    promote_candidate,
    replace_deployment,
    rollback,
)

GATE = {"name": "min_wer_improvement", "passed": True, "value": -0.1, "threshold": -0.02, "reason": "ok"}
PASSED = {"stage": "validation", "passed": True, "reasons": ["ok"], "gates": [GATE]}
METRICS = {"wer": 0.2315, "cer": 0.11, "delta_wer": -0.0712, "p_value": 0.001}


class Backend:
    def __init__(self, kind: str, config: FlywheelConfig, fake: VertexFake | None) -> None:
        self.kind, self.config, self.fake = kind, config, fake
        self.registry = open_registry(config)
        self.endpoint = open_endpoint(config, self.registry)

    def candidate(self, model_dir: Path, run: str, strategy: str = "replace", keep: int = 5) -> Any:
        candidate = Candidate(
            model_dir=str(model_dir),
            validation=PASSED,
            regression={**PASSED, "stage": "regression"},
            dataset_version="ds-0123abcd",
            data_watermark="2026-11-25T10:00:00+00:00",
            run_id=run,
            metrics=METRICS,
        )
        policy = DeployPolicy(auto_deploy=True, keep_versions=keep, strategy=strategy, canary_percent=10)
        return promote_candidate(self.registry, self.endpoint, candidate, policy)


@pytest.fixture(params=["local", pytest.param("vertex", marks=pytest.mark.gcs)])
def backend(request: pytest.FixtureRequest, tmp_path: Path, model_dir: Path) -> Iterator[Backend]:
    if request.param == "local":
        config = FlywheelConfig.model_validate({"paths": {"root": str(tmp_path / "state")}})
        b = Backend("local", config, None)
        b.registry.register(model_dir, source_run="bootstrap")
        replace_deployment(b.registry, b.endpoint, 1, "bootstrap")
        yield b
        return
    bucket = request.getfixturevalue("gcs_bucket")
    identity = request.getfixturevalue("identity_secret")
    with running_fake() as (fake, url):
        config = FlywheelConfig.model_validate(
            {
                "paths": {
                    "root": str(tmp_path / "state"),
                    "models": f"{bucket}/models",
                    "state": f"{bucket}/state",
                },
                "deploy": {"backend": "vertex", "endpoint_name": "stt-test"},
                "identity": identity,
                "vertex": {
                    "project": fake.project,
                    "location": fake.location,
                    "api_endpoint": url,
                    "serving_image": "us-docker.pkg.dev/p/r/serving@sha256:" + "a" * 64,
                    "machine_type": "g2-standard-8",
                    "accelerator_type": "NVIDIA_L4",
                    "accelerator_count": 1,
                    "retry_initial_s": 0.05,
                },
            }
        )
        b = Backend("vertex", config, fake)
        b.registry.register(model_dir, source_run="bootstrap")
        replace_deployment(b.registry, b.endpoint, 1, "bootstrap")
        yield b


def test_replace_cycle(backend: Backend, model_dir: Path) -> None:
    reg, ep = backend.registry, backend.endpoint
    assert reg.aliases() == {"default": 1}
    assert ep.traffic() == {1: 100}
    outcome = backend.candidate(model_dir, "run-a")
    assert (outcome.action, outcome.version, outcome.replaced) == ("deployed", 2, 1)
    assert reg.aliases() == {"default": 2, "previous": 1}
    assert ep.traffic() == {2: 100}  # v1 undeployed
    v2 = reg.get(2)
    assert v2.dataset_version == "ds-0123abcd"
    assert v2.source_run == "run-a"
    assert v2.data_watermark == "2026-11-25T10:00:00+00:00"
    assert v2.metrics["wer"] == 0.2315
    assert v2.evaluation["validation"]["passed"]
    # a retried deploy of the same run re-uses its version
    assert backend.candidate(model_dir, "run-a").version == 2
    assert len(reg.versions()) == 2
    back = rollback(reg, ep, "bad in production")
    assert (back.version, back.replaced) == (1, 2)
    assert reg.aliases() == {"default": 1}
    assert ep.traffic() == {1: 100}
    actions = [e.action for e in reg.audit_log()]
    assert {"register", "promote", "rollback"} <= set(actions)


def test_canary_then_promote(backend: Backend, model_dir: Path) -> None:
    reg, ep = backend.registry, backend.endpoint
    outcome = backend.candidate(model_dir, "run-c", strategy="canary")
    assert outcome.action == "canary"
    assert ep.traffic() == {1: 90, 2: 10}
    assert reg.aliases() == {"default": 1, "candidate": 2}
    promoted = promote_canary(reg, ep, "canary healthy for a day")
    assert (promoted.version, promoted.replaced) == (2, 1)
    assert ep.traffic() == {2: 100}
    assert reg.aliases() == {"default": 2, "previous": 1}


def test_canary_then_rollback(backend: Backend, model_dir: Path) -> None:
    reg, ep = backend.registry, backend.endpoint
    backend.candidate(model_dir, "run-c", strategy="canary")
    back = rollback(reg, ep, "canary WER up")
    assert back.action == "rolled_back"
    assert (back.version, back.replaced) == (1, 2)
    assert ep.traffic() == {1: 100}
    assert reg.aliases() == {"default": 1}
    with pytest.raises(RegistryError, match="no canary"):
        promote_canary(reg, ep, "nothing there")


def test_pruning_keeps_default_aliased_and_deployed(backend: Backend, model_dir: Path) -> None:
    reg, ep = backend.registry, backend.endpoint
    backend.candidate(model_dir, "run-1")  # v2 default, v1 previous
    backend.candidate(model_dir, "run-2", strategy="canary")  # v3 candidate at 10 %
    for i in range(3):  # v4..v6 registered only
        reg.register(model_dir, source_run=f"extra-{i}")
    pruned = reg.prune(keep=2)
    assert sorted(pruned) == [4]  # v6, v5 kept by count; v1-v3 aliased or deployed
    assert [v.version for v in reg.versions()] == [1, 2, 3, 5, 6]
    assert ep.traffic() == {2: 90, 3: 10}


def test_vertex_upload_labels_evaluation_and_machine(backend: Backend, model_dir: Path) -> None:
    if backend.kind != "vertex":
        pytest.skip("Vertex resources only")
    fake = backend.fake
    assert fake is not None
    backend.candidate(model_dir, "stt-flywheel-2026-11-25-10-00-00", strategy="canary")
    model = fake.versions("stt-flywheel")["2"]
    assert model["labels"] == {
        "source_run": "stt-flywheel-2026-11-25-10-00-00",
        "dataset_version": "ds-0123abcd",
        "wer": "0_2315",
        "cer": "0_1100",
        "delta_wer": "m0_0712",
    }
    assert model["artifactUri"].endswith("/models/stt-flywheel/stt-flywheel-2026-11-25-10-00-00")
    assert model["containerSpec"]["imageUri"].startswith("us-docker.pkg.dev/")
    assert model["containerSpec"]["predictRoute"] == "/predict"
    (evaluation,) = fake.evaluations["stt-flywheel@2"]
    assert evaluation["metrics"]["delta_wer"] == pytest.approx(-0.0712)
    (endpoint,) = fake.endpoints.values()
    deployed = {dm["modelVersionId"]: dm for dm in endpoint["deployedModels"]}
    machine = deployed["2"]["dedicatedResources"]["machineSpec"]
    assert machine["machineType"] == "g2-standard-8"
    assert machine["acceleratorCount"] == 1
    assert AcceleratorType(machine["acceleratorType"]).name == "NVIDIA_L4"  # the SDK sends enums as ints
    assert sum(endpoint["trafficSplit"].values()) == 100


def test_each_version_carries_its_digest_and_a_damaged_one_is_not_deployed(
    backend: Backend, model_dir: Path
) -> None:
    """On both backends: registration refuses a directory that is not the trained one, records
    the model's digest (on Vertex AI also in the serving container's environment, which checks
    its copy before loading it), and a version whose files went missing is not deployed."""
    from stt_flywheel.deployment.serving.contract import MODEL_DIGEST_ENV, model_digest
    from stt_flywheel.storage.objectstore import open_store

    reg, ep = backend.registry, backend.endpoint
    with pytest.raises(RegistryError, match="not the model that was trained"):
        reg.register(model_dir, source_run="r-swapped", lineage={"model_digest": "0" * 64})
    assert [v.version for v in reg.versions()] == [1]
    v2 = reg.register(model_dir, source_run="r-2", lineage={"model_digest": model_digest(model_dir)})
    assert reg.digest(v2.version) == model_digest(model_dir) and reg.verify(v2.version) == []
    if backend.fake is not None:
        spec = backend.fake.versions("stt-flywheel")["2"]["containerSpec"]
        assert {"name": MODEL_DIGEST_ENV, "value": model_digest(model_dir)} in spec["env"]
    open_store(v2.uri).delete("config.json")
    assert reg.verify(v2.version) == ["config.json is missing"]
    with pytest.raises(RegistryError, match="damaged"):
        replace_deployment(reg, ep, v2.version, "a damaged version")
    assert ep.traffic() == {1: 100}


def test_vertex_failed_deploy_keeps_the_old_model_serving(backend: Backend, model_dir: Path) -> None:
    if backend.kind != "vertex":
        pytest.skip("the embedded endpoint has no deploy that can fail this way")
    assert backend.fake is not None
    backend.fake.fail_next(
        "POST", r":deployModel$", ApiError(400, "Machine type g2-standard-8 is unavailable")
    )
    outcome = backend.candidate(model_dir, "run-f")
    assert outcome.action == "failed"
    assert "unavailable" in outcome.reasons[0]
    assert backend.endpoint.traffic() == {1: 100}
    assert backend.registry.aliases() == {"default": 1, "candidate": 2}


def test_vertex_quota_errors_are_retried(backend: Backend, model_dir: Path) -> None:
    if backend.kind != "vertex":
        pytest.skip("quota errors are a Vertex matter")
    fake = backend.fake
    assert fake is not None
    fake.fail_next("POST", r"models:upload$")
    fake.fail_next("POST", r":mergeVersionAliases$")
    fake.fail_next("POST", r":deployModel$")
    outcome = backend.candidate(model_dir, "run-q")
    assert outcome.action == "deployed"
    assert backend.endpoint.traffic() == {2: 100}
    uploads = [c for c in fake.calls if c[1].endswith("models:upload")]
    assert len(uploads) == 3  # bootstrap, the refused one, its retry


def test_the_fake_enforces_the_services_rules(backend: Backend, model_dir: Path) -> None:
    """What the strategies must never do is refused, as by Vertex AI."""
    if backend.kind != "vertex":
        pytest.skip("rules of the Vertex fake")
    from google.api_core import exceptions
    from google.cloud import aiplatform

    backend.candidate(model_dir, "run-r", strategy="canary")
    models = aiplatform.models.ModelRegistry(backend.registry.resource_name)
    with pytest.raises(exceptions.BadRequest, match="default version"):
        models.delete_version("1")
    models.remove_version_aliases(["candidate"], "2")
    with pytest.raises(exceptions.BadRequest, match="deployed"):
        models.delete_version("2")
    with pytest.raises(exceptions.BadRequest, match="cannot be removed"):
        models.remove_version_aliases(["default"], "1")
    endpoint = aiplatform.Endpoint.list(filter='display_name="stt-test"')[0]
    ids = list(endpoint.traffic_split)
    with pytest.raises(exceptions.BadRequest, match="sum to 100"):
        endpoint.update(traffic_split={ids[0]: 50, ids[1]: 20})
    models.add_version_aliases(["candidate"], "1")  # an alias lives on one version
    assert backend.registry.aliases()["candidate"] == 1


# The deployer's decision (stage 6) on the embedded registry with the committed base model.


@pytest.fixture
def registry(tmp_path: Path, base_model_dir: Path) -> LocalRegistry:
    """The embedded registry with the base model as v1, default and serving."""
    reg = LocalRegistry(tmp_path / "r.sqlite", tmp_path / "models")
    v1 = reg.register(base_model_dir)
    reg.promote(v1.version)
    LocalEndpoint(reg, "ep").deploy(v1.version)
    return reg


PASS = PASSED


FAIL = {"stage": "regression", "passed": False, "reasons": ["general: WER too high"], "gates": []}


def _promote(registry: LocalRegistry, model_dir: Path, validation: dict, regression: dict, auto: bool = True):
    return promote_candidate(
        registry,
        LocalEndpoint(registry, "ep"),
        Candidate(
            model_dir=str(model_dir),
            validation=validation,
            regression=regression,
            dataset_version="ds-x",
            data_watermark="2026-11-01T00:00:00+00:00",
            run_id="run-1",
            metrics={"wer": 0.1},
        ),
        DeployPolicy(auto_deploy=auto, keep_versions=3),
    )


REJECTED = {
    "stage": "validation",
    "passed": False,
    "reasons": ["x"],
    "gates": [
        {**GATE, "passed": False, "value": 0.01},
        {**GATE, "name": "max_p_value", "value": 0.01, "threshold": 0.05},
    ],
}


def test_deployer_rechecks_verdicts(registry: LocalRegistry, base_model_dir: Path) -> None:
    outcome = _promote(registry, base_model_dir, PASS, FAIL)
    assert outcome.action == "rejected"
    assert outcome.reasons == ["regression: general: WER too high"]
    assert registry.aliases() == {"default": 1}
    assert len(registry.versions()) == 1
    assert _promote(registry, base_model_dir, {}, PASS).action == "rejected"  # a missing verdict rejects
    # "passed" with no gate behind it, or a gate that lost a field, is not a pass
    no_gates = _promote(registry, base_model_dir, PASS | {"gates": []}, PASS)
    assert (no_gates.action, no_gates.reasons) == ("rejected", ["validation: passed without passing gates"])
    broken = _promote(registry, base_model_dir, PASS, PASS | {"gates": [{"name": "x", "passed": True}]})
    assert broken.action == "rejected" and "regression: no valid verdict (gates.0.value" in broken.reasons[0]


def test_deployer_promotes_and_is_idempotent(registry: LocalRegistry, base_model_dir: Path) -> None:
    outcome = _promote(registry, base_model_dir, PASS, PASS)
    assert (outcome.action, outcome.version, outcome.replaced) == ("deployed", 2, 1)
    assert registry.aliases() == {"default": 2, "previous": 1}
    assert LocalEndpoint(registry, "ep").traffic() == {2: 100}
    v2 = registry.get(2)
    assert v2.watermark is not None
    assert v2.evaluation["validation"]["passed"]
    assert v2.lineage["parent_version"] == 1
    again = _promote(registry, base_model_dir, PASS, PASS)  # a retried deploy task
    assert again.version == 2
    assert len(registry.versions()) == 2
    assert "Deployed version 2" in outcome.to_markdown()


def test_deployer_without_auto_deploy_only_registers(registry: LocalRegistry, base_model_dir: Path) -> None:
    outcome = _promote(registry, base_model_dir, PASS, PASS, auto=False)
    assert outcome.action == "registered"
    assert registry.aliases() == {"default": 1, "candidate": 2}
    assert LocalEndpoint(registry, "ep").traffic() == {1: 100}


def test_forced_promotion_needs_a_reason_and_records_what_it_overrode(
    registry: LocalRegistry, base_model_dir: Path
) -> None:
    endpoint = LocalEndpoint(registry, "ep")
    evaluation = {"validation": REJECTED, "regression": PASS}
    with pytest.raises(RegistryError, match="did not pass its evaluation .*validation: min_wer_improvement"):
        manual_promotion(
            registry,
            endpoint,
            reason="hotfix",
            candidate_dir=str(base_model_dir),
            evaluation=evaluation,
            run_id="r9",
        )
    # the candidate was registered with the evaluation that judged it, but nothing moved
    v2 = registry.find_by_run("r9")
    assert v2 is not None
    assert v2.evaluation["validation"]["passed"] is False
    assert registry.aliases() == {"default": 1}
    assert endpoint.traffic() == {1: 100}
    with pytest.raises(RegistryError, match="needs a reason"):
        manual_promotion(registry, endpoint, reason="  ", version=v2.version, force=True)
    outcome = manual_promotion(registry, endpoint, reason="pharmacy launch", version=v2.version, force=True)
    assert (outcome.action, outcome.version, outcome.replaced) == ("deployed", v2.version, 1)
    assert registry.aliases() == {"default": v2.version, "previous": 1}
    assert endpoint.traffic() == {v2.version: 100}
    forced = [e for e in registry.audit_log() if e.action == "forced_promotion"]
    assert forced
    assert forced[-1].detail == {
        "overrode": 1,
        "reason": "pharmacy launch",
        "failed_gates": ["validation: min_wer_improvement"],
    }


def test_promoting_a_version_that_passed_needs_no_force(
    registry: LocalRegistry, base_model_dir: Path
) -> None:
    _promote(registry, base_model_dir, PASS, PASS, auto=False)
    outcome = manual_promotion(registry, LocalEndpoint(registry, "ep"), reason="reviewed", version=2)
    assert outcome.version == 2
    assert registry.aliases()["default"] == 2
    assert not [e for e in registry.audit_log() if e.action == "forced_promotion"]
