"""The operator CLI: `stt-flywheel --help`. One module per command group; this one wires them."""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
from typing import Any, NoReturn

import typer
from pydantic import ValidationError
from typer.core import TyperOption

from flywheel_pipelines.cli.approval import approve, proposals_app
from flywheel_pipelines.cli.base_model import base_app
from flywheel_pipelines.cli.common import make_console
from flywheel_pipelines.cli.errors import errors_app
from flywheel_pipelines.cli.feedback import feedback_app
from flywheel_pipelines.cli.forget import forget_command
from flywheel_pipelines.cli.lineage import lineage_app
from flywheel_pipelines.cli.monitor import monitor
from flywheel_pipelines.cli.pipeline import compile_command, demo_command, run_command
from flywheel_pipelines.cli.registry import registry_app
from flywheel_pipelines.cli.review import review_app
from flywheel_pipelines.cli.runs import runs_app
from flywheel_pipelines.cli.schedule import schedule_app
from flywheel_pipelines.cli.scoring import compare, score
from flywheel_pipelines.cli.serve import serve
from flywheel_pipelines.cli.status import status
from flywheel_pipelines.cli.store import store_app
from flywheel_pipelines.cli.submit import submit
from flywheel_pipelines.cli.template import template_app
from flywheel_pipelines.cli.ui import ui
from stt_flywheel.errors import FlywheelError, describe_validation_error
from stt_flywheel.storage.files import private_files

__all__ = ["EXAMPLES", "app", "main"]

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="markdown",
    help="Continuous fine-tuning of a speech-to-text model from user corrections.",
)

app.command("compile")(compile_command)
app.command("run")(run_command)
app.command("demo")(demo_command)
app.command()(serve)
app.command()(submit)
app.command()(score)
app.command()(compare)
app.add_typer(registry_app, name="registry")
app.add_typer(runs_app, name="runs")
app.command()(status)
app.command()(ui)
app.command()(monitor)
app.command()(approve)
app.add_typer(proposals_app, name="proposals")
app.add_typer(errors_app, name="errors")
app.add_typer(feedback_app, name="feedback")
app.add_typer(review_app, name="review")
app.add_typer(lineage_app, name="lineage")
app.command("forget")(forget_command)
app.add_typer(store_app, name="store")
app.add_typer(base_app, name="base-model")
app.add_typer(template_app, name="template")
app.add_typer(schedule_app, name="schedule")

# One example per command, shown at the end of its --help (a test holds every command to one).
EXAMPLES = {
    "compile": "stt-flywheel compile -o flywheel.yaml",
    "run": "stt-flywheel run --config demo-work/flywheel.yaml --max-steps 200",
    "demo": "stt-flywheel demo --work-dir demo-work",
    "serve": "stt-flywheel serve --config demo-work/flywheel.yaml --port 8080",
    "submit": "stt-flywheel submit --config gs://my-flywheel/flywheel.yaml --config-uri "
    "gs://my-flywheel/flywheel.yaml --pipeline-root gs://my-flywheel/pipeline-root --template "
    "https://us-central1-kfp.pkg.dev/my-project/stt-flywheel-pipelines/stt-flywheel/latest --wait",
    "score": "stt-flywheel score --ref ref.trn --hyp hyp.trn",
    "compare": "stt-flywheel compare --ref ref.trn --hyp-a candidate.trn --hyp-b production.trn",
    "status": "stt-flywheel status --config demo-work/flywheel.yaml --html status.html",
    "ui": "stt-flywheel ui --config demo-work/flywheel.yaml --port 8070",
    "monitor": "stt-flywheel monitor --config demo-work/flywheel.yaml --dry-run",
    "approve": "stt-flywheel approve PROPOSAL_ID --config demo-work/flywheel.yaml --reason 'budget ok'",
    "proposals list": "stt-flywheel proposals list --config demo-work/flywheel.yaml",
    "lineage users": "stt-flywheel lineage users --version 3 --config demo-work/flywheel.yaml --json",
    "review list": "stt-flywheel review list --config demo-work/flywheel.yaml --json",
    "review accept": "stt-flywheel review accept 0193a5c2-7f00-7abc-8def-0123456789ab --reason 'the chart says so' "
    "--config demo-work/flywheel.yaml",
    "review reject": "stt-flywheel review reject 0193a5c2-7f00-7abc-8def-0123456789ab --reason 'one user, no source' "
    "--config demo-work/flywheel.yaml",
    "review propose": "stt-flywheel review propose --budget 50 --config demo-work/flywheel.yaml",
    "review export": "stt-flywheel review export --budget 50 --out review.json --audio-url http://127.0.0.1:8070 "
    "--config demo-work/flywheel.yaml",
    "review import": "stt-flywheel review import label-studio-export.json --source label-studio "
    "--config demo-work/flywheel.yaml",
    "registry list": "stt-flywheel registry list --config demo-work/flywheel.yaml",
    "registry adopt": "stt-flywheel registry adopt --config gs://my-flywheel-config/flywheel.yaml",
    "registry rollback": "stt-flywheel registry rollback --config demo-work/flywheel.yaml "
    "--reason 'pharmacy names worse'",
    "registry promote-canary": "stt-flywheel registry promote-canary --config demo-work/flywheel.yaml "
    "--reason 'a week of clean traffic'",
    "registry promote": "stt-flywheel registry promote --version 2 --reason 'hotfix' "
    "--config demo-work/flywheel.yaml",
    "registry audit": "stt-flywheel registry audit --config demo-work/flywheel.yaml --action rollback",
    "runs list": "stt-flywheel runs list --config demo-work/flywheel.yaml --limit 5",
    "runs show": "stt-flywheel runs show latest --config demo-work/flywheel.yaml",
    "errors ingest": "stt-flywheel errors ingest records.jsonl --config demo-work/flywheel.yaml",
    "errors export": "stt-flywheel errors export --config demo-work/flywheel.yaml --since 2026-11-01 "
    "> predictions.jsonl",
    "feedback ingest": "gsutil cat gs://my-bucket/feedback.jsonl | stt-flywheel feedback ingest - "
    "--config demo-work/flywheel.yaml",
    "feedback serve": "stt-flywheel feedback serve --config gs://my-flywheel-config/flywheel.yaml",
    "store compact": "stt-flywheel store compact --config demo-work/flywheel.yaml",
    "forget": "stt-flywheel forget --user app-user-00042 --reason 'deletion request 2026-118' "
    "--propose-retraining --config demo-work/flywheel.yaml",
    "store index": "stt-flywheel store index --config gs://my-flywheel-config/flywheel.yaml",
    "store retain": "stt-flywheel store retain --config demo-work/flywheel.yaml --dry-run",
    "store lifecycle": "stt-flywheel store lifecycle --config gs://my-flywheel/flywheel.yaml "
    "> lifecycle.json && gcloud storage buckets update gs://my-flywheel --lifecycle-file=lifecycle.json",
    "base-model train": "stt-flywheel base-model train --output my-base-model --utterances 1200",
    "template publish": "stt-flywheel template publish --template flywheel.yaml --host "
    "https://us-central1-kfp.pkg.dev/my-project/stt-flywheel-pipelines --tag v1",
    "schedule create": "stt-flywheel schedule create --config gs://my-flywheel/flywheel.yaml "
    "--name nightly --cron '0 3 * * *' --config-uri gs://my-flywheel/flywheel.yaml "
    "--pipeline-root gs://my-flywheel/pipeline-root --template "
    "https://us-central1-kfp.pkg.dev/my-project/stt-flywheel-pipelines/stt-flywheel/latest",
    "schedule list": "stt-flywheel schedule list --config gs://my-flywheel/flywheel.yaml",
    "schedule pause": "stt-flywheel schedule pause nightly --config gs://my-flywheel/flywheel.yaml",
    "schedule resume": "stt-flywheel schedule resume nightly --config gs://my-flywheel/flywheel.yaml",
    "schedule delete": "stt-flywheel schedule delete nightly --config gs://my-flywheel/flywheel.yaml",
    "schedule run": "stt-flywheel schedule run nightly --config gs://my-flywheel/flywheel.yaml "
    "--mode scheduler",
}


def _name(info: typer.models.CommandInfo) -> str:
    return info.name or info.callback.__name__.replace("_", "-")  # type: ignore[union-attr]


def _add_examples(group: typer.Typer, prefix: str = "") -> None:
    for info in group.registered_commands:
        example = EXAMPLES.get(prefix + _name(info))
        if example:
            info.epilog = f"**Example:** `{example}`"
    for sub in group.registered_groups:
        _add_examples(sub.typer_instance, f"{prefix}{sub.name} ")  # type: ignore[arg-type]


_add_examples(app)


def _type_of_option(self: TyperOption, ctx: Any) -> str | None:
    # A flag takes no value: help shows `--json`, not `--json <bool>`.
    return None if self.is_flag else _value_type(self, ctx)


_value_type = TyperOption.display_type_rich
TyperOption.display_type_rich = _type_of_option  # type: ignore[method-assign,assignment]


def main() -> None:
    # Progress bars and library chatter would bury the summary; an explicit setting still wins.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        app()  # typer's own click prints usage mistakes (usage line, one error line, exit 2)
    except FlywheelError as exc:  # a user's mistake: one line; anything else is a bug and keeps its traceback
        make_console(stderr=True).print(f"[red]error:[/] {exc}", highlight=False)
        sys.exit(1)
    except OSError as exc:
        if exc.filename is None:  # not about a path the user named: a bug or an outage, with its traceback
            raise
        # a store under a file, in /sys, without permission: the path and the problem, in one line
        make_console(stderr=True).print(
            f"[red]error:[/] cannot use {exc.filename}: {exc.strerror or exc} (check the paths in the config)",
            highlight=False,
        )
        sys.exit(1)
    except ValidationError as exc:  # a value that reached a settings model without an option's check
        problems = describe_validation_error(exc, whole="value")
        make_console(stderr=True).print(f"[red]error:[/] invalid value — {problems}", highlight=False)
        sys.exit(2)


def run() -> NoReturn:
    """The `stt-flywheel` script: `main()` with files created readable by this user alone, then
    the process ends without the native libraries' teardown. Arrow's thread-pool workers may still
    be alive when the interpreter finalises, and a worker destroyed while joinable aborts the
    process (`terminate called without an active exception`, exit 134) after the command has done
    its work and said so — on a loaded machine, about one run in forty. Python's own exit work still runs: other threads joined, exit
    handlers (logging's flush among them), the standard streams flushed."""
    private_files()  # what the commands write holds people's words: 0600 files, 0700 directories
    try:
        main()
        code = 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:  # sys.exit("message"): said on stderr, as Python would
            print(exc.code, file=sys.stderr)
            code = 1
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more to say there
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
