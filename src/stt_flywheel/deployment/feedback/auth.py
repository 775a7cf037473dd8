"""Who is calling the feedback service: a bearer key or a Google ID token, each mapped to a name.

A key is compared in constant time against every configured key. An ID token is checked as
Google signs them (signature against the published certificates, expiry, the audience, the
issuer) and then its account must be one the config names: any Google account can mint a token
for any audience, so the audience alone proves nothing. The name found is the caller, the
`source` of every event it sends.
"""

from __future__ import annotations

import hmac
import os
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from stt_flywheel.config import FeedbackService, UiSettings
from stt_flywheel.config.base import ConfigError
from stt_flywheel.data.identity import read_secret

__all__ = [
    "Callers",
    "PublishedKeys",
    "RateLimit",
    "load_keys",
    "loopback",
    "port_from_env",
    "verified_claims",
]

GOOGLE_ISSUERS = ("accounts.google.com", "https://accounts.google.com")


def _parse_keys(text: str, where: str) -> dict[str, str]:
    keys: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, key = line.strip().partition(":")
        if not sep or not name or len(key) < 16:
            raise ConfigError(f"{where}, line {n}: expected `name:key` with a key of 16 characters or more")
        keys[key] = name
    if not keys:
        raise ConfigError(f"{where} holds no `name:key` line")
    return keys


def load_keys(settings: FeedbackService) -> dict[str, str]:
    """key → caller name, from Secret Manager or a local file only its owner may read."""
    where = settings.keys_secret
    if where is None:
        return {}
    if where.startswith("projects/"):
        payload = read_secret(where, settings.secret_api_endpoint, "the feedback service's keys")
        return _parse_keys(payload.decode("utf-8", "replace"), where)
    path = Path(where)
    try:
        if path.stat().st_mode & 0o077:
            raise ConfigError(f"{path} is readable by others: `chmod 600 {path}`")
        return _parse_keys(path.read_text(), where)
    except OSError as exc:
        raise ConfigError(f"the feedback service's keys could not be read: {exc.strerror or exc}") from None


@dataclass
class PublishedKeys:
    """Signing keys published as `{"kid": "PEM"}` at `url` (Google's ID tokens, IAP's assertions)."""

    url: str
    ttl_s: float = 3600.0
    certs: dict[str, str] = field(default_factory=dict)
    fetched: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, kid: str | None) -> dict[str, str]:
        """The certificates, fetched again when stale or when a token names a key not among them
        (Google rotates keys), at most once a minute."""
        with self.lock:
            now = time.monotonic()
            stale = now - self.fetched > self.ttl_s
            unknown = kid is not None and kid not in self.certs and now - self.fetched > 60
            if not self.certs or stale or unknown:
                response = httpx.get(self.url, timeout=10)
                response.raise_for_status()
                self.certs, self.fetched = dict(response.json()), now
            return self.certs


def verified_claims(token: str, keys: PublishedKeys, audience: str) -> dict[str, Any] | None:
    """A signed JWT's claims, if its signature is one of `keys`', it is for `audience` and has not
    expired; None otherwise. Who issued it is the caller's to check."""
    from google.auth import exceptions, jwt

    if token.count(".") != 2:
        return None
    try:
        kid = jwt.decode_header(token).get("kid")  # only to pick the certificate
        return dict(jwt.decode(token, certs=keys.get(kid), audience=audience, clock_skew_in_seconds=30))
    except (ValueError, exceptions.GoogleAuthError, httpx.HTTPError):  # bad signature, expired, …
        return None


class Callers:
    """The configured ways in; `name_of(authorization)` → the caller's name, or None."""

    def __init__(self, settings: FeedbackService, keys: dict[str, str]) -> None:
        self.keys = keys
        self.audience = settings.audience
        self.accounts = dict(settings.callers)
        self._certs = PublishedKeys(settings.certs_url)

    @property
    def open(self) -> bool:
        """No way in is configured: anyone who reaches the port is let in (loopback only)."""
        return not self.keys and not self.audience

    def name_of(self, authorization: str | None) -> str | None:
        scheme, _, credential = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            return None
        credential = credential.strip()
        found = None
        for key, name in self.keys.items():  # every key compared, so the time says nothing
            if hmac.compare_digest(key.encode(), credential.encode()):
                found = name
        if found is not None or not self.audience or credential.count(".") != 2:
            return found
        return self._token_caller(credential)

    def _token_caller(self, token: str) -> str | None:
        claims = verified_claims(token, self._certs, self.audience or "")
        if (
            claims is None
            or claims.get("iss") not in GOOGLE_ISSUERS
            or not claims.get("email_verified", False)
        ):
            return None
        return self.accounts.get(str(claims.get("email", "")))


class RateLimit:
    """At most `per_minute` requests per caller in each minute (per process: on Cloud Run, per
    instance); `wait_s(caller)` is 0 when the request may go on, else the seconds until it may."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._counts: dict[tuple[str, int], int] = defaultdict(int)
        self._lock = threading.Lock()

    def wait_s(self, caller: str) -> float:
        now = time.time()
        minute = int(now // 60)
        with self._lock:
            if len(self._counts) > 10_000:  # old minutes
                self._counts = defaultdict(int, {k: v for k, v in self._counts.items() if k[1] == minute})
            if self._counts[(caller, minute)] >= self.per_minute:
                return 60 - now % 60
            self._counts[(caller, minute)] += 1
            return 0.0


def loopback(host: str) -> bool:
    return host in ("127.0.0.1", "::1", "localhost") or host.startswith("127.")


def port_from_env(settings: FeedbackService | UiSettings) -> int:
    """Cloud Run's `PORT` wins over the config."""
    value = os.environ.get("PORT", "")
    return int(value) if value.isdigit() and 0 < int(value) < 65536 else settings.port
