"""The compiled pipeline, run for real with kfp.local on a small synthetic world.

One sequence, because each step starts from the state the previous one left: a deliberately bad
candidate is rejected, a good one is deployed, a run without new evidence does not train, and a
rollback restores the previous version.
"""

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
import yaml
from conftest import FaultyProxy
from fakes.vertex import running_fake
from typer.testing import CliRunner

from flywheel_pipelines.cli import app
from flywheel_pipelines.compile import compile_pipeline
from flywheel_pipelines.local_run import run_local
from stt_flywheel.config import DEFAULT_BASE_MODEL, load_config
from stt_flywheel.data.error_store import ErrorStore
from stt_flywheel.demo.scenario import simulate_traffic
from stt_flywheel.deployment.backends import open_endpoint, open_registry
from stt_flywheel.errors import InputError
from stt_flywheel.models import load_model
from stt_flywheel.run.lease import RUN_LEASE
from stt_flywheel.run.stages import bootstrap_registry
from stt_flywheel.run.summary import RunSummary, read_summary, summarize_run
from stt_flywheel.storage.leases import read_lease
from stt_flywheel.storage.objectstore import open_store

pytestmark = pytest.mark.slow


def _variant(path: Path, name: str, **training: object) -> Path:
    data = yaml.safe_load(path.read_text())
    data["training"].update(training)
    out = path.with_name(name)
    out.write_text(yaml.safe_dump(data))
    return out


def test_flywheel_turns_locally(tmp_path: Path, flywheel_config: tuple, world: dict[str, Path]) -> None:
    config_path, config = flywheel_config
    bootstrap_registry(config)
    with open_endpoint(config).served() as endpoint:  # as in the demo: over HTTP, a serving process
        traffic = simulate_traffic(
            config, world, tmp_path, endpoint=endpoint, flag_share=0.0, silent_share=0.0
        )
        assert endpoint.server_url(1) is not None
    assert traffic["captured"] == traffic["utterances"]
    assert (
        sum(b["accepted"] for b in traffic["feedback"]) > 40
    )  # (many pending at first: capture is asynchronous)
    assert traffic["error_rate_by_domain"]["pharmacy"] > traffic["error_rate_by_domain"]["general"]
    package = compile_pipeline(tmp_path / "pipeline.yaml")
    registry = open_registry(config)

    # 1. A candidate whose weights are wrecked by an absurd learning rate is rejected.
    bad = _variant(config_path, "bad.yaml", learning_rate=5.0, warmup_steps=0)
    cfg, run_id = run_local(bad, package=package, max_steps=20)
    s = summarize_run(cfg, run_id)
    assert s.trigger.fired
    assert s.dataset is not None
    assert s.dataset.read == s.dataset.accepted + s.dataset.duplicates + s.dataset.quarantined
    assert s.gates["validation"] is not None
    assert not s.gates["validation"].passed
    assert s.deploy is None
    assert registry.aliases() == {"default": 1}
    assert open_endpoint(config).traffic() == {1: 100}
    lease = read_lease(open_store(config.paths.state), RUN_LEASE)
    assert lease is not None  # released
    assert lease.holder == run_id
    assert lease.expired(datetime.now(UTC))
    (log,) = (config.paths.root / "logs").glob("run-*.log")
    text = log.read_text()
    assert "Executing task 'check-trigger'" in text
    assert "\x1b[" not in text  # no terminal colour codes in a file people read

    # 2. A properly trained candidate is deployed as version 2.
    cfg, run_id = run_local(config_path, package=package)
    s = summarize_run(cfg, run_id)
    assert not s.failed_gates() and all(s.gates.values()), s.gates
    assert s.candidate.domain_wer["pharmacy"] < s.production.domain_wer["pharmacy"]
    assert s.p_value is not None and s.p_value < 0.05
    ev = s.evaluation
    assert ev.interval is not None and ev.interval["high"] < 0
    assert ev.normalizer == "whisper-en/1"
    assert set(ev.p_values) == {"wilcoxon", "t_test", "mapsswe"}
    assert isinstance(ev.newly_broken, int)
    assert {sl.field for sl in ev.slices} >= {"domain", "speaker"}
    assert all(su.adjusted_high >= su.high for su in ev.suites)  # Holm never narrows
    assert s.deploy is not None and s.deploy.action == "deployed"
    assert s.deployed_version == 2
    assert s.cost is not None and s.cost.total is not None and s.cost.total > s.cost.pipeline_fee
    assert {c.stage for c in s.cost.stages} >= {"trigger", "dataset", "train", "validation", "regression"}
    assert s.dataset is not None
    assert registry.aliases() == {"default": 2, "previous": 1}
    assert open_endpoint(config).traffic() == {2: 100}
    v2 = registry.get(2)
    assert v2.dataset_version == s.dataset.version
    assert v2.data_watermark
    assert v2.evaluation["validation"]["passed"]
    assert v2.lineage["parent_version"] == 1
    training = v2.lineage["training"]  # enough to make the same model again
    assert training["hyperparameters"]["learning_rate"] == cfg.training.learning_rate
    assert training["seed"] == cfg.training.seed and training["steps"] == cfg.training.max_steps
    assert training["dataset"] == {
        "version": s.dataset.version,
        "content_hash": training["dataset"]["content_hash"],
    }
    assert len(training["dataset"]["content_hash"]) >= 12 and training["started_from"] == registry.get(1).uri
    assert (
        training["code"]["package"] == "0.1.0" and training["code"]["commit"]
    )  # the tests run from a checkout
    assert v2.evaluation["validation"]["evaluation"]["interval"]["high"] < 0  # stored with the version
    html = list(Path(str(cfg.paths.pipeline_root)).glob(f"{run_id}/validate-model/report*"))
    assert html
    assert "Verdict" in html[0].read_text()

    # 3. Nothing new in the error store: the trigger does not fire and says why.
    cfg, run_id = run_local(config_path, package=package)
    s = summarize_run(cfg, run_id)
    assert not s.trigger.fired
    assert "0 new error cases" in (s.trigger.summary or "")
    assert s.deployed_version == 2

    # 4. One command rolls back.
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "flywheel_pipelines.cli",
            "registry",
            "rollback",
            "--config",
            str(config_path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert registry.aliases() == {"default": 1}
    assert open_endpoint(load_config(config_path)).traffic() == {1: 100}

    # 5. The history: every run listed with its outcome, any run's summary reprinted, the audit log.
    runner = CliRunner()
    listed = runner.invoke(app, ["runs", "list", "--config", str(config_path), "--json"])
    assert listed.exit_code == 0, listed.output
    runs = orjson.loads(listed.stdout)
    assert [r["stages"]["deploy"] for r in runs] == [None, "deployed (version 2)", None]  # newest first
    deployed = runs[1]["run_id"]
    shown = runner.invoke(app, ["runs", "show", deployed, "--config", str(config_path), "--json"])
    assert orjson.loads(shown.stdout)["deploy"]["version"] == 2
    text = runner.invoke(app, ["runs", "show", deployed, "--config", str(config_path)]).stdout
    assert "Deploy" in text and "Production vs candidate" in text
    # the run's own story after the rollback: it left v2 serving, whatever serves now
    assert "the run left default v2, previous v1; traffic v2 100 %" in " ".join(text.split())
    assert "held-out, domain=pharmacy" in text and "validation: " in text and "validation.html" in text
    assert orjson.loads(shown.stdout)["deployed_version"] == 2
    by_prefix = runner.invoke(app, ["runs", "show", deployed[:-3], "--config", str(config_path), "--json"])
    assert orjson.loads(by_prefix.stdout)["run_id"] == deployed
    latest = runner.invoke(app, ["runs", "show", "latest", "--config", str(config_path), "--json"])
    assert orjson.loads(latest.stdout)["run_id"] == runs[0]["run_id"]
    vague = runner.invoke(app, ["runs", "show", "stt-flywheel", "--config", str(config_path)])
    assert isinstance(vague.exception, InputError) and "names 3 runs" in str(vague.exception)
    view = orjson.loads(runner.invoke(app, ["status", "--config", str(config_path), "--json"]).stdout)
    shared = {v["version"]: v["shared"] for v in view["registry"]["versions"]}
    assert set(shared[1]) == set(shared[2]) >= {"eval", "suite:general"}  # one fixed set for every version
    assert view["trigger"]["summary"].startswith("would fire: ")  # v1 again: all of it is new to v1
    kept = read_summary(config, deployed)  # written when the run ended, kept beside its ledger
    assert kept is not None and kept.deploy is not None and kept.deploy.action == "deployed"
    audit = runner.invoke(app, ["registry", "audit", "--config", str(config_path), "--json"])
    actions = [e["action"] for e in orjson.loads(audit.stdout)]
    assert "rollback" in actions[:5] and "promote" in actions and actions[-1] == "register"  # newest first
    rollbacks = runner.invoke(
        app, ["registry", "audit", "--action", "rollback", "--config", str(config_path)]
    )
    assert rollbacks.exit_code == 0 and "rollback" in rollbacks.stdout and "register" not in rollbacks.stdout


def _outcome(summary: RunSummary) -> dict:
    """What a run decided and measured, without where it kept things."""
    s = summary.model_dump(mode="json")
    return {
        "fired": s["trigger"]["fired"],
        "dataset": {k: s["dataset"][k] for k in ("read", "accepted", "duplicates", "quarantined", "splits")},
        "quarantine_reasons": s["dataset"]["quarantine_reasons"],
        "validation": s["gates"]["validation"]["passed"],
        "regression": s["gates"]["regression"]["passed"],
        "production_wer": s["production"]["heldout_wer"],
        "candidate_wer": s["candidate"]["heldout_wer"],
        "deploy": s["deploy"]["action"],
        "deployed_version": s["deployed_version"],
    }


def test_every_store_on_gcs_reaches_the_local_outcome(
    tmp_path: Path,
    flywheel_config: tuple,
    world: dict[str, Path],
    gcs_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same world and config, once on local directories and once with the config itself, the
    error store, the production audio, datasets, models, run ledgers and the run lease on GCS
    (fake-gcs-server, real client, in the pipeline's task processes too), the GCS run through a
    proxy that answers every fifth request 503 and loses the answer of every seventh write: the
    runs decide and measure the same."""
    monkeypatch.setenv("STT_FLYWHEEL_CACHE", str(tmp_path / "cache"))
    # one key for both: the held-out split is by user pseudonym, which the key decides
    monkeypatch.setenv("FLYWHEEL_IDENTITY_KEY", "same-key-for-both-deployments")
    local_path, local_config = flywheel_config
    data = yaml.safe_load(local_path.read_text())
    # Relative locations in a config read from gs:// resolve beside it, under gs://…/flywheel/.
    local_part = tmp_path / "gcs-local-part"
    data["paths"] = {
        "root": str(local_part),
        "pipeline_root": str(local_part / "pipeline-root"),
        **{
            name: name.replace("_", "-") for name in ("error_store", "datasets", "models", "reports", "state")
        },
    }
    gcs_uri = f"{gcs_bucket}/flywheel/flywheel.yaml"
    open_store(gcs_bucket).write("flywheel/flywheel.yaml", yaml.safe_dump(data).encode())
    gcs_config = load_config(gcs_uri)
    assert gcs_config.paths.error_store == f"{gcs_bucket}/flywheel/error-store"

    outcomes = []
    for name, path, config in (("local", local_path, local_config), ("gcs", gcs_uri, gcs_config)):
        bootstrap_registry(config)
        simulate_traffic(config, world, tmp_path / name, flag_share=0.0, silent_share=0.0)
        if name == "gcs":  # the run itself, in every task process, through a proxy that fails requests
            proxy = FaultyProxy(os.environ["STORAGE_EMULATOR_HOST"])
            monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
        cfg, run_id = run_local(path)
        outcomes.append(_outcome(summarize_run(cfg, run_id)))
    proxy.close()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.upstream)
    assert proxy.refused > 10 and proxy.lost >= 2  # GCS failed often during the run (how often varies)
    assert outcomes[0] == outcomes[1]
    assert outcomes[1]["deploy"] == "deployed"
    assert outcomes[1]["deployed_version"] == 2

    registry = open_registry(gcs_config)
    v2 = registry.get(2)
    assert v2.uri == f"{gcs_bucket}/flywheel/models/{registry.model}/v2"
    captured = ErrorStore(gcs_config.paths.error_store).predictions().to_pylist()
    served = [p for p in captured if not p["prediction_id"].startswith("legacy-")]
    assert served and all(
        p["audio_uri"].startswith(f"{gcs_bucket}/flywheel/error-store/audio/") for p in served
    )
    store = open_store(f"{gcs_bucket}/flywheel")
    keys = store.list()
    assert any(k.startswith(f"datasets/{v2.dataset_version}/data/") for k in keys)
    assert f"datasets/{v2.dataset_version}/manifest.json" in keys
    assert any(k.startswith("reports/stt-flywheel") and k.endswith("/deploy.json") for k in keys)
    lease = read_lease(open_store(gcs_config.paths.state), RUN_LEASE)
    assert lease is not None  # the deployer released it
    assert lease.expired(datetime.now(UTC))
    assert not any(local_part.glob("datasets"))  # nothing fell back to disk


class _BaseModelTraffic:
    """Production traffic as version 1 (the base model) transcribes it, in this process: the Vertex
    stand-in keeps endpoints but runs no serving containers."""

    def predict(self, audios: list, rng: object = None) -> tuple[int, list[str]]:
        return 1, load_model(DEFAULT_BASE_MODEL, device="cpu").transcribe(audios)


def test_a_run_canaries_on_the_vertex_backend(
    tmp_path: Path,
    flywheel_config: tuple,
    world: dict[str, Path],
    gcs_bucket: str,
    identity_secret: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The whole pipeline with `deploy.backend: vertex`: bootstrap uploads v1 to the Vertex
    stand-in and deploys it; the run's tasks (subprocesses, real aiplatform SDK) read production
    from the Model Registry, upload the candidate as version 2 of the same model with its
    evaluation, and start a 10 % canary beside v1."""
    monkeypatch.setenv("STT_FLYWHEEL_CACHE", str(tmp_path / "cache"))
    local_path, _ = flywheel_config
    data = yaml.safe_load(local_path.read_text())
    data["paths"]["models"] = f"{gcs_bucket}/models"
    data["deploy"].update({"backend": "vertex", "strategy": "canary", "canary_percent": 10})
    data["identity"] = identity_secret  # every task reads the key from (a stand-in of) Secret Manager
    with running_fake() as (fake, url):
        data["vertex"] = {
            "project": fake.project,
            "location": fake.location,
            "api_endpoint": url,
            "serving_image": "us-docker.pkg.dev/p/r/serving@sha256:" + "a" * 64,
            "retry_initial_s": 0.05,
            "experiment": "stt-flywheel-runs",
        }
        path = tmp_path / "vertex.yaml"
        path.write_text(yaml.safe_dump(data))
        config = load_config(path)
        bootstrap_registry(config)
        simulate_traffic(
            config,
            world,
            tmp_path / "traffic",
            endpoint=_BaseModelTraffic(),
            flag_share=0.0,
            silent_share=0.0,
        )
        cfg, run_id = run_local(path)
        s = summarize_run(cfg, run_id)
        registry, endpoint = open_registry(config), open_endpoint(config)
        aliases, traffic = registry.aliases(), endpoint.traffic()
        v2 = registry.get(2)
        (model_id,) = fake.models
        evaluations = fake.evaluations.get(f"{model_id}@2", [])
        serving_env = [
            {e["name"]: e["value"] for e in fake.versions(model_id)[v]["containerSpec"].get("env", [])}
            for v in ("1", "2")
        ]
        listed = CliRunner().invoke(app, ["registry", "list", "--config", str(path)])
        logged = fake.metadata.run("stt-flywheel-runs", run_id)
        artifacts = {a["schemaTitle"]: a for a in fake.metadata.metadata["artifacts"].values()}
        events = [e for evs in fake.metadata.events.values() for e in evs]
    assert listed.exit_code == 0, listed.output
    # the run in Vertex AI Experiments: both evaluating stages' metrics, its dataset into its model
    assert logged is not None
    assert {"wer", "production_wer", "p_value"} <= set(logged["metadata"]["_metrics"])
    assert any(k.endswith("_delta_wer") for k in logged["metadata"]["_metrics"])
    assert logged["metadata"]["_params"]["dataset_version"] == v2.dataset_version
    assert artifacts["system.Dataset"]["uri"].endswith(v2.dataset_version)
    assert {e["type"] for e in events} == {1, 2} or {e["type"] for e in events} == {"INPUT", "OUTPUT"}
    assert f"models/{model_id})" in "".join(listed.output.split())
    assert "candidate" in listed.output
    assert s.trigger.fired
    assert s.gates["validation"] is not None and s.gates["validation"].passed
    assert s.deploy is not None and (s.deploy.action, s.deploy.version) == ("canary", 2)
    assert aliases == {"default": 1, "candidate": 2}
    assert traffic == {1: 90, 2: 10}
    assert v2.uri.startswith(f"{gcs_bucket}/models/")
    assert v2.source_run == run_id
    assert sorted(fake.versions(model_id)) == ["1", "2"]
    assert len(evaluations) == 1
    # each version captures its own traffic into the store, labelled with its own number
    assert [e.get("FLYWHEEL_MODEL_VERSION") for e in serving_env] == ["1", "2"]
    assert {e.get("FLYWHEEL_CAPTURE_URI") for e in serving_env} == {config.paths.error_store}
    # the container reads its key from Secret Manager: the spec names the secret, never the key
    assert {e.get("FLYWHEEL_IDENTITY_SECRET") for e in serving_env} == {identity_secret["secret"]}
    assert not any("FLYWHEEL_IDENTITY_KEY" in e for e in serving_env)
