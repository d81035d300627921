# The hoptrace image: one image for every role (Kafka stage worker, Celery worker,
# monitor, publisher); the role is the command line. Used by deploy/compose and deploy/k8s.
#
#   docker build -t hoptrace:0.1.0 .
#   docker run --rm hoptrace:0.1.0 --help

ARG PYTHON_VERSION=3.11

# Build stage: install hoptrace and its dependencies into a virtual environment, so the
# runtime stage gets neither the sources nor pip's build leftovers.
FROM python:${PYTHON_VERSION}-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/hoptrace
WORKDIR /src
# .dockerignore keeps tests, benchmarks, .venv and state out of this copy; deploy/ stays
# (the package ships its scripts as data, hoptrace.deploy).
COPY . .
RUN /opt/hoptrace/bin/pip install .

FROM python:${PYTHON_VERSION}-slim
ENV PATH=/opt/hoptrace/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOPTRACE_STATE_DIR=/var/lib/hoptrace \
    HOME=/var/lib/hoptrace
# A numeric, non-root user, so Kubernetes' runAsNonRoot can verify it without a name lookup.
# The state dir (health files, logs) is the only place hoptrace writes; it must stay
# writable when a volume is mounted over it, hence owned by that user.
RUN groupadd --system --gid 10001 hoptrace \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/hoptrace --no-create-home --shell /usr/sbin/nologin hoptrace \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/hoptrace
COPY --from=build /opt/hoptrace /opt/hoptrace
USER 10001:10001
WORKDIR /var/lib/hoptrace
# Exec form: hoptrace is PID 1 and receives SIGTERM itself (it finishes the message in
# hand, commits and flushes telemetry); Compose adds an init process (init: true) to reap.
ENTRYPOINT ["hoptrace"]
CMD ["--help"]
