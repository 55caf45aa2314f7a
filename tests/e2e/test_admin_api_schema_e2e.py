"""Schemathesis against the admin API's own OpenAPI document, on a real ``hookdock serve``
with a few events in its journal: no 5xx, every answer's status, content type, headers and
body as the document says."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import make_config, route, run_hookdock

pytestmark = pytest.mark.e2e

TOKEN = "adm-" + secrets.token_urlsafe(32)
CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_headers_conformance,response_schema_conformance"
)


def test_the_api_keeps_to_its_document(tmp_path: Path) -> None:
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    assert st is not None, "schemathesis is a test dependency: pip install -e '.[test]'"
    config = make_config(
        tmp_path,
        admin={"tokens": ["${HOOKDOCK_ADMIN_TOKEN}"]},
        extra_routes=[route("open", {"type": "none"})],
    )
    env = {"HOOKDOCK_ADMIN_TOKEN": TOKEN}
    with run_hookdock(tmp_path, config, env=env) as server:
        for n in range(3):
            body = {"taskId": f"t{n}", "displayName": f"doc {n}.pdf", "chunks": []}
            answer = httpx.post(
                f"{server.url}/hooks/open",
                content=json.dumps(body),
                headers={"content-type": "application/json"},
                trust_env=False,
            )
            assert answer.status_code == 200
        argv = [st, "run", f"{server.url}/admin/api/openapi.json", "--url"]
        argv += [f"{server.url}/admin/api", "-H", f"Authorization: Bearer {TOKEN}"]
        argv += ["--checks", CHECKS, "--max-examples", "25", "--workers", "1"]
        argv += ["--seed", "1507", "--no-color"]
        run = subprocess.run(
            argv,
            cwd=tmp_path,  # schemathesis keeps a cache folder where it runs
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        report = run.stdout[-6000:] + run.stderr[-2000:]
        assert run.returncode == 0, report
        assert " passed" in run.stdout, report
        assert "unexpected error" not in server.stderr_text()
