from typing import NamedTuple

from kfp.dsl import Artifact, Dataset, Input, Markdown, Model, Output


def deploy_model(
    config_uri: str,
    run_id: str,
    auto_deploy: bool,
    serving_image: str,
    dataset: Input[Dataset],
    model: Input[Model],
    validation_results: Input[Artifact],
    regression_results: Input[Artifact],
    report: Output[Markdown],
) -> NamedTuple("DeployOutputs", action=str, version=int):  # type: ignore[valid-type]  # noqa: F821
    # KFP reads the outputs from this inline NamedTuple: a class at module level would not travel with
    # the function's source into the task.
    """Register the candidate, move the `default` alias and the endpoint's traffic to it.

    `serving_image` (when not empty) is the serving container new versions are uploaded with,
    in place of the config's `vertex.serving_image`."""
    from collections import namedtuple
    from pathlib import Path

    from stt_flywheel.config import load_run_config
    from stt_flywheel.run.stage_reports import markdown_report
    from stt_flywheel.run.stages import stage_deploy_model

    config = load_run_config(config_uri, auto_deploy=auto_deploy, serving_image=serving_image)
    outcome = stage_deploy_model(
        config,
        Path(model.path),
        Path(dataset.path),
        Path(validation_results.path),
        Path(regression_results.path),
        run_id,
    )
    with open(report.path, "w") as fh:
        fh.write(markdown_report(config, run_id, outcome, Path(dataset.path)))
    DeployOutputs = namedtuple("DeployOutputs", ["action", "version"])
    return DeployOutputs(outcome.action, outcome.version or 0)
