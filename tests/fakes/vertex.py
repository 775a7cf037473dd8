"""A local stand-in for the parts of the Vertex AI v1 REST API that stt-flywheel calls.

The tests point the real google-cloud-aiplatform SDK at it (`api_transport="rest"`,
`api_endpoint="http://127.0.0.1:PORT"`, anonymous credentials). It keeps state in memory and
enforces the rules the real service enforces where the flywheel could break them:

- a model version alias lives on exactly one version; `default` cannot be removed, only moved;
- a version that is deployed, carries `default`, or is the model's only one cannot be deleted;
- an endpoint's traffic split names only deployed models and sums to 100 (or is empty);
- undeploying a model that still has traffic needs a split that takes it away;
- any call can be made to answer 429 RESOURCE_EXHAUSTED (`fail_next`), as quota errors do.

Long-running operations complete at once (`done: true`), like a fast backend.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from fakes.stand_in_http import StandInHandler, serving
from fakes.vertex_metadata import MetadataApiError, MetadataFake

__all__ = ["ApiError", "VertexFake", "running_fake"]

V1 = "type.googleapis.com/google.cloud.aiplatform.v1."


class ApiError(Exception):
    STATUS = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 409: "ALREADY_EXISTS", 429: "RESOURCE_EXHAUSTED"}

    def __init__(self, code: int, message: str, status: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message = code, message
        self.status = status or self.STATUS.get(code, "FAILED_PRECONDITION")

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "status": self.status}}


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _precondition(message: str) -> ApiError:
    return ApiError(400, message, "FAILED_PRECONDITION")


class VertexFake:
    def __init__(self, project: str = "test-project", location: str = "us-central1") -> None:
        self.project, self.location = project, location
        self.parent = f"projects/{project}/locations/{location}"
        self.models: dict[str, dict[str, Any]] = {}  # model id → {"versions": {vid: Model}, "next": n}
        self.evaluations: dict[str, list[dict[str, Any]]] = {}  # "id@vid" → evaluations
        self.endpoints: dict[str, dict[str, Any]] = {}
        self.pipeline_jobs: dict[str, dict[str, Any]] = {}
        self.schedules: dict[str, dict[str, Any]] = {}
        self.authorizations: list[str | None] = []  # the Authorization header of each request
        self.operations: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []
        self.metadata = MetadataFake(self.parent)  # Vertex AI Experiments' records
        self._failures: list[tuple[str, str, ApiError]] = []
        self._ids = itertools.count(1000)
        self._lock = threading.Lock()

    # -- test controls -----------------------------------------------------------------------
    def fail_next(self, method: str, path_pattern: str, error: ApiError | None = None) -> None:
        """The next call matching `method` and the regex `path_pattern` fails (default: 429)."""
        self._failures.append((method, path_pattern, error or ApiError(429, "Quota exceeded (fake)")))

    def versions(self, model_id: str) -> dict[str, dict[str, Any]]:
        return self.models[model_id]["versions"]

    # -- dispatch ----------------------------------------------------------------------------
    def handle(self, method: str, path: str, query: dict[str, list[str]], body: dict[str, Any]) -> Any:
        with self._lock:
            self.calls.append((method, path))
            for i, (m, pattern, error) in enumerate(self._failures):
                if m == method and re.search(pattern, path):
                    del self._failures[i]
                    raise error
            prefix = f"/v1/{self.parent}/"
            if not path.startswith(prefix):
                raise ApiError(404, f"unknown project or location in {path}")
            rest = path[len(prefix) :]
            if rest.startswith("metadataStores"):
                try:
                    return self.metadata.route(
                        method, rest.removeprefix("metadataStores").lstrip("/"), query, body
                    )
                except MetadataApiError as exc:
                    raise ApiError(exc.code, exc.message) from None
            for pattern, name in self.ROUTES:
                match = re.fullmatch(pattern, rest)
                if match and name.startswith(method + " "):
                    handler = getattr(self, "_" + name.split(" ", 1)[1])
                    return handler(body=body, query=query, **match.groupdict())
            raise ApiError(404, f"no fake route for {method} {rest}")

    ROUTES = [
        (r"models:upload", "POST upload_model"),
        (r"models/(?P<mid>[^/@:]+)(@(?P<ver>[^/:]+))?", "GET get_model"),
        (r"models/(?P<mid>[^/@:]+)(@(?P<ver>[^/:]+))?", "DELETE delete_model"),
        (r"models/(?P<mid>[^/@:]+)@(?P<ver>[^/:]+):deleteVersion", "DELETE delete_model"),
        (r"models/(?P<mid>[^/@:]+):listVersions", "GET list_versions"),
        (r"models/(?P<mid>[^/@:]+)(@(?P<ver>[^/:]+))?:mergeVersionAliases", "POST merge_aliases"),
        (r"models/(?P<mid>[^/@:]+)(@(?P<ver>[^/:]+))?/evaluations:import", "POST import_evaluation"),
        (r"models/(?P<mid>[^/@:]+)(@(?P<ver>[^/:]+))?/evaluations", "GET list_evaluations"),
        (r"models", "GET list_models"),
        (r"endpoints", "POST create_endpoint"),
        (r"endpoints", "GET list_endpoints"),
        (r"endpoints/(?P<eid>[^/:]+)", "GET get_endpoint"),
        (r"endpoints/(?P<eid>[^/:]+)", "PATCH patch_endpoint"),
        (r"endpoints/(?P<eid>[^/:]+):deployModel", "POST deploy_model"),
        (r"endpoints/(?P<eid>[^/:]+):undeployModel", "POST undeploy_model"),
        (r"pipelineJobs", "POST create_pipeline_job"),
        (r"pipelineJobs", "GET list_pipeline_jobs"),
        (r"pipelineJobs/(?P<jid>[^/:]+)", "GET get_pipeline_job"),
        (r"schedules", "POST create_schedule"),
        (r"schedules", "GET list_schedules"),
        (r"schedules/(?P<sid>[^/:]+)", "GET get_schedule"),
        (r"schedules/(?P<sid>[^/:]+)", "DELETE delete_schedule"),
        (r"schedules/(?P<sid>[^/:]+):pause", "POST pause_schedule"),
        (r"schedules/(?P<sid>[^/:]+):resume", "POST resume_schedule"),
        (r"(?P<res>.+)/operations/(?P<oid>[^/:]+)", "GET get_operation"),
    ]

    def _operation(self, resource: str, response: dict[str, Any] | None, metadata: str) -> dict[str, Any]:
        op: dict[str, Any] = {
            "name": f"{resource}/operations/{next(self._ids)}",
            "done": True,
            "metadata": {"@type": V1 + metadata, "genericMetadata": {"createTime": _now()}},
        }
        op["response"] = (
            response if response is not None else {"@type": "type.googleapis.com/google.protobuf.Empty"}
        )
        self.operations[op["name"]] = op
        return op

    def _get_operation(self, res: str, oid: str, **_: Any) -> dict[str, Any]:
        name = f"{self.parent}/{res}/operations/{oid}"
        if name not in self.operations:
            raise ApiError(404, f"Operation {name} not found.")
        return self.operations[name]

    # -- models ------------------------------------------------------------------------------
    def _model_id(self, name: str) -> str:
        return name.rsplit("/", 1)[-1].split("@")[0]

    def _version(self, mid: str, ver: str | None) -> dict[str, Any]:
        if mid not in self.models:
            raise ApiError(404, f"Model {self.parent}/models/{mid} not found.")
        versions = self.versions(mid)
        ver = ver or "default"
        if ver in versions:
            return versions[ver]
        for model in versions.values():
            if ver in model["versionAliases"]:
                return model
        raise ApiError(404, f"Model {self.parent}/models/{mid}@{ver} not found.")

    def _upload_model(self, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        spec = dict(body["model"])
        if not spec.get("artifactUri", "").startswith("gs://"):
            raise ApiError(400, "artifactUri must be a gs:// URI")
        if parent := body.get("parentModel"):
            mid = self._model_id(parent)
            if mid not in self.models:
                raise ApiError(404, f"Parent model {parent} not found.")
        else:
            mid = body.get("modelId") or str(next(self._ids))
            if mid in self.models:
                raise ApiError(409, f"Model {mid} already exists.")
            self.models[mid] = {"versions": {}, "next": 1}
        entry = self.models[mid]
        vid = str(entry["next"])
        entry["next"] += 1
        aliases = list(spec.pop("versionAliases", []))
        first = not entry["versions"]
        if first and "default" not in aliases:
            aliases.append("default")  # the first version is the default
        self._check_alias_names(aliases)
        for other in entry["versions"].values():  # an alias lives on one version
            other["versionAliases"] = [a for a in other["versionAliases"] if a not in aliases]
        now = _now()
        entry["versions"][vid] = {
            **spec,
            "name": f"{self.parent}/models/{mid}",
            "versionId": vid,
            "versionAliases": aliases,
            "createTime": now,
            "updateTime": now,
            "versionCreateTime": now,
            "versionUpdateTime": now,
            "labels": spec.get("labels", {}),
            # a custom-container model deploys on dedicated resources, as on Vertex
            "supportedDeploymentResourcesTypes": ["DEDICATED_RESOURCES"],
        }
        self._check_labels(spec.get("labels", {}))
        response = {
            "@type": V1 + "UploadModelResponse",
            "model": f"{self.parent}/models/{mid}",
            "modelVersionId": vid,
        }
        return self._operation(f"{self.parent}/models/{mid}", response, "UploadModelOperationMetadata")

    @staticmethod
    def _check_labels(labels: dict[str, str]) -> None:
        for key, value in labels.items():
            if not re.fullmatch(r"[a-z][a-z0-9_-]{0,62}", key) or not re.fullmatch(
                r"[a-z0-9_-]{0,63}", value
            ):
                raise ApiError(400, f"invalid label {key}={value!r}")

    @staticmethod
    def _check_alias_names(aliases: list[str]) -> None:
        for alias in aliases:
            if not re.fullmatch(r"[a-z][a-zA-Z0-9-]{0,126}", alias):
                raise ApiError(400, f"invalid version alias {alias!r}")

    def _with_deployments(self, model: dict[str, Any]) -> dict[str, Any]:
        mid = self._model_id(model["name"])
        deployed = [
            {"endpoint": f"{self.parent}/endpoints/{eid}", "deployedModelId": dm["id"]}
            for eid, ep in self.endpoints.items()
            for dm in ep["deployedModels"]
            if self._model_id(dm["model"]) == mid and dm["modelVersionId"] == model["versionId"]
        ]
        return {**model, "deployedModels": deployed} if deployed else dict(model)

    def _get_model(self, mid: str, ver: str | None = None, **_: Any) -> dict[str, Any]:
        return self._with_deployments(self._version(mid, ver))

    def _list_versions(self, mid: str, **_: Any) -> dict[str, Any]:
        self._version(mid, None)
        return {"models": [self._with_deployments(m) for m in self.versions(mid).values()]}

    def _list_models(self, query: dict[str, list[str]], **_: Any) -> dict[str, Any]:
        wanted = query.get("filter", [""])[0]
        out = []
        for mid in self.models:
            model = self._version(mid, None)
            match = re.fullmatch(r'display_name="([^"]*)"', wanted)
            if not wanted or (match and model.get("displayName") == match.group(1)):
                out.append(self._with_deployments(model))
        return {"models": out}

    def _merge_aliases(self, mid: str, ver: str | None, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        target = self._version(mid, ver)
        changes = body.get("versionAliases", [])
        add = [a for a in changes if not a.startswith("-")]
        remove = [a[1:] for a in changes if a.startswith("-")]
        if "default" in remove:
            raise ApiError(400, "The default alias cannot be removed; move it to another version instead.")
        self._check_alias_names(add + remove)
        for other in self.versions(mid).values():
            if other is not target:
                other["versionAliases"] = [a for a in other["versionAliases"] if a not in add]
        target["versionAliases"] = [a for a in target["versionAliases"] if a not in remove]
        target["versionAliases"] += [a for a in add if a not in target["versionAliases"]]
        target["versionUpdateTime"] = _now()
        return self._with_deployments(target)

    def _delete_model(self, mid: str, ver: str | None, **_: Any) -> dict[str, Any]:
        target = self._version(mid, ver)
        if ver is None:
            raise _precondition("the fake deletes model versions only (name one with @version)")
        if "default" in target["versionAliases"]:
            raise _precondition(
                f"Version {target['versionId']} is the default version and cannot be deleted."
            )
        if self._with_deployments(target).get("deployedModels"):
            raise _precondition(
                f"Version {target['versionId']} is deployed to an endpoint; undeploy it first."
            )
        if len(self.versions(mid)) == 1:
            raise _precondition("Deleting the only version of a model is not allowed; delete the model.")
        del self.versions(mid)[target["versionId"]]
        return self._operation(f"{self.parent}/models/{mid}", None, "DeleteOperationMetadata")

    def _import_evaluation(self, mid: str, ver: str | None, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        target = self._version(mid, ver)
        evaluation = dict(body["modelEvaluation"])
        key = f"{mid}@{target['versionId']}"
        name = f"{self.parent}/models/{mid}@{target['versionId']}/evaluations/{next(self._ids)}"
        evaluation = {**evaluation, "name": name, "createTime": _now()}
        self.evaluations.setdefault(key, []).append(evaluation)
        return evaluation

    def _list_evaluations(self, mid: str, ver: str | None, **_: Any) -> dict[str, Any]:
        target = self._version(mid, ver)
        return {"modelEvaluations": self.evaluations.get(f"{mid}@{target['versionId']}", [])}

    # -- endpoints ---------------------------------------------------------------------------
    def _endpoint(self, eid: str) -> dict[str, Any]:
        if eid not in self.endpoints:
            raise ApiError(404, f"Endpoint {self.parent}/endpoints/{eid} not found.")
        return self.endpoints[eid]

    def _create_endpoint(self, body: dict[str, Any], query: dict[str, list[str]], **_: Any) -> dict[str, Any]:
        eid = query.get("endpointId", [str(next(self._ids))])[0]
        endpoint = {
            **body,
            "name": f"{self.parent}/endpoints/{eid}",
            "deployedModels": [],
            "trafficSplit": {},
            "createTime": _now(),
            "updateTime": _now(),
        }
        self.endpoints[eid] = endpoint
        return self._operation(
            endpoint["name"], {"@type": V1 + "Endpoint", **endpoint}, "CreateEndpointOperationMetadata"
        )

    def _get_endpoint(self, eid: str, **_: Any) -> dict[str, Any]:
        return self._endpoint(eid)

    def _list_endpoints(self, query: dict[str, list[str]], **_: Any) -> dict[str, Any]:
        wanted = query.get("filter", [""])[0]
        match = re.fullmatch(r'display_name="([^"]*)"', wanted)
        out = [
            ep
            for ep in self.endpoints.values()
            if not wanted or (match and ep.get("displayName") == match.group(1))
        ]
        return {"endpoints": out}

    @staticmethod
    def _check_split(split: dict[str, int], deployed_ids: set[str]) -> dict[str, int]:
        split = {k: int(v) for k, v in split.items()}
        unknown = set(split) - deployed_ids
        if unknown:
            raise ApiError(400, f"traffic split names models that are not deployed: {sorted(unknown)}")
        if split and sum(split.values()) != 100:
            raise ApiError(400, f"traffic split must sum to 100, got {sum(split.values())}: {split}")
        if any(v < 0 for v in split.values()):
            raise ApiError(400, "traffic percentages cannot be negative")
        return split

    def _deploy_model(self, eid: str, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        endpoint = self._endpoint(eid)
        spec = dict(body["deployedModel"])
        model_name = spec["model"]
        mid, _, ver = self._model_id(model_name), None, None
        if "@" in model_name:
            ver = model_name.rsplit("@", 1)[1]
        version = self._version(mid, ver)
        resources = spec.get("dedicatedResources") or spec.get("automaticResources")
        if not resources:
            raise ApiError(400, "a deployed model needs dedicatedResources (machine spec and replica counts)")
        dm_id = str(next(self._ids))
        deployed_ids = {dm["id"] for dm in endpoint["deployedModels"]} | {dm_id}
        split = dict(body.get("trafficSplit") or {})
        if "0" in split:
            split[dm_id] = split.pop("0")
        if not split:
            split = {dm_id: 100} if not endpoint["deployedModels"] else dict(endpoint["trafficSplit"])
        split = self._check_split(split, deployed_ids)
        deployed = {
            **spec,
            "id": dm_id,
            "model": f"{self.parent}/models/{mid}",
            "modelVersionId": version["versionId"],
            "createTime": _now(),
        }
        endpoint["deployedModels"].append(deployed)
        endpoint["trafficSplit"] = split
        endpoint["updateTime"] = _now()
        response = {"@type": V1 + "DeployModelResponse", "deployedModel": deployed}
        return self._operation(endpoint["name"], response, "DeployModelOperationMetadata")

    def _undeploy_model(self, eid: str, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        endpoint = self._endpoint(eid)
        dm_id = body["deployedModelId"]
        if dm_id not in {dm["id"] for dm in endpoint["deployedModels"]}:
            raise ApiError(404, f"Deployed model {dm_id} not found on {endpoint['name']}.")
        remaining = {dm["id"] for dm in endpoint["deployedModels"]} - {dm_id}
        split = body.get("trafficSplit")
        if split:
            split = {k: v for k, v in split.items() if k != dm_id or int(v) != 0}
            split = self._check_split(split, remaining)
        else:
            if int(endpoint["trafficSplit"].get(dm_id, 0)) > 0 and remaining:
                raise _precondition(
                    f"Deployed model {dm_id} still receives traffic; give a traffic split without it."
                )
            split = {k: v for k, v in endpoint["trafficSplit"].items() if k != dm_id}
        endpoint["deployedModels"] = [dm for dm in endpoint["deployedModels"] if dm["id"] != dm_id]
        endpoint["trafficSplit"] = split
        endpoint["updateTime"] = _now()
        return self._operation(
            endpoint["name"], {"@type": V1 + "UndeployModelResponse"}, "UndeployModelOperationMetadata"
        )

    def _patch_endpoint(
        self, eid: str, body: dict[str, Any], query: dict[str, list[str]], **_: Any
    ) -> dict[str, Any]:
        endpoint = self._endpoint(eid)
        mask = query.get("updateMask", [""])[0].split(",")
        if "traffic_split" in mask or "trafficSplit" in mask:
            deployed_ids = {dm["id"] for dm in endpoint["deployedModels"]}
            endpoint["trafficSplit"] = self._check_split(body.get("trafficSplit", {}), deployed_ids)
        for field in ("displayName", "labels", "description"):
            snake = re.sub(r"([A-Z])", r"_\1", field).lower()
            if snake in mask or field in mask:
                endpoint[field] = body.get(field)
        endpoint["updateTime"] = _now()
        return endpoint

    # -- pipeline jobs and schedules -----------------------------------------------------------
    def _create_pipeline_job(
        self, body: dict[str, Any], query: dict[str, list[str]], **_: Any
    ) -> dict[str, Any]:
        jid = query.get("pipelineJobId", [f"job-{next(self._ids)}"])[0]
        self._check_pipeline_job(body)
        if jid in self.pipeline_jobs:
            raise ApiError(409, f"PipelineJob {jid} already exists.")
        job = {
            **body,
            "name": f"{self.parent}/pipelineJobs/{jid}",
            "state": "PIPELINE_STATE_RUNNING",
            "createTime": _now(),
            "startTime": _now(),
            "jobDetail": {"taskDetails": []},
        }
        self.pipeline_jobs[jid] = job
        return dict(job)

    @staticmethod
    def _check_pipeline_job(job: dict[str, Any]) -> None:
        if not (job.get("pipelineSpec") or job.get("templateUri")):
            raise ApiError(400, "a PipelineJob needs a pipelineSpec or a templateUri")
        if not job.get("runtimeConfig", {}).get("gcsOutputDirectory"):
            raise ApiError(400, "runtimeConfig.gcsOutputDirectory is required")

    # Each read of a job moves it one step along: trigger runs, trigger succeeds and the dataset
    # builder runs, both succeed and so does the job (what `--wait` reports).
    JOB_STEPS = (
        ("PIPELINE_STATE_RUNNING", {"check-trigger": "RUNNING"}),
        ("PIPELINE_STATE_RUNNING", {"check-trigger": "SUCCEEDED", "build-dataset": "RUNNING"}),
        ("PIPELINE_STATE_SUCCEEDED", {"check-trigger": "SUCCEEDED", "build-dataset": "SUCCEEDED"}),
    )

    def _get_pipeline_job(self, jid: str, **_: Any) -> dict[str, Any]:
        if jid not in self.pipeline_jobs:
            raise ApiError(404, f"PipelineJob {jid} not found.")
        job = self.pipeline_jobs[jid]
        step = min(job.setdefault("_reads", 0), len(self.JOB_STEPS) - 1)
        job["_reads"] += 1
        state, tasks = self.JOB_STEPS[step]
        job["state"] = state
        job["jobDetail"] = {
            "taskDetails": [
                {"taskId": str(i), "taskName": n, "state": t} for i, (n, t) in enumerate(tasks.items())
            ]
        }
        return {k: v for k, v in job.items() if not k.startswith("_")}

    def _list_pipeline_jobs(self, **_: Any) -> dict[str, Any]:
        return {"pipelineJobs": list(self.pipeline_jobs.values())}

    def _create_schedule(self, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        if not body.get("cron"):
            raise ApiError(400, "a schedule needs a cron expression")
        if int(body.get("maxConcurrentRunCount", 0)) < 1:
            raise ApiError(400, "maxConcurrentRunCount must be at least 1")
        self._check_pipeline_job(body.get("createPipelineJobRequest", {}).get("pipelineJob", {}))
        sid = str(next(self._ids))
        schedule = {**body, "name": f"{self.parent}/schedules/{sid}", "state": "ACTIVE", "createTime": _now()}
        self.schedules[sid] = schedule
        return schedule

    def _schedule(self, sid: str) -> dict[str, Any]:
        if sid not in self.schedules:
            raise ApiError(404, f"Schedule {sid} not found.")
        return self.schedules[sid]

    def _get_schedule(self, sid: str, **_: Any) -> dict[str, Any]:
        return self._schedule(sid)

    def _list_schedules(self, **_: Any) -> dict[str, Any]:
        return {"schedules": list(self.schedules.values())}

    def _pause_schedule(self, sid: str, **_: Any) -> dict[str, Any]:
        self._schedule(sid)["state"] = "PAUSED"
        return {}

    def _resume_schedule(self, sid: str, **_: Any) -> dict[str, Any]:
        self._schedule(sid)["state"] = "ACTIVE"
        return {}

    def _delete_schedule(self, sid: str, **_: Any) -> dict[str, Any]:
        self._schedule(sid)
        del self.schedules[sid]
        return self._operation(f"{self.parent}/schedules/{sid}", None, "DeleteOperationMetadata")


def _handler_for(fake: VertexFake) -> type[StandInHandler]:
    class Handler(StandInHandler):
        def _serve(self) -> None:
            url = urlparse(self.path)
            raw = self.read_body()
            fake.authorizations.append(self.headers.get("authorization"))
            try:
                body = json.loads(raw) if raw else {}
                result, code = fake.handle(self.command, unquote(url.path), parse_qs(url.query), body), 200
            except ApiError as exc:
                result, code = exc.body(), exc.code
            except (KeyError, ValueError, TypeError) as exc:
                result, code = ApiError(400, f"bad request: {exc!r}").body(), 400
            self.reply_json(code, result)

        do_GET = do_POST = do_PATCH = do_DELETE = _serve

    return Handler


@contextmanager
def running_fake(fake: VertexFake | None = None) -> Iterator[tuple[VertexFake, str]]:
    """Serve a fake on a free local port; yields (fake, "http://127.0.0.1:PORT")."""
    fake = fake or VertexFake()
    with serving(_handler_for(fake)) as url:
        yield fake, url
