# syntax=docker/dockerfile:1
# The IOC in one image; docker-compose.yml runs its roles (serve, ingest, rules run, db migrate)
# by the command given to the `ioc` entry point.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: a wheel of the project -------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
# uv, pinned and hash-checked (requirements/tools.lock), builds the wheel
COPY requirements/tools.lock requirements/tools.lock
RUN pip install --no-cache-dir --require-hashes -r requirements/tools.lock
COPY pyproject.toml README.md LICENSE ./
COPY ioc ioc
COPY dashboards dashboards
COPY mqttclient mqttclient
RUN uv build --wheel --out-dir /dist

# ---- runtime: the wheel and its locked dependencies, no compilers, no sources -------------
FROM ${PYTHON_IMAGE} AS runtime
# The commit the image is built from, for the ioc_build_info metric:
#   docker compose build --build-arg IOC_BUILD_COMMIT=$(git rev-parse HEAD)
ARG IOC_BUILD_COMMIT=""
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    IOC_HTTP_HOST=0.0.0.0 \
    IOC_HTTP_PORT=8000 \
    IOC_DATA_DIR=/var/lib/ioc \
    IOC_LOG_FORMAT=json \
    IOC_BUILD_COMMIT=${IOC_BUILD_COMMIT}
RUN groupadd --system --gid 10001 ioc \
    && useradd --system --uid 10001 --gid ioc --home-dir /var/lib/ioc --create-home \
        --shell /usr/sbin/nologin ioc
# Exactly the versions the tests ran (requirements/runtime.lock, hash-checked), then the wheel
# without resolving anything more.
COPY requirements/runtime.lock /tmp/runtime.lock
RUN pip install --require-hashes -r /tmp/runtime.lock && rm /tmp/runtime.lock
COPY --from=build /dist/*.whl /tmp/wheels/
RUN pip install --no-deps /tmp/wheels/*.whl && rm -rf /tmp/wheels
USER ioc:ioc
WORKDIR /var/lib/ioc
EXPOSE 8000
# /healthz answers without a token; roles without HTTP (ingest, rules run) override this in
# docker-compose.yml.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('IOC_HTTP_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["ioc"]
CMD ["serve"]
