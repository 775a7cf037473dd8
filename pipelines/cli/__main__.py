"""`python -m flywheel_pipelines.cli`: the same CLI as the `stt-flywheel` script."""

from flywheel_pipelines.cli import run

run()
