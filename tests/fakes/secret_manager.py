"""A local stand-in for the Secret Manager v1 REST API: secret versions and `:access` on them.

It answers as the service does: the payload base64-encoded with its CRC32C, `latest` naming the
highest enabled version, 404 for a secret or version that does not exist. Each access is counted.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlparse

import google_crc32c

from fakes.stand_in_http import StandInHandler, serving


class SecretManagerFake:
    def __init__(self) -> None:
        self.secrets: dict[str, list[bytes]] = {}  # projects/P/secrets/S -> versions 1..n
        self.accessed: list[str] = []

    def add_version(self, secret: str, payload: bytes) -> str:
        """Store a new version of `secret` (projects/P/secrets/S); returns its name."""
        versions = self.secrets.setdefault(secret, [])
        versions.append(payload)
        return f"{secret}/versions/{len(versions)}"

    def access(self, name: str) -> tuple[int, dict[str, Any]]:
        secret, _, version = name.partition("/versions/")
        versions = self.secrets.get(secret)
        if not versions:
            return 404, {
                "error": {"code": 404, "message": f"Secret [{secret}] not found or has no versions."}
            }
        number = len(versions) if version == "latest" else int(version) if version.isdigit() else 0
        if not 1 <= number <= len(versions):
            return 404, {"error": {"code": 404, "message": f"Secret Version [{name}] not found."}}
        self.accessed.append(name)
        data = versions[number - 1]
        payload = {"data": base64.b64encode(data).decode(), "dataCrc32c": str(google_crc32c.value(data))}
        return 200, {"name": f"{secret}/versions/{number}", "payload": payload}


def _handler_for(fake: SecretManagerFake) -> type[StandInHandler]:
    class Handler(StandInHandler):
        def do_GET(self) -> None:  # noqa: N802 -- the stdlib's name
            path = urlparse(self.path).path.removeprefix("/v1/")
            name, _, verb = path.partition(":")
            if verb != "access":
                self.reply_json(400, {"error": {"code": 400, "message": f"unsupported: GET {path}"}})
                return
            self.reply_json(*fake.access(name))

    return Handler


@contextmanager
def running_secret_manager() -> Iterator[tuple[SecretManagerFake, str]]:
    """Serve a fake on a free local port; yields (fake, "http://127.0.0.1:PORT")."""
    fake = SecretManagerFake()
    with serving(_handler_for(fake)) as url:
        yield fake, url
