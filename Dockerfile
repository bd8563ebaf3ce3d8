# syntax=docker/dockerfile:1
# The IOC in one image; docker-compose.yml runs its roles (serve, ingest, rules run, db migrate)
# by the command given to the `ioc` entry point.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: a wheel of the project -------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
RUN pip install --no-cache-dir "build>=1.2"
COPY pyproject.toml README.md ./
COPY ioc ioc
COPY ingest ingest
COPY rules rules
COPY simulators simulators
COPY dashboards dashboards
RUN python -m build --wheel --outdir /dist

# ---- runtime: the wheel and its dependencies, no compilers, no sources -------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    IOC_HTTP_HOST=0.0.0.0 \
    IOC_HTTP_PORT=8000 \
    IOC_DATA_DIR=/var/lib/ioc \
    IOC_LOG_FORMAT=json
RUN groupadd --system --gid 10001 ioc \
    && useradd --system --uid 10001 --gid ioc --home-dir /var/lib/ioc --create-home \
        --shell /usr/sbin/nologin ioc
COPY --from=build /dist/*.whl /tmp/wheels/
RUN pip install /tmp/wheels/*.whl && rm -rf /tmp/wheels
USER ioc:ioc
WORKDIR /var/lib/ioc
EXPOSE 8000
# /healthz answers without a token; roles without HTTP (ingest, rules run) override this in
# docker-compose.yml.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('IOC_HTTP_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["ioc"]
CMD ["serve"]
