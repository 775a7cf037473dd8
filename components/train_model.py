from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output


def train_model(
    config_uri: str,
    run_id: str,
    max_steps: int,
    requested_accelerator: str,
    requested_accelerators: int,
    requested_cpu: str,
    requested_memory: str,
    dataset: Input[Dataset],
    model: Output[Model],
    metrics: Output[Metrics],
    loss_curve: Output[HTML],
):
    """Fine-tune the production model on the dataset; the saved model lands in `<model>/model`.

    The `requested_*` inputs are the machine the pipeline asked for (the task's resource settings);
    they are recorded beside the device the trainer actually used. Taking them as inputs is also what
    makes the compiler pass those pipeline parameters down into the conditional sub-DAGs that the
    resource settings read them from.
    """
    from pathlib import Path

    from stt_flywheel.config import load_run_config
    from stt_flywheel.run.stage_reports import loggable_metrics, training_report
    from stt_flywheel.run.stages import stage_train_model

    config = load_run_config(config_uri, max_steps=max_steps)
    result = stage_train_model(config, Path(dataset.path), Path(model.path), run_id)
    with open(loss_curve.path, "w") as fh:
        fh.write(training_report(config, run_id, result, Path(dataset.path)))
    model.metadata.update(
        {
            "device": result.device,
            "bf16": result.bf16,
            "steps": result.steps,
            "requested": {
                "accelerator": f"{requested_accelerators} x {requested_accelerator}",
                "cpu": requested_cpu,
                "memory": requested_memory,
            },
        }
    )
    for key, value in loggable_metrics(result.metrics()).items():
        metrics.log_metric(key, value)
