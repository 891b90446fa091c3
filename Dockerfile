# pbx-bridge in a container: slim Python, non-root, the outbox on a volume.
#
#   docker build -t pbx-bridge:latest .
#   podman build --format docker -t pbx-bridge:latest .   # OCI images drop HEALTHCHECK
#
# Run it with a config of yours mounted at /etc/pbx-bridge/pbx-bridge.toml and its secrets in the
# environment. A container listens beyond loopback, so the config needs an API token, e.g.
# [api] tokens = ["${PBX_BRIDGE_TOKEN}"] (the README's "Docker" section writes such a file):
#
#   docker run -d --name pbx -p 8480:8480 -v pbx-data:/data -e PBX_BRIDGE_TOKEN \
#       -v "$PWD/container.toml:/etc/pbx-bridge/pbx-bridge.toml:ro" pbx-bridge:latest
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# What `pip install .` needs and nothing else (.dockerignore keeps the rest out of the context):
# the project metadata, the README it names as its long description, and the package with its
# data files (bridge/schema, the status page's bridge/api/static), which pyproject.toml's
# package-data puts in the installed package.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bridge ./bridge
# uvloop for speed, nats-py so that a [[sinks]] type = "nats" works in the image too. The source
# tree is removed afterwards: the daemon runs from site-packages.
RUN pip install '.[fast,nats]' \
    && cd / && rm -rf /src \
    && useradd --system --uid 10001 --user-group --home-dir /data --no-create-home bridge \
    && mkdir -p /data /etc/pbx-bridge \
    && chown bridge:bridge /data \
    && chmod 0700 /data

WORKDIR /data
USER bridge
VOLUME ["/data"]
EXPOSE 8480
# /healthz: the process is up and serving. Not /readyz: that answers 503 while any realtime
# upstream or sink is down (a PBX being rebooted, a CRM outage), and restarting the container
# would not bring it back, only drop the pushes in flight. Watch /readyz from monitoring.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8480/healthz', timeout=2).status != 200)"]
# SIGTERM (docker stop) drains: in-flight pushes are committed and answered, then it exits.
STOPSIGNAL SIGTERM
CMD ["pbx-bridge", "run", "--config", "/etc/pbx-bridge/pbx-bridge.toml", "--listen", "0.0.0.0:8480", "--data-dir", "/data"]
