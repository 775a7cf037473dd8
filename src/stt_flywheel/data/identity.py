"""Who sent a prediction or a correction, as a pseudonym the store can count but not read.

The calling application names its end user (its own pseudonymous id) beside each request and
each feedback event. The store never keeps that id: it keeps HMAC-SHA256 of it under a key that
lives apart from the data, so the same user is the same pseudonym everywhere (limits, lineage,
forgetting) and nobody holding the store alone can tell who it is. No user is `anonymous`,
which every limit counts as one user.

The key comes from `FLYWHEEL_IDENTITY_KEY`; else from Secret Manager (`identity.secret`, a
secret version: what every process on Google Cloud uses, the serving container included); else,
for the embedded default, from a file in the local state directory, generated once (mode 0600) by
whichever process needs it first.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson

from stt_flywheel.config import IdentitySettings
from stt_flywheel.config.base import ConfigError

__all__ = [
    "ANONYMOUS",
    "IDENTITY_KEY_ENV",
    "IDENTITY_SECRET_ENDPOINT_ENV",
    "IDENTITY_SECRET_ENV",
    "KEY_FILE",
    "MAX_USER_CHARS",
    "Identity",
    "Senders",
    "load_identity",
    "read_secret",
]

ANONYMOUS = "anonymous"
IDENTITY_KEY_ENV = "FLYWHEEL_IDENTITY_KEY"
IDENTITY_SECRET_ENV = "FLYWHEEL_IDENTITY_SECRET"  # a serving container's `identity.secret`
IDENTITY_SECRET_ENDPOINT_ENV = "FLYWHEEL_IDENTITY_SECRET_ENDPOINT"  # its `identity.secret_api_endpoint`
MAX_USER_CHARS = 256  # a longer user id is refused (`invalid_record`), not hashed
KEY_FILE = "identity.key"  # in the local state directory (`paths.root`)
_MIN_KEY_BYTES = 16


class Identity:
    """Pseudonyms under one key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < _MIN_KEY_BYTES:
            raise ConfigError(f"the identity key is {len(key)} bytes; it needs at least {_MIN_KEY_BYTES}")
        self._key = key
        self._version_keys: dict[str, bytes] = {}

    def pseudonym(self, user: str | None) -> str:
        """The stored form of a user id: 32 hex digits of its HMAC, or `anonymous` for none."""
        if user is None or not user.strip():
            return ANONYMOUS
        return hmac.digest(self._key, user.strip().encode(), "sha256").hex()[:32]

    def sign(self, version: str | None, prediction_id: str, user: str, hypothesis: str) -> str:
        """What a serving process of `version` signs each captured prediction with: an HMAC under a
        key of that version's own (derived from this key), over what decides a canary."""
        name = str(version or "")
        version_key = self._version_keys.get(name)
        if version_key is None:
            version_key = self._version_keys[name] = hmac.digest(
                self._key, b"capture:" + name.encode(), "sha256"
            )
        body = "\x1f".join((prediction_id, user, hypothesis)).encode()
        return hmac.digest(version_key, body, "sha256").hex()[:32]

    def signed(
        self, version: str | None, prediction_id: str, user: str, hypothesis: str, signature: str | None
    ) -> bool:
        """Whether `signature` is what a serving process of `version` made for this prediction."""
        if not signature:
            return False
        return hmac.compare_digest(signature, self.sign(version, prediction_id, user, hypothesis))

    def environment(self) -> dict[str, str]:
        """The key as the environment of a process started here that must make the same pseudonyms
        (a local serving process)."""
        return {IDENTITY_KEY_ENV: self._key.decode()}

    def __repr__(self) -> str:  # never the key, in a log or a traceback
        return "Identity(<key>)"


def _key_from_file(path: Path) -> bytes:
    """The key in `path`, made first (0600, written whole or not at all) if there is none."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(FileExistsError):  # another process made it first: theirs stands
            os.link(tmp, path)
        tmp.unlink()
    if path.stat().st_mode & 0o077:
        raise ConfigError(f"{path} is readable by others: `chmod 600 {path}`")
    return path.read_text().strip().encode()


def read_secret(name: str, api_endpoint: str | None, what: str = "the identity key") -> bytes:
    """The payload of a Secret Manager secret version, by the service's client library; `what`
    names it in the errors."""
    import google_crc32c
    from google.api_core import exceptions
    from google.api_core.client_options import ClientOptions
    from google.cloud import secretmanager

    kwargs: dict[str, Any] = {}
    if api_endpoint:
        kwargs = {"transport": "rest", "client_options": ClientOptions(api_endpoint=api_endpoint)}
        if api_endpoint.startswith("http://"):
            from google.auth.credentials import AnonymousCredentials

            kwargs["credentials"] = AnonymousCredentials()
    try:
        payload = secretmanager.SecretManagerServiceClient(**kwargs).access_secret_version(name=name).payload
    except exceptions.GoogleAPICallError as exc:
        raise ConfigError(f"{what} could not be read from Secret Manager ({name}): {exc.message}") from None
    if payload.data_crc32c is not None and payload.data_crc32c != google_crc32c.value(payload.data):
        raise ConfigError(f"{what} read from Secret Manager ({name}) arrived damaged (CRC32C)")
    return payload.data.strip()


def load_identity(
    state_dir: str | Path | None,
    environ: dict[str, str] | None = None,
    settings: IdentitySettings | None = None,
) -> Identity:
    """The key from `FLYWHEEL_IDENTITY_KEY`, else from Secret Manager (`settings.secret`), else
    `state_dir/identity.key` (made once), else an error that says how to give one."""
    env = os.environ if environ is None else environ
    if env.get(IDENTITY_KEY_ENV):
        return Identity(env[IDENTITY_KEY_ENV].encode())
    if settings is not None and settings.secret:
        return Identity(read_secret(settings.secret, settings.secret_api_endpoint))
    if state_dir is None or str(state_dir).startswith("gs://"):
        raise ConfigError(
            f"no identity key: set identity.secret (a Secret Manager secret version) or {IDENTITY_KEY_ENV}"
        )
    return Identity(_key_from_file(Path(state_dir) / KEY_FILE))


class Senders:
    """Who may say what: the key that turns user ids into pseudonyms (an `Identity`, or a
    function that loads it when a user is first named), and the sources that may label any
    user's prediction."""

    def __init__(
        self,
        identity: Identity | Callable[[], Identity] | None = None,
        reviewer_sources: Iterable[str] = ("review",),
    ) -> None:
        self._identity = identity
        self.reviewer_sources = frozenset(reviewer_sources)
        self._seen: dict[str, str] = {}  # user id -> pseudonym, for the users of a batch

    @property
    def identity(self) -> Identity:
        if self._identity is None:
            raise ConfigError("records name users but this store was opened without an identity key")
        if not isinstance(self._identity, Identity):
            self._identity = self._identity()
        return self._identity

    def pseudonym(self, user: str | None) -> str:
        if user is None or not user.strip():
            return ANONYMOUS
        found = self._seen.get(user)
        if found is None:
            if len(self._seen) >= 100_000:  # a long-lived process: bounded memory
                self._seen.clear()
            found = self._seen[user] = self.identity.pseudonym(user)
        return found

    def identity_or_none(self) -> Identity | None:
        """The key, when this store has one (loaded now if need be); None for a store without."""
        try:
            return self.identity
        except ConfigError:
            return None

    def redact_line(self, row: Any) -> Any:
        """A line (bytes, text or a dict) as the quarantine may keep it: parsed, its user id as
        the pseudonym (cut to the longest id accepted first); None when it names no user and may
        be kept exactly as it came."""
        try:
            data = orjson.loads(row) if isinstance(row, str | bytes) else row
        except orjson.JSONDecodeError:
            return None
        if type(data) is dict and isinstance(data.get("user"), str) and data["user"].strip():
            return {**data, "user": self.pseudonym(data["user"][:MAX_USER_CHARS])}
        return None
