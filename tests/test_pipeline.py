"""The compiled pipeline: graph shape, display names, gates, caching, images."""

from pathlib import Path

import pytest
import yaml

from flywheel_pipelines.compile import compile_pipeline
from stt_flywheel.config import load_run_config


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> dict:
    path = compile_pipeline(
        tmp_path_factory.mktemp("c") / "p.yaml", base_image="reg/base:1", trainer_image="reg/trainer:1"
    )
    return yaml.safe_load(Path(path).read_text())


def _all_tasks(spec: dict) -> dict[str, dict]:
    tasks = dict(spec["root"]["dag"]["tasks"])
    for comp in spec["components"].values():
        tasks.update(comp.get("dag", {}).get("tasks", {}))
    return tasks


def test_six_stages_with_display_names(spec: dict) -> None:
    names = {name: t["taskInfo"]["name"] for name, t in _all_tasks(spec).items() if "componentRef" in t}
    stages = {k: v for k, v in names.items() if not k.startswith("condition")}
    assert stages == {
        "check-trigger": "1 Trigger check",
        "build-dataset": "2 Build dataset",
        "train-model": "3 Train model",
        "validate-model": "4 Validate against production",
        "run-regression-suites": "5 Regression suites",
        "deploy-model": "6 Deploy model",
    }


def test_gates_are_conditions_on_the_trigger_and_both_verdicts(spec: dict) -> None:
    conditions = [t["triggerPolicy"]["condition"] for t in _all_tasks(spec).values() if "triggerPolicy" in t]
    joined = " ".join(conditions)
    assert len(conditions) == 4
    assert "check-trigger-Output" in joined
    assert "build-dataset-Output" in joined
    assert "validate-model-Output" in joined
    assert "run-regression-suites-Output" in joined
    root = spec["root"]["dag"]["tasks"]
    assert set(root) == {"check-trigger", "condition-1"}


def test_dependencies_flow_one_way(spec: dict) -> None:
    tasks = _all_tasks(spec)
    # training sits inside the "dataset usable" branch, which waits for the dataset builder
    assert set(tasks["condition-2"]["dependentTasks"]) == {"build-dataset"}
    assert "train-model" in spec["components"]["comp-condition-2"]["dag"]["tasks"]
    assert set(tasks["validate-model"]["dependentTasks"]) == {"train-model"}
    assert set(tasks["run-regression-suites"]["dependentTasks"]) == {"train-model"}
    assert set(tasks["condition-3"]["dependentTasks"]) == {
        "train-model",
        "validate-model",
        "run-regression-suites",
    }


def test_no_caching_and_no_runtime_installs(spec: dict) -> None:
    for name, task in _all_tasks(spec).items():
        if "componentRef" in task and not name.startswith("condition"):
            assert not task.get("cachingOptions", {}).get("enableCache"), name
    executors = spec["deploymentSpec"]["executors"]
    assert len(executors) == 6
    for name, ex in executors.items():
        container = ex["container"]
        assert "pip install" not in " ".join(container["command"]), name
        expected = "reg/trainer:1" if name == "exec-train-model" else "reg/base:1"
        assert container["image"] == expected, name


def test_pipeline_parameters(spec: dict) -> None:
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert set(params) == {
        "config_uri",
        "force",
        "auto_deploy",
        "max_steps",
        "accelerator_type",
        "accelerator_count",
        "trainer_cpu",
        "trainer_memory",
        "serving_image",
    }
    assert params["serving_image"]["defaultValue"] == ""  # compiled without one: the config's
    assert params["force"]["defaultValue"] is False
    assert params["auto_deploy"]["defaultValue"] is True


DIGEST = "@sha256:" + "0123456789abcdef" * 4


@pytest.fixture(scope="module")
def cloud_spec(tmp_path_factory: pytest.TempPathFactory) -> dict:
    path = compile_pipeline(
        tmp_path_factory.mktemp("cloud") / "p.yaml",
        base_image="us-docker.pkg.dev/p/stt/base" + DIGEST,
        trainer_image="us-docker.pkg.dev/p/stt/trainer" + DIGEST,
        require_digests=True,
        serving_image="us-docker.pkg.dev/p/stt/serving" + DIGEST,
    )
    return yaml.safe_load(Path(path).read_text())


def test_the_build_compiles_its_serving_image_in_for_the_deployer(cloud_spec: dict, tmp_path: Path) -> None:
    params = cloud_spec["root"]["inputDefinitions"]["parameters"]
    assert params["serving_image"]["defaultValue"] == "us-docker.pkg.dev/p/stt/serving" + DIGEST
    with pytest.raises(ValueError, match="pinned by digest"):
        compile_pipeline(
            tmp_path / "x.yaml",
            "reg/base" + DIGEST,
            "reg/trainer" + DIGEST,
            require_digests=True,
            serving_image="reg/serving:latest",
        )
    config = tmp_path / "flywheel.yaml"
    config.write_text("vertex: {project: p, serving_image: reg/serving@sha256:old}\n")
    assert load_run_config(str(config)).vertex.serving_image == "reg/serving@sha256:old"  # type: ignore[union-attr]
    newer = load_run_config(str(config), serving_image="us-docker.pkg.dev/p/stt/serving" + DIGEST)
    assert newer.vertex.serving_image == "us-docker.pkg.dev/p/stt/serving" + DIGEST  # type: ignore[union-attr]


def _executor(spec: dict, task: str) -> dict:
    return spec["deploymentSpec"]["executors"][f"exec-{task}"]["container"]


def test_trainer_accelerator_cpu_and_memory_are_parameters(cloud_spec: dict) -> None:
    params = cloud_spec["root"]["inputDefinitions"]["parameters"]
    assert params["accelerator_type"]["defaultValue"] == "NVIDIA_L4"
    assert params["accelerator_count"]["defaultValue"] == 1
    resources = _executor(cloud_spec, "train-model")["resources"]
    assert (
        resources["accelerator"]["resourceType"]
        == "{{$.inputs.parameters['pipelinechannel--accelerator_type']}}"
    )
    assert (
        resources["accelerator"]["resourceCount"]
        == "{{$.inputs.parameters['pipelinechannel--accelerator_count']}}"
    )
    assert "pipelinechannel--trainer_cpu" in resources["resourceCpuLimit"]
    assert "pipelinechannel--trainer_memory" in resources["resourceMemoryLimit"]
    for task in ("check-trigger", "validate-model", "deploy-model"):
        assert "accelerator" not in _executor(cloud_spec, task).get("resources", {})


def test_caching_is_off_and_idempotent_stages_retry(cloud_spec: dict) -> None:
    tasks = _all_tasks(cloud_spec)
    stages = {k: t for k, t in tasks.items() if not k.startswith("condition")}
    assert all(not t["cachingOptions"].get("enableCache", False) for t in stages.values())
    retried = {k for k, t in stages.items() if t.get("retryPolicy", {}).get("maxRetryCount")}
    assert retried == {"build-dataset", "train-model", "validate-model", "run-regression-suites"}
    assert stages["train-model"]["retryPolicy"]["backoffDuration"] == "60s"


def test_cloud_images_are_pinned_by_digest(cloud_spec: dict, tmp_path: Path) -> None:
    images = {k: e["container"]["image"] for k, e in cloud_spec["deploymentSpec"]["executors"].items()}
    assert images["exec-train-model"] == "us-docker.pkg.dev/p/stt/trainer" + DIGEST
    assert all(i.endswith(DIGEST) for i in images.values())
    with pytest.raises(ValueError, match="pinned by digest"):
        compile_pipeline(tmp_path / "x.yaml", "reg/base:latest", "reg/trainer" + DIGEST, require_digests=True)
    with pytest.raises(ValueError, match="no trainer image"):
        compile_pipeline(tmp_path / "x.yaml", "reg/base" + DIGEST, require_digests=True)


def test_every_input_a_task_reads_is_declared_by_its_dag(cloud_spec: dict) -> None:
    # A task inside a condition reads `componentInputParameter`s of the DAG around it; one the DAG
    # does not declare fails at run time on Vertex and in kfp.local alike (the trainer's resource
    # settings once did this).
    dags = {"root": cloud_spec["root"], **{k: v for k, v in cloud_spec["components"].items() if "dag" in v}}
    checked = 0
    for name, dag in dags.items():
        declared = dag.get("inputDefinitions", {})
        for task_name, task in dag["dag"]["tasks"].items():
            for kind in ("parameters", "artifacts"):
                for value in task.get("inputs", {}).get(kind, {}).values():
                    ref = value.get("componentInputParameter") or value.get("componentInputArtifact")
                    if ref:
                        checked += 1
                        assert ref in declared.get(kind, {}), f"{name}/{task_name} reads undeclared {ref}"
    assert checked > 20


@pytest.fixture(scope="module")
def monitor_spec(tmp_path_factory: pytest.TempPathFactory) -> dict:
    path = compile_pipeline(
        tmp_path_factory.mktemp("m") / "monitor.yaml",
        base_image="us-docker.pkg.dev/p/stt/base" + DIGEST,
        require_digests=True,
        pipeline="monitor",
    )
    return yaml.safe_load(Path(path).read_text())


def test_the_monitor_pipeline_is_one_uncached_task_on_the_base_image(monitor_spec: dict) -> None:
    assert monitor_spec["pipelineInfo"]["name"] == "stt-flywheel-monitor"
    tasks = _all_tasks(monitor_spec)
    assert {k: t["taskInfo"]["name"] for k, t in tasks.items()} == {
        "monitor-deployment": "Monitor live quality"
    }
    assert not tasks["monitor-deployment"]["cachingOptions"].get("enableCache", False)
    (executor,) = monitor_spec["deploymentSpec"]["executors"].values()
    assert executor["container"]["image"] == "us-docker.pkg.dev/p/stt/base" + DIGEST
    assert "pip install" not in " ".join(executor["container"]["command"])
    params = monitor_spec["root"]["inputDefinitions"]["parameters"]
    assert set(params) == {"config_uri", "act"} and params["act"]["defaultValue"] is True
    outputs = monitor_spec["components"]["comp-monitor-deployment"]["outputDefinitions"]["artifacts"]
    assert {k: v["artifactType"]["schemaTitle"] for k, v in outputs.items()} == {
        "report": "system.HTML",
        "summary": "system.Markdown",
        "metrics": "system.Metrics",
    }


def test_unknown_pipelines_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown pipeline 'monitr'"):
        compile_pipeline(tmp_path / "x.yaml", pipeline="monitr")


def test_evaluation_on_a_gpu_puts_validation_and_regression_on_the_trainer_image_with_one_gpu(
    tmp_path: Path,
) -> None:
    path = compile_pipeline(
        tmp_path / "p.yaml",
        base_image="reg/base:1",
        trainer_image="reg/trainer:1",
        evaluate_on_accelerator=True,
    )
    spec = yaml.safe_load(path.read_text())
    for task in ("validate-model", "run-regression-suites"):
        container = _executor(spec, task)
        assert container["image"] == "reg/trainer:1"
        accelerator = container["resources"]["accelerator"]
        assert accelerator["resourceType"] == "{{$.inputs.parameters['pipelinechannel--accelerator_type']}}"
        assert accelerator["resourceCount"] == "1"
    for task in ("check-trigger", "build-dataset", "deploy-model"):
        assert _executor(spec, task)["image"] == "reg/base:1"
        assert "accelerator" not in _executor(spec, task).get("resources", {})
    with pytest.raises(ValueError, match="evaluates nothing"):
        compile_pipeline(
            tmp_path / "m.yaml", base_image="reg/base:1", pipeline="monitor", evaluate_on_accelerator=True
        )


def test_evaluation_stays_on_the_base_image_without_a_gpu_by_default(cloud_spec: dict) -> None:
    for task in ("validate-model", "run-regression-suites"):
        assert "/stt/base@" in _executor(cloud_spec, task)["image"]
        assert "accelerator" not in _executor(cloud_spec, task).get("resources", {})
