"""What every settings model shares: strictness, and paths that resolve where the config lives."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationInfo

from stt_flywheel.errors import InputError

__all__ = ["BASE_DIR", "BASE_LOCATIONS", "ConfigError", "ConfigLocation", "ConfigPath", "Strict"]

# the validation context keys load_config passes: the directory relative file paths resolve
# against, and the directory or gs:// prefix relative store locations resolve against
BASE_DIR = "base_dir"
BASE_LOCATIONS = "base_locations"


class ConfigError(InputError):
    """The config file is missing, unreadable or invalid; the message says where."""


class Strict(BaseModel):
    # NaN and infinities are refused in every number: a gate must never be switched off by one
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def _against_base_dir(value: Path, info: ValidationInfo) -> Path:
    base: Any = (info.context or {}).get(BASE_DIR)
    if base is None or value.is_absolute():
        return value
    return (Path(base) / value).resolve()


# a local file or directory named in the config: relative to the config file's directory
ConfigPath = Annotated[Path, AfterValidator(_against_base_dir)]


def _location(value: str | Path, info: ValidationInfo) -> str:
    text = str(value)
    if text.startswith("gs://"):
        return text
    return str(_against_base_dir(Path(text), info))


# a local path (relative to the config file's directory) or a gs://bucket/prefix, kept as text
ConfigLocation = Annotated[str | Path, AfterValidator(_location)]
