"""Each version's live quality as Cloud Monitoring custom metrics, so the console can chart it and
alert on it: the monitor writes one point per version and metric at every look.

The metrics (all `custom.googleapis.com/stt_flywheel/…`, gauges on the `global` resource, labelled
`model_version` and `endpoint`): `requests` (predictions in the live window), `correction_rate`
and `live_wer` (on the labelled ones; none written while nothing is labelled) and
`traffic_share` (percent of the endpoint's traffic). `cloud/monitoring/` holds a dashboard and
alert policies over them.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from stt_flywheel.config import FlywheelConfig
from stt_flywheel.data.error_store import open_error_store
from stt_flywheel.deployment.backends import open_deployment
from stt_flywheel.monitoring.live import live_quality

__all__ = [
    "METRIC_KINDS",
    "METRIC_PREFIX",
    "VersionPoint",
    "publish_cloud_metrics",
    "version_points",
    "write_cloud_metrics",
]

log = logging.getLogger("stt_flywheel.monitor")

METRIC_PREFIX = "custom.googleapis.com/stt_flywheel/"
METRIC_KINDS = {
    "requests": "int64",
    "correction_rate": "double",
    "live_wer": "double",
    "traffic_share": "double",
}
MAX_SERIES_PER_REQUEST = 200  # the API's limit


@dataclass(frozen=True)
class VersionPoint:
    version: str
    values: dict[str, float | int]  # metric name (a key of METRIC_KINDS) -> value


def version_points(config: FlywheelConfig, now: datetime) -> list[VersionPoint]:
    """Every registered version's live figures over the trigger's recent window, and its share of
    the endpoint's traffic."""
    registry, endpoint = open_deployment(config)
    traffic = endpoint.traffic()
    live = live_quality(
        open_error_store(config),
        start=now - timedelta(hours=config.trigger.recent_window_hours),
        now=now,
        label_window=config.feedback.label_window,
        normalizer=config.validation.normalizer,
        resamples=0,
        max_per_user=config.monitor.max_predictions_per_user,
    )
    points = []
    for v in registry.versions():
        q = live.get(str(v.version))
        values: dict[str, float | int] = {
            "traffic_share": float(traffic.get(v.version, 0)),
            "requests": q.requests if q else 0,
        }
        if q is not None and q.correction_rate is not None and math.isfinite(q.correction_rate.value):
            values["correction_rate"] = float(q.correction_rate.value)
        if q is not None and q.wer is not None and math.isfinite(q.wer.value):  # NaN: nothing scored
            values["live_wer"] = float(q.wer.value)
        points.append(VersionPoint(str(v.version), values))
    return points


def _client(config: FlywheelConfig) -> Any:
    """The Monitoring client (gRPC: the library has no REST transport). An `http://host:port`
    endpoint, a local stand-in, is reached over a plaintext channel without credentials."""
    from google.api_core.client_options import ClientOptions
    from google.cloud import monitoring_v3

    endpoint = config.vertex.monitoring_api_endpoint
    if not endpoint:
        return monitoring_v3.MetricServiceClient()
    if endpoint.startswith("http://"):
        import grpc
        from google.cloud.monitoring_v3.services.metric_service.transports import MetricServiceGrpcTransport

        channel = grpc.insecure_channel(endpoint.removeprefix("http://"))
        return monitoring_v3.MetricServiceClient(transport=MetricServiceGrpcTransport(channel=channel))
    return monitoring_v3.MetricServiceClient(client_options=ClientOptions(api_endpoint=endpoint))


def write_cloud_metrics(config: FlywheelConfig, now: datetime | None = None) -> int:
    """Write the points; returns how many series were written. Raises what the API raised."""
    from google.api import metric_pb2
    from google.cloud import monitoring_v3

    if not config.vertex.project:
        raise ValueError("monitor.cloud_metrics needs vertex.project")
    now = now or datetime.now(UTC)
    series = []
    for point in version_points(config, now):
        for name, value in point.values.items():
            ts = monitoring_v3.TimeSeries()
            ts.metric.type = METRIC_PREFIX + name
            ts.metric.labels["model_version"] = point.version
            ts.metric.labels["endpoint"] = config.deploy.endpoint_name
            ts.resource.type = "global"
            ts.resource.labels["project_id"] = config.vertex.project
            ts.metric_kind = metric_pb2.MetricDescriptor.MetricKind.GAUGE
            kind = METRIC_KINDS[name]
            typed = {"int64_value": int(value)} if kind == "int64" else {"double_value": float(value)}
            ts.points = [
                monitoring_v3.Point(
                    interval=monitoring_v3.TimeInterval(end_time=now), value=monitoring_v3.TypedValue(**typed)
                )
            ]
            series.append(ts)
    client = _client(config)
    for i in range(0, len(series), MAX_SERIES_PER_REQUEST):
        client.create_time_series(
            name=f"projects/{config.vertex.project}", time_series=series[i : i + MAX_SERIES_PER_REQUEST]
        )
    return len(series)


def publish_cloud_metrics(config: FlywheelConfig, now: datetime) -> int | None:
    """The monitor's call: charts are not decisions, so a write that fails is logged and the look
    stands. How many series were written, or None."""
    try:
        written = write_cloud_metrics(config, now)
    except Exception as exc:  # noqa: BLE001 -- the API's errors are many types
        log.warning(
            "monitor: Cloud Monitoring did not take the live metrics (%s: %s)", type(exc).__name__, exc
        )
        return None
    log.info("monitor: %d live metric series written to Cloud Monitoring", written)
    return written
