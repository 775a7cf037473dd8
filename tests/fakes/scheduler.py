"""A local stand-in for the Cloud Scheduler v1 REST API (jobs with an HTTP target).

It keeps jobs (create, get, list, pause, resume, delete) and, on `:run`, does what Cloud Scheduler
does at a tick: sends the job's HTTP request to its target with a bearer token standing for the
OAuth token of the job's service account, and records the response.
"""

from __future__ import annotations

import base64
import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

from fakes.stand_in_http import StandInHandler, serving

HTTP_METHODS = {1: "POST", 2: "GET", 3: "HEAD", 4: "PUT", 5: "DELETE", 6: "PATCH", 7: "OPTIONS"}
JOB_NAME = re.compile(r"^projects/[^/]+/locations/[^/]+/jobs/[A-Za-z0-9_-]{1,500}$")


class SchedulerError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class SchedulerFake:
    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.deliveries: list[dict[str, Any]] = []  # what each run sent and got back

    def handle(self, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        path = path.removeprefix("/v1/")
        name, _, verb = path.partition(":")
        if method == "POST" and name.endswith("/jobs") and not verb:
            return self._create(name, body)
        if method == "GET" and name.endswith("/jobs"):
            return {"jobs": [j for k, j in self.jobs.items() if k.startswith(name + "/")]}
        job = self.jobs.get(name)
        if job is None:
            raise SchedulerError(404, f"Job not found: {name}")
        if method == "GET":
            return job
        if method == "DELETE":
            del self.jobs[name]
            return {}
        if verb == "pause":
            job["state"] = "PAUSED"
        elif verb == "resume":
            job["state"] = "ENABLED"
        elif verb == "run":
            self._deliver(job)
        else:
            raise SchedulerError(400, f"unsupported: {method} {path}")
        return job

    def _create(self, parent: str, body: dict[str, Any]) -> dict[str, Any]:
        name = body.get("name", "")
        if not JOB_NAME.match(name) or not name.startswith(parent.removesuffix("/jobs") + "/jobs/"):
            raise SchedulerError(400, f"invalid job name {name!r}")
        if name in self.jobs:
            raise SchedulerError(409, f"Job {name} already exists")
        if len(str(body.get("schedule", "")).split()) != 5:
            raise SchedulerError(400, f"schedule must be a 5-field cron expression: {body.get('schedule')!r}")
        target = body.get("httpTarget") or {}
        if not str(target.get("uri", "")).startswith(("http://", "https://")):
            raise SchedulerError(400, "httpTarget.uri must begin with http:// or https://")
        if target.get("body") and HTTP_METHODS.get(
            target.get("httpMethod"), target.get("httpMethod")
        ) not in (
            "POST",
            "PUT",
            "PATCH",
        ):
            raise SchedulerError(400, "a body needs POST, PUT or PATCH")
        job = {**body, "state": "ENABLED", "userUpdateTime": datetime.now(UTC).isoformat()}
        self.jobs[name] = job
        return job

    def _deliver(self, job: dict[str, Any]) -> None:
        target = job["httpTarget"]
        method = HTTP_METHODS.get(target.get("httpMethod"), target.get("httpMethod") or "POST")
        headers = dict(target.get("headers") or {})
        account = (target.get("oauthToken") or {}).get("serviceAccountEmail")
        if account:
            headers["Authorization"] = f"Bearer oauth-token-of:{account}"
        data = base64.b64decode(target["body"]) if target.get("body") else None
        request = urllib.request.Request(target["uri"], data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                code, text = response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            code, text = exc.code, exc.read().decode()
        self.deliveries.append({"job": job["name"], "status": code, "response": text, "headers": headers})
        job["lastAttemptTime"] = datetime.now(UTC).isoformat()
        job["status"] = {} if 200 <= code < 300 else {"code": 2, "message": f"HTTP {code}"}


def _handler_for(fake: SchedulerFake) -> type[StandInHandler]:
    class Handler(StandInHandler):
        def _serve(self) -> None:
            raw = self.read_body()
            try:
                result, code = (
                    fake.handle(self.command, urlparse(self.path).path, json.loads(raw) if raw else {}),
                    200,
                )
            except SchedulerError as exc:
                result, code = {"error": {"code": exc.code, "message": exc.message}}, exc.code
            self.reply_json(code, result)

        do_GET = do_POST = do_DELETE = do_PATCH = _serve

    return Handler


@contextmanager
def running_scheduler() -> Iterator[tuple[SchedulerFake, str]]:
    """Serve a fake on a free local port; yields (fake, "http://127.0.0.1:PORT")."""
    fake = SchedulerFake()
    with serving(_handler_for(fake)) as url:
        yield fake, url
