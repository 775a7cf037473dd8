"""Every component body, called through `python_func` with local artifacts, in the order the graph runs them.

The module runs the six stages once on the small test world (real audio, real training, the
embedded registry); each test then reads what one component returned and wrote.
"""

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from kfp.dsl import HTML, Artifact, Dataset, Markdown, Metrics, Model

from flywheel_components import build_components
from stt_flywheel.demo.scenario import simulate_traffic
from stt_flywheel.deployment.backends import open_endpoint, open_registry
from stt_flywheel.run.entries import TrainEntry
from stt_flywheel.run.ledger import read_ledger
from stt_flywheel.run.stages import bootstrap_registry

RUN_ID = "stt-flywheel-components-test"


@dataclass
class Ran:
    """One component call: what it returned and the artifacts it wrote."""

    returned: Any
    artifacts: dict[str, Any]


@pytest.fixture(scope="module")
def pipeline_run(
    tmp_path_factory: pytest.TempPathFactory, world: dict[str, Path], config_factory: Any
) -> dict[str, Any]:
    directory = tmp_path_factory.mktemp("components")
    config_path, config = config_factory(directory)
    bootstrap_registry(config)
    simulate_traffic(config, world, directory, flag_share=0.0, silent_share=0.0)
    (directory / "artifacts").mkdir()
    components = build_components("stt-flywheel-base:test")

    def artifact(kind: type, name: str) -> Any:
        return kind(name=name, uri=str(directory / "artifacts" / name), metadata={})

    def call(component: Any, **artifacts: Any) -> Ran:
        params = {k: v for k, v in artifacts.items() if not hasattr(v, "uri")}
        arts = {k: v for k, v in artifacts.items() if hasattr(v, "uri")}
        returned = component.python_func(config_uri=str(config_path), run_id=RUN_ID, **params, **arts)
        return Ran(returned, arts)

    ran: dict[str, Any] = {"config": config}
    ran["trigger"] = trigger = call(
        components.check_trigger,
        force=False,
        requested_accelerator="NVIDIA_L4",
        requested_accelerators=1,
        requested_cpu="8",
        requested_memory="32G",
        decision=artifact(Artifact, "decision"),
        report=artifact(Markdown, "trigger-report"),
        metrics=artifact(Metrics, "trigger-metrics"),
    )
    ran["dataset"] = dataset = call(
        components.build_dataset,
        decision=trigger.artifacts["decision"],
        dataset=artifact(Dataset, "dataset"),
        metrics=artifact(Metrics, "dataset-metrics"),
        report=artifact(Markdown, "dataset-report"),
    )
    ran["train"] = train = call(
        components.train_model,
        max_steps=20,  # enough for this world to pass every gate (40 is the config's)
        requested_accelerator="NVIDIA_L4",
        requested_accelerators=1,
        requested_cpu="8",
        requested_memory="32G",
        dataset=dataset.artifacts["dataset"],
        model=artifact(Model, "model"),
        metrics=artifact(Metrics, "train-metrics"),
        loss_curve=artifact(HTML, "loss-curve"),
    )
    ran["validate"] = validate = call(
        components.validate_model,
        dataset=dataset.artifacts["dataset"],
        model=train.artifacts["model"],
        report=artifact(HTML, "validation-report"),
        metrics=artifact(Metrics, "validation-metrics"),
        results=artifact(Artifact, "validation-results"),
    )
    ran["regression"] = regression = call(
        components.run_regression_suites,
        model=train.artifacts["model"],
        report=artifact(HTML, "regression-report"),
        metrics=artifact(Metrics, "regression-metrics"),
        results=artifact(Artifact, "regression-results"),
    )
    ran["deploy"] = call(
        components.deploy_model,
        auto_deploy=True,
        serving_image="",
        dataset=dataset.artifacts["dataset"],
        model=train.artifacts["model"],
        validation_results=validate.artifacts["results"],
        regression_results=regression.artifacts["results"],
        report=artifact(Markdown, "deploy-report"),
    )
    return ran


def test_check_trigger_fires_on_the_traffics_corrections(pipeline_run: dict[str, Any]) -> None:
    trigger: Ran = pipeline_run["trigger"]
    assert trigger.returned is True
    decision = orjson.loads(Path(trigger.artifacts["decision"].path).read_bytes())
    assert decision["should_train"] is True
    assert decision["watermark"]
    assert trigger.artifacts["decision"].metadata["watermark"] == decision["watermark"]
    report = Path(trigger.artifacts["report"].path).read_text()
    assert report.startswith("# Trigger check")
    assert f"run: `{RUN_ID}`" in report
    assert "production: `v1`" in report
    assert re.search(r"\| cooldown \| [^|]+ h \| 0 h \|", report)  # hours, said as hours
    assert trigger.artifacts["metrics"].metadata  # the checks' values, NaN left out


def test_build_dataset_balances_its_counts(pipeline_run: dict[str, Any]) -> None:
    dataset: Ran = pipeline_run["dataset"]
    assert dataset.returned is True
    logged = dataset.artifacts["metrics"].metadata
    assert logged["read"] == logged["accepted"] + logged["duplicates"] + logged["quarantined"]
    assert logged["train_examples"] > 0
    assert logged["heldout_examples"] > 0
    assert dataset.artifacts["dataset"].metadata["version"].startswith("ds-")
    assert (Path(dataset.artifacts["dataset"].path) / "manifest.json").is_file()
    report = Path(dataset.artifacts["report"].path).read_text()
    version = dataset.artifacts["dataset"].metadata["version"]
    assert f"**{version}** (usable" in report
    assert f"Corrected error cases read: {logged['read']:.0f} — accepted {logged['accepted']:.0f}" in report
    train_row = next(line for line in report.splitlines() if line.startswith("| train |"))
    assert re.search(
        r"\| train \| \d+ \| [\d.]+ \| [\d.]+ / [\d.]+ / [\d.]+ \| .*pharmacy \d+ .*correction \d+", train_row
    )


def test_train_model_saves_the_model_where_its_readers_look(pipeline_run: dict[str, Any]) -> None:
    train: Ran = pipeline_run["train"]
    model = train.artifacts["model"]
    assert (Path(model.path) / "model" / "config.json").is_file()
    assert model.metadata["device"] == "cpu"
    assert model.metadata["requested"] == {"accelerator": "1 x NVIDIA_L4", "cpu": "8", "memory": "32G"}
    assert train.artifacts["metrics"].metadata["steps"] == 20.0
    ledger = read_ledger(pipeline_run["config"], RUN_ID, TrainEntry)
    assert ledger is not None
    assert ledger.model_dir == str(Path(model.path) / "model")
    curve = Path(train.artifacts["loss_curve"].path).read_text()
    assert curve.startswith("<!doctype html>")
    assert curve.count("<svg") == 1
    # 20 steps, fewer than one logging interval; the config interpolates (WiSE-FT), and the page says so
    assert re.search(r"held-out loss of the fine-tuned weights [\d.]+ at step 20", curve)
    assert re.search(r"not the weights this curve follows\. Their held-out loss is [\d.]+", curve)
    assert "trained by this run from v1" in curve


@pytest.mark.parametrize("stage", ["validate", "regression"])
def test_evaluation_components_publish_their_report_once(pipeline_run: dict[str, Any], stage: str) -> None:
    ran: Ran = pipeline_run[stage]
    verdict = orjson.loads((Path(ran.artifacts["results"].path) / "verdict.json").read_bytes())
    assert ran.returned is verdict["passed"]
    assert ran.returned is True
    page = Path(ran.artifacts["report"].path).read_text()
    assert "Verdict" in page
    dataset_version = pipeline_run["dataset"].artifacts["dataset"].metadata["version"]
    for named in (f"run: {RUN_ID}", "production: v1", "candidate: trained by this run from v1", "made: 20"):
        assert named in page
    if stage == "validate":
        assert f"dataset: {dataset_version}" in page
        assert "normaliser: whisper-en" in page
    assert not (Path(ran.artifacts["results"].path) / "report.html").exists()
    assert ran.artifacts["metrics"].metadata


def test_validate_model_keeps_one_row_per_utterance(pipeline_run: dict[str, Any]) -> None:
    results = Path(pipeline_run["validate"].artifacts["results"].path)
    rows = [orjson.loads(line) for line in (results / "utterances.jsonl").read_bytes().splitlines()]
    held = [r for r in rows if r["set"] == "heldout"]
    logged = pipeline_run["validate"].artifacts["metrics"].metadata
    assert len(held) == logged["heldout_utterances"]
    assert {"id", "ref", "candidate_hyp", "candidate_errors", "production_hyp", "production_errors"} <= set(
        held[0]
    )


def test_deploy_model_registers_and_serves_the_candidate(pipeline_run: dict[str, Any]) -> None:
    deploy: Ran = pipeline_run["deploy"]
    assert tuple(deploy.returned) == ("deployed", 2)
    report = Path(deploy.artifacts["report"].path).read_text()
    assert "Deployed version 2" in report
    assert "production: `v1` · candidate: `v2`" in report
    assert "| before | v1 100 % | default → v1 |" in report
    assert "| after | v2 100 % | default → v2, previous → v1 |" in report
    assert "strategy `replace`" in report
    config = pipeline_run["config"]
    registry = open_registry(config)
    assert registry.aliases() == {"default": 2, "previous": 1}
    assert open_endpoint(config, registry).traffic() == {2: 100}
    assert registry.get(2).source_run == RUN_ID
