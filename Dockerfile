# syntax=docker/dockerfile:1.7
#
# blooio-operator image.
#   docker build -t ghcr.io/blooio-operator/blooio-operator:0.1.0 .
#
# Two stages on the same pinned base: the builder turns the source into wheels (ours
# plus every runtime dependency, at the versions pinned in pyproject.toml); the
# runtime stage installs only those wheels, offline, into /opt/venv. No source tree,
# no build tools and no pip end up in the final image.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY operator/ operator/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist . \
    && pip wheel --no-cache-dir --constraint constraints.txt --wheel-dir /wheels /dist/*.whl

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="blooio-operator" \
      org.opencontainers.image.description="Kubernetes operator for Blooio webhook subscriptions (BlooioWebhook)" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    PATH=/opt/venv/bin:${PATH}
# The venv has no pip of its own; the base image's pip installs into it (--python).
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    python -m venv --without-pip /opt/venv \
    && pip --python /opt/venv/bin/python install --no-cache-dir --no-index \
        --find-links=/wheels /wheels/blooio_operator-*.whl \
    && /opt/venv/bin/blooio-operator --help > /dev/null
WORKDIR /tmp
# Numeric, so that Kubernetes can verify runAsNonRoot without looking up a name.
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["/opt/venv/bin/blooio-operator"]
CMD ["run", "--all-namespaces"]
