"""The stt-flywheel pipeline graph.

Stages:
    1. Trigger check — enough new error evidence since the production model's watermark?
    2. Dataset builder — corrected error cases (+ replay) → versioned dataset, quarantine.
    3. Trainer — fine-tune the production model (GPU when the task has one).
    4. Validator — candidate vs production on held-out and eval sets, paired significance test.
    5. Regression tester — every configured suite, a verdict each.
    6. Deployer — register, move aliases, shift endpoint traffic; only when 4 and 5 passed.

A run that does not train (too little evidence, or nothing usable in the dataset), or whose
candidate is rejected, ends green with its reasons recorded.

On Vertex AI the trainer runs on `accelerator_count` × `accelerator_type` with the CPU and memory
given as parameters; the stages whose work is idempotent (dataset, training, validation,
regression) are retried; nothing is cached, since every stage reads state that changes between
runs (the error store, the registry, the lease).
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kfp import dsl

from flywheel_components import build_components

__all__ = [
    "MONITOR_PIPELINE_NAME",
    "PIPELINES",
    "PIPELINE_NAME",
    "RETENTION_PIPELINE_NAME",
    "build_monitor_pipeline",
    "build_pipeline",
    "build_retention_pipeline",
]

PIPELINE_NAME = "stt-flywheel"
MONITOR_PIPELINE_NAME = "stt-flywheel-monitor"
RETENTION_PIPELINE_NAME = "stt-flywheel-retention"
# Idempotent stages are retried after transient failures (preemption, quota, a lost node).
RETRY = {"num_retries": 2, "backoff_duration": "60s", "backoff_factor": 2.0}


def build_pipeline(
    base_image: str,
    trainer_image: str | None = None,
    serving_image: str | None = None,
    evaluate_on_accelerator: bool = False,
) -> Callable[..., Any]:
    """The pipeline function for the given images; nothing here reads the environment.

    `serving_image` becomes the default of the `serving_image` parameter: the container new
    versions are uploaded with (the build that made the images compiles its serving image in, so a
    new build's serving image is what new versions get); empty leaves `vertex.serving_image`.

    `evaluate_on_accelerator`: validation and the regression suites run on the trainer's image
    with one `accelerator_type` GPU each, where their transcription (two models over every
    held-out, eval and suite utterance) uses it; a Whisper of production size is slow on CPUs."""
    evaluator_image = (trainer_image or base_image) if evaluate_on_accelerator else None
    c = build_components(base_image, trainer_image, evaluator_image)
    default_serving_image = serving_image or ""

    @dsl.pipeline(name=PIPELINE_NAME, description=__doc__)
    def stt_flywheel(
        config_uri: str,
        force: bool = False,
        auto_deploy: bool = True,
        max_steps: int = 0,
        accelerator_type: str = "NVIDIA_L4",
        accelerator_count: int = 1,
        trainer_cpu: str = "8",
        trainer_memory: str = "32G",
        serving_image: str = default_serving_image,
    ) -> None:
        run = _Run(
            config_uri,
            dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
            accelerator_type,
            accelerator_count,
            trainer_cpu,
            trainer_memory,
        )
        trigger = (
            c.check_trigger(force=force, **run.trigger_arguments())
            .set_display_name("1 Trigger check")
            .set_caching_options(False)
        )
        with dsl.If(trigger.outputs["Output"] == True, name="enough-new-evidence"):  # noqa: E712
            dataset = (
                c.build_dataset(
                    config_uri=config_uri, run_id=run.run_id, decision=trigger.outputs["decision"]
                )
                .set_display_name("2 Build dataset")
                .set_caching_options(False)
                .set_retry(**RETRY)
            )
            with dsl.If(dataset.outputs["Output"] == True, name="dataset-usable"):  # noqa: E712
                _train_evaluate_deploy(
                    c, run, dataset, max_steps, auto_deploy, serving_image, evaluate_on_accelerator
                )

    return stt_flywheel


@dataclass(frozen=True)
class _Run:
    """The flywheel's run-wide parameters, as its tasks take them."""

    config_uri: Any
    run_id: Any
    accelerator_type: Any
    accelerator_count: Any
    trainer_cpu: Any
    trainer_memory: Any

    def trigger_arguments(self) -> dict[str, Any]:
        """What the trigger records of the machine a run would train on (for a proposal)."""
        return {
            "config_uri": self.config_uri,
            "run_id": self.run_id,
            "requested_accelerator": self.accelerator_type,
            "requested_accelerators": self.accelerator_count,
            "requested_cpu": self.trainer_cpu,
            "requested_memory": self.trainer_memory,
        }


def _train_evaluate_deploy(
    c: Any,
    run: _Run,
    dataset: Any,
    max_steps: Any,
    auto_deploy: Any,
    serving_image: Any,
    evaluate_on_accelerator: bool,
) -> None:
    """Stages 3 to 6: train on the accelerator, validate and test regressions side by side, and
    deploy only where both passed."""
    train = (
        c.train_model(
            config_uri=run.config_uri,
            run_id=run.run_id,
            max_steps=max_steps,
            requested_accelerator=run.accelerator_type,
            requested_accelerators=run.accelerator_count,
            requested_cpu=run.trainer_cpu,
            requested_memory=run.trainer_memory,
            dataset=dataset.outputs["dataset"],
        )
        .set_display_name("3 Train model")
        .set_caching_options(False)
        .set_accelerator_type(run.accelerator_type)
        .set_accelerator_limit(run.accelerator_count)
        .set_cpu_limit(run.trainer_cpu)
        .set_memory_limit(run.trainer_memory)
        .set_retry(**RETRY)
    )
    validate = (
        c.validate_model(
            config_uri=run.config_uri,
            run_id=run.run_id,
            dataset=dataset.outputs["dataset"],
            model=train.outputs["model"],
        )
        .set_display_name("4 Validate against production")
        .set_caching_options(False)
        .set_retry(**RETRY)
    )
    regression = (
        c.run_regression_suites(config_uri=run.config_uri, run_id=run.run_id, model=train.outputs["model"])
        .set_display_name("5 Regression suites")
        .set_caching_options(False)
        .set_retry(**RETRY)
    )
    if evaluate_on_accelerator:
        validate.set_accelerator_type(run.accelerator_type).set_accelerator_limit(1)
        regression.set_accelerator_type(run.accelerator_type).set_accelerator_limit(1)
    validation_passed = dsl.If(validate.outputs["Output"] == True, name="validation-passed")  # noqa: E712
    regression_passed = dsl.If(regression.outputs["Output"] == True, name="regression-passed")  # noqa: E712
    with validation_passed, regression_passed:
        (
            c.deploy_model(
                config_uri=run.config_uri,
                run_id=run.run_id,
                auto_deploy=auto_deploy,
                serving_image=serving_image,
                dataset=dataset.outputs["dataset"],
                model=train.outputs["model"],
                validation_results=validate.outputs["results"],
                regression_results=regression.outputs["results"],
            )
            .set_display_name("6 Deploy model")
            .set_caching_options(False)
        )


def build_monitor_pipeline(
    base_image: str, trainer_image: str | None = None, serving_image: str | None = None
) -> Callable[..., Any]:
    """The monitor: one look at live quality per run, scheduled (e.g. hourly) beside the flywheel.

    It decides a canary in flight from live evidence — promote, next step, roll back, or keep
    collecting — or watches the default against its record and rolls it back when it degrades.
    Two runs that overlap never both act: the task holds the monitor lease. Nothing is cached:
    every run reads traffic and feedback that changed since the last one.
    """
    c = build_components(base_image, trainer_image)

    @dsl.pipeline(name=MONITOR_PIPELINE_NAME, description=build_monitor_pipeline.__doc__)
    def stt_flywheel_monitor(config_uri: str, act: bool = True) -> None:
        (
            c.monitor_deployment(config_uri=config_uri, run_id=dsl.PIPELINE_JOB_NAME_PLACEHOLDER, act=act)
            .set_display_name("Monitor live quality")
            .set_caching_options(False)
        )

    return stt_flywheel_monitor


def build_retention_pipeline(
    base_image: str, trainer_image: str | None = None, serving_image: str | None = None
) -> Callable[..., Any]:
    """Retention: `store retain` as a run, scheduled (e.g. daily) beside the flywheel. It deletes
    what is past its `retention.*` days: the error store's partitions and the audio no younger
    prediction names, datasets, run reports and pipeline outputs no registered version names.
    `dry_run` counts instead. Nothing is cached: every run reads what aged since the last one."""
    c = build_components(base_image, trainer_image)

    @dsl.pipeline(name=RETENTION_PIPELINE_NAME, description=build_retention_pipeline.__doc__)
    def stt_flywheel_retention(config_uri: str, dry_run: bool = False) -> None:
        (
            c.retain_store(config_uri=config_uri, dry_run=dry_run)
            .set_display_name("Delete what is past its days")
            .set_caching_options(False)
            .set_retry(**RETRY)
        )

    return stt_flywheel_retention


# what `compile --pipeline NAME` and `schedule create --pipeline NAME` build
PIPELINES: dict[str, tuple[str, Callable[..., Callable[..., Any]]]] = {
    "flywheel": (PIPELINE_NAME, build_pipeline),
    "monitor": (MONITOR_PIPELINE_NAME, build_monitor_pipeline),
    "retention": (RETENTION_PIPELINE_NAME, build_retention_pipeline),
}
