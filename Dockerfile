# syntax=docker/dockerfile:1
# The MoEngage Kafka connector as a container image.
#
#   docker build -t moengage-connector .
#   docker run --rm -p 9108:9108 \
#     -v "$PWD/config/production.yaml:/etc/moengage-connector/config.yaml:ro" \
#     -e MOENGAGE_WORKSPACE_ID -e MOENGAGE_API_KEY moengage-connector
#
# Two stages: the builder installs the package into /opt/venv (with a compiler, in case a
# dependency has no wheel for the target platform); the final stage copies only that venv onto
# the same slim base, so the interpreter path baked into the venv is valid there too.

ARG PYTHON_IMAGE=python:3.11-slim

# ----- builder ------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# gcc and the libc headers build C extensions (fastavro, ...) where no wheel exists for the
# platform. confluent-kafka is taken as a wheel only (--only-binary below): its wheels bundle
# librdkafka for amd64 and arm64, while a source build would need librdkafka headers at least
# as new as the Python client, which Debian's librdkafka-dev is not.
# Unpinned on purpose: the compiler never reaches the final image, and a Debian point release's
# fixes are wanted. hadolint's DL3008 (pin apt versions) is about runtime packages.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
WORKDIR /src
# constraints.txt pins every dependency to the versions tested (make constraints regenerates it),
# so two builds of the same commit install the same packages.
COPY pyproject.toml README.md constraints.txt ./
COPY connector ./connector
RUN /opt/venv/bin/pip install --only-binary=confluent-kafka -c constraints.txt .

# ----- runtime ------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}

ARG PYTHON_IMAGE
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="moengage-kafka-connector" \
      org.opencontainers.image.description="Streams user, device and event records from Kafka into the MoEngage Data API, at least once." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"

# A fixed non-root uid/gid: Kubernetes' runAsNonRoot can check it, and mounted Secrets and the
# delivered-customers record (observability.delivered_log_path) can be owned by it.
RUN groupadd --system --gid 10001 connector \
    && useradd --system --uid 10001 --gid connector --home-dir /var/lib/moengage-connector \
       --create-home --shell /usr/sbin/nologin connector

COPY --from=builder /opt/venv /opt/venv

# OBSERVABILITY_PORT is read only by the HEALTHCHECK below. If you change observability.port,
# set it too (or write `port: ${OBSERVABILITY_PORT:-9108}` in the configuration: ${VAR} works).
ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    OBSERVABILITY_PORT=9108

USER 10001:10001
WORKDIR /var/lib/moengage-connector

# /metrics (Prometheus), /healthz (liveness), /readyz (readiness)
EXPOSE 9108

# slim has no curl: the standard library does it. urlopen raises on a 503, so the exit is 1.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('OBSERVABILITY_PORT', '9108') + '/healthz', timeout=4)"]

# SIGTERM (docker stop, Kubernetes) is a clean stop: in-flight requests finish, offsets are
# committed. Allow more than pipeline.shutdown_grace_seconds (30 s by default) before a SIGKILL:
# `docker stop -t 40`, or terminationGracePeriodSeconds in Kubernetes.
STOPSIGNAL SIGTERM
ENTRYPOINT ["moengage-connector"]
CMD ["run", "--config", "/etc/moengage-connector/config.yaml"]
