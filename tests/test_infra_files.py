"""The deploy files in ``infra/`` and the Dockerfile, checked without a container engine.

These machines have no Docker or Kubernetes, so the files are validated by what can run here:
every YAML file parses; both hookdock configs (``infra/hookdock.toml`` and the Kubernetes
ConfigMap's) pass hookdock's own loader and plugin checks; ``haproxy -c`` accepts
``infra/haproxy.cfg``; and the timing the files document holds between them (HAProxy takes a
draining replica out within ``drain_seconds``, the orchestrators wait longer than
``drain_seconds + grace_seconds``), as do the names and paths they share with the Dockerfile.
"""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from receiver.config import Config, parse_config
from receiver.plugins import load_plugins
from receiver.runtime import JOURNAL_STALL_SECONDS
from tests.haproxy import HAPROXY_CFG, HAPROXY_MISSING, SERVER_NAMES, haproxy_binary

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
K8S = INFRA / "k8s"
ENV = {
    "DATABASE_URL": "postgresql://hookdock:secret@postgres:5432/hookdock",
    "SD_URL_TOKEN": "t0ken-" + "x" * 32,
    "S3_ENDPOINT_URL": "http://s3:5000",
    "S3_ACCESS_KEY_ID": "stand-in",
    "S3_SECRET_ACCESS_KEY": "stand-in",
}
SHUTDOWN_MARGIN_SECONDS = 5.0
"""What a stop takes beyond drain + grace (closing sinks, deregistering), with room to spare."""


def yaml_files() -> list[Path]:
    return sorted([*INFRA.rglob("*.yaml"), *INFRA.rglob("*.yml")])


def load_yaml(path: Path) -> list[dict[str, Any]]:
    docs = [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]
    assert docs, f"{path} holds no document"
    assert all(isinstance(doc, dict) for doc in docs), path
    return docs


def k8s(kind: str) -> dict[str, Any]:
    docs = [doc for path in K8S.glob("*.yaml") for doc in load_yaml(path)]
    (found,) = [doc for doc in docs if doc["kind"] == kind]
    return found


def hookdock_config(text: str) -> Config:
    """Validated as ``hookdock serve`` would, plugins included (nothing is connected to)."""
    config = parse_config(tomllib.loads(text), base_dir=INFRA, env=ENV)
    load_plugins(config, INFRA).raise_problems()
    return config


def compose() -> dict[str, Any]:
    (doc,) = load_yaml(INFRA / "compose.yaml")
    return doc


def seconds(text: str) -> float:
    """``40s``, ``1m30s``, ``500ms``, ``2`` (HAProxy's unit-less default is milliseconds: not
    accepted here, every value in the files has its unit)."""
    total = 0.0
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {text!r}"
    for number, unit in parts:
        total += float(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total


def haproxy_setting(pattern: str) -> str:
    """A value of infra/haproxy.cfg, with ``${VAR-default}`` read as its default."""
    text = re.sub(r'"?\$\{[A-Z0-9_]+-([^}]*)\}"?', r"\1", HAPROXY_CFG.read_text(encoding="utf-8"))
    match = re.search(pattern, text, re.MULTILINE)
    assert match, f"{pattern!r} not in infra/haproxy.cfg"
    return match.group(1)


def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text(encoding="utf-8")


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(INFRA)))
def test_every_yaml_file_parses(path: Path) -> None:
    load_yaml(path)


def test_the_yaml_files_are_the_expected_ones() -> None:
    names = {str(p.relative_to(INFRA)) for p in yaml_files()}
    expected = {"compose.yaml"} | {
        f"k8s/{n}.yaml"
        for n in ("configmap", "deployment", "migrate-job", "pdb", "secret", "service")
    }
    assert names == expected


def test_the_compose_config_and_the_configmap_are_valid_hookdock_configs() -> None:
    for text in (
        (INFRA / "hookdock.toml").read_text(encoding="utf-8"),
        k8s("ConfigMap")["data"]["hookdock.toml"],
    ):
        config = hookdock_config(text)
        assert config.journal.type == "postgres"
        assert config.server.host == "0.0.0.0"
        assert config.server.port == 8080
        assert config.server.drain_seconds > 0


def test_haproxy_accepts_the_config() -> None:
    binary = haproxy_binary()
    if binary is None:
        pytest.fail(HAPROXY_MISSING, pytrace=False)
    # As compose runs it: the replicas' names do not resolve here, which it starts without.
    done = subprocess.run(
        [binary, "-c", "-f", str(HAPROXY_CFG)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Configuration file is valid" in done.stdout
    # As the end-to-end test runs it: loopback addresses, faster checks, no warning at all.
    env = {
        "HOOKDOCK_LB_BIND": "127.0.0.1:18080",
        "HOOKDOCK_LB_STATS_BIND": "127.0.0.1:18404",
        "HOOKDOCK_LB_CHECK_INTER": "200ms",
        "HOOKDOCK_REPLICA_1": "127.0.0.1:18081",
        "HOOKDOCK_REPLICA_2": "127.0.0.1:18082",
    }
    done = subprocess.run(
        [binary, "-c", "-f", str(HAPROXY_CFG)], capture_output=True, text=True, check=False, env=env
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WARNING" not in done.stdout + done.stderr


# --------------------------------------------------------------------------- timing


def test_haproxy_takes_a_draining_replica_out_before_its_listener_closes() -> None:
    inter = seconds(haproxy_setting(r"^\s*default-server .*\binter (\S+)"))
    fastinter = seconds(haproxy_setting(r"^\s*default-server .*\bfastinter (\S+)"))
    fall = int(haproxy_setting(r"^\s*default-server .*\bfall (\d+)"))
    # The first failing check comes within `inter`, the next ones every `fastinter`.
    out_within = inter + (fall - 1) * fastinter
    assert haproxy_setting(r"^\s*http-check send meth GET uri (\S+)") == "/readyz"
    assert haproxy_setting(r"^\s*http-check expect status (\d+)") == "200"
    for text in (
        (INFRA / "hookdock.toml").read_text(encoding="utf-8"),
        k8s("ConfigMap")["data"]["hookdock.toml"],
    ):
        assert out_within < hookdock_config(text).server.drain_seconds


def test_timeouts_outlast_the_longest_request_and_retries_never_replay_a_post() -> None:
    # hookdock answers 503 itself once a journal write has stalled this long.
    assert seconds(haproxy_setting(r"^\s*timeout server (\S+)")) > JOURNAL_STALL_SECONDS
    assert seconds(haproxy_setting(r"^\s*timeout client (\S+)")) > JOURNAL_STALL_SECONDS
    assert haproxy_setting(r"^\s*timeout http-request (\S+)")
    assert haproxy_setting(r"^\s*retry-on (.+)$").split() == ["conn-failure"]
    assert haproxy_setting(r"^\s*option (redispatch)\b") == "redispatch"
    assert int(haproxy_setting(r"^\s*retries (\d+)")) >= 1
    config = hookdock_config((INFRA / "hookdock.toml").read_text(encoding="utf-8"))
    assert config.server.grace_seconds > JOURNAL_STALL_SECONDS


def test_orchestrators_wait_longer_than_a_graceful_stop() -> None:
    config = hookdock_config((INFRA / "hookdock.toml").read_text(encoding="utf-8"))
    stop = config.server.drain_seconds + config.server.grace_seconds + SHUTDOWN_MARGIN_SECONDS
    for name in SERVER_NAMES:
        assert seconds(compose()["services"][name]["stop_grace_period"]) > stop
    k8s_config = hookdock_config(k8s("ConfigMap")["data"]["hookdock.toml"])
    k8s_stop = k8s_config.server.drain_seconds + k8s_config.server.grace_seconds
    pod = k8s("Deployment")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > k8s_stop + SHUTDOWN_MARGIN_SECONDS


# --------------------------------------------------------------------------- compose


def test_compose_runs_two_replicas_after_the_migration_behind_haproxy() -> None:
    services = compose()["services"]
    assert {"postgres", "s3", "migrate", "haproxy", *SERVER_NAMES} <= set(services)
    assert services["migrate"]["command"] == ["hookdock", "migrate"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    config_path = services["migrate"]["environment"]["HOOKDOCK_CONFIG"]
    for name in ("migrate", *SERVER_NAMES):
        service = services[name]
        assert service["environment"]["HOOKDOCK_CONFIG"] == config_path
        assert f"./hookdock.toml:{config_path}:ro" in service["volumes"]
    for name in SERVER_NAMES:
        condition = services[name]["depends_on"]["migrate"]["condition"]
        assert condition == "service_completed_successfully"
    assert "./haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" in services["haproxy"]["volumes"]
    # HAProxy's default server addresses are the compose services, on the image's port.
    expose = re.search(r"^EXPOSE (\d+)$", dockerfile(), re.MULTILINE)
    assert expose
    for n, name in enumerate(SERVER_NAMES, start=1):
        address = haproxy_setting(rf"^\s*server {name} (\S+)")
        assert address == f"{name}:{expose.group(1)}", n


def test_compose_mounts_only_files_and_paths_that_exist() -> None:
    services = compose()["services"]
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (INFRA / source).is_file(), volume
    # The shared exports volume lands on a folder the image makes and gives to its user, and
    # the config folder exists: a named volume copies the owner of the folder it mounts on.
    assert "mkdir -p /data/exports /config" in dockerfile()
    assert "chown -R hookdock /data" in dockerfile()
    config = hookdock_config((INFRA / "hookdock.toml").read_text(encoding="utf-8"))
    assert config.sinks["archive"]["root"] == "/data/exports"
    assert "exports:/data/exports" in services["hookdock-1"]["volumes"]


# --------------------------------------------------------------------------- Dockerfile


def test_the_dockerfile_runs_as_a_non_root_user_with_a_health_check() -> None:
    text = dockerfile()
    user = re.search(r"^USER (\S+)$", text, re.MULTILINE)
    assert user and user.group(1) not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz", text, re.MULTILINE)
    assert re.search(r"^STOPSIGNAL SIGTERM$", text, re.MULTILINE)
    # Kubernetes checks runAsNonRoot against a numeric user: the same one.
    pod = k8s("Deployment")["spec"]["template"]["spec"]
    assert str(pod["securityContext"]["runAsUser"]) == user.group(1)
    assert f"--uid {user.group(1)}" in text


# --------------------------------------------------------------------------- Kubernetes


def test_the_deployment_probes_readiness_and_liveness_and_reads_its_secret() -> None:
    deployment = k8s("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert "preStop" not in container.get("lifecycle", {}), "the drain is in the app"
    assert deployment["spec"]["replicas"] >= 2
    assert container["envFrom"] == [{"secretRef": {"name": k8s("Secret")["metadata"]["name"]}}]
    (config,) = [v for v in pod["volumes"] if "configMap" in v]
    assert config["configMap"]["name"] == k8s("ConfigMap")["metadata"]["name"]
    env = {e["name"]: e["value"] for e in container["env"]}
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == config["name"]]
    assert env["HOOKDOCK_CONFIG"] == f"{mount['mountPath']}/hookdock.toml"
    # Every ${NAME} the config uses comes from the Secret.
    used = set(re.findall(r"\$\{([A-Z0-9_]+)\}", k8s("ConfigMap")["data"]["hookdock.toml"]))
    assert used <= set(k8s("Secret")["stringData"])


def test_the_budget_and_the_service_select_the_deployments_pods() -> None:
    labels = k8s("Deployment")["spec"]["template"]["metadata"]["labels"]
    budget = k8s("PodDisruptionBudget")["spec"]
    assert budget["selector"]["matchLabels"].items() <= labels.items()
    assert budget["minAvailable"] >= 1
    assert k8s("Service")["spec"]["selector"].items() <= labels.items()
    # The migration Job's pods are not among them.
    job_labels = k8s("Job")["spec"]["template"]["metadata"]["labels"]
    assert not budget["selector"]["matchLabels"].items() <= job_labels.items()


def test_the_migration_job_runs_hookdock_migrate_with_the_same_config() -> None:
    job = k8s("Job")["spec"]["template"]["spec"]
    (container,) = job["containers"]
    assert container["command"] == ["hookdock", "migrate"]
    assert job["restartPolicy"] == "Never"
    (deployed,) = k8s("Deployment")["spec"]["template"]["spec"]["containers"]
    assert container["image"] == deployed["image"]
    assert container["envFrom"] == deployed["envFrom"]
    assert container["env"] == deployed["env"]
