# hookdock: `docker build -t hookdock . && docker run -p 8080:8080 -v hookdock-data:/data hookdock`
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOOKDOCK_DATA=/data

WORKDIR /app
COPY pyproject.toml README.md ./
COPY receiver ./receiver
COPY handlers ./handlers
RUN pip install --no-cache-dir ".[s3]" \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin hookdock \
    && mkdir -p /data && chown hookdock /data

USER hookdock
VOLUME ["/data"]
EXPOSE 8080

# /healthz says the process serves; load balancers should use /readyz.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status != 200)"]

# SIGTERM starts a graceful shutdown (readiness off, in-flight work finishes or is released).
STOPSIGNAL SIGTERM
CMD ["hookdock", "serve", "--host", "0.0.0.0", "--port", "8080"]
