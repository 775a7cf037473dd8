# The GPU trainer: the CUDA build of the pinned torch (PyPI's Linux wheels bundle the CUDA 12
# runtime; Vertex's GPU machines bring the driver), plus the same pinned versions as the base image.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    STT_FLYWHEEL_CACHE=/tmp/stt-flywheel-cache
WORKDIR /opt/stt-flywheel
COPY pyproject.toml constraints.txt README.md ./
COPY src ./src
COPY components ./components
COPY pipelines ./pipelines
RUN pip install -c constraints.txt torch \
 && pip install -c constraints.txt ".[gcp]" \
 && python -c "import torch, stt_flywheel.models.training; assert torch.version.cuda, 'not a CUDA build'"
# The commit the image was built from (cloudbuild.yaml passes it): models' lineage records it.
ARG STT_FLYWHEEL_COMMIT=""
ENV STT_FLYWHEEL_COMMIT=${STT_FLYWHEEL_COMMIT}
