"""The "Adopt it with your own model and service" page, followed as written: each `stt-flywheel`
command and Python block of the page runs with `PROJECT`, `REGION` and `BUCKET` filled in, against
the GCS emulator and the Vertex AI and Secret Manager stand-ins. What runs only on Google Cloud
(`gcloud …`) is done here by its equivalent, and the page must still say it.

The model is a Whisper of the published tiny shape (39 M parameters, random weights) saved with
`save_pretrained` into a bucket; the service that "served" it is this test, which answers each
utterance with a transcript one word off, in the formats users record in. The run then trains a
few steps on CPU and decides, on the page's config with the test's sizes (a few steps, a small
trigger), as a scheduled run would.
"""

from __future__ import annotations

import re
import shlex
import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest
import yaml
from fakes.vertex import running_fake
from typer.testing import CliRunner

from flywheel_pipelines.cli import app
from flywheel_pipelines.local_run import run_local
from stt_flywheel.config import load_config
from stt_flywheel.data.audio import load_audio
from stt_flywheel.data.decode import encode_audio
from stt_flywheel.data.manifest import read_manifest, write_manifest
from stt_flywheel.deployment.backends import open_endpoint, open_registry
from stt_flywheel.models.seq2seq import WHISPER_SHAPES, build_whisper_model
from stt_flywheel.run.summary import summarize_run
from stt_flywheel.storage.objectstore import open_store
from stt_flywheel.storage.trees import put_tree

pytestmark = [pytest.mark.slow, pytest.mark.gcs]

PAGE = Path(__file__).resolve().parents[1] / "docs" / "how-to" / "own-model-and-service.md"
FORMATS = ["webm-opus", "m4a-aac", "mp3", "wav-mulaw", "ogg-opus", "flac"]


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", PAGE.read_text(), flags=re.S)


def _commands(block: str) -> list[list[str]]:
    """Each `stt-flywheel` command of a bash block, as arguments (comments dropped)."""
    out = []
    for line in block.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if words and words[0] == "stt-flywheel":
            out.append(words[1:])
    return out


def _one_word_off(text: str, rng: np.random.Generator) -> str:
    words = text.split()
    words[rng.integers(len(words))] = "uh"
    return " ".join(words)


def _their_endpoint(config_path: str, name: str) -> None:
    """What served before: another model, deployed to the endpoint the config names."""
    from google.cloud import aiplatform

    from stt_flywheel.deployment.vertex.client import init_vertex

    init_vertex(load_config(config_path).vertex)
    theirs = aiplatform.Model.upload(
        display_name="their-stt",
        artifact_uri="gs://elsewhere/their-stt",
        serving_container_image_uri="us-docker.pkg.dev/them/stt/server:1",
    )
    endpoint = aiplatform.Endpoint.create(display_name=name)
    endpoint.deploy(model=theirs, machine_type="n1-standard-4", traffic_percentage=100)


def test_the_adopt_page_followed_with_a_whisper_from_a_bucket(
    tmp_path: Path,
    world: dict[str, Path],
    gcs_emulator: str,
    identity_secret: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    monkeypatch.setenv("STT_FLYWHEEL_CACHE", str(tmp_path / "cache"))
    bucket = f"adopt-{uuid.uuid4().hex[:8]}"
    client = storage.Client(project="emulator", credentials=AnonymousCredentials())
    for name in (bucket, f"{bucket}-config", f"{bucket}-people"):
        client.create_bucket(name)
    fuse = tmp_path / "gcs"  # what Vertex mounts as /gcs/BUCKET

    with running_fake() as (fake, vertex_url):

        def fill(text: str) -> str:
            text = text.replace("/gcs/", f"{fuse}/")
            return (
                text.replace("PROJECT", fake.project)
                .replace("REGION", fake.location)
                .replace("BUCKET", bucket)
            )

        gcloud = [b for b in _blocks("bash") if b.lstrip().startswith("gcloud storage cp")]
        assert [b.split()[4] for b in gcloud] == ["./my-model", "./manifests"]

        # 1. the model: `gcloud storage cp -r ./my-model gs://BUCKET/base-model`
        whisper = tmp_path / "my-model"
        build_whisper_model(**WHISPER_SHAPES["tiny"]).save(whisper)
        put_tree(whisper, f"gs://{bucket}/base-model", commit_file="config.json")

        # 2. the data: `gcloud storage cp -r ./manifests gs://BUCKET/manifests`, read through FUSE
        manifests = fuse / bucket / "manifests"
        manifests.mkdir(parents=True)
        for name, source, n in (
            ("replay", "replay", 16),
            ("eval", "eval", 4),  # an untrained Whisper writes to its token cap: few, to keep CI short
            ("general", "suite-general", 4),
        ):
            write_manifest(manifests / f"{name}.jsonl", read_manifest(world[source])[:n])

        # 3. the config, as the page writes it; the stand-ins' endpoints and the test's sizes added
        (config_yaml,) = _blocks("yaml")
        data = yaml.safe_load(fill(config_yaml))
        data["paths"]["root"] = str(tmp_path / "scratch")
        data["paths"]["pipeline_root"] = str(tmp_path / "pipeline-root")  # kfp.local's; Vertex takes gs://
        data["vertex"] |= {"api_endpoint": vertex_url, "retry_initial_s": 0.05}
        data["identity"] = identity_secret
        data["trigger"] = {"min_error_cases": 8, "min_corrected_cases": 8, "error_rate_threshold": 0.05}
        data["training"] = {"max_steps": 3, "batch_size": 4, "warmup_steps": 0}
        data["feedback"]["label_window_hours"] = 0.0
        config_uri = f"gs://{bucket}-config/flywheel.yaml"
        open_store(f"gs://{bucket}-config").write("flywheel.yaml", yaml.safe_dump(data).encode())

        # 4. the endpoint that serves today, then the page's commands
        _their_endpoint(config_uri, data["deploy"]["endpoint_name"])
        (adopt_block,) = [b for b in _blocks("bash") if "registry adopt" in b]
        for args in _commands(fill(adopt_block)):
            result = CliRunner().invoke(app, args)
            assert result.exit_code == 0, result.output
        config = load_config(config_uri)
        registry, endpoint = open_registry(config), open_endpoint(config)
        assert registry.get(1).lineage["base_model"] == f"gs://{bucket}/base-model"
        assert endpoint.traffic() == {1: 100}
        (vertex_endpoint,) = fake.endpoints.values()
        assert len(vertex_endpoint["deployedModels"]) == 2  # theirs stays, at 0 %
        assert sorted(vertex_endpoint["trafficSplit"].values()) == [0, 100]

        # 5. and 6. the service: capture, then the users' corrections, with the page's blocks
        capture_block, feedback_block = (fill(b) for b in _blocks("python"))
        rng = np.random.default_rng(0)
        traffic = read_manifest(world["traffic-new"])[:16]
        served = []
        for i, utt in enumerate(traffic):
            samples = load_audio(utt.audio).samples
            scope = {
                "audio_bytes": encode_audio(samples, 16_000, FORMATS[i % len(FORMATS)]),
                "transcript": _one_word_off(utt.text, rng),
                "user_id": f"user-{i % 8}",
                "domain": "pharmacy",
            }
            exec(capture_block, scope)  # noqa: S102 -- the page's own code
            served.append((scope["prediction_id"], utt.text, scope["user_id"]))
        for prediction_id, text, user in served:
            exec(feedback_block, {"prediction_id": prediction_id, "corrected": text, "user_id": user})  # noqa: S102

        # 7. a run, as the schedule starts it (here with kfp.local), and the page's status
        cfg, run_id = run_local(config_uri)
        s = summarize_run(cfg, run_id)
        (status_block,) = [b for b in _blocks("bash") if "stt-flywheel status" in b]
        (status_args,) = _commands(fill(status_block))
        status = CliRunner().invoke(app, status_args)
    assert status.exit_code == 0, status.output
    assert s.trigger.fired, s.trigger.summary
    assert s.dataset is not None and s.dataset.accepted >= 16
    assert "audio_outside_roots" not in s.dataset.quarantine_reasons
    assert s.gates["validation"] is not None  # decided, whichever way
    store = open_store(f"gs://{bucket}-people/error-store")
    kept = {k.rsplit(".", 1)[1] for k in store.list("audio/")}
    assert kept >= {"webm", "m4a", "mp3", "wav", "ogg", "flac"}  # each as the user sent it
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)
