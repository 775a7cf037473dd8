"""User-facing errors: one hierarchy, so the CLI can tell a user's mistake from a bug.

A `FlywheelError` is something the user can fix — a file, an option, the config, the state of the
registry, a missing tool — and the CLI prints its message as one line and exits 1. Any other
exception is a bug and keeps its traceback. The subclasses also derive from the built-in type
that fits (`ValueError`, `FileNotFoundError`, `RuntimeError`), so callers that catch those keep working.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError

__all__ = ["FlywheelError", "InputError", "InputNotFound", "StateError", "describe_validation_error"]


class FlywheelError(Exception):
    """A mistake the user can fix; its message says what and how, in one line."""


class InputError(FlywheelError, ValueError):
    """A file, option or value the user gave cannot be used as it is."""


class InputNotFound(FlywheelError, FileNotFoundError):
    """A file or object the user named does not exist."""


class StateError(FlywheelError, RuntimeError):
    """The system is not in a state that allows the request (the registry, a lease, the machine)."""


def describe_validation_error(exc: ValidationError, whole: str = "record") -> str:
    """Every problem pydantic found, as `where: what` joined by `; ` (`whole` names a problem with
    the value as a whole), on one line and without echoing the value."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or whole}: {e['msg']}" for e in exc.errors())
