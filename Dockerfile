# pbx-bridge in a container: slim Python, non-root, the outbox on a volume.
#   docker build -t pbx-bridge .
#   docker run -p 8480:8480 -v pbx-data:/data -e PBX_API_TOKEN=... \
#       -v $PWD/config/pbx-bridge.toml:/etc/pbx-bridge/pbx-bridge.toml:ro pbx-bridge
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY bridge ./bridge
RUN pip install '.[fast]' && useradd --system --uid 10001 --home-dir /data bridge \
    && mkdir -p /data /etc/pbx-bridge && chown bridge /data

USER bridge
VOLUME ["/data"]
EXPOSE 8480
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8480/readyz', timeout=2).status != 200)"
# Inside a container the listener must leave loopback, so a config with api.tokens is required:
# mount one at /etc/pbx-bridge/pbx-bridge.toml (see config/pbx-bridge.example.toml).
CMD ["pbx-bridge", "run", "--config", "/etc/pbx-bridge/pbx-bridge.toml", "--listen", "0.0.0.0:8480", "--data-dir", "/data"]
