# syntax=docker/dockerfile:1
# A cloud worker: torch on CUDA (FP16), gRPC :8201, Prometheus /metrics :8202. Build from the
# repository root:
#
#   docker build -f deploy/docker/cloud.Dockerfile -t edgecloud-cloud:0.1.0 .
#   docker build -f deploy/docker/cloud.Dockerfile \
#       --build-arg CUDA_IMAGE=nvidia/cuda:12.6.3-base-ubuntu22.04 \
#       --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 -t edgecloud-cloud:0.1.0 .
#
# CUDA_IMAGE and TORCH_INDEX_URL move together: the image's CUDA version is what the host driver
# is checked against at container start (NVIDIA_REQUIRE_CUDA), the index decides what torch is
# built for. TORCH_VERSION must equal the pin in constraints.txt; the install fails otherwise.

# The base flavour, not cudnn-runtime: torch's CUDA wheels bring their own CUDA runtime, cuBLAS
# and cuDNN as pip packages, so the libraries of a runtime image would ship twice (gigabytes)
# and go unused. The base image keeps what matters: the NVIDIA_* variables the container toolkit
# reads to mount the driver, and the driver-version check.
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-base-ubuntu22.04
# Only builds the project's wheel (pure Python): any Python 3.11 will do.
ARG PYTHON_IMAGE=python:3.11-slim
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128

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

# ---- Python 3.11 on the CUDA image -------------------------------------------------------------
FROM ${CUDA_IMAGE} AS cuda-python
# Ubuntu 22.04's Python is 3.10; the deadsnakes PPA carries current 3.11 releases for it. Its
# key is checked against the full fingerprint, not trusted because the download worked.
ARG DEADSNAKES_KEY=F23C5A6CF475977595C89F51BA6932366A755776
ENV DEBIAN_FRONTEND=noninteractive
# pipefail: a failed download must fail the build, not feed gpg an empty key.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Unpinned apt versions: the PPA keeps only its latest build, so a pin would break every rebuild.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl gnupg \
 && curl -fsSL "https://keyserver.ubuntu.com/pks/lookup?op=get&search=0x${DEADSNAKES_KEY}" \
        | gpg --dearmor -o /usr/share/keyrings/deadsnakes.gpg \
 && gpg --show-keys --with-colons /usr/share/keyrings/deadsnakes.gpg | grep -q "^fpr:*${DEADSNAKES_KEY}:" \
 && . /etc/os-release \
 && echo "deb [signed-by=/usr/share/keyrings/deadsnakes.gpg] https://ppa.launchpadcontent.net/deadsnakes/ppa/ubuntu ${VERSION_CODENAME} main" \
        > /etc/apt/sources.list.d/deadsnakes.list \
 && apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
 && apt-get purge -y --auto-remove curl gnupg \
 && rm -rf /var/lib/apt/lists/*

# ---- torch and the worker, in a virtual environment copied whole into the runtime -------------
FROM cuda-python AS build
ARG TORCH_VERSION
ARG TORCH_INDEX_URL
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first from the CUDA index; then the rest from PyPI under constraints.txt, whose torch pin
# the installed build already satisfies (2.13.0+cu128 matches ==2.13.0), so nothing replaces it.
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    --mount=type=bind,source=constraints.txt,target=/tmp/constraints.txt \
    set -- /wheels/edgecloud-*.whl \
 && pip install --no-cache-dir -c /tmp/constraints.txt "edgecloud[cloud] @ file://$1" \
 && python -c "import sys, torch; v = torch.__version__.split('+')[0]; \
sys.exit(None if v == '${TORCH_VERSION}' and torch.version.cuda else f'torch {torch.__version__} (CUDA {torch.version.cuda}) is not a CUDA build of ${TORCH_VERSION}')"

# ---- the cloud worker --------------------------------------------------------------------------
FROM cuda-python AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# A real home: CUDA's kernel cache and torch write under ~/.cache and ~/.nv when they can.
# A fixed numeric id: Kubernetes' runAsNonRoot can only verify a numeric USER.
RUN groupadd --system --gid 10001 edgecloud \
 && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/edgecloud \
        --shell /usr/sbin/nologin edgecloud
COPY --from=build /opt/venv /opt/venv
# A default so `docker run --gpus all` starts; deployments mount their own /etc/edgecloud.
COPY deploy/configs/cloud/cloud.yaml /etc/edgecloud/cloud.yaml
COPY deploy/docker/healthcheck.py /usr/local/bin/edgecloud-healthcheck
WORKDIR /opt/edgecloud
USER 10001:10001
EXPOSE 8201 8202
# SIGTERM drains (health NOT_SERVING, then server.grace_s = 10 s): give `docker stop` --time 30.
STOPSIGNAL SIGTERM
# Health turns SERVING only once the model is loaded and warmed on the GPU: CUDA initialisation,
# the weights and the warm-up batches take a while on a cold node.
HEALTHCHECK --interval=10s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "/usr/local/bin/edgecloud-healthcheck", "127.0.0.1:8201"]
ENTRYPOINT ["edgecloud", "serve", "cloud"]
CMD ["--config", "/etc/edgecloud/cloud.yaml"]
