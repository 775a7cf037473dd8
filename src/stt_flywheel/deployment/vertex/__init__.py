"""The Vertex AI backend: Model Registry versions and aliases, and an endpoint's traffic split.

The same interface as the embedded `LocalRegistry` / `LocalEndpoint` (see `deploy.Registry` and
`deploy.Endpoint`), over google-cloud-aiplatform:

- a candidate is uploaded as a new version of one parent model (`parent_model`), not the default
  (`is_default_version=False`); aliases `default` / `previous` / `candidate` move with
  `mergeVersionAliases`, so an alias lives on one version as in the local registry;
- labels carry the dataset version, the source run and headline metrics (label values allow only
  `[a-z0-9_-]`, so `0.2315` is written `0_2315` and a minus sign `m`); the whole record
  (watermark, lineage, both verdicts) is `flywheel.json` beside the model files, and the
  validation metrics are imported as a ModelEvaluation the console shows;
- the endpoint's traffic split is computed from its deployed models (`endpoint.canary_split`),
  so it always sums to 100; a version is deployed on the configured machine, accelerator and
  replica counts, serving the image built from `containers/serving.Dockerfile`;
- quota errors (429) and unavailability are retried with backoff; any other API error surfaces as
  `RegistryError`, and a failed deploy leaves the split as it was (the service applies none of it).

The audit log lives in the run-state store (`audit/<model>/…json`), one immutable object per entry.
"""

from stt_flywheel.deployment.vertex.client import init_vertex, label_value
from stt_flywheel.deployment.vertex.endpoint import VertexEndpoint
from stt_flywheel.deployment.vertex.registry import VertexRegistry

__all__ = ["VertexEndpoint", "VertexRegistry", "init_vertex", "label_value"]
