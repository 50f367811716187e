# feedsvc as a container: `docker compose up` (see docker-compose.yml).
#
# Two stages: the first builds the feedsvc wheel from the build context (what
# .dockerignore lets through), the second installs it with pip into a clean
# python:3.11-slim and runs it as an unprivileged user. The log lives in /data, the
# named volume of docker-compose.yml; the configuration in /app/config (compose mounts
# ./config over it read-only, so a changed config needs no rebuild).

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY . .
RUN pip wheel --no-deps --wheel-dir /wheels .


FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The data folder must exist in the image and belong to the service's user: a new
# named volume is initialised from it, ownership included, so the database is writable.
RUN groupadd --system --gid 10001 feedsvc \
 && useradd --system --uid 10001 --gid feedsvc --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin feedsvc \
 && mkdir -p /data \
 && chown feedsvc:feedsvc /data

COPY --from=build /wheels /tmp/wheels
RUN pip install /tmp/wheels/*.whl && rm -rf /tmp/wheels

WORKDIR /app
# the seed story imported on first start (config/docker.toml: seed), and the config
# used when the image is run without compose's mount
COPY feedsvc/seed/ /app/events/seed/
COPY config/ /app/config/

USER feedsvc:feedsvc
VOLUME ["/data"]
EXPOSE 8080

# slim has no curl: python's urllib asks the service's own health route
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status == 200 else 1)"]

# exec form: feedsvc is PID 1 and gets SIGTERM itself, finishing the append in flight
CMD ["feedsvc", "--config", "/app/config/docker.toml", "serve"]
