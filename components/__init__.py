"""KFP components, one per stage (and the monitor's and retention's). Each body maps artifacts to one `stt_flywheel.run.stages` call.

Images are not known at import time: `build_components` turns the plain functions into
lightweight components for the images given at compile time. The images carry the library and
kfp, so nothing is pip-installed when a task starts.
"""

from __future__ import annotations

from dataclasses import dataclass

from kfp import dsl
from kfp.dsl.python_component import PythonComponent

from flywheel_components.build_dataset import build_dataset
from flywheel_components.check_trigger import check_trigger
from flywheel_components.deploy_model import deploy_model
from flywheel_components.monitor_deployment import monitor_deployment
from flywheel_components.retain_store import retain_store
from flywheel_components.run_regression_suites import run_regression_suites
from flywheel_components.train_model import train_model
from flywheel_components.validate_model import validate_model

__all__ = ["Components", "build_components"]


@dataclass(frozen=True)
class Components:
    check_trigger: PythonComponent
    build_dataset: PythonComponent
    train_model: PythonComponent
    validate_model: PythonComponent
    run_regression_suites: PythonComponent
    deploy_model: PythonComponent
    monitor_deployment: PythonComponent
    retain_store: PythonComponent


def build_components(
    base_image: str, trainer_image: str | None = None, evaluator_image: str | None = None
) -> Components:
    """The components on their images: the trainer on `trainer_image`, validation and the
    regression suites on `evaluator_image` (the trainer's CUDA image when they run on a GPU),
    everything else (and whatever has no image of its own) on `base_image`."""

    def make(func, image: str = base_image) -> PythonComponent:  # type: ignore[no-untyped-def]
        return dsl.component(func, base_image=image, install_kfp_package=False)

    return Components(
        check_trigger=make(check_trigger),
        build_dataset=make(build_dataset),
        train_model=make(train_model, trainer_image or base_image),
        validate_model=make(validate_model, evaluator_image or base_image),
        run_regression_suites=make(run_regression_suites, evaluator_image or base_image),
        deploy_model=make(deploy_model),
        monitor_deployment=make(monitor_deployment),
        retain_store=make(retain_store),
    )
