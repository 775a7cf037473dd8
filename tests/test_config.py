from pathlib import Path

import pytest
from pydantic import ValidationError

from stt_flywheel.config import ConfigError, FlywheelConfig, RegressionSuite, load_config, load_run_config

CLOUD_HOWTO = Path(__file__).resolve().parents[1] / "docs" / "how-to" / "google-cloud.md"


def test_defaults_serve_embedded_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(None)
    assert config.paths.root == tmp_path / ".flywheel"
    assert config.paths.registry_db == tmp_path / ".flywheel" / "registry.sqlite"
    assert Path(config.base_model).is_dir()


def test_relative_paths_resolve_against_the_file(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "c.yaml"
    path.write_text(
        "paths: {root: state, error_store: /abs/errors, models: gs://b/models, reports: runs}\n"
        "regression: [{name: g, data: suites/g.jsonl}]\n"
    )
    config = load_config(path)
    assert config.paths.root == tmp_path / "conf" / "state"
    assert config.paths.datasets == str(tmp_path / "conf" / "state" / "datasets")
    assert config.paths.reports == str(tmp_path / "conf" / "runs")
    assert config.paths.error_store == "/abs/errors"
    assert config.paths.models == "gs://b/models"
    assert config.regression[0].data == tmp_path / "conf" / "suites" / "g.jsonl"


BAD = [
    ("trigger: {min_eror_cases: 3}", "trigger.min_eror_cases"),
    ("trigger: {min_error_cases: -1}", "greater than or equal"),
    ("- a list", "mapping at the top level"),
    ("training: {accelerator: tpu}", "training.accelerator"),
    ("dataset: {replay_share: 1.5}", "dataset.replay_share"),
    ("a: [unclosed", "not valid YAML"),
    ("training: {speed_perturbation: [0.1]}", "between 0.5 and 2.0"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_invalid_configs_are_clear_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_config(path)


def test_run_parameters_override_only_when_set(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("trigger: {force: true}\ntraining: {max_steps: 77}\n")
    assert load_run_config(str(path)).trigger.force is True  # force=False never un-forces
    assert load_run_config(str(path)).training.max_steps == 77
    assert load_run_config(str(path), max_steps=5).training.max_steps == 5
    assert load_run_config(str(path), auto_deploy=False).deploy.auto_deploy is False
    with pytest.raises(ConfigError, match="unknown config key"):
        FlywheelConfig().with_overrides({"trigger.nope": 1})


def test_suite_config_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError):
        RegressionSuite(name="x", data="x.jsonl", kind="nightly")  # type: ignore[arg-type]


def test_the_documented_cloud_config_is_one_that_would_work(tmp_path: Path) -> None:
    """Filled in, the cloud config of the Google Cloud how-to loads, starts from the user's model, and has
    regression suites (with none, every candidate would be rejected)."""
    text = CLOUD_HOWTO.read_text()
    block = text[text.index("```yaml\nbase_model: /gcs/BUCKET") + len("```yaml\n") :]
    block = block[: block.index("```")]
    filled = (
        block.replace("PROJECT", "my-project").replace("REGION", "us-central1").replace("BUCKET", "my-bucket")
    )
    path = tmp_path / "flywheel.yaml"
    path.write_text(filled.replace("sha256:…", "sha256:" + "0" * 64))
    config = load_config(path)
    assert config.deploy.backend == "vertex"
    assert str(config.base_model) == "/gcs/my-bucket/base-model"
    assert config.paths.error_store == "gs://my-bucket-people/error-store"
    assert config.paths.datasets == "gs://my-bucket-people/datasets"
    assert config.paths.pipeline_root == "gs://my-bucket-people/pipeline-root"
    assert config.paths.models == "gs://my-bucket/models"
    assert [s.name for s in config.regression] == ["general", "critical-phrases"]
    assert config.validation.eval_manifest is not None
    assert config.dataset.replay_manifest is not None
    assert config.vertex is not None
    assert config.vertex.project == "my-project"
    assert config.vertex.pipeline_service_account == "flywheel-pipeline@my-project.iam.gserviceaccount.com"
    for line in block.splitlines():
        if (
            line.split("#")[0]
            .strip()
            .startswith(("base_model", "regression", "eval_manifest", "replay_manifest"))
        ):
            assert "# yours" in line, f"say that the user supplies it: {line}"


@pytest.mark.parametrize(
    ("yaml_text", "field"),
    [
        ("validation: {max_p_value: 5}", "validation.max_p_value"),
        ("validation: {max_p_value: .inf}", "validation.max_p_value"),
        ("validation: {max_worse_share: 2.5}", "validation.max_worse_share"),
        ("validation: {min_wer_improvement: -1}", "validation.min_wer_improvement"),
        ("validation: {min_wer_improvement: -.inf}", "validation.min_wer_improvement"),
        ("validation: {max_cer_increase: .inf}", "validation.max_cer_increase"),
        ("validation: {max_slice_degradation: .nan}", "validation.max_slice_degradation"),
        ("validation: {first_run_max_wer: .nan}", "validation.first_run_max_wer"),
        ("dataset: {min_duration_s: 40, max_duration_s: 30}", "dataset"),
        ("dataset: {sample_rate: -16000}", "dataset.sample_rate"),
        ("trigger: {error_rate_threshold: .nan}", "trigger.error_rate_threshold"),
        ("monitor: {wer_margin: .inf}", "monitor.wer_margin"),
        ("validation: {max_formatting_error_increase: 2}", "validation.max_formatting_error_increase"),
        ("training: {method: adapter}", "training.method"),
        ("training: {language: klingon}", "training.language"),
        ("training: {lora_rank: 0}", "training.lora_rank"),
        ("training: {processes: -1}", "training.processes"),
    ],
)
def test_the_config_cannot_switch_a_gate_off(tmp_path: Path, yaml_text: str, field: str) -> None:
    path = tmp_path / "flywheel.yaml"
    path.write_text(yaml_text + "\n")
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    assert field in str(refused.value)
    assert "\n" not in str(refused.value)


def test_locations_are_plain_resolved_strings_that_cannot_change(tmp_path: Path) -> None:
    (tmp_path / "flywheel.yaml").write_text("paths:\n  root: state\n  models: elsewhere/models\n")
    config = load_config(tmp_path / "flywheel.yaml")
    base = tmp_path.resolve()
    assert config.paths.error_store == str(base / "state" / "error-store")  # derived from root
    assert config.paths.models == str(base / "elsewhere" / "models")  # relative to the file
    assert config.paths.registry_db == base / "state" / "registry.sqlite"
    assert config.with_overrides({"trigger.force": True}).paths == config.paths
    with pytest.raises(ValidationError, match="frozen"):
        config.paths.models = "/somewhere/else"
