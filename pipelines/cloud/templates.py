"""Publish the compiled pipeline to an Artifact Registry KFP repository (kfp `RegistryClient`).

A published template has a URL, `https://<region>-kfp.pkg.dev/<project>/<repo>/stt-flywheel/<tag>`,
that `stt-flywheel submit --template`, the schedules and the Vertex console create runs from. Only a
template compiled for the cloud (every image pinned by digest) is published, so a tag always names
the exact images that were tested.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from flywheel_pipelines.compile import DIGEST
from stt_flywheel.errors import InputError, StateError

__all__ = ["AR_HOST", "Published", "publish_template", "template_images"]

AR_HOST = re.compile(r"^https://(?P<location>[a-z0-9-]+)-kfp\.pkg\.dev/(?P<project>[^/]+)/(?P<repo>[^/]+)$")
TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class Published:
    package: str
    version: str  # sha256:<hex> of the uploaded file
    tags: tuple[str, ...]
    host: str

    def url(self, tag: str | None = None) -> str:
        """The template URL of a tag (or of the version itself)."""
        return f"{self.host}/{self.package}/{tag or self.version}"


def template_images(spec: dict[str, Any]) -> set[str]:
    return {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}


def publish_template(
    host: str,
    template: str | Path,
    tags: list[str],
    description: str | None = None,
    auth: Any = None,
) -> Published:
    """Upload `template` to `host` with `tags` (a tag already on another version moves here).

    On an Artifact Registry host the client authenticates with the application-default
    credentials; `auth` (an access token, a `requests` auth or google credentials) overrides that.
    """
    from kfp.registry import ApiAuth, RegistryClient

    host = host.rstrip("/")
    if not (AR_HOST.match(host) or host.startswith(("http://127.0.0.1", "http://localhost"))):
        raise InputError(
            f"not an Artifact Registry KFP repository URL (https://REGION-kfp.pkg.dev/PROJECT/REPO): {host}"
        )
    bad = [t for t in tags if not TAG.match(t) or t.startswith("sha256:")]
    if bad or not tags:
        raise InputError(
            f"tags must be 1-128 letters, digits, '.', '_' or '-' (and not sha256:…): {bad or 'none given'}"
        )
    path = Path(template)
    spec = yaml.safe_load(path.read_text())
    loose = sorted(i for i in template_images(spec) if not DIGEST.match(i))
    if loose:
        raise InputError(
            f"{path}: compile it for the cloud first (stt-flywheel compile --for-cloud); images not pinned by digest: {loose}"
        )
    import requests

    client = RegistryClient(host=host, auth=ApiAuth(auth) if isinstance(auth, str) else auth)
    headers = {"description": description} if description else None
    try:
        package, version = client.upload_pipeline(file_name=str(path), tags=list(tags), extra_headers=headers)
    except requests.HTTPError as exc:
        response = exc.response
        raise StateError(
            f"publishing to {host} failed: HTTP {response.status_code} {response.text[:300]}"
        ) from exc
    return Published(package=package, version=version, tags=tuple(tags), host=host)
