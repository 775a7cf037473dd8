"""Serving: the contract (routes, request and response models, environment), the app, and a
local serving process. Importing this package loads neither FastAPI nor a model; `app` does."""

from stt_flywheel.deployment.serving.contract import ServingSettings, capture_env
from stt_flywheel.deployment.serving.process import ServingProcess

__all__ = ["ServingProcess", "ServingSettings", "capture_env"]
