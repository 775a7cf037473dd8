"""`stt-flywheel template publish`: kfp's RegistryClient uploads the compiled pipeline to a local
stand-in of an Artifact Registry KFP repository; tags move, loose images are refused."""

from pathlib import Path

import pytest
import yaml
from fakes.kfp_registry import running_registry
from kfp.registry import ApiAuth, RegistryClient
from typer.testing import CliRunner

from flywheel_pipelines.cli import app
from flywheel_pipelines.cloud.templates import publish_template, template_images
from flywheel_pipelines.compile import compile_pipeline

BASE = "us-docker.pkg.dev/p/stt/base@sha256:" + "ab" * 32
TRAINER = "us-docker.pkg.dev/p/stt/trainer@sha256:" + "cd" * 32
NEWER_TRAINER = "us-docker.pkg.dev/p/stt/trainer@sha256:" + "ef" * 32


def test_publish_tags_and_moves_latest(tmp_path: Path) -> None:
    first = compile_pipeline(tmp_path / "a.yaml", BASE, TRAINER, require_digests=True)
    with running_registry() as (fake, host):
        out = CliRunner().invoke(
            app,
            [
                "template",
                "publish",
                "--host",
                host,
                "--template",
                str(first),
                "--tag",
                "c0ffee1",
                "--tag",
                "latest",
            ],
            env={"STT_FLYWHEEL_REGISTRY_TOKEN": "token-1"},
        )
        assert out.exit_code == 0, out.output
        assert f"{host}/stt-flywheel/latest" in out.output
        assert f"{host}/stt-flywheel/c0ffee1" in out.output
        # The next build publishes a pipeline with a newer trainer image under its own tag and latest.
        second = publish_template(
            host,
            compile_pipeline(tmp_path / "b.yaml", BASE, NEWER_TRAINER, True),
            ["c0ffee2", "latest"],
            "second build",
            auth="token-2",
        )
        client = RegistryClient(host=host, auth=ApiAuth("token-3"))
        latest = yaml.safe_load(
            Path(
                client.download_pipeline("stt-flywheel", tag="latest", file_name=str(tmp_path / "l.yaml"))
            ).read_text()
        )
        pinned = yaml.safe_load(
            Path(
                client.download_pipeline("stt-flywheel", tag="c0ffee1", file_name=str(tmp_path / "p.yaml"))
            ).read_text()
        )
    assert len(fake.versions["stt-flywheel"]) == 2
    assert fake.tags["stt-flywheel"] == {
        "c0ffee1": fake.tags["stt-flywheel"]["c0ffee1"],
        "c0ffee2": second.version,
        "latest": second.version,
    }
    assert fake.tags["stt-flywheel"]["c0ffee1"] != second.version
    assert template_images(latest) == {BASE, NEWER_TRAINER}
    assert template_images(pinned) == {BASE, TRAINER}
    assert fake.versions["stt-flywheel"][second.version]["description"] == "second build"
    assert fake.tokens[:2] == ["token-1", "token-2"]


def test_publish_compiles_now_from_digest_images(tmp_path: Path) -> None:
    with running_registry() as (fake, host):
        out = CliRunner().invoke(
            app,
            [
                "template",
                "publish",
                "--host",
                host,
                "--base-image",
                BASE,
                "--trainer-image",
                TRAINER,
                "--tag",
                "v1",
                "--access-token",
                "t",
            ],
        )
        assert out.exit_code == 0, out.output
    (version,) = fake.versions["stt-flywheel"].values()
    assert template_images(yaml.safe_load(version["content"])) == {BASE, TRAINER}


def test_publish_refuses_images_not_pinned_by_digest(tmp_path: Path) -> None:
    loose = compile_pipeline(tmp_path / "loose.yaml", "reg/base:latest", "reg/trainer:latest")
    with running_registry() as (fake, host), pytest.raises(ValueError, match="compile it for the cloud"):
        publish_template(host, loose, ["latest"], auth="t")
    assert fake.versions == {}


@pytest.mark.parametrize(
    ("host", "tags", "message"),
    [
        ("https://example.com/p/r", ["latest"], "not an Artifact Registry"),
        ("https://us-central1-kfp.pkg.dev/p/r", [], "tags must be"),
        ("https://us-central1-kfp.pkg.dev/p/r", ["sha256:abc"], "tags must be"),
        ("https://us-central1-kfp.pkg.dev/p/r", ["has space"], "tags must be"),
    ],
)
def test_publish_refuses_bad_hosts_and_tags(tmp_path: Path, host: str, tags: list[str], message: str) -> None:
    template = compile_pipeline(tmp_path / "t.yaml", BASE, TRAINER, require_digests=True)
    with pytest.raises(ValueError, match=message):
        publish_template(host, template, tags)


def test_publish_without_credentials_is_a_clear_error(tmp_path: Path) -> None:
    template = compile_pipeline(tmp_path / "t.yaml", BASE, TRAINER, require_digests=True)
    with running_registry() as (fake, host), pytest.raises(RuntimeError, match="HTTP 401"):
        publish_template(host, template, ["latest"])
    assert fake.versions == {}
