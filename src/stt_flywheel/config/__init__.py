"""The one configuration file: YAML validated by pydantic.

Every field has a default that serves the embedded (local) mode, unknown keys are an error, and
relative paths resolve against the directory of the config file. Paths left unset derive from
`root`, so a config can be as short as `root: /some/dir`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError

from stt_flywheel.config.base import BASE_DIR, BASE_LOCATIONS, ConfigError, ConfigLocation, Strict
from stt_flywheel.config.costs import CostSettings, StageMachine
from stt_flywheel.config.evaluation import RegressionSuite, ValidationPolicy
from stt_flywheel.config.paths import PathSettings, StoreSettings
from stt_flywheel.config.pipeline import DatasetSettings, TrainingSettings, TriggerPolicy
from stt_flywheel.config.privacy import ReportSettings, RetentionSettings
from stt_flywheel.config.serving import (
    CaptureSettings,
    DeploySettings,
    FeedbackService,
    FeedbackSettings,
    MonitorSettings,
    ServingLimits,
    UiSettings,
)
from stt_flywheel.config.vertex import IdentitySettings, VertexSettings
from stt_flywheel.errors import describe_validation_error
from stt_flywheel.storage.objectstore import is_remote, read_uri

__all__ = [
    "CaptureSettings",
    "ConfigError",
    "DatasetSettings",
    "DeploySettings",
    "CostSettings",
    "FeedbackService",
    "FeedbackSettings",
    "FlywheelConfig",
    "IdentitySettings",
    "MonitorSettings",
    "PathSettings",
    "RegressionSuite",
    "StageMachine",
    "StoreSettings",
    "ReportSettings",
    "RetentionSettings",
    "TrainingSettings",
    "TriggerPolicy",
    "UiSettings",
    "ValidationPolicy",
    "VertexSettings",
    "load_config",
    "load_run_config",
]

DEFAULT_BASE_MODEL = Path(__file__).parent.parent / "assets" / "base_model"


class FlywheelConfig(Strict):
    paths: PathSettings = PathSettings()
    store: StoreSettings = StoreSettings()
    base_model: ConfigLocation = Field(
        str(DEFAULT_BASE_MODEL),
        description="Model registered as version 1 when the registry is empty: a `save_pretrained` "
        "directory (local, or a `gs://` prefix) with its processor; a Whisper or a CTC model, told "
        "apart by its `config.json`.",
    )
    capture: CaptureSettings = CaptureSettings()
    serving: ServingLimits = ServingLimits()
    feedback: FeedbackSettings = FeedbackSettings()
    trigger: TriggerPolicy = TriggerPolicy()
    dataset: DatasetSettings = DatasetSettings()
    training: TrainingSettings = TrainingSettings()
    validation: ValidationPolicy = ValidationPolicy()
    regression: list[RegressionSuite] = Field(
        default_factory=list, description="The regression suites; none configured rejects every candidate."
    )
    deploy: DeploySettings = DeploySettings()
    monitor: MonitorSettings = MonitorSettings()
    vertex: VertexSettings = VertexSettings()
    identity: IdentitySettings = IdentitySettings()
    retention: RetentionSettings = RetentionSettings()
    reports: ReportSettings = ReportSettings()
    costs: CostSettings = CostSettings()
    ui: UiSettings = UiSettings()

    def with_overrides(self, overrides: dict[str, Any]) -> FlywheelConfig:
        """Apply dotted-key overrides (`{"trigger.force": True}`); None values are ignored."""
        data = self.model_dump()
        for key, value in overrides.items():
            if value is None:
                continue
            node = data
            *parents, leaf = key.split(".")
            for part in parents:
                node = node[part]
            if leaf not in node:
                raise ConfigError(f"unknown config key in override: {key}")
            node[leaf] = value
        return FlywheelConfig.model_validate(data)


def load_config(path: str | Path | None = None) -> FlywheelConfig:
    """Load and validate a config file (a path or a `gs://` URI); None gives the defaults, rooted in
    the working directory.

    Relative locations resolve against the file's directory, so a config read from
    `gs://bucket/flywheel/flywheel.yaml` keeps its state under `gs://bucket/flywheel/`. Relative
    file paths (manifests, the base model, `paths.root`) resolve against the file's directory when
    it is local and against the working directory when it is in Cloud Storage (on Vertex, files in
    Cloud Storage are read through the Cloud Storage FUSE mount at `/gcs/<bucket>/…`).
    """
    if path is None:
        return _resolved({}, Path.cwd(), str(Path.cwd()), "the default config")
    location: str | Path
    if is_remote(path):
        location = str(path)
        try:
            text = read_uri(location).decode()
        except FileNotFoundError as exc:
            raise ConfigError(f"config file not found: {location}") from exc
        base_dir, base_locations = Path.cwd(), location.rpartition("/")[0]
    else:
        location = Path(path)
        if not location.is_file():
            raise ConfigError(f"config file not found: {location}")
        text = location.read_text()
        base_dir = location.parent.resolve()
        base_locations = str(base_dir)
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{location}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{location}: expected a mapping at the top level")
    return _resolved(raw, base_dir, base_locations, str(location))


def _resolved(raw: dict[str, Any], base_dir: Path, base_locations: str, location: str) -> FlywheelConfig:
    """Validate as written (every default filled, unset locations derived from `root` as written),
    then once more with every relative path and location resolved against the config's place."""
    try:
        written = FlywheelConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{location}: {describe_validation_error(exc)}") from exc
    context = {BASE_DIR: base_dir, BASE_LOCATIONS: base_locations}
    return FlywheelConfig.model_validate(written.model_dump(), context=context)


def load_run_config(
    config_uri: str,
    *,
    force: bool = False,
    auto_deploy: bool | None = None,
    max_steps: int = 0,
    serving_image: str = "",
) -> FlywheelConfig:
    """The config for one pipeline run: the file plus the run's parameters.

    `force` only ever turns forcing on, and `max_steps=0` and an empty `serving_image` keep the
    configured values, so a pipeline's default parameters never silently override the file.
    """
    return load_config(config_uri).with_overrides(
        {
            "trigger.force": True if force else None,
            "deploy.auto_deploy": auto_deploy,
            "training.max_steps": max_steps or None,
            "vertex.serving_image": serving_image or None,
        }
    )
