# CPU stages (trigger, dataset, validation, regression, deploy), the monitor, retention, and
# `feedback serve` on Cloud Run. The same pinned versions as the local set-up (constraints.txt);
# torch is the CPU build of the pinned version.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    STT_FLYWHEEL_CACHE=/tmp/stt-flywheel-cache
WORKDIR /opt/stt-flywheel
COPY pyproject.toml constraints.txt README.md ./
COPY src ./src
COPY components ./components
COPY pipelines ./pipelines
RUN pip install --index-url https://download.pytorch.org/whl/cpu -c constraints.txt torch \
 && pip install -c constraints.txt ".[gcp]" \
 && python -c "import stt_flywheel.run.stages, stt_flywheel.deployment.feedback, flywheel_pipelines.cli, kfp, av"
# The commit the image was built from (cloudbuild.yaml passes it): models' lineage records it.
ARG STT_FLYWHEEL_COMMIT=""
ENV STT_FLYWHEEL_COMMIT=${STT_FLYWHEEL_COMMIT}
