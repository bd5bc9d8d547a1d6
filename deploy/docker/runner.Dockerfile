# syntax=docker/dockerfile:1
# smoltrace runner: `smoltrace-eval` (agents, scoring, the embedded OTLP collector, outputs), with
# the exporter distribution it depends on (used only when no --gpu-exporter sidecar is given).
#
# Build from the repository root:
#   docker build -f deploy/docker/runner.Dockerfile -t smoltrace/runner:0.1.0 .                    # CPU (default)
#   docker build -f deploy/docker/runner.Dockerfile --build-arg VARIANT=cuda -t smoltrace/runner:0.1.0-cuda .
#
# VARIANT=cpu  python:3.11 slim; torch from PyTorch's CPU wheel index (no CUDA libraries, ~1 GB smaller).
# VARIANT=cuda NVIDIA's CUDA base image (driver compatibility, NVIDIA_* runtime settings) with
#              CPython 3.11 from python-build-standalone; torch from PyTorch's CUDA index
#              (TORCH_CUDA, default cu128), whose wheels carry the CUDA runtime libraries.
#              This is the image for `--provider transformers` on a GPU.
#
# Bases are pinned by tag. For byte-for-byte reproducible builds pin them by digest too, e.g.
#   --build-arg PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:<digest>
# (`docker buildx imagetools inspect IMAGE:TAG` prints the digest; Renovate/Dependabot keep it fresh).
ARG VARIANT=cpu
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-base-ubuntu24.04
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.8
ARG PYTHON_VERSION=3.11.14

FROM ${UV_IMAGE} AS uv

# --- the interpreter, per variant ------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS python-cpu

FROM ${CUDA_IMAGE} AS python-cuda
ARG PYTHON_VERSION
ENV UV_PYTHON_INSTALL_DIR=/opt/python
COPY --from=uv /uv /usr/local/bin/uv
RUN uv python install "${PYTHON_VERSION}" \
 && ln -s "$(uv python find "${PYTHON_VERSION}")" /usr/local/bin/python3 \
 && ln -s /usr/local/bin/python3 /usr/local/bin/python \
 && rm /usr/local/bin/uv \
 && python3 --version

# The stage chosen by VARIANT (hadolint cannot see that `python-${VARIANT}` names a stage above).
# hadolint ignore=DL3006
FROM python-${VARIANT} AS python

# --- build: one virtual environment with torch, the exporter and the runner --------------------
FROM python AS build
ARG VARIANT
ARG TORCH_VERSION=2.13.0
ARG TORCH_CUDA=cu128
WORKDIR /src
RUN python3 -m venv /opt/smoltrace
# torch first (the largest layer, cached across source changes), from the index of this variant only
RUN case "${VARIANT}" in \
      cpu)  index="https://download.pytorch.org/whl/cpu" ;; \
      cuda) index="https://download.pytorch.org/whl/${TORCH_CUDA}" ;; \
      *)    echo "VARIANT must be cpu or cuda, got '${VARIANT}'" >&2; exit 1 ;; \
    esac \
 && /opt/smoltrace/bin/pip install --no-cache-dir --index-url "${index}" "torch==${TORCH_VERSION}"
COPY requirements/constraints.txt requirements/constraints.txt
COPY proto/ proto/
COPY gpu_exporter/ gpu_exporter/
COPY runner/ runner/
# every other dependency at the project's pins; the torch installed above satisfies the torch pin
RUN /opt/smoltrace/bin/pip install --no-cache-dir -c requirements/constraints.txt ./proto ./gpu_exporter ./runner \
 && /opt/smoltrace/bin/pip check

# --- runtime ----------------------------------------------------------------------------------
FROM python
ARG VARIANT
LABEL org.opencontainers.image.title="smoltrace-runner" \
      org.opencontainers.image.description="smoltrace-eval: benchmark smolagents agents with traces and GPU/energy/CO2 metrics" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.smoltrace.variant="${VARIANT}"
# HOME on /tmp and the caches on /cache: with a read-only root filesystem mount a tmpfs/emptyDir on
# /tmp and a volume on /cache (model downloads) and /results (run folders).
ENV PATH=/opt/smoltrace/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    XDG_CACHE_HOME=/cache \
    HF_HOME=/cache/huggingface \
    HF_HUB_DISABLE_TELEMETRY=1
COPY --from=build /opt/smoltrace /opt/smoltrace
# /cache and /results belong to the smoltrace user and group (setgid, group-writable, nothing for
# others): the image also runs as the host user's uid with group 10001 (compose: SMOLTRACE_UID,
# SMOLTRACE_GID), and a fresh named volume copies these permissions.
RUN groupadd --system --gid 10001 smoltrace \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin smoltrace \
 && install -d -m 2770 -o 10001 -g 10001 /cache /results
USER 10001:10001
WORKDIR /results
# The embedded OTLP/gRPC collector, when bound to 0.0.0.0:4317 for an exporter in another container.
EXPOSE 4317
# A batch job, not a server: its exit code is its health (0 completed, 2 bad input, 3 model
# unreachable, 4 Hub publishing failed, 130 interrupted).
HEALTHCHECK NONE
STOPSIGNAL SIGINT
ENTRYPOINT ["smoltrace-eval"]
CMD ["--help"]
