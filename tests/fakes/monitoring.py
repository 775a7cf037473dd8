"""A local stand-in for Cloud Monitoring's MetricService over gRPC (the client library speaks
nothing else): `CreateTimeSeries` into custom metrics.

It checks what the service checks of a write (at most 200 series, one point each, a custom or
external metric type, a monitored resource, a value of one type) and keeps the series it took.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from typing import Any

import grpc
from google.cloud import monitoring_v3
from google.protobuf import empty_pb2

VALUES = ("int64_value", "double_value", "bool_value", "string_value", "distribution_value")


class MonitoringFake:
    def __init__(self) -> None:
        self.series: list[dict[str, Any]] = []
        self.requests = 0

    def create(self, request: monitoring_v3.CreateTimeSeriesRequest, context: grpc.ServicerContext) -> Any:
        self.requests += 1
        series = list(request.time_series)
        problem = None
        if not 1 <= len(series) <= 200:
            problem = f"{len(series)} time series; between 1 and 200"
        for ts in series:
            if not ts.metric.type.startswith(("custom.googleapis.com/", "external.googleapis.com/")):
                problem = f"not a custom metric: {ts.metric.type!r}"
            elif not ts.resource.type:
                problem = "a time series needs a monitored resource"
            elif len(ts.points) != 1 or not ts.points[0].interval.end_time:
                problem = "one point with an end time per series"
            elif monitoring_v3.TypedValue.pb(ts.points[0].value).WhichOneof("value") not in VALUES:
                problem = "a point needs a value"
        if problem:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        for ts in series:
            value = monitoring_v3.TypedValue.pb(ts.points[0].value)
            self.series.append(
                {
                    "project": request.name.removeprefix("projects/"),
                    "type": ts.metric.type,
                    "labels": dict(ts.metric.labels),
                    "resource": ts.resource.type,
                    "value": getattr(value, value.WhichOneof("value")),
                }
            )
        return empty_pb2.Empty()

    def latest(self, metric: str, version: str) -> float | None:
        """The last value written of `metric` (its name after the prefix) for a version."""
        for ts in reversed(self.series):
            if ts["type"].endswith("/" + metric) and ts["labels"]["model_version"] == version:
                return float(ts["value"])
        return None


@contextmanager
def running_monitoring() -> Iterator[tuple[MonitoringFake, str]]:
    """Serve the fake on a free local port; yields (fake, "http://127.0.0.1:PORT")."""
    fake = MonitoringFake()
    handler = grpc.method_handlers_generic_handler(
        "google.monitoring.v3.MetricService",
        {
            "CreateTimeSeries": grpc.unary_unary_rpc_method_handler(
                fake.create,
                request_deserializer=monitoring_v3.CreateTimeSeriesRequest.deserialize,
                response_serializer=empty_pb2.Empty.SerializeToString,
            )
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield fake, f"http://127.0.0.1:{port}"
    finally:
        server.stop(None)
