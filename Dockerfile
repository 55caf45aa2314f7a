# hookdock: `docker build -t hookdock . && docker run -p 8080:8080 -v hookdock-data:/data hookdock`
#
# Without a config it runs on the embedded defaults, everything under /data (SQLite journal,
# exports, URL token).  With one: mount it and point HOOKDOCK_CONFIG at it, as
# infra/compose.yaml does (/config/hookdock.toml, PostgreSQL journal, exports in /data/exports).
# Not built on the project's CI machines (no container engine there): keep it in step with
# infra/compose.yaml and infra/k8s/ by hand; tests/test_infra_files.py checks what it can.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOOKDOCK_DATA=/data

WORKDIR /app
COPY pyproject.toml README.md ./
COPY receiver ./receiver
COPY handlers ./handlers
# /data/exports exists in the image, owned by hookdock, so a volume mounted there (compose's
# shared exports) starts out writable by the non-root user; /config is for a mounted config.
RUN pip install --no-cache-dir ".[s3]" \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin hookdock \
    && mkdir -p /data/exports /config \
    && chown -R hookdock /data

USER 10001
VOLUME ["/data"]
EXPOSE 8080

# /healthz says the process serves (a liveness check); load balancers use /readyz, which also
# goes 503 while the journal cannot commit and from the first second of a shutdown.
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status != 200)"]

# SIGTERM starts a graceful shutdown: readiness off at once, the listener closes after
# [server] drain_seconds, in-flight work gets grace_seconds.  Give `docker stop -t` (compose:
# stop_grace_period) more than drain_seconds + grace_seconds, or the engine SIGKILLs it first.
STOPSIGNAL SIGTERM
CMD ["hookdock", "serve", "--host", "0.0.0.0", "--port", "8080"]
