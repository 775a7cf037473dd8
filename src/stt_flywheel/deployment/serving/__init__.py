"""Serving: the contract (routes, request and response models, environment), the app, and a
local serving process. Importing this package loads neither FastAPI nor a model (`app` does), nor
the process's HTTP client and numpy (`process` does, when `ServingProcess` is first named): the
registry reads the contract on every command."""

from typing import Any

from stt_flywheel.deployment.serving.contract import ServingSettings, capture_env

__all__ = ["ServingProcess", "ServingSettings", "capture_env"]


def __getattr__(name: str) -> Any:
    if name == "ServingProcess":
        from stt_flywheel.deployment.serving.process import ServingProcess

        return ServingProcess
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
