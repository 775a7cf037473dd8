"""One Vertex AI endpoint: its traffic split, computed from its deployed models, and deploys."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from stt_flywheel.config import FlywheelConfig
from stt_flywheel.deployment.endpoint import canary_split
from stt_flywheel.deployment.registry import RegistryError
from stt_flywheel.deployment.vertex.client import iso, retrying
from stt_flywheel.deployment.vertex.registry import VertexRegistry

__all__ = ["VertexEndpoint"]


class VertexEndpoint:
    """One Vertex AI endpoint (found, or created, by its display name `deploy.endpoint_name`)."""

    def __init__(self, config: FlywheelConfig, registry: VertexRegistry) -> None:
        self.settings = config.vertex
        self.name = config.deploy.endpoint_name
        self.registry = registry
        self._call = retrying(self.settings)
        self._resource: str | None = None

    def _endpoint(self) -> Any:
        from google.cloud import aiplatform

        if self._resource is None:

            @self._call
            def find_or_create_endpoint() -> str:
                found = aiplatform.Endpoint.list(filter=f'display_name="{self.name}"')
                if found:
                    return str(found[0].resource_name)
                return str(aiplatform.Endpoint.create(display_name=self.name, sync=True).resource_name)

            self._resource = find_or_create_endpoint()
        resource = self._resource

        @self._call
        def get_endpoint() -> Any:
            return aiplatform.Endpoint(resource)

        return get_endpoint()

    def _deployed(self, endpoint: Any) -> dict[int, str]:
        """Deployed model id per registry version."""
        return {
            int(dm.model_version_id): dm.id
            for dm in endpoint.gca_resource.deployed_models
            if dm.model.split("@")[0] == self.registry.resource_name
        }

    def traffic(self) -> dict[int, int]:
        endpoint = self._endpoint()
        split = dict(endpoint.gca_resource.traffic_split)
        return {version: int(split.get(dm_id, 0)) for version, dm_id in self._deployed(endpoint).items()}

    @contextmanager
    def served(self) -> Iterator[VertexEndpoint]:
        """Vertex AI serves the deployed models itself: nothing to start or stop here."""
        yield self

    def last_deployed_at(self) -> datetime | None:
        endpoint = self._endpoint()
        times = [dm.create_time for dm in endpoint.gca_resource.deployed_models]
        return max((datetime.fromisoformat(iso(t)) for t in times), default=None)

    def deploy(self, version: int, percent: int = 100, reason: str = "") -> None:
        """Serve `version` at `percent`, the models already serving sharing the rest."""
        from google.cloud import aiplatform

        endpoint = self._endpoint()
        deployed = self._deployed(endpoint)
        current = {dm_id: int(v) for dm_id, v in endpoint.gca_resource.traffic_split.items()}
        if version in deployed:  # already serving: only the split changes
            self.set_traffic(canary_split(self.traffic(), version, percent), reason=reason)
            return
        self.registry.get(version)
        split = canary_split(current, "0", percent)  # "0" is the model being deployed
        s = self.settings

        @self._call
        def deploy_model() -> None:
            endpoint.deploy(
                model=aiplatform.Model(self.registry.resource_name, version=str(version)),
                deployed_model_display_name=f"{self.registry.model}-v{version}",
                traffic_split=split,
                machine_type=s.machine_type,
                accelerator_type=s.accelerator_type,
                accelerator_count=s.accelerator_count or None,
                min_replica_count=s.min_replica_count,
                max_replica_count=s.max_replica_count,
                service_account=s.serving_service_account,
                sync=True,
            )

        deploy_model()
        self.registry.record("deploy", version, {"endpoint": self.name, "percent": percent, "reason": reason})

    def set_traffic(self, split: dict[int, int], reason: str = "") -> None:
        endpoint = self._endpoint()
        deployed = self._deployed(endpoint)
        unknown = set(split) - set(deployed)
        if unknown or sum(split.values()) != 100:
            raise RegistryError(
                f"traffic split {split} must sum to 100 over deployed versions {sorted(deployed)}"
            )
        by_id = {dm_id: split.get(version, 0) for version, dm_id in deployed.items()}

        @self._call
        def update_traffic_split() -> None:
            endpoint.update(traffic_split=by_id)

        update_traffic_split()
        self.registry.record("traffic", None, {"endpoint": self.name, "traffic": split, "reason": reason})

    def undeploy(self, version: int, reason: str = "") -> None:
        endpoint = self._endpoint()
        deployed = self._deployed(endpoint)
        if version not in deployed:
            return
        split = {k: int(v) for k, v in endpoint.gca_resource.traffic_split.items()}
        if split.get(deployed[version], 0) > 0 and len(deployed) > 1:
            raise RegistryError(f"version {version} still serves {split[deployed[version]]}% of traffic")
        remaining = {k: v for k, v in split.items() if k != deployed[version]}

        @self._call
        def undeploy_model() -> None:
            endpoint.undeploy(deployed_model_id=deployed[version], traffic_split=remaining or None, sync=True)

        undeploy_model()
        self.registry.record("undeploy", version, {"endpoint": self.name, "reason": reason})
