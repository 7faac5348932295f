# syntax=docker/dockerfile:1
# The gateway: gRPC :8001, HTTP :8000 (/v2/health/ready) and the operator port :8002 (/metrics). Build from the repository root:
#
#   docker build -f deploy/docker/gateway.Dockerfile -t edgecloud-gateway:0.1.0 .
#
# Routing, caching and balancing only: no model runs here, so neither torch nor onnxruntime.
# (A device gateway with an embedded edge agent is a host install with '.[edge,gateway]', see
# deploy/README.md; this image is for gateways in front of remote backends.)

ARG PYTHON_IMAGE=python:3.11-slim

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

FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    set -- /wheels/edgecloud-*.whl \
 && pip install --no-cache-dir "edgecloud[gateway] @ file://$1" \
 && if python -c "import torch" 2>/dev/null; then echo "torch must not be in the gateway image" >&2; exit 1; fi
# A fixed numeric id: Kubernetes' runAsNonRoot can only verify a numeric USER.
RUN groupadd --system --gid 10001 edgecloud \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin edgecloud
# A default so `docker run` starts; deployments mount their own /etc/edgecloud (compose, k8s).
COPY deploy/configs/gateway.yaml /etc/edgecloud/gateway.yaml
COPY deploy/docker/healthcheck.py /usr/local/bin/edgecloud-healthcheck
WORKDIR /opt/edgecloud
USER 10001:10001
EXPOSE 8001 8000 8002
# SIGTERM drains (health NOT_SERVING, then server.grace_s); SIGHUP reloads the config.
STOPSIGNAL SIGTERM
# gRPC health says whether the gateway runs; whether a backend can answer is /v2/health/ready,
# which an orchestrator's readiness check should use instead.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "/usr/local/bin/edgecloud-healthcheck", "127.0.0.1:8001"]
ENTRYPOINT ["edgecloud", "serve", "gateway"]
CMD ["--config", "/etc/edgecloud/gateway.yaml"]
