from kfp.dsl import Artifact, Markdown, Metrics, Output


def check_trigger(
    config_uri: str,
    run_id: str,
    force: bool,
    requested_accelerator: str,
    requested_accelerators: int,
    requested_cpu: str,
    requested_memory: str,
    decision: Output[Artifact],
    report: Output[Markdown],
    metrics: Output[Metrics],
) -> bool:
    """Decide from the error store whether enough new evidence exists to fine-tune.

    Returns whether to train; the decision (with the new data watermark) is the `decision` artifact.
    The `requested_*` inputs are the trainer's machine, named in a proposal when training needs
    approval (`trigger.require_approval`).
    """
    from stt_flywheel.config import load_run_config
    from stt_flywheel.run.stage_reports import markdown_report
    from stt_flywheel.run.stages import stage_check_trigger
    from stt_flywheel.storage.files import atomic_write_json

    config = load_run_config(config_uri, force=force)
    machine = {
        "accelerator": f"{requested_accelerators} x {requested_accelerator}",
        "cpu": requested_cpu,
        "memory": requested_memory,
    }
    result = stage_check_trigger(config, run_id, machine=machine)
    atomic_write_json(decision.path, result.as_dict())
    decision.metadata.update(
        {"watermark": result.watermark.isoformat() if result.watermark else "", "reason": result.summary}
    )
    with open(report.path, "w") as fh:
        fh.write(markdown_report(config, run_id, result))
    for check in result.checks:
        if check.value == check.value:  # NaN (no traffic) is not a metric value
            metrics.log_metric(check.name, float(check.value))
    return result.should_train
