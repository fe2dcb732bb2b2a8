# syntax=docker/dockerfile:1
# One image for the operator (`sabot-operator`) and the shuffle agents (`sabot-agent`).
#
#   docker build -t sabot:dev .
#   docker build --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm -t sabot:dev .
#
# Stage "build" compiles the native extension (C++/Cython) and installs the package with its
# dependencies into a virtualenv at /opt/sabot; the runtime stage copies only that virtualenv onto
# the same slim Python base, without compilers.
#
# Runs as the numeric non-root user 65532 (no passwd entry; USER=sabot names it for getpass) and
# needs no writable root filesystem: HOME, TMPDIR and the
# working directory are /tmp (so a job's relative output path such as out/x/ lands there too) and the
# agents' spill directory is /var/lib/sabot/spill; with readOnlyRootFilesystem, mount a volume (e.g.
# emptyDir) on each, as the chart and the operator's agent pods do.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc g++ \
 && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/sabot
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY native/ native/
COPY agent/ agent/
COPY operator/ operator/
RUN /opt/sabot/bin/pip install . \
 && /opt/sabot/bin/sabot-operator --help >/dev/null \
 && /opt/sabot/bin/sabot-agent --help >/dev/null

FROM ${PYTHON_IMAGE} AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="sabot" \
      org.opencontainers.image.description="Sabot on Kubernetes: SabotJob operator (sabot-operator) and Arrow Flight shuffle agent (sabot-agent)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/sabot /opt/sabot
RUN mkdir -p /var/lib/sabot/spill && chown -R 65532:65532 /var/lib/sabot
# USER: the uid has no /etc/passwd entry (nor has any uid a cluster may pick), so getpass.getuser()
# (kopf calls it at startup to name the operator) reads the name from the environment.
ENV PATH=/opt/sabot/bin:$PATH \
    HOME=/tmp \
    USER=sabot \
    TMPDIR=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /tmp
USER 65532:65532
# The operator's Deployment and the agents' pods name their command; the default is the agent.
CMD ["sabot-agent"]
