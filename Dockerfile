# syntax=docker/dockerfile:1
# The suite's image: `sqm serve --api NAME ...` runs one API, `sqm gateway ...` the gateway.
# Production stores its data in MongoDB, so the embedded development database is not installed.
#   docker build -t tmf-sqm:0.1.0 --build-arg VERSION=0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" .

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/sqm
# pyproject.toml first, so that a change of the sources alone reuses the dependency layer.
COPY pyproject.toml README.md ./
RUN /opt/sqm/bin/python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; open('/tmp/requirements.txt', 'w').write('\n'.join(deps))" \
    && /opt/sqm/bin/pip install --no-cache-dir -r /tmp/requirements.txt
COPY services ./services
COPY gateway ./gateway
COPY console ./console
COPY openapi ./openapi
# Runtime dependencies only: no [embedded] and no [test] extra.
RUN /opt/sqm/bin/pip install --no-cache-dir --no-deps . \
    && /opt/sqm/bin/pip uninstall --yes pip setuptools

FROM ${PYTHON_IMAGE} AS runtime
ARG PYTHON_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="tmf-sqm" \
      org.opencontainers.image.description="TM Forum Open API suite for end-to-end Service Quality Management (TMF638, TMF623, TMF656, TMF642)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="tmf-sqm" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"
# A fixed numeric uid, so that Kubernetes can verify runAsNonRoot without reading /etc/passwd.
RUN groupadd --system --gid 10001 sqm \
    && useradd --system --uid 10001 --gid sqm --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin sqm
COPY --from=builder /opt/sqm /opt/sqm
ENV PATH=/opt/sqm/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /tmp
USER 10001:10001
EXPOSE 8080
# Healthy once the process says it can serve (the readiness endpoint answers 503 until then).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health/ready', timeout=4)"]
ENTRYPOINT ["sqm"]
CMD ["gateway", "--host", "0.0.0.0", "--port", "8080"]
