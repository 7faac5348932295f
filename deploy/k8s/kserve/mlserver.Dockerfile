# syntax=docker/dockerfile:1
# The KServe cloud tier's image: an unmodified MLServer (the pins of
# tests/outside_servers/requirements.txt, the versions the integration tests run) with edgecloud's
# embedding runtime and its model settings baked in; the model's files come from the
# InferenceService's storageUri at /mnt/models. No torch. Build from the repository root:
#
#   docker build -f deploy/k8s/kserve/mlserver.Dockerfile -t edgecloud-mlserver:0.1.0 .
#
# INTRA_OP_THREADS (onnxruntime's threads per request) should match the ServingRuntime's CPU request.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE}
ARG INTRA_OP_THREADS=4
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN --mount=type=bind,source=tests/outside_servers/requirements.txt,target=/tmp/requirements.txt \
    pip install --no-cache-dir -r /tmp/requirements.txt
# A fixed numeric id: Kubernetes' runAsNonRoot can only verify a numeric USER.
RUN groupadd --system --gid 10001 edgecloud \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin edgecloud
# The model repository MLServer starts on: one folder, the runtime module beside its settings
# (MLServer imports the implementation from the model's folder).
COPY tests/outside_servers/mlserver_model/embedding_runtime.py tests/outside_servers/mlserver_model/model-settings.json \
     /opt/edgecloud/mlserver/all-MiniLM-L6-v2/
RUN python -c "import json, sys; p = sys.argv[1]; s = json.load(open(p)); \
s['parameters']['uri'] = '/mnt/models'; s['parameters']['extra']['intra_op_threads'] = int(sys.argv[2]); \
json.dump(s, open(p, 'w'), indent=2)" /opt/edgecloud/mlserver/all-MiniLM-L6-v2/model-settings.json "${INTRA_OP_THREADS}"
WORKDIR /tmp
USER 10001:10001
EXPOSE 9000 8080 8082
STOPSIGNAL SIGTERM
CMD ["mlserver", "start", "/opt/edgecloud/mlserver"]
