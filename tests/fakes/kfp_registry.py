"""A local stand-in for an Artifact Registry KFP repository, for kfp's `RegistryClient`.

Uploads are multipart (`content` file, `tags` comma-separated); the package is the pipeline's name,
the version `sha256:` of the bytes; a tag names one version and moves when given again. Every
request must carry a bearer token, as on Artifact Registry.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

import yaml

from fakes.stand_in_http import StandInHandler, serving


class KfpRegistryFake:
    def __init__(self) -> None:
        self.versions: dict[str, dict[str, dict[str, Any]]] = {}  # package -> version -> record
        self.tags: dict[str, dict[str, str]] = {}  # package -> tag -> version
        self.tokens: list[str] = []

    def upload(self, fields: dict[str, bytes]) -> str:
        content = fields["content"]
        package = yaml.safe_load(content)["pipelineInfo"]["name"]
        version = "sha256:" + hashlib.sha256(content).hexdigest()
        self.versions.setdefault(package, {})[version] = {
            "content": content,
            "description": fields.get("description", b"").decode(),
        }
        for tag in filter(None, fields.get("tags", b"").decode().split(",")):
            self.tags.setdefault(package, {})[tag] = version
        return f"{package}/{version}"

    def download(self, package: str, ref: str) -> bytes:
        version = ref if ref.startswith("sha256:") else self.tags.get(package, {}).get(ref, "")
        return self.versions[package][version]["content"]


def _handler_for(fake: KfpRegistryFake) -> type[StandInHandler]:
    class Handler(StandInHandler):
        def _authorized(self) -> bool:
            auth = self.headers.get("authorization", "")
            if not auth.startswith("Bearer ") or len(auth) <= len("Bearer "):
                self.reply(401, b'{"error": "missing bearer token"}')
                return False
            fake.tokens.append(auth.removeprefix("Bearer "))
            return True

        def do_POST(self) -> None:
            if not self._authorized():
                return
            raw = self.read_body()
            head = f"Content-Type: {self.headers['content-type']}\r\n\r\n".encode()
            message = BytesParser(policy=HTTP).parsebytes(head + raw)
            fields = {
                part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
                for part in message.iter_parts()
            }
            if "content" not in fields:
                self.reply(400, b'{"error": "no content"}')
                return
            fields["description"] = self.headers.get("description", "").encode()
            self.reply(200, fake.upload(fields).encode(), "text/plain")

        def do_GET(self) -> None:
            if not self._authorized():
                return
            parts = self.path.strip("/").split("/")
            try:
                if parts[0] == "packages" and parts[2:3] == ["tags"]:
                    tags = [
                        {
                            "name": f"packages/{parts[1]}/tags/{t}",
                            "version": f"packages/{parts[1]}/versions/{v}",
                        }
                        for t, v in fake.tags.get(parts[1], {}).items()
                    ]
                    self.reply(200, json.dumps({"tags": tags}).encode())
                elif parts[0] == "packages" and parts[2:3] == ["versions"]:
                    versions = [
                        {"name": f"packages/{parts[1]}/versions/{v}"} for v in fake.versions.get(parts[1], {})
                    ]
                    self.reply(200, json.dumps({"versions": versions}).encode())
                elif len(parts) == 2:
                    self.reply(200, fake.download(*parts), "application/x-yaml")
                else:
                    self.reply(404, b"{}")
            except KeyError:
                self.reply(404, b'{"error": "not found"}')

    return Handler


@contextmanager
def running_registry() -> Iterator[tuple[KfpRegistryFake, str]]:
    """Serve a fake on a free local port; yields (fake, "http://127.0.0.1:PORT")."""
    fake = KfpRegistryFake()
    with serving(_handler_for(fake)) as url:
        yield fake, url
