"""The operator CLI: `stt-flywheel --help`."""

from __future__ import annotations

import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import click
import orjson
import typer
from rich.console import Console
from rich.table import Table

from stt_flywheel.config import ConfigError, FlywheelConfig, load_config
from stt_flywheel.registry import RegistryError

if TYPE_CHECKING:
    from flywheel_pipelines.submit import Submission

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    help="Continuous fine-tuning of a speech-to-text model from user corrections.",
)
registry_app = typer.Typer(no_args_is_help=True, help="Inspect and roll back the model registry.")
errors_app = typer.Typer(no_args_is_help=True, help="Feed the error store.")
base_app = typer.Typer(no_args_is_help=True, help="The demo's tiny base model.")
template_app = typer.Typer(no_args_is_help=True, help="Published pipeline templates (Artifact Registry).")
schedule_app = typer.Typer(
    no_args_is_help=True, help="Scheduled runs: Vertex AI schedules or Cloud Scheduler jobs."
)
app.add_typer(registry_app, name="registry")
app.add_typer(errors_app, name="errors")
app.add_typer(base_app, name="base-model")
app.add_typer(template_app, name="template")
app.add_typer(schedule_app, name="schedule")

console = Console()
ConfigOpt = Annotated[
    str | None,
    typer.Option("--config", "-c", help="Config YAML, a path or gs:// URI (default: built-in defaults)."),
]


class ScheduleMode(StrEnum):
    vertex = "vertex"
    scheduler = "scheduler"


ModeOpt = Annotated[
    ScheduleMode,
    typer.Option("--mode", help="vertex: a Vertex AI schedule; scheduler: a Cloud Scheduler HTTP job."),
]
VertexConfigOpt = Annotated[
    str, typer.Option("--config", "-c", help="The flywheel config, a path or gs:// URI (its vertex section).")
]


def _config(path: str | Path | None) -> FlywheelConfig:
    return load_config(path)


def _print_json(obj: object) -> None:
    sys.stdout.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2, default=str).decode() + "\n")


@app.command()
def compile(
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the pipeline YAML.")],
    base_image: Annotated[str, typer.Option(help="Image for the CPU stages.")] = "stt-flywheel-base:local",
    trainer_image: Annotated[
        str | None, typer.Option(help="Image for the trainer (default: base image).")
    ] = None,
    config: ConfigOpt = None,
    for_cloud: Annotated[
        bool, typer.Option("--for-cloud", help="Refuse images not pinned by digest (name@sha256:…).")
    ] = False,
) -> None:
    """Compile the pipeline to a KFP YAML package."""
    from flywheel_pipelines.compile import compile_pipeline

    if config is not None:
        _config(config)
    path = compile_pipeline(output, base_image, trainer_image, require_digests=for_cloud)
    console.print(f"compiled {path}")


@app.command()
def run(
    config: ConfigOpt = None,
    package: Annotated[
        Path | None, typer.Option(help="A compiled pipeline YAML (default: compile now).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Train even if the trigger thresholds are not met.")] = False,
    auto_deploy: Annotated[bool, typer.Option(help="Deploy a candidate that passes every gate.")] = True,
    max_steps: Annotated[int, typer.Option(help="Training steps (0 = from the config).")] = 0,
    json: Annotated[bool, typer.Option("--json", help="Print the run summary as JSON.")] = False,
) -> None:
    """Run the compiled pipeline locally with kfp.local on the embedded backends."""
    from flywheel_pipelines.demo import print_summary
    from flywheel_pipelines.local_run import run_local

    from stt_flywheel.stages import summarize_run

    if config is None:
        raise ConfigError("run needs --config FILE")
    cfg, run_id = run_local(
        config, package=package, force=force, auto_deploy=auto_deploy, max_steps=max_steps
    )
    summary = summarize_run(cfg, run_id)
    if json:
        _print_json(summary)
    else:
        summary.setdefault("reports", {"pipeline_root": str(cfg.paths.pipeline_root)})
        print_summary(summary, console)


@app.command()
def demo(
    work_dir: Annotated[Path, typer.Option(help="Where the demo world and its state live.")] = Path(
        "demo-work"
    ),
    config: ConfigOpt = None,
    max_steps: Annotated[
        int | None, typer.Option(help="Fine-tuning steps (default: the demo recipe's).")
    ] = None,
    scale: Annotated[float, typer.Option(help="Size of the synthetic world (1.0 = full demo).")] = 1.0,
) -> None:
    """Build the demo world and run the whole flywheel once (safe to repeat)."""
    from flywheel_pipelines.demo import run_demo

    if config is not None:
        raise ConfigError("demo writes its own config into --work-dir; use 'run --config' for your own")
    run_demo(work_dir, scale=scale, **({"max_steps": max_steps} if max_steps else {}))


@app.command()
def serve(
    model_dir: Annotated[
        str | None,
        typer.Option(help="Model directory (default: AIP_STORAGE_URI, else the registry's default)."),
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: AIP_HTTP_PORT, else 8080).")] = None,
    config: ConfigOpt = None,
) -> None:
    """Serve a model over HTTP with Vertex AI's custom-container contract (AIP_* variables)."""
    from stt_flywheel.serving import ServingSettings, run_server
    from stt_flywheel.stages import open_registry

    if model_dir is None and not os.environ.get("AIP_STORAGE_URI"):
        default = open_registry(_config(config)).resolve("default")
        if default is None:
            raise RegistryError("the registry has no default version to serve; pass --model-dir")
        model_dir = default.uri
    run_server(ServingSettings.from_env(storage_uri=model_dir, port=port))


@registry_app.command("list")
def registry_list(
    config: ConfigOpt = None, json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False
) -> None:
    """List registered versions with their aliases and headline metrics."""
    from stt_flywheel.stages import open_endpoint, open_registry

    cfg = _config(config)
    registry = open_registry(cfg)
    versions = registry.versions()
    traffic = open_endpoint(cfg, registry).traffic()
    if json:
        _print_json(
            {"versions": [v.as_dict() for v in versions], "aliases": registry.aliases(), "traffic": traffic}
        )
        return
    where = registry.resource_name if cfg.deploy.backend == "vertex" else cfg.paths.registry_db
    table = Table(title=f"{registry.model} ({where})")
    for col in ("version", "aliases", "traffic %", "dataset", "held-out WER", "created"):
        table.add_column(col)
    for v in versions:
        wer = v.metrics.get("wer")
        table.add_row(
            str(v.version),
            ", ".join(v.aliases),
            str(traffic.get(v.version, 0)),
            v.dataset_version or "—",
            f"{wer:.3f}" if isinstance(wer, float) else "—",
            v.created_at[:19],
        )
    console.print(table)


@app.command()
def submit(
    config: VertexConfigOpt,
    config_uri: Annotated[str, typer.Option(help="gs:// URI of the config the pipeline's tasks read.")],
    pipeline_root: Annotated[str, typer.Option(help="gs:// pipeline root for the run's artifacts.")],
    template: Annotated[
        str | None, typer.Option(help="Compiled YAML or a published template URL (default: compile now).")
    ] = None,
    base_image: Annotated[str | None, typer.Option(help="Base image by digest, when compiling now.")] = None,
    trainer_image: Annotated[
        str | None, typer.Option(help="Trainer image by digest, when compiling now.")
    ] = None,
    service_account: Annotated[
        str | None,
        typer.Option(help="Service account of the run (default: vertex.pipeline_service_account)."),
    ] = None,
    param: Annotated[list[str] | None, typer.Option("--param", help="Pipeline parameter key=value.")] = None,
    label: Annotated[list[str] | None, typer.Option("--label", help="Label key=value on the run.")] = None,
    caching: Annotated[bool, typer.Option(help="Let Vertex reuse cached task results.")] = False,
    job_id: Annotated[str | None, typer.Option(help="Job id (default: stt-flywheel-<time>).")] = None,
    wait: Annotated[bool, typer.Option(help="Follow the run, printing task states as they change.")] = False,
    poll_s: Annotated[float, typer.Option(help="Seconds between polls with --wait.")] = 15.0,
) -> None:
    """Submit the pipeline to Vertex AI Pipelines."""
    from flywheel_pipelines.submit import submit_pipeline

    cfg = _config(config)
    result = submit_pipeline(
        cfg,
        _submission(
            cfg,
            _template_now(template, base_image, trainer_image),
            config_uri,
            pipeline_root,
            service_account,
            param,
            label,
            enable_caching=caching,
            job_id=job_id,
        ),
        wait=wait,
        poll_s=poll_s,
        report=console.print,
    )
    if wait and result["state"] != "PIPELINE_STATE_SUCCEEDED":
        raise typer.Exit(1)


def _template_now(template: str | None, base_image: str | None, trainer_image: str | None) -> str:
    """The given template, or one compiled now for the cloud from images pinned by digest."""
    import tempfile

    from flywheel_pipelines.compile import compile_pipeline

    if template is not None:
        return template
    if not (base_image and trainer_image):
        raise ConfigError("give --template, or --base-image and --trainer-image (by digest) to compile now")
    path = Path(tempfile.mkdtemp()) / "stt-flywheel.yaml"
    return str(compile_pipeline(path, base_image, trainer_image, require_digests=True))


def _submission(
    cfg: FlywheelConfig,
    template: str,
    config_uri: str,
    pipeline_root: str,
    service_account: str | None,
    params: list[str] | None,
    labels: list[str] | None,
    **options: Any,
) -> Submission:
    """A run as `submit` and `schedule create` describe it, with the config's defaults."""
    from flywheel_pipelines.submit import Submission, parse_params

    return Submission(
        template=template,
        config_uri=config_uri,
        pipeline_root=pipeline_root,
        service_account=service_account or cfg.vertex.pipeline_service_account or "",
        params=parse_params(params or []),
        labels={k: str(v) for k, v in parse_params(labels or []).items()},
        **options,
    )


@template_app.command("publish")
def template_publish(
    host: Annotated[str, typer.Option(help="KFP repository: https://REGION-kfp.pkg.dev/PROJECT/REPOSITORY.")],
    tag: Annotated[list[str], typer.Option("--tag", help="Tag of this version (repeat); moves if taken.")],
    template: Annotated[
        Path | None, typer.Option(help="Compiled YAML (default: compile now from the images).")
    ] = None,
    base_image: Annotated[str | None, typer.Option(help="Base image by digest, when compiling now.")] = None,
    trainer_image: Annotated[
        str | None, typer.Option(help="Trainer image by digest, when compiling now.")
    ] = None,
    description: Annotated[str | None, typer.Option(help="Description shown in the registry.")] = None,
    access_token: Annotated[
        str | None,
        typer.Option(
            envvar="STT_FLYWHEEL_REGISTRY_TOKEN",
            help="Bearer token instead of application-default credentials (gcloud auth print-access-token).",
        ),
    ] = None,
) -> None:
    """Publish the pipeline to an Artifact Registry KFP repository, so runs can be created from it."""
    from flywheel_pipelines.templates import publish_template

    path = _template_now(str(template) if template else None, base_image, trainer_image)
    published = publish_template(host, path, tag, description, auth=access_token)
    console.print(f"published {published.package} {published.version}")
    for t in published.tags:
        console.print(f"  {published.url(t)}", highlight=False)


def _print_schedules(rows: list) -> None:
    table = Table(title="stt-flywheel schedules")
    for column in ("mode", "name", "cron", "state", "target"):
        table.add_column(column)
    for r in rows:
        table.add_row(r.mode, r.name, r.cron, r.state, r.target)
    console.print(table)


@schedule_app.command("create")
def schedule_create(
    config: VertexConfigOpt,
    name: Annotated[str, typer.Option(help="Schedule name (Vertex display name or Cloud Scheduler job id).")],
    cron: Annotated[str, typer.Option(help="Cron expression, e.g. '0 3 * * *'.")],
    config_uri: Annotated[str, typer.Option(help="gs:// URI of the config the pipeline's tasks read.")],
    pipeline_root: Annotated[str, typer.Option(help="gs:// pipeline root for the runs' artifacts.")],
    template: Annotated[
        str | None, typer.Option(help="Published template URL or compiled YAML (default: compile now).")
    ] = None,
    base_image: Annotated[str | None, typer.Option(help="Base image by digest, when compiling now.")] = None,
    trainer_image: Annotated[
        str | None, typer.Option(help="Trainer image by digest, when compiling now.")
    ] = None,
    mode: ModeOpt = ScheduleMode.vertex,
    time_zone: Annotated[str, typer.Option(help="IANA time zone of the cron expression.")] = "Etc/UTC",
    service_account: Annotated[
        str | None,
        typer.Option(help="Service account the runs run as (default: vertex.pipeline_service_account)."),
    ] = None,
    scheduler_service_account: Annotated[
        str | None,
        typer.Option(
            help="scheduler mode: account whose OAuth token creates the runs (default: vertex.scheduler_service_account, else the runs' account)."
        ),
    ] = None,
    param: Annotated[list[str] | None, typer.Option("--param", help="Pipeline parameter key=value.")] = None,
    label: Annotated[list[str] | None, typer.Option("--label", help="Label key=value on each run.")] = None,
    replace: Annotated[bool, typer.Option(help="Replace a schedule of the same name.")] = False,
) -> None:
    """Run the pipeline on a cron schedule (never two runs of it at once)."""
    from flywheel_pipelines.schedules import create_schedule

    cfg = _config(config)
    info = create_schedule(
        cfg,
        _submission(
            cfg,
            _template_now(template, base_image, trainer_image),
            config_uri,
            pipeline_root,
            service_account,
            param,
            label,
        ),
        name=name,
        cron=cron,
        time_zone=time_zone,
        mode=mode.value,  # type: ignore[arg-type]
        replace=replace,
        scheduler_service_account=scheduler_service_account,
    )
    console.print(f"created {info.resource} ({info.cron}, {info.state})", highlight=False)


@schedule_app.command("list")
def schedule_list(config: VertexConfigOpt, mode: ModeOpt = ScheduleMode.vertex) -> None:
    """List this project's stt-flywheel schedules."""
    from flywheel_pipelines.schedules import list_schedules

    _print_schedules(list_schedules(_config(config), mode.value))  # type: ignore[arg-type]


def _schedule_action(config: str, mode: ScheduleMode, name: str, action: str) -> None:
    from flywheel_pipelines.schedules import set_schedule_state

    info = set_schedule_state(_config(config), mode.value, name, action)  # type: ignore[arg-type]
    console.print(f"{action}: {name}" + (f" ({info.state})" if info else ""), highlight=False)


NameArg = Annotated[str, typer.Argument(help="Schedule name.")]


@schedule_app.command("pause")
def schedule_pause(name: NameArg, config: VertexConfigOpt, mode: ModeOpt = ScheduleMode.vertex) -> None:
    """Pause a schedule (a run in progress goes on)."""
    _schedule_action(config, mode, name, "pause")


@schedule_app.command("resume")
def schedule_resume(name: NameArg, config: VertexConfigOpt, mode: ModeOpt = ScheduleMode.vertex) -> None:
    """Resume a paused schedule (missed ticks are not caught up)."""
    _schedule_action(config, mode, name, "resume")


@schedule_app.command("delete")
def schedule_delete(name: NameArg, config: VertexConfigOpt, mode: ModeOpt = ScheduleMode.vertex) -> None:
    """Delete a schedule."""
    _schedule_action(config, mode, name, "delete")


@schedule_app.command("run")
def schedule_run(name: NameArg, config: VertexConfigOpt, mode: ModeOpt = ScheduleMode.scheduler) -> None:
    """Fire a Cloud Scheduler job now (scheduler mode only)."""
    _schedule_action(config, mode, name, "run")


@registry_app.command("rollback")
def registry_rollback(
    config: ConfigOpt = None,
    reason: Annotated[str, typer.Option(help="Recorded in the audit log.")] = "manual rollback",
) -> None:
    """End a canary in flight, or restore the `previous` version as `default` with all endpoint traffic."""
    from stt_flywheel.deploy import rollback
    from stt_flywheel.stages import open_endpoint, open_registry

    cfg = _config(config)
    registry = open_registry(cfg)
    outcome = rollback(registry, open_endpoint(cfg, registry), reason)
    console.print(
        f"rolled back: default is v{outcome.version}, the endpoint serves it (v{outcome.replaced} out)"
    )


@registry_app.command("promote-canary")
def registry_promote_canary(
    config: ConfigOpt = None,
    reason: Annotated[str, typer.Option(help="Recorded in the audit log.")] = "canary promoted",
) -> None:
    """Give the canary (alias `candidate`) all traffic, undeploy the rest, make it `default`."""
    from stt_flywheel.deploy import promote_canary
    from stt_flywheel.stages import open_endpoint, open_registry

    cfg = _config(config)
    registry = open_registry(cfg)
    outcome = promote_canary(registry, open_endpoint(cfg, registry), reason)
    console.print(f"default is v{outcome.version} (was v{outcome.replaced}) and serves all traffic")


@registry_app.command("promote")
def registry_promote(
    reason: Annotated[str, typer.Option(help="Why; recorded in the audit log (required).")],
    version: Annotated[int | None, typer.Option(help="A registered version.")] = None,
    run: Annotated[
        str | None,
        typer.Option(help="A pipeline run id: register its candidate, with its evaluation, and promote it."),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(help="Promote even though the evaluation rejected it (recorded with what it overrode)."),
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """Promote a version (or a run's candidate) to `default` and send it all endpoint traffic."""
    from stt_flywheel.deploy import manual_promotion
    from stt_flywheel.stages import open_endpoint, open_registry, read_ledger

    if (version is None) == (run is None):
        raise RegistryError("give exactly one of --version and --run")
    cfg = _config(config)
    registry = open_registry(cfg)
    candidate_dir = evaluation = None
    if run is not None:
        train = read_ledger(cfg, run, "train")
        if train is None:
            raise RegistryError(
                f"run {run} trained no candidate (no train entry in its ledger under {cfg.paths.reports})"
            )
        candidate_dir = train["model_dir"]
        evaluation = {
            stage: entry
            for stage in ("validation", "regression")
            if (entry := read_ledger(cfg, run, stage)) is not None
        }
    outcome = manual_promotion(
        registry,
        open_endpoint(cfg, registry),
        reason=reason,
        version=version,
        candidate_dir=candidate_dir,
        evaluation=evaluation,
        run_id=run,
        force=force,
    )
    console.print(f"default is v{outcome.version} (was v{outcome.replaced}); {outcome.reasons[0]}")


@errors_app.command("ingest")
def errors_ingest(
    file: Annotated[Path, typer.Argument(help="JSONL of transcript records.")],
    config: ConfigOpt = None,
    json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Validate and append transcript records; invalid lines are quarantined with a reason."""
    from stt_flywheel.error_store import ErrorStore

    cfg = _config(config)
    assert cfg.paths.error_store
    result = ErrorStore(cfg.paths.error_store).ingest_file(file)
    if json:
        _print_json({**result.as_dict(), "quarantine": [q.__dict__ for q in result.quarantined]})
        return
    console.print(
        f"read {result.read}: accepted {result.accepted}, duplicates {result.duplicates}, "
        f"quarantined {len(result.quarantined)}"
    )
    for q in result.quarantined[:20]:
        console.print(f"  line {q.line}: {q.reason} — {q.detail}")


@base_app.command("train")
def base_model_train(
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory for the trained model.")],
    scratch: Annotated[Path, typer.Option(help="Where to synthesise the training audio.")] = Path(
        "/tmp/stt-base"
    ),
    utterances: Annotated[int, typer.Option(help="General-domain training utterances.")] = 1500,
    config: ConfigOpt = None,
) -> None:
    """Train the tiny CTC base model from scratch on synthetic general-domain speech."""
    from stt_flywheel.base_model import train_base_model

    command = " ".join(["stt-flywheel", *sys.argv[1:]])
    card = train_base_model(output, scratch, utterances=utterances, command=command)
    _print_json(card)


NormalizerOpt = Annotated[
    str, typer.Option(help="Text normaliser: whisper-en, basic-en or none (optionally name/version).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@app.command()
def score(
    ref: Annotated[Path, typer.Option(help="Reference transcripts: sclite trn or JSONL (id, text).")],
    hyp: Annotated[Path, typer.Option(help="Hypotheses, same formats, same utterance ids.")],
    normalizer: NormalizerOpt = "whisper-en/1",
    json: JsonOpt = False,
) -> None:
    """Corpus WER and CER with hits, substitutions, deletions and insertions (sclite-exact counts)."""
    from stt_flywheel.scoring import match_transcripts, read_transcripts, score_corpus

    refs, hyps = read_transcripts(ref), read_transcripts(hyp)
    ids = match_transcripts(refs, hyps)
    result, _ = score_corpus([refs[k] for k in ids], [hyps[k] for k in ids], normalizer)
    if json:
        _print_json(result.as_dict() | {"word_errors": result.word_errors})
        return
    console.print(
        f"{result.utterances} utterances, {result.ref_words} reference words, normaliser {result.normalizer}\n"
        f"WER {result.wer:.4%} (raw {result.raw_wer:.4%})  CER {result.cer:.4%}\n"
        f"H {result.hits}  S {result.substitutions}  D {result.deletions}  I {result.insertions}  "
        f"errors {result.word_errors}",
        highlight=False,
    )


@app.command()
def compare(
    ref: Annotated[Path, typer.Option(help="Reference transcripts: sclite trn or JSONL (id, text).")],
    hyp_a: Annotated[Path, typer.Option("--hyp-a", help="System A (e.g. the candidate).")],
    hyp_b: Annotated[Path, typer.Option("--hyp-b", help="System B (e.g. production).")],
    normalizer: NormalizerOpt = "whisper-en/1",
    confidence: Annotated[float, typer.Option(help="Confidence of the bootstrap interval.")] = 0.95,
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples.")] = 1000,
    json: JsonOpt = False,
) -> None:
    """Paired comparison on the same utterances: ΔWER = WER(A) − WER(B) with its bootstrap interval, and the
    p-values of the Wilcoxon signed-rank, paired t and MAPSSWE tests."""
    from stt_flywheel.config import ValidationPolicy
    from stt_flywheel.evaluation import comparison_from_texts, summarize_comparison
    from stt_flywheel.scoring import match_transcripts, read_transcripts

    refs = read_transcripts(ref)
    a, b = read_transcripts(hyp_a), read_transcripts(hyp_b)
    ids = match_transcripts(refs, a, "system A")
    match_transcripts(refs, b, "system B")
    policy = ValidationPolicy(normalizer=normalizer, confidence=confidence, bootstrap_resamples=resamples)
    examples = [{"id": k, "text": refs[k]} for k in ids]
    comp = comparison_from_texts(
        "compare", examples, [a[k] for k in ids], [b[k] for k in ids], policy.normalizer
    )
    metrics, details = summarize_comparison(comp, policy)
    out = {
        "utterances": len(ids),
        "normalizer": details["normalizer"],
        "wer_a": metrics["wer"],
        "wer_b": metrics["production_wer"],
        "delta_wer": metrics["delta_wer"],
        "interval": details["interval"],
        "p_values": {name: t["p_value"] for name, t in details["tests"].items()},
        "a_better": details["tests"]["wilcoxon"]["better"],
        "a_worse": details["tests"]["wilcoxon"]["worse"],
        "newly_broken": metrics.get("newly_broken"),
        "newly_fixed": metrics.get("newly_fixed"),
    }
    if json:
        _print_json(out)
        return
    iv = out["interval"]
    console.print(
        f"{out['utterances']} utterances, normaliser {out['normalizer']}\n"
        f"WER A {out['wer_a']:.4%}   WER B {out['wer_b']:.4%}\n"
        f"ΔWER (A − B) {out['delta_wer']:+.4%}, {iv['confidence']:.0%} interval "
        f"[{iv['low']:+.4%}, {iv['high']:+.4%}] ({iv['resamples']} resamples by {iv['unit']})\n"
        f"A better on {out['a_better']}, worse on {out['a_worse']} utterances\n"
        + "\n".join(f"p ({name}): {p:.3g}" for name, p in out["p_values"].items()),
        highlight=False,
    )


USER_ERRORS = (ConfigError, RegistryError, FileNotFoundError, ValueError, RuntimeError)


def main() -> None:
    # Progress bars and library chatter would bury the summary; an explicit setting still wins.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        app(standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        sys.exit(130)
    except USER_ERRORS as exc:
        Console(stderr=True).print(f"[red]error:[/] {exc}", highlight=False)
        sys.exit(1)


if __name__ == "__main__":
    main()
