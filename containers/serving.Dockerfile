# Prediction server following Vertex AI's custom-container contract: it listens on AIP_HTTP_PORT,
# answers AIP_HEALTH_ROUTE and AIP_PREDICT_ROUTE, and loads the model from AIP_STORAGE_URI (gs://).
# CPU torch by default; build with --build-arg TORCH_INDEX=https://pypi.org/simple for GPU replicas.
FROM python:3.11-slim

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    STT_FLYWHEEL_CACHE=/tmp/stt-flywheel-cache AIP_HTTP_PORT=8080 FLYWHEEL_HOST=0.0.0.0
WORKDIR /opt/stt-flywheel
COPY pyproject.toml constraints.txt README.md ./
COPY src ./src
COPY components ./components
COPY pipelines ./pipelines
RUN pip install --index-url "${TORCH_INDEX}" -c constraints.txt torch \
 && pip install -c constraints.txt ".[gcp]" \
 && python -c "import stt_flywheel.deployment.serving.app"
# The commit the image was built from (cloudbuild.yaml passes it): models' lineage records it.
ARG STT_FLYWHEEL_COMMIT=""
ENV STT_FLYWHEEL_COMMIT=${STT_FLYWHEEL_COMMIT}
USER 1000
EXPOSE 8080
ENTRYPOINT ["stt-flywheel", "serve"]
