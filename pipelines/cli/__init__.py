"""The operator CLI: `stt-flywheel --help`. One module per command group; this one wires them."""

from __future__ import annotations

import os
import sys

import typer
from pydantic import ValidationError

from flywheel_pipelines.cli.cloud import schedule_app, submit, template_app
from flywheel_pipelines.cli.common import make_console
from flywheel_pipelines.cli.data import base_app, errors_app
from flywheel_pipelines.cli.monitor import monitor
from flywheel_pipelines.cli.pipeline import compile_command, demo_command, run_command
from flywheel_pipelines.cli.registry import registry_app, serve
from flywheel_pipelines.cli.runs import registry_audit, runs_app
from flywheel_pipelines.cli.scoring import compare, score
from flywheel_pipelines.cli.store import errors_export, feedback_app, status, store_app
from stt_flywheel.errors import FlywheelError

__all__ = ["app", "main"]

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    help="Continuous fine-tuning of a speech-to-text model from user corrections.",
)

app.command("compile")(compile_command)
app.command("run")(run_command)
app.command("demo")(demo_command)
app.command()(serve)
app.command()(submit)
app.command()(score)
app.command()(compare)
registry_app.command("audit")(registry_audit)
app.add_typer(registry_app, name="registry")
app.add_typer(runs_app, name="runs")
app.command()(status)
app.command()(monitor)
errors_app.command("export")(errors_export)
app.add_typer(errors_app, name="errors")
app.add_typer(feedback_app, name="feedback")
app.add_typer(store_app, name="store")
app.add_typer(base_app, name="base-model")
app.add_typer(template_app, name="template")
app.add_typer(schedule_app, name="schedule")


def main() -> None:
    # Progress bars and library chatter would bury the summary; an explicit setting still wins.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        app()  # typer's own click prints usage mistakes (usage line, one error line, exit 2)
    except FlywheelError as exc:  # a user's mistake: one line; anything else is a bug and keeps its traceback
        make_console(stderr=True).print(f"[red]error:[/] {exc}", highlight=False)
        sys.exit(1)
    except ValidationError as exc:  # a value that reached a settings model without an option's check
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors())
        make_console(stderr=True).print(f"[red]error:[/] invalid value — {problems}", highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
