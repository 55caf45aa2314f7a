"""A real S3 endpoint for tests: moto in server mode, as a subprocess on 127.0.0.1.

* ``moto_server(log_dir, env=...)``: a context manager that starts
  ``python -m moto.server -H 127.0.0.1 -p PORT`` on a free port, waits (with a deadline) until
  it answers, yields its ``MotoServer`` (``url``, ``boto3_client()``) and always
  stops it: SIGTERM, then SIGKILL.
* ``boto3_s3(url)``: a plain boto3 client on such a server, to read objects back.
* ``S3_ENV``: dummy credentials and a region for a child or for the AWS chain, with the
  instance-metadata lookup switched off, so nothing ever asks a real AWS endpoint.

Nothing here talks to anything but 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["S3_ENV", "MotoServer", "boto3_s3", "moto_server"]

HOST = "127.0.0.1"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0

S3_ENV: dict[str, str] = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    # No shared config or credentials files of the machine running the tests.
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}


@dataclass(frozen=True)
class MotoServer:
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def boto3_client(self, **options: Any) -> Any:
        """A plain (synchronous) boto3 S3 client on this server, to read objects back."""
        return boto3_s3(self.url, **options)

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


def boto3_s3(url: str, **options: Any) -> Any:
    """A boto3 S3 client on ``url`` with the dummy credentials (``options`` override)."""
    import boto3  # type: ignore[import-untyped]

    params: dict[str, Any] = {
        "endpoint_url": url,
        "region_name": "us-east-1",
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }
    params.update(options)
    return boto3.session.Session().client("s3", **params)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/moto-api/", timeout=1) as answer:  # noqa: S310
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT)


@contextlib.contextmanager
def moto_server(
    log_dir: Path, *, env: Mapping[str, str] | None = None, name: str = "moto"
) -> Iterator[MotoServer]:
    """Run a moto server on a free port of 127.0.0.1 until the block ends."""
    child_env = {**os.environ, **S3_ENV, **(env or {})}
    for attempt in range(3):
        port = _free_port()
        url = f"http://{HOST}:{port}"
        log_path = log_dir / f"{name}-{port}.log"
        argv = [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)]
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=child_env
            )
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while not _answers(url):
                if proc.poll() is not None:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"moto did not answer within {START_TIMEOUT:.0f}s")
                time.sleep(0.05)
            if proc.poll() is not None:
                text = log_path.read_text(errors="replace")
                if attempt < 2 and "in use" in text:
                    continue  # another process took the port between the probe and the bind
                raise RuntimeError(f"moto exited with {proc.returncode}:\n{text[-2000:]}")
            yield MotoServer(url, proc, log_path)
            return
        finally:
            _stop(proc)
    raise RuntimeError("moto could not get a free port")
