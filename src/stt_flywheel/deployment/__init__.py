"""Deployment: the model registry and endpoint (embedded or Vertex AI), deploy strategies, the serving server."""
