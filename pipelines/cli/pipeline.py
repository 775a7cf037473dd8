"""`compile`, `run` and `demo`: the pipeline on this machine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flywheel_pipelines.cli.common import PipelineName, PipelineOpt, console, print_json

__all__ = ["compile_command", "demo_command", "run_command"]


def compile_command(
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the pipeline YAML.")],
    base_image: Annotated[str, typer.Option(help="Image for the CPU stages.")] = "stt-flywheel-base:local",
    trainer_image: Annotated[
        str | None, typer.Option(help="Image for the trainer (default: base image).")
    ] = None,
    serving_image: Annotated[
        str | None,
        typer.Option(
            help="Serving image new versions are uploaded with, compiled in as the `serving_image` "
            "parameter's default (default: the config's vertex.serving_image)."
        ),
    ] = None,
    for_cloud: Annotated[
        bool, typer.Option("--for-cloud", help="Refuse images not pinned by digest (name@sha256:…).")
    ] = False,
    evaluate_on_gpu: Annotated[
        bool,
        typer.Option(
            "--evaluate-on-gpu",
            help="Run validation and the regression suites on the trainer image with one "
            "`accelerator_type` GPU each (a production-size Whisper transcribes slowly on CPUs).",
        ),
    ] = False,
    pipeline: PipelineOpt = PipelineName.flywheel,
) -> None:
    """Compile a pipeline (the flywheel, or the monitor) to a KFP YAML package."""
    from flywheel_pipelines.compile import compile_pipeline

    path = compile_pipeline(
        output,
        base_image,
        trainer_image,
        require_digests=for_cloud,
        pipeline=pipeline.value,
        serving_image=serving_image,
        evaluate_on_accelerator=evaluate_on_gpu,
    )
    console.print(f"compiled {path}")


def run_command(
    config: Annotated[
        str, typer.Option("--config", "-c", help="The flywheel config, a path or gs:// URI (required).")
    ],
    package: Annotated[
        Path | None, typer.Option(help="A compiled pipeline YAML (default: compile now).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Train even if the trigger thresholds are not met.")] = False,
    auto_deploy: Annotated[bool, typer.Option(help="Deploy a candidate that passes every gate.")] = True,
    max_steps: Annotated[int, typer.Option(help="Training steps (0 = from the config).")] = 0,
    json: Annotated[bool, typer.Option("--json", help="Print the run summary as JSON.")] = False,
) -> None:
    """Run the compiled pipeline locally with kfp.local on the embedded backends."""
    from flywheel_pipelines.local_run import run_local
    from flywheel_pipelines.views import print_summary
    from stt_flywheel.run.summary import summarize_run

    cfg, run_id = run_local(
        config,
        package=package,
        force=force,
        auto_deploy=auto_deploy,
        max_steps=max_steps,
        console=None if json else console,
    )
    summary = summarize_run(cfg, run_id)
    if json:
        print_json(summary)
    else:
        print_summary(summary, console)


def demo_command(
    work_dir: Annotated[Path, typer.Option(help="Where the demo world and its state live.")] = Path(
        "demo-work"
    ),
    max_steps: Annotated[
        int | None, typer.Option(help="Fine-tuning steps (default: the demo recipe's).")
    ] = None,
    scale: Annotated[float, typer.Option(help="Size of the synthetic world (1.0 = full demo).")] = 1.0,
    turns: Annotated[
        int, typer.Option(min=1, max=3, help="Turns of the flywheel (train → canary → decision).")
    ] = 2,
    bad_canary: Annotated[
        bool,
        typer.Option(
            "--bad-canary",
            help="Instead: put a deliberately degraded model on canary and watch the monitor roll it back "
            "(state under WORK_DIR/bad-canary, started afresh each time).",
        ),
    ] = False,
    poisoned_feedback: Annotated[
        bool,
        typer.Option(
            "--poisoned-feedback",
            help="Instead: one user teaches a swap of a critical term and floods the canary with "
            "confirmations; see what review, the caps and the curated gate make of it (state under "
            "WORK_DIR/poisoned-feedback, started afresh each time).",
        ),
    ] = False,
) -> None:
    """Build the demo world and let the flywheel turn by itself: train, canary, decide from live
    evidence, and again (safe to repeat)."""
    from flywheel_pipelines.demo import run_demo

    if bad_canary and poisoned_feedback:
        raise typer.BadParameter("choose one scenario: --bad-canary or --poisoned-feedback")
    if poisoned_feedback:
        from flywheel_pipelines.demo_poisoned import POISONED_MAX_STEPS, run_poisoned_demo
        from flywheel_pipelines.views import make_console

        run_poisoned_demo(
            work_dir,
            scale=scale,
            max_steps=max_steps or POISONED_MAX_STEPS,
            min_error_cases=50,
            console=make_console(),
        )
        return
    run_demo(
        work_dir,
        scale=scale,
        turns=turns,
        bad_canary=bad_canary,
        **({"max_steps": max_steps} if max_steps else {}),
    )
