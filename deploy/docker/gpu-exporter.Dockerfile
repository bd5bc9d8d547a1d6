# syntax=docker/dockerfile:1
# smoltrace GPU-exporter sidecar: NVML sampling, gRPC control API, Prometheus /metrics, OTLP push.
# Slim and non-root; needs no torch, transformers or smolagents. NVML comes from the host driver
# through the NVIDIA container runtime (NVIDIA_DRIVER_CAPABILITIES=utility is all it needs). It
# writes nothing: it runs with a read-only root filesystem as it is.
# Build from the repository root:
#   docker build -f deploy/docker/gpu-exporter.Dockerfile -t smoltrace/gpu-exporter:0.1.0 .
# The base is pinned by tag. For byte-for-byte reproducible builds pin it by digest too, e.g.
#   --build-arg PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:<digest>
# (`docker buildx imagetools inspect python:3.11.14-slim-bookworm` prints the digest).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY requirements/constraints.txt requirements/constraints.txt
COPY proto/ proto/
COPY gpu_exporter/ gpu_exporter/
RUN python -m venv /opt/exporter \
 && /opt/exporter/bin/pip install --no-cache-dir -c requirements/constraints.txt ./proto ./gpu_exporter \
 && /opt/exporter/bin/pip check

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="smoltrace-gpu-exporter" \
      org.opencontainers.image.description="NVML GPU-exporter sidecar for smoltrace evaluation runs" \
      org.opencontainers.image.licenses="Apache-2.0"
# NVIDIA_* configure the NVIDIA runtime, they do not select it: a GPU still has to be granted
# (compose: a device reservation; Kubernetes: runtimeClassName nvidia). Without one the exporter
# serves in soft mode (gpu_available=false), it never crash-loops.
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=utility \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/exporter/bin:$PATH \
    SMOLTRACE_GPU_EXPORTER_GRPC_ADDRESS=0.0.0.0:50051 \
    SMOLTRACE_GPU_EXPORTER_METRICS_ADDRESS=0.0.0.0:9402
COPY --from=build /opt/exporter /opt/exporter
RUN groupadd --system --gid 10001 exporter \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin exporter
USER 10001:10001
# 50051 gRPC control API (and grpc.health.v1), 9402 Prometheus /metrics and /healthz
EXPOSE 50051 9402
# gRPC health (grpc.health.v1) of the control API at SMOLTRACE_GPU_EXPORTER_GRPC_ADDRESS (0.0.0.0
# is probed as 127.0.0.1); works with a read-only root filesystem.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["python", "-m", "smoltrace_gpu_exporter.healthcheck"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["smoltrace-gpu-exporter"]
