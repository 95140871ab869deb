# syntax=docker/dockerfile:1.7
#
# blooio-operator image. `make image` builds it with podman on a Debian base made on
# the machine (no registry needed; see hack/image/README.md). Where a registry is
# reachable, either engine builds it as it is, on the official Python image:
#   docker build -t blooio-operator:0.2.0 --build-arg REVISION="$(git rev-parse HEAD)" .
#   podman build -t blooio-operator:0.2.0 --build-arg REVISION="$(git rev-parse HEAD)" .
#
# Three stages on one base (PYTHON_IMAGE):
#   builder  turns the source into wheels (ours plus every runtime dependency, at the
#            versions pinned in constraints.txt), installs them into /opt/venv (a venv
#            without pip) and byte-compiles what the operator imports at start-up;
#   rootfs   the base without pip, setuptools, wheel and ensurepip: nothing in the
#            base's site-packages is visible to the venv, so nothing there is needed;
#   final    FROM scratch: that root filesystem as one layer plus the venv, so what
#            rootfs removed is not kept in a lower layer either.
# No source tree, no build tools and no pip end up in the final image.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Dependencies first (pyproject's list at constraints.txt's pins), so that a change to
# the source does not download them again.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" > /tmp/requirements.txt \
    && pip wheel --no-cache-dir --constraint constraints.txt --wheel-dir /wheels -r /tmp/requirements.txt
COPY README.md ./
COPY operator/ operator/
COPY hack/image/compile_startup.py /usr/local/share/blooio/compile_startup.py
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .
# Out of /src, where the directory operator/ would shadow the standard library's module.
WORKDIR /
# --no-compile: pip would byte-compile all 2,700 modules (about 65 MB); only the ones
# imported at start-up are compiled (hack/image/compile_startup.py).
RUN python -m venv --without-pip /opt/venv \
    && pip --python /opt/venv/bin/python install --no-cache-dir --no-index --no-compile \
        --find-links=/wheels /wheels/blooio_operator-*.whl \
    && /opt/venv/bin/python -I -B /usr/local/share/blooio/compile_startup.py \
    && /opt/venv/bin/blooio-operator --help > /dev/null

FROM ${PYTHON_IMAGE} AS rootfs
# Debian's packaged pip is purged through dpkg, so that its database stays true; then
# whatever is left in site-packages, pip's scripts and ensurepip's bundled wheels.
RUN set -eu; \
    if command -v dpkg-query > /dev/null && dpkg-query -W python3-pip > /dev/null 2>&1; then \
        dpkg --purge python3-venv python3.11-venv python3-pip python3-pip-whl \
            python3-setuptools python3-setuptools-whl python3-wheel python3-pkg-resources \
            python3-distutils python3-lib2to3; \
    fi; \
    for dir in $(python3 -c 'import site; print(" ".join(site.getsitepackages()))'); do \
        rm -rf "${dir:?}"/*; \
    done; \
    rm -rf "$(python3 -c 'import ensurepip, os; print(os.path.dirname(ensurepip.__file__))' 2> /dev/null || echo /nonexistent)" \
        /usr/share/python-wheels /var/cache/debconf/*-old /var/lib/dpkg/*-old; \
    for name in pip pip3 pip3.11 wheel easy_install; do \
        rm -f "/usr/local/bin/${name}" "/usr/bin/${name}"; \
    done; \
    if python3 -c 'import pip' 2> /dev/null; then echo "pip is still importable" >&2; exit 1; fi

FROM scratch
# The whole root filesystem on purpose (flattening the rootfs stage), see the top.
# hadolint ignore=DL3067
COPY --from=rootfs / /
COPY --from=builder /opt/venv /opt/venv
ARG VERSION=0.2.0
ARG REVISION=unknown
ARG SOURCE=https://github.com/blooio-operator/blooio-operator
LABEL org.opencontainers.image.title="blooio-operator" \
      org.opencontainers.image.description="Kubernetes operator for Blooio webhook subscriptions (BlooioWebhook)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}"
# FROM scratch starts without the base's environment: PATH and LANG are set here.
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
WORKDIR /tmp
# Numeric, so that Kubernetes can verify runAsNonRoot without looking up a name.
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["/opt/venv/bin/blooio-operator"]
CMD ["run", "--all-namespaces"]
