"""The deploy files (deploy/compose, deploy/k8s, deploy/Dockerfile) checked without running
containers: the compose file against the Compose Specification's JSON schema (as vendored by
check-jsonschema), the manifests against Kubernetes' own schemas (kubernetes-validate), and
their cross-references: every RHYTHM_* name is a setting and every value passes the settings'
validation, every mounted file exists, probes and scrapes reach the health contract's paths
and ports, the topic script creates what rhythm.schemas.topics says."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from importlib.resources import files
from pathlib import Path
from typing import Any, NamedTuple

import jsonschema
import kubernetes_validate
import pytest
import yaml
from pydantic_settings import BaseSettings

from rhythm.collector.settings import CollectorSettings
from rhythm.processors.settings import ProcessorSettings
from rhythm.producers.config import ClientSettings
from rhythm.runtime.kafka_settings import KafkaSettings
from rhythm.schemas.topics import DEFAULT_TOPICS
from rhythm.sinks.settings import SinkSettings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_DIR = DEPLOY / "compose"
COMPOSE = COMPOSE_DIR / "docker-compose.yml"
K8S = DEPLOY / "k8s"

#: The health contract (notes: processors 9465, the history lane 9469, sink 9464, the
#: collector on its API port 8088; /healthz liveness, /readyz readiness, /metrics).
METRICS_PORTS = {"processors": 9465, "history": 9469, "sink": 9464, "collector": 8088}
#: Files the on-call engineer's work adds (issue 6) that the deploy files mount; checked
#: like every other mount once they are in the tree.
RULES = ROOT / "stack/rhythm/stack/prometheus/rules.yml"
FROM_ISSUE_6 = {RULES, DEPLOY / "grafana" / "rhythm.json"}

PREFIXES: dict[str, type[BaseSettings]] = {
    "RHYTHM_KAFKA_": KafkaSettings,
    "RHYTHM_PROCESSOR_": ProcessorSettings,
    "RHYTHM_SINK_": SinkSettings,
    "RHYTHM_CLIENT_": ClientSettings,
    "RHYTHM_COLLECTOR_": CollectorSettings,
}


def setting_for(name: str) -> tuple[type[BaseSettings], str]:
    """The settings class and field an environment variable sets, or an AssertionError."""
    for prefix, cls in PREFIXES.items():
        if name.startswith(prefix):
            field = name[len(prefix) :].lower()
            assert field in cls.model_fields and field != "kafka", f"{name}: no such setting"
            return cls, field
    raise AssertionError(f"{name}: not a RHYTHM_* setting")


def assert_settings_accept(env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Every name is a setting, and the settings classes accept the values as given."""
    for key in list(os.environ):
        if key.startswith("RHYTHM_"):
            monkeypatch.delenv(key)
    used = set()
    for name, value in env.items():
        if name.startswith("RHYTHM_"):
            used.add(setting_for(name)[0])
            monkeypatch.setenv(name, value)
    for cls in used:
        cls()  # raises on a value the code would refuse


# -- docker-compose.yml ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())  # resolves the x-* anchors' `<<` merges
    assert isinstance(data, dict)
    return data


def compose_schema_errors(document: object) -> list[str]:
    """What the Compose Specification's JSON schema refuses in `document`: the schema as
    check-jsonschema vendors it (`check-jsonschema --builtin-schema vendor.compose-spec FILE`
    does the same from a shell), applied in-process, which is seconds faster."""
    text = (files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json").read_text()
    schema = json.loads(text)
    validator = jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker())
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]


def test_compose_file_matches_the_compose_specification(compose: dict[str, Any]) -> None:
    assert compose_schema_errors(compose) == []
    # The check can fail: a misspelt service key is refused.
    broken = yaml.safe_load(
        COMPOSE.read_text().replace("    healthcheck:\n", "    healthchek:\n", 1)
    )
    assert any("healthchek" in e for e in compose_schema_errors(broken))


def _bind_sources(service: dict[str, Any]) -> Iterator[tuple[Path, str]]:
    for volume in service.get("volumes", []):
        source, _, target = str(volume).partition(":")
        if source.startswith("."):
            yield (COMPOSE_DIR / source).resolve(), target.split(":")[0]


def test_compose_mounts_and_builds_exist(compose: dict[str, Any]) -> None:
    missing = []
    for name, service in compose["services"].items():
        for source, _target in _bind_sources(service):
            if not source.exists() and source not in FROM_ISSUE_6:
                missing.append(f"{name}: {source}")
        if "build" in service:
            context = (COMPOSE_DIR / service["build"]["context"]).resolve()
            assert context == ROOT
            assert (context / service["build"]["dockerfile"]).is_file()
        for dep in service.get("depends_on", {}):
            assert dep in compose["services"], f"{name} depends on unknown {dep}"
    assert missing == []
    for path in FROM_ISSUE_6:
        if not path.exists():
            pytest.skip(f"{path.relative_to(ROOT)} comes with the on-call branch (issue 6)")


def test_compose_rhythm_settings_exist_and_validate(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    services = compose["services"]
    rhythm = {n: s for n, s in services.items() if s.get("image") == "rhythm:dev"}
    parts = {
        "processors-1": "processors",
        "processors-2": "processors",
        "processors-history": "history",
        "sink": "sink",
        "collector": "collector",
    }
    assert set(rhythm) == set(parts)
    for name, service in rhythm.items():
        env = {k: str(v) for k, v in service["environment"].items()}
        # ${VAR:?message} is interpolated by compose from the shell; stand in a value.
        env = {k: re.sub(r"\$\{[^}]+\}", "placeholder", v) for k, v in env.items()}
        assert_settings_accept(env, monkeypatch)
        part = parts[name]
        assert env[PARTS[part].port_setting] == str(METRICS_PORTS[part])
        assert env[PARTS[part].host_setting] == "0.0.0.0"  # reachable from other containers
        assert service["command"] == [PARTS[part].command]
        assert env.get("RHYTHM_PROCESSOR_LANE") == ("history" if part == "history" else None)
        probe = " ".join(service["healthcheck"]["test"])
        assert f"http://localhost:{METRICS_PORTS[part]}/readyz" in probe
        brokers = env["RHYTHM_KAFKA_BOOTSTRAP_SERVERS"].split(",")
        assert {b.split(":")[0] for b in brokers} == {"kafka-1", "kafka-2", "kafka-3"}
    for name, setting in (
        ("processors-1", "RHYTHM_PROCESSOR_DATA_DIR"),
        ("processors-2", "RHYTHM_PROCESSOR_DATA_DIR"),
        ("processors-history", "RHYTHM_PROCESSOR_DATA_DIR"),
        ("collector", "RHYTHM_COLLECTOR_KEYS_FILE"),
    ):
        env = rhythm[name]["environment"]
        mounts = dict(str(v).split(":")[::-1] for v in rhythm[name]["volumes"])
        # The state, and the collector's keys (`rhythm keys` writes them), are on a volume.
        assert str(Path(env[setting])) in mounts or str(Path(env[setting]).parent) in mounts
    volumes = {str(v).split(":")[0] for s in rhythm.values() for v in s.get("volumes", [])}
    assert len(volumes) == sum(len(s.get("volumes", [])) for s in rhythm.values())  # unshared
    assert rhythm["sink"]["environment"]["RHYTHM_SINK_DSN"].startswith("http://clickhouse-1:")


def test_compose_kafka_is_a_three_broker_kraft_cluster(compose: dict[str, Any]) -> None:
    brokers = {n: s for n, s in compose["services"].items() if re.fullmatch(r"kafka-\d", n)}
    assert len(brokers) == 3
    ids = set()
    for name, broker in brokers.items():
        env = broker["environment"]
        ids.add(env["KAFKA_NODE_ID"])
        voters = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
        assert voters == [f"{i}@kafka-{i}:9093" for i in (1, 2, 3)]
        assert f"INTERNAL://{name}:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
        assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
        assert len(env["CLUSTER_ID"]) == 22  # 16 bytes, base64 without padding
    assert ids == {"1", "2", "3"}


def test_the_topic_script_creates_the_topics_of_the_code(tmp_path: Path) -> None:
    # Run the real script with a recorder standing in for kafka-topics.sh.
    recorder = tmp_path / "kafka-topics.sh"
    log = tmp_path / "calls"
    recorder.write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
    recorder.chmod(0o755)
    script = COMPOSE_DIR / "kafka" / "create-topics.sh"
    env = {**os.environ, "KAFKA_TOPICS": str(recorder), "BOOTSTRAP": "b1:9092,b2:9092"}
    subprocess.run(["bash", str(script)], env=env, check=True, timeout=30)
    created = {}
    for line in log.read_text().splitlines():
        args = line.split()
        assert args[args.index("--bootstrap-server") + 1] == "b1:9092,b2:9092"
        assert "--if-not-exists" in args
        assert args[args.index("--replication-factor") + 1] == "3"
        configs = dict(args[i + 1].split("=", 1) for i, a in enumerate(args) if a == "--config")
        assert configs.pop("min.insync.replicas") == "2"
        created[args[args.index("--topic") + 1]] = (
            int(args[args.index("--partitions") + 1]),
            configs,
        )
    assert created == {t.name: (t.partitions, t.config) for t in DEFAULT_TOPICS}


def test_compose_clickhouse_cluster_is_the_sinks_cluster(compose: dict[str, Any]) -> None:
    services = compose["services"]
    config = ET.parse(COMPOSE_DIR / "clickhouse" / "cluster.xml").getroot()
    clusters = config.find("remote_servers")
    assert clusters is not None
    (cluster,) = list(clusters)
    assert cluster.tag == services["sink"]["environment"]["RHYTHM_SINK_CLUSTER"]
    hosts = [r.findtext("host") for r in cluster.iter("replica")]
    assert hosts == ["clickhouse-1", "clickhouse-2"]
    shards = set()
    for host in hosts:
        env = services[host]["environment"]
        shards.add(env["CLICKHOUSE_SHARD"])
        assert env["CLICKHOUSE_REPLICA"] == host
        assert any(
            t.endswith("config.d/rhythm-cluster.xml") for _, t in _bind_sources(services[host])
        )
    assert shards == {"1", "2"}
    macros = config.find("macros")
    assert macros is not None and {m.tag for m in macros} == {"shard", "replica"}
    keeper_host = config.findtext("zookeeper/node/host")
    assert keeper_host in services
    keeper = ET.parse(COMPOSE_DIR / "clickhouse" / "keeper.xml").getroot()
    assert keeper.findtext("keeper_server/raft_configuration/server/hostname") == keeper_host
    assert config.findtext("zookeeper/node/port") == keeper.findtext("keeper_server/tcp_port")


def test_compose_prometheus_and_grafana(compose: dict[str, Any]) -> None:
    services = compose["services"]
    scrape = yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j["static_configs"][0]["targets"] for j in scrape["scrape_configs"]}
    assert jobs["rhythm-processors"] == [
        "processors-1:9465",
        "processors-2:9465",
        "processors-history:9469",
    ]
    assert jobs["rhythm-sink"] == ["sink:9464"]
    assert jobs["rhythm-collector"] == ["collector:8088"]
    assert scrape["rule_files"] == ["rules.yml"]
    mounts = {t: s for s, t in _bind_sources(services["prometheus"])}
    assert mounts["/etc/prometheus/rules.yml"] == RULES
    assert mounts["/etc/prometheus/prometheus.yml"] == COMPOSE_DIR / "prometheus.yml"

    grafana = {t: s for s, t in _bind_sources(services["grafana"])}
    provisioning = DEPLOY / "grafana" / "provisioning"
    sources = yaml.safe_load((provisioning / "datasources" / "rhythm-prometheus.yml").read_text())
    (source,) = sources["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    boards = yaml.safe_load((provisioning / "dashboards" / "rhythm-dashboards.yml").read_text())
    (provider,) = boards["providers"]
    dashboard_target = next(t for t, s in grafana.items() if s.name == "rhythm.json")
    assert grafana[dashboard_target] == DEPLOY / "grafana" / "rhythm.json"
    assert str(Path(dashboard_target).parent) == provider["options"]["path"]
    for target, path in grafana.items():
        if target.startswith("/etc/grafana/provisioning/"):
            assert path.is_file() and path.name == Path(target).name


# -- Dockerfile -----------------------------------------------------------------------------


def test_the_image_holds_what_the_wheel_is_built_from() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    copied = {p for line in re.findall(r"^COPY (.+)$", text, re.M) for p in line.split()[:-1]}
    pyproject = (ROOT / "pyproject.toml").read_text()
    roots = re.findall(r'^\s+"(\w+)/rhythm",$', pyproject, re.M)
    assert set(roots) <= {p.split("/")[0] for p in copied}
    assert "stack" in copied  # the CLI and its package data (Kafka's pom.xml, the rules)
    assert "force-include" not in pyproject  # every asset is package data
    for path in copied:
        assert (ROOT / path).exists(), path
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text()
    for path in copied:
        assert f"!{path.rstrip('/')}" in ignore.replace("/\n", "\n"), path
    for name, value in re.findall(r"(RHYTHM_\w+)=(\S+)", text):
        setting_for(name)
        if name.endswith(("METRICS_HOST", "COLLECTOR_HOST")):
            assert value == "0.0.0.0"
    extras = re.search(r'pip install "\.\[([\w,]+)\]"', text)
    assert extras is not None and "collector" in extras.group(1).split(",")


# -- Kubernetes -----------------------------------------------------------------------------

K8S_VERSION = "1.33.0"


def k8s_documents() -> list[tuple[str, dict[str, Any]]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    docs = []
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            if doc:
                docs.append((name, doc))
    return docs


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for _, d in k8s_documents() if d["kind"] == kind}


def test_manifests_match_the_kubernetes_schemas() -> None:
    docs = k8s_documents()
    kinds = sorted(d["kind"] for _, d in docs)
    assert kinds == [
        "ConfigMap", "Deployment", "Deployment", "Namespace", "PodDisruptionBudget", "Service",
        "Service", "Service", "Service", "StatefulSet", "StatefulSet",
    ]  # fmt: skip
    for _name, doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    # The check can fail: a misplaced field is refused in strict mode.
    sink = by_kind("Deployment")["rhythm-sink"]
    broken = {**sink, "spec": {**sink["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (kustomize) not installed")
def test_the_kustomization_renders_and_validates() -> None:
    out = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    assert len(docs) == len(k8s_documents())
    for doc in docs:
        assert doc["metadata"].get("namespace", "rhythm") == "rhythm"
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def _container(workload: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def _env(workload: dict[str, Any]) -> dict[str, str]:
    """The container's environment: the ConfigMaps it loads, then its own `env` (literal
    values only; secret references become a placeholder)."""
    configmaps = by_kind("ConfigMap")
    container = _container(workload)
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(configmaps[source["configMapRef"]["name"]]["data"])
    for item in container.get("env", []):
        env[item["name"]] = item.get("value", "from-a-secret")
    return env


class Part(NamedTuple):
    """A deployed part: its workload, the `rhythm` command it runs, the settings of its port
    and address (/metrics, /healthz, /readyz), and the alert rules' job it belongs to."""

    kind: str
    name: str
    command: str
    port_setting: str
    host_setting: str
    job: str


_PROCESSOR = ("processors", "RHYTHM_PROCESSOR_METRICS_PORT", "RHYTHM_PROCESSOR_METRICS_HOST")
PARTS = {
    "processors": Part("StatefulSet", "rhythm-processors", *_PROCESSOR, "rhythm-processors"),
    # the history lane is a processor worker: the same command, settings and job
    "history": Part("StatefulSet", "rhythm-processors-history", *_PROCESSOR, "rhythm-processors"),
    "sink": Part(
        "Deployment", "rhythm-sink", "sink", "RHYTHM_SINK_METRICS_PORT",
        "RHYTHM_SINK_METRICS_HOST", "rhythm-sink",
    ),
    "collector": Part(
        "Deployment", "rhythm-collector", "collector", "RHYTHM_COLLECTOR_PORT",
        "RHYTHM_COLLECTOR_HOST", "rhythm-collector",
    ),
}  # fmt: skip


@pytest.mark.parametrize("part", sorted(PARTS))
def test_workload_settings_probes_and_scrapes(part: str, monkeypatch: pytest.MonkeyPatch) -> None:
    kind, name, command, port_setting, host_setting, job = PARTS[part]
    workload = by_kind(kind)[name]
    env = _env(workload)
    assert_settings_accept(env, monkeypatch)
    port = METRICS_PORTS[part]
    assert env[port_setting] == str(port)
    assert env[host_setting] == "0.0.0.0"
    assert env.get("RHYTHM_PROCESSOR_LANE") == ("history" if part == "history" else None)
    container = _container(workload)
    assert container["args"] == [command]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    # The collector's API and its health and metrics share one port.
    port_name = "http" if part == "collector" else "metrics"
    assert ports == {port_name: port}
    probes = [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")]
    if part != "collector":  # starts in seconds: no recovery to wait for
        probes.append(("startupProbe", "/healthz"))
    for probe, path in probes:
        assert container[probe]["httpGet"] == {"path": path, "port": port_name}, probe
    annotations = workload["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(port),
        "prometheus.io/path": "/metrics",
    }
    # The Service selects these pods and names the port the ServiceMonitor scrapes.
    service = by_kind("Service")[name]
    labels = workload["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert workload["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["ports"] == [{"name": port_name, "port": port, "targetPort": port_name}]
    assert service["metadata"]["labels"]["rhythm.io/job"] == job  # rules.yml's jobs
    if kind == "StatefulSet":
        assert workload["spec"]["serviceName"] == name


@pytest.mark.parametrize("name", ["rhythm-processors", "rhythm-processors-history"])
def test_processor_state_is_on_a_claimed_volume(name: str) -> None:
    workload = by_kind("StatefulSet")[name]
    mounts = {m["name"]: m["mountPath"] for m in _container(workload)["volumeMounts"]}
    (claim,) = workload["spec"]["volumeClaimTemplates"]
    assert mounts[claim["metadata"]["name"]] == _env(workload)["RHYTHM_PROCESSOR_DATA_DIR"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert workload["spec"]["template"]["spec"]["securityContext"]["fsGroup"] == 10001


def test_one_history_lane_worker() -> None:
    # One partition in rhythm.history: a second worker would sit idle or, worse, split the
    # lane's event time.
    (history,) = [t for t in DEFAULT_TOPICS if t.name == "rhythm.history"]
    assert history.partitions == 1
    assert by_kind("StatefulSet")["rhythm-processors-history"]["spec"]["replicas"] == 1


def _secret_file_mount(workload: dict[str, Any], setting: str) -> tuple[Path, dict[str, Any]]:
    """The file a setting names, and the mount of the one Secret volume holding it (checked:
    mounted at the file's folder, the file its only item)."""
    path = Path(_env(workload)[setting])
    mounts = {m["name"]: m for m in _container(workload)["volumeMounts"]}
    volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
    (secret_volume,) = [n for n, v in volumes.items() if "secret" in v]
    assert Path(mounts[secret_volume]["mountPath"]) == path.parent
    assert [i["path"] for i in volumes[secret_volume]["secret"]["items"]] == [path.name]
    return path, mounts[secret_volume]


def test_no_secret_is_inline_and_referenced_files_are_mounted() -> None:
    docs = k8s_documents()
    assert all(d["kind"] != "Secret" for _, d in docs)
    config = by_kind("ConfigMap")["rhythm-settings"]["data"]
    assert not [k for k in config if re.search("PASSWORD|SECRET|TOKEN", k)]
    _secret_file_mount(by_kind("Deployment")["rhythm-sink"], "RHYTHM_SINK_CLICKHOUSE_PASSWORD_FILE")
    # The collector's write keys (hashed) come from a Secret mounted read-only.
    collector = by_kind("Deployment")["rhythm-collector"]
    _, mount = _secret_file_mount(collector, "RHYTHM_COLLECTOR_KEYS_FILE")
    assert mount["readOnly"] is True


def test_the_service_monitor_selects_the_services() -> None:
    monitor = yaml.safe_load((K8S / "monitoring" / "servicemonitor.yaml").read_text())
    assert monitor["kind"] == "ServiceMonitor"
    services = by_kind("Service")
    selected = [
        s for s in services.values()
        if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
    ]  # fmt: skip
    assert {s["metadata"]["name"] for s in selected} == {
        "rhythm-processors",
        "rhythm-processors-history",
        "rhythm-sink",
        "rhythm-collector",
    }
    endpoints = {e["port"]: e for e in monitor["spec"]["endpoints"]}
    for service in selected:
        (port,) = [p["name"] for p in service["spec"]["ports"]]
        assert endpoints[port]["path"] == "/metrics"
        assert monitor["spec"]["jobLabel"] in service["metadata"]["labels"]
