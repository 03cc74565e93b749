"""A real local Apache Kafka broker (single node, KRaft), started and stopped by the project.

The broker is assembled from Maven Central jars (``deploy/kafka/pom.xml``) into a cache outside
the repository, formatted once, and run as a detached background process whose home directory
holds everything else::

    <home>/server.properties   rendered from deploy/kafka/server.properties.template
    <home>/log4j2.yaml         copied from deploy/kafka/log4j2.yaml
    <home>/data/               log.dirs (metadata log and topic partitions)
    <home>/cluster.id          the cluster id the data dir was formatted with
    <home>/broker.pid          pid of the running broker (also its process group)
    <home>/broker.json         host and ports of the last start (``rhythm kafka status/down``)
    <home>/broker.log          the broker's stdout and stderr

Typical use::

    kafka = LocalKafka(LocalKafkaSettings(home=tmp, port=0, controller_port=0))
    bootstrap = kafka.up()          # fetch, format, start, create DEFAULT_TOPICS
    ...
    kafka.down()

Settings come from the environment (prefix ``RHYTHM_KAFKA_LOCAL_``), see LocalKafkaSettings.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from string import Template
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from rhythm.schemas.topics import DEFAULT_TOPICS, TopicSpec
from rhythm.stack.ports import free_ports, port_open, wait_for_port

__all__ = [
    "LocalKafka",
    "LocalKafkaCluster",
    "LocalKafkaError",
    "LocalKafkaSettings",
    "assets_dir",
    "open_local_kafka",
    "parse_consumer_perf",
    "parse_producer_perf",
    "render_server_properties",
    "stop_orphans",
]

log = logging.getLogger(__name__)

#: Written into the jars directory once it is complete; its presence means "cached".
FETCH_MARKER = ".rhythm-complete.json"
#: The broker's main class and the storage formatter, both in kafka_2.13.
BROKER_MAIN = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"
PRODUCER_PERF = "org.apache.kafka.tools.ProducerPerformance"
CONSUMER_PERF = "org.apache.kafka.tools.ConsumerPerformance"
#: broker.log is rotated (one old copy kept) at start when it is larger than this.
LOG_ROTATE_BYTES = 50 * 1024 * 1024
#: In the environment of an owned broker: the pid of the process it belongs to.
OWNER_ENV = "RHYTHM_KAFKA_OWNER_PID"
#: How many times ``up`` picks new ports when they were automatic and got taken meanwhile.
AUTO_PORT_ATTEMPTS = 3


class LocalKafkaError(RuntimeError):
    """An expected failure of the local broker (missing tool, port in use, broker died, ...).
    The message says what happened and what to do; the CLI prints it without a traceback."""


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


def assets_dir() -> Path:
    """The folder with pom.xml and the templates: ``deploy/kafka`` in a source checkout,
    ``rhythm/stack/kafka_assets`` in an installed wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "kafka_assets", here.parents[1] / "kafka"):
        if (candidate / "pom.xml").is_file():
            return candidate
    raise LocalKafkaError(
        f"the Kafka assets (pom.xml, server.properties.template) are missing next to {here}"
    )


def _project_root() -> Path:
    """The repository root for a source checkout (editable install), else the working dir."""
    root = Path(__file__).resolve().parents[3]
    if (root / "pyproject.toml").is_file() and (root / "deploy" / "kafka").is_dir():
        return root
    return Path.cwd()


def _default_cache_dir() -> Path:
    env = os.environ.get("RHYTHM_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "rhythm"


def _default_home() -> Path:
    return _project_root() / ".rhythm" / "kafka"


class LocalKafkaSettings(BaseSettings):
    """Where and how the local broker runs. Every field can be set through the environment
    with the prefix ``RHYTHM_KAFKA_LOCAL_`` (e.g. ``RHYTHM_KAFKA_LOCAL_PORT=19092``)."""

    model_config = SettingsConfigDict(env_prefix="RHYTHM_KAFKA_LOCAL_", extra="ignore")

    version: str = Field(
        default="4.1.2", description="Apache Kafka release assembled from Maven Central."
    )
    cache_dir: Path = Field(
        default_factory=_default_cache_dir,
        description="Jar cache; the jars go to <cache_dir>/kafka-<version>/lib. "
        "Default: $RHYTHM_CACHE_DIR, else ~/.cache/rhythm.",
    )
    home: Path = Field(
        default_factory=_default_home,
        description="Broker home (config, data, pid, log). Default: <repo or cwd>/.rhythm/kafka.",
    )
    host: str = Field(default="127.0.0.1", description="Address the listeners bind to.")
    port: int = Field(
        default=9092, ge=0, le=65535, description="Client (PLAINTEXT) port; 0 picks a free one."
    )
    controller_port: int = Field(
        default=9093, ge=0, le=65535, description="KRaft controller port; 0 picks a free one."
    )
    node_id: int = Field(
        default=1, ge=0, description="node.id of the single node (a cluster numbers 1..N)."
    )
    brokers: int = Field(
        default=1,
        ge=1,
        le=9,
        description="Nodes (each broker and controller, all voting in the KRaft quorum). With "
        "more than one, ports are port, port+2, ... (controller_port likewise) or free ones "
        "for 0; topics get min(3, N) replicas and min.insync.replicas min(2, N).",
    )
    heap: str = Field(default="512m", description="JVM heap of the broker (-Xmx).")
    tool_heap: str = Field(default="512m", description="JVM heap of tools (perf, storage).")
    start_timeout_s: float = Field(
        default=60.0, gt=0, description="How long `up` waits for the port to open."
    )
    stop_timeout_s: float = Field(
        default=30.0, gt=0, description="How long `down` waits before SIGKILL."
    )
    fetch_timeout_s: float = Field(default=900.0, gt=0, description="Limit for the mvn download.")
    java: str = Field(default="java", description="Java 17+ executable (name or path).")
    mvn: str = Field(default="mvn", description="Maven executable (name or path).")
    extra_properties: dict[str, str] = Field(
        default_factory=dict,
        description="Broker properties appended to server.properties (JSON in the environment).",
    )
    sasl_users: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="SASL/PLAIN users and passwords (JSON in the environment). When set, a "
        "SASL_PLAINTEXT listener on sasl_port takes these (PlainLoginModule user_<name> "
        "entries); the PLAINTEXT listener stays for the broker itself and the launcher's "
        "admin. For testing authenticated clients locally, not a secured broker.",
    )
    sasl_port: int = Field(
        default=0, ge=0, le=65535, description="The SASL_PLAINTEXT listener's port; 0: a free one."
    )

    @field_validator("cache_dir", "home")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().absolute()

    @field_validator("heap", "tool_heap")
    @classmethod
    def _heap_size(cls, value: str) -> str:
        if not re.fullmatch(r"\d+[kKmMgG]?", value):
            raise ValueError(f"not a JVM heap size (like 512m or 1g): {value!r}")
        return value

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        if not re.fullmatch(r"[0-9A-Za-z][0-9A-Za-z.\-]*", value):
            raise ValueError(f"not a Kafka version: {value!r}")
        return value

    @field_validator("extra_properties")
    @classmethod
    def _properties(cls, value: dict[str, str]) -> dict[str, str]:
        for key, item in value.items():
            if not key or any(c in key for c in "\n\r=: ") or any(c in item for c in "\n\r"):
                raise ValueError(f"bad broker property {key!r}={item!r}")
        return value

    @field_validator("sasl_users")
    @classmethod
    def _sasl_users(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for user in value:
            if not re.fullmatch(r"[A-Za-z0-9._-]+", user):
                raise ValueError(f"bad SASL user name {user!r} (letters, digits, . _ -)")
        return value

    @model_validator(mode="after")
    def _distinct_ports(self) -> LocalKafkaSettings:
        if self.port and self.port == self.controller_port:
            raise ValueError(f"port and controller_port are both {self.port}")
        return self


def render_server_properties(
    settings: LocalKafkaSettings,
    *,
    port: int | None = None,
    controller_port: int | None = None,
    log_dir: Path | None = None,
    voters: str | None = None,
    sasl_port: int | None = None,
) -> str:
    """server.properties for ``settings`` (the ports and log dir may be given explicitly, e.g.
    once automatic ports are chosen; ``voters`` is controller.quorum.voters, by default this
    node alone). Pure: reads only the template."""
    port = settings.port if port is None else port
    controller_port = settings.controller_port if controller_port is None else controller_port
    if port <= 0 or controller_port <= 0:
        raise ValueError("render_server_properties needs concrete ports (not 0)")
    if port == controller_port:
        raise ValueError(f"port and controller_port are both {port}")
    log_dir = settings.home / "data" if log_dir is None else log_dir
    template = Template((assets_dir() / "server.properties.template").read_text())
    text = template.substitute(
        host=settings.host,
        port=port,
        controller_port=controller_port,
        node_id=settings.node_id,
        voters=voters or f"{settings.node_id}@{settings.host}:{controller_port}",
        replication=min(3, settings.brokers),
        min_isr=min(2, settings.brokers),
        # java.util.Properties treats backslashes as escapes.
        log_dir=str(log_dir).replace("\\", "\\\\"),
    )
    if settings.sasl_users:
        text += _sasl_properties(settings, port, controller_port, sasl_port or settings.sasl_port)
    if settings.extra_properties:
        lines = [f"{k}={v}" for k, v in sorted(settings.extra_properties.items())]
        text += "\n# extra_properties (RHYTHM_KAFKA_LOCAL_EXTRA_PROPERTIES)\n"
        text += "\n".join(lines) + "\n"
    return text


def _sasl_properties(
    settings: LocalKafkaSettings, port: int, controller_port: int, sasl_port: int
) -> str:
    """A SASL_PLAINTEXT listener with PLAIN and the users of ``settings.sasl_users`` (Kafka's
    static JAAS entries `user_<name>="<password>"`), beside the template's listeners, which
    it restates (these lines come later, so they win)."""
    if sasl_port <= 0 or sasl_port in (port, controller_port):
        raise ValueError(f"the SASL listener needs a port of its own (got {sasl_port})")
    host = settings.host

    def quoted(secret: SecretStr) -> str:
        # JAAS quoting, then java.util.Properties' backslash escapes.
        value = secret.get_secret_value().replace("\\", "\\\\").replace('"', '\\"')
        return '"' + value.replace("\\", "\\\\") + '"'

    users = " ".join(f"user_{u}={quoted(p)}" for u, p in sorted(settings.sasl_users.items()))
    return (
        "\n# SASL/PLAIN for clients (RHYTHM_KAFKA_LOCAL_SASL_USERS): a SASL_PLAINTEXT listener\n"
        f"listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port},"
        f"SASL_PLAINTEXT://{host}:{sasl_port}\n"
        f"advertised.listeners=PLAINTEXT://{host}:{port},SASL_PLAINTEXT://{host}:{sasl_port}\n"
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,"
        "SASL_PLAINTEXT:SASL_PLAINTEXT\n"
        "sasl.enabled.mechanisms=PLAIN\n"
        "listener.name.sasl_plaintext.sasl.enabled.mechanisms=PLAIN\n"
        "listener.name.sasl_plaintext.plain.sasl.jaas.config="
        f"org.apache.kafka.common.security.plain.PlainLoginModule required {users};\n"
    )


# --------------------------------------------------------------------------------------------
# Perf tool output
# --------------------------------------------------------------------------------------------

_PRODUCER_SUMMARY = re.compile(
    r"(?P<records>\d+) records sent, (?P<records_per_s>[\d.]+) records/sec "
    r"\((?P<mb_per_s>[\d.]+) MB/sec\), (?P<avg_latency_ms>[\d.]+) ms avg latency, "
    r"(?P<max_latency_ms>[\d.]+) ms max latency, (?P<p50_ms>\d+) ms 50th, "
    r"(?P<p95_ms>\d+) ms 95th, (?P<p99_ms>\d+) ms 99th, (?P<p999_ms>\d+) ms 99\.9th"
)

_CONSUMER_FIELDS = {
    "data.consumed.in.MB": "mb",
    "MB.sec": "mb_per_s",
    "data.consumed.in.nMsg": "records",
    "nMsg.sec": "records_per_s",
    "rebalance.time.ms": "rebalance_ms",
    "fetch.time.ms": "fetch_ms",
    "fetch.MB.sec": "fetch_mb_per_s",
    "fetch.nMsg.sec": "fetch_records_per_s",
}


def parse_producer_perf(output: str) -> dict[str, float]:
    """The final summary of ProducerPerformance as numbers: records, records_per_s, mb_per_s,
    avg_latency_ms, max_latency_ms, p50_ms, p95_ms, p99_ms, p999_ms."""
    matches = list(_PRODUCER_SUMMARY.finditer(output))
    if not matches:
        raise LocalKafkaError(f"no ProducerPerformance summary in its output:\n{_tail(output)}")
    return {key: float(value) for key, value in matches[-1].groupdict().items()}


def parse_consumer_perf(output: str) -> dict[str, float]:
    """The summary of ConsumerPerformance as numbers: mb, mb_per_s, records, records_per_s,
    rebalance_ms, fetch_ms, fetch_mb_per_s, fetch_records_per_s."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for index, line in enumerate(lines):
        if not line.startswith("start.time"):
            continue
        header = [h.strip() for h in line.split(",")]
        # The values follow the header, possibly after a WARNING line (e.g. on timeout).
        for candidate in lines[index + 1 :]:
            values = [v.strip() for v in candidate.split(",")]
            if len(values) != len(header):
                continue
            try:
                return {
                    _CONSUMER_FIELDS[name]: float(value)
                    for name, value in zip(header, values, strict=True)
                    if name in _CONSUMER_FIELDS
                }
            except ValueError:
                continue
    raise LocalKafkaError(f"no ConsumerPerformance summary in its output:\n{_tail(output)}")


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (fcntl.flock) held for the duration of the block; it is
    released by the kernel if the process dies. Not re-entrant: do not nest on one path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _new_cluster_id() -> str:
    """A Kafka Uuid in its string form (URL-safe base64 of 16 random bytes, no padding), as
    ``StorageTool random-uuid`` prints, without starting a JVM for it."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0). The main thread of a killed JVM can be a zombie while
    # other threads still exit (and hold the sockets): alive while any thread is not a zombie.
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return True  # no /proc: trust kill(0)
    for task in tasks:
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        if stat.rsplit(")", 1)[-1].split()[:1] != ["Z"]:
            return True
    return False


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


# --------------------------------------------------------------------------------------------
# The broker
# --------------------------------------------------------------------------------------------


class _Kafka:
    """What a single node and a cluster offer alike: topics, an admin client, perf tools.
    Subclasses say where the cluster is (``bootstrap``), how many replicas a topic gets, and
    how to run a tool from the broker's jars."""

    settings: LocalKafkaSettings

    @property
    def bootstrap(self) -> str:
        raise NotImplementedError

    @property
    def replication_factor(self) -> int:
        """Replicas of the topics created here: min(3, brokers)."""
        return min(3, self.settings.brokers)

    def is_running(self) -> bool:
        raise NotImplementedError

    def run_tool(
        self,
        main_class: str,
        args: list[str],
        timeout: float = 300.0,
        *,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        raise NotImplementedError

    def _require_running(self) -> None:
        if not self.is_running():
            raise LocalKafkaError(
                f"no broker is running from {self.settings.home}; start it with `rhythm kafka up`"
            )

    def producer_perf(
        self,
        topic: str,
        num_records: int,
        record_size: int,
        throughput: int = -1,
        props: Mapping[str, str] | None = None,
        *,
        timeout: float = 600.0,
    ) -> dict[str, float]:
        """Run ProducerPerformance against this broker; returns its final summary as numbers
        (records, records_per_s, mb_per_s, avg_latency_ms, max_latency_ms, p50_ms, p95_ms,
        p99_ms, p999_ms). ``props`` are producer properties (acks, linger.ms, ...); the topic
        must exist (the broker does not auto-create topics)."""
        self._require_running()
        producer_props = {"bootstrap.servers": self.bootstrap, **(props or {})}
        args = [
            "--topic",
            topic,
            "--num-records",
            str(num_records),
            "--record-size",
            str(record_size),
            "--throughput",
            str(throughput),
            "--producer-props",
            *(f"{k}={v}" for k, v in producer_props.items()),
        ]
        result = self.run_tool(PRODUCER_PERF, args, timeout=timeout)
        return parse_producer_perf(result.stdout)

    def consumer_perf(
        self,
        topic: str,
        messages: int,
        *,
        group: str | None = None,
        timeout_ms: int = 10_000,
        from_latest: bool = False,
        props: Mapping[str, str] | None = None,
        timeout: float = 600.0,
    ) -> dict[str, float]:
        """Run ConsumerPerformance against this broker (a fresh group by default, reading from
        the earliest offset); returns mb, mb_per_s, records, records_per_s, rebalance_ms,
        fetch_ms, fetch_mb_per_s, fetch_records_per_s. It stops after ``messages`` records or
        when no record arrived for ``timeout_ms`` (then ``records`` < ``messages``)."""
        self._require_running()
        group = group or f"rhythm-perf-{uuid.uuid4().hex[:12]}"
        args = [
            "--bootstrap-server",
            self.bootstrap,
            "--topic",
            topic,
            "--messages",
            str(messages),
            "--group",
            group,
            "--timeout",
            str(timeout_ms),
        ]
        if from_latest:
            args.append("--from-latest")
        with tempfile.TemporaryDirectory(prefix="rhythm-perf-") as tmp:
            if props:
                config = Path(tmp) / "consumer.properties"
                config.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
                args += ["--consumer.config", str(config)]
            result = self.run_tool(CONSUMER_PERF, args, timeout=timeout)
        stats = parse_consumer_perf(result.stdout)
        if stats.get("records", 0.0) < messages:
            log.warning(
                "ConsumerPerformance read %d of %d records from %s (timeout %d ms)",
                int(stats.get("records", 0.0)),
                messages,
                topic,
                timeout_ms,
            )
        return stats

    # -- topics ---------------------------------------------------------------------------

    def admin(self) -> AdminClient:
        """A confluent_kafka AdminClient for this broker (every node of a cluster)."""
        return AdminClient({"bootstrap.servers": self.bootstrap})

    def topics(self, timeout: float = 10.0) -> dict[str, int]:
        """{topic: partition count} of the non-internal topics."""
        try:
            metadata = self.admin().list_topics(timeout=timeout)
        except KafkaException as exc:
            raise LocalKafkaError(f"cannot list topics on {self.bootstrap}: {exc}") from exc
        return {
            name: len(topic.partitions)
            for name, topic in sorted(metadata.topics.items())
            if not name.startswith("__")
        }

    def create_topics(self, specs: Iterable[TopicSpec], timeout: float = 30.0) -> list[str]:
        """Create the topics that do not exist yet (``replication_factor`` replicas; the
        brokers' ``min.insync.replicas`` applies), wait until their partitions have leaders,
        and return the names created. Existing topics are left as they are (a warning if their
        partition count differs from the spec)."""
        wanted = {spec.name: spec for spec in specs}
        if not wanted:
            return []
        admin = self.admin()
        deadline = time.monotonic() + timeout
        created: list[str] = []
        pending = dict(wanted)
        while pending:
            remaining = max(1.0, deadline - time.monotonic())
            try:
                existing = admin.list_topics(timeout=remaining).topics
            except KafkaException as exc:
                raise LocalKafkaError(f"cannot list topics on {self.bootstrap}: {exc}") from exc
            for name in list(pending):
                if name in existing:
                    have, want = len(existing[name].partitions), pending[name].partitions
                    if name not in created and have != want:
                        log.warning(
                            "topic %s exists with %d partitions (spec: %d)", name, have, want
                        )
                    del pending[name]
            if not pending:
                break
            new = [
                NewTopic(
                    spec.name,
                    num_partitions=spec.partitions,
                    replication_factor=self.replication_factor,
                    config=dict(spec.config),
                )
                for spec in pending.values()
            ]
            futures = admin.create_topics(
                new, request_timeout=remaining, operation_timeout=remaining
            )
            retry = False
            for name, future in futures.items():
                try:
                    future.result()
                    created.append(name)
                    del pending[name]
                except KafkaException as exc:
                    error = exc.args[0]
                    if error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                        del pending[name]
                    elif error.retriable() and time.monotonic() < deadline:
                        retry = True
                    else:
                        raise LocalKafkaError(
                            f"cannot create topic {name!r}: {error.str()}"
                        ) from exc
            if retry:
                time.sleep(0.2)
        if created:
            self._wait_for_leaders(admin, created, deadline)
            log.info(
                "created topics: %s",
                ", ".join(
                    f"{n} ({wanted[n].partitions} partition{'s' * (wanted[n].partitions != 1)})"
                    for n in sorted(created)
                ),
            )
        return sorted(created)

    def _wait_for_leaders(self, admin: AdminClient, names: list[str], deadline: float) -> None:
        while True:
            metadata = admin.list_topics(timeout=max(1.0, deadline - time.monotonic()))
            ready = all(
                name in metadata.topics
                and metadata.topics[name].error is None
                and metadata.topics[name].partitions
                and all(p.leader >= 0 for p in metadata.topics[name].partitions.values())
                for name in names
            )
            if ready:
                return
            if time.monotonic() >= deadline:
                raise LocalKafkaError(f"topics {names} have no leaders yet on {self.bootstrap}")
            time.sleep(0.1)


class LocalKafka(_Kafka):
    """One local Kafka node (broker and controller) living in ``settings.home``: alone, or one
    node of a LocalKafkaCluster."""

    def __init__(
        self,
        settings: LocalKafkaSettings | None = None,
        *,
        owned: bool = False,
        voters: str | None = None,
    ) -> None:
        """``owned``: the broker belongs to this process (a test session); if the process dies
        without stopping it, ``stop_orphans()`` (called by the next test session) stops it.
        ``voters``: controller.quorum.voters when this node is one of a cluster's."""
        self.settings = settings if settings is not None else LocalKafkaSettings()
        self.home = self.settings.home
        self.owned = owned
        self.voters = voters
        # The process handle when this object started the broker (to reap it on stop).
        self._proc: subprocess.Popen[bytes] | None = None
        state = self._read_state()
        # Ports: those of the broker running from this home; else the explicit settings; else
        # (automatic, 0) the last start's, so a restart keeps its address.
        running = self._live_pid() is not None
        self._port = (0 if running else self.settings.port) or int(state.get("port", 0))
        self._controller_port = (0 if running else self.settings.controller_port) or int(
            state.get("controller_port", 0)
        )
        self._sasl_port = (0 if running else self.settings.sasl_port) or int(
            state.get("sasl_port", 0)
        )

    # -- paths ----------------------------------------------------------------------------

    @property
    def dist_dir(self) -> Path:
        return self.settings.cache_dir / f"kafka-{self.settings.version}"

    @property
    def lib_dir(self) -> Path:
        return self.dist_dir / "lib"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def server_properties(self) -> Path:
        return self.home / "server.properties"

    @property
    def pid_file(self) -> Path:
        return self.home / "broker.pid"

    @property
    def state_file(self) -> Path:
        return self.home / "broker.json"

    @property
    def log_file(self) -> Path:
        return self.home / "broker.log"

    @property
    def port(self) -> int:
        """The client port (0 while automatic and never started)."""
        return self._port

    @property
    def controller_port(self) -> int:
        return self._controller_port

    @property
    def bootstrap(self) -> str:
        """``host:port`` for ``bootstrap.servers``."""
        return f"{self.settings.host}:{self._port}"

    @property
    def sasl_bootstrap(self) -> str:
        """``host:port`` of the SASL_PLAINTEXT listener (only with ``sasl_users``)."""
        if not self.settings.sasl_users or not self._sasl_port:
            raise LocalKafkaError("this broker has no SASL listener (set sasl_users)")
        return f"{self.settings.host}:{self._sasl_port}"

    # -- fetch ----------------------------------------------------------------------------

    def fetch(self) -> Path:
        """The directory of the broker's jars, downloading them with Maven if not cached.

        Concurrent callers (two test runs) serialise on a lock file; the jars are copied into
        a temporary directory and renamed into place, so a half-done download is never used.
        """
        lib = self.lib_dir
        if (lib / FETCH_MARKER).is_file():
            return lib
        mvn = shutil.which(self.settings.mvn)
        if mvn is None:
            raise LocalKafkaError(
                f"Maven ({self.settings.mvn!r}) is not on PATH; it assembles Kafka from Maven "
                "Central. Install Maven 3.8+ (e.g. `apt-get install maven`) or set "
                "RHYTHM_KAFKA_LOCAL_MVN to its path."
            )
        self._java()
        pom = assets_dir() / "pom.xml"
        dist = self.dist_dir
        dist.mkdir(parents=True, exist_ok=True)
        with _file_lock(dist / ".fetch.lock"):
            if (lib / FETCH_MARKER).is_file():  # another process finished it meanwhile
                return lib
            version = self.settings.version
            log.info("fetching Apache Kafka %s from Maven Central into %s", version, lib)
            started = time.monotonic()
            tmp = Path(tempfile.mkdtemp(prefix=".lib-", dir=dist))
            try:
                command = [
                    mvn,
                    "-q",
                    "-B",
                    "-f",
                    str(pom),
                    f"-Dkafka.version={version}",
                    "dependency:copy-dependencies",
                    f"-DoutputDirectory={tmp}",
                ]
                try:
                    result = subprocess.run(
                        command,
                        capture_output=True,
                        text=True,
                        timeout=self.settings.fetch_timeout_s,
                        check=False,
                    )
                except subprocess.TimeoutExpired as exc:
                    raise LocalKafkaError(
                        f"mvn did not finish fetching Kafka {version} within "
                        f"{self.settings.fetch_timeout_s:.0f} s"
                    ) from exc
                if result.returncode != 0:
                    raise LocalKafkaError(
                        f"mvn failed (exit {result.returncode}) fetching Kafka {version} "
                        f"(is the version on Maven Central? is Maven Central reachable?):\n"
                        + _tail(result.stdout + result.stderr)
                    )
                jars = sorted(p.name for p in tmp.glob("*.jar"))
                if f"kafka_2.13-{version}.jar" not in jars:
                    raise LocalKafkaError(f"mvn ran but kafka_2.13-{version}.jar is not in {tmp}")
                (tmp / FETCH_MARKER).write_text(
                    json.dumps({"version": version, "jars": jars}, indent=1) + "\n"
                )
                tmp.chmod(0o755)  # mkdtemp makes it private; the cache may be shared
                if lib.exists():  # a leftover without marker: incomplete, replace it
                    shutil.rmtree(lib)
                os.replace(tmp, lib)
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
            log.info(
                "fetched %d jars for Kafka %s in %.1f s",
                len(jars),
                version,
                time.monotonic() - started,
            )
        return lib

    def _java(self) -> str:
        java = shutil.which(self.settings.java)
        if java is None:
            raise LocalKafkaError(
                f"Java ({self.settings.java!r}) is not on PATH; Kafka {self.settings.version} "
                "needs Java 17+. Install it (e.g. `apt-get install openjdk-17-jre-headless`) "
                "or set RHYTHM_KAFKA_LOCAL_JAVA to its path."
            )
        return java

    # -- tools ----------------------------------------------------------------------------

    def run_tool(
        self,
        main_class: str,
        args: list[str],
        timeout: float = 300.0,
        *,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Run a Java main class from the broker's jars (e.g. a perf tool) and wait for it.

        Tools log warnings only, to stderr (deploy/kafka/tools-log4j2.yaml); stdout is theirs.
        With ``check`` a non-zero exit raises LocalKafkaError with the output's tail.
        """
        lib = self.fetch()
        command = [
            self._java(),
            f"-Xmx{self.settings.tool_heap}",
            "-Djava.awt.headless=true",
            # Numbers in tool output are formatted with the default locale: pin it for parsing.
            "-Duser.language=en",
            "-Duser.country=US",
            f"-Dlog4j2.configurationFile={assets_dir() / 'tools-log4j2.yaml'}",
            "-cp",
            f"{lib}/*",
            main_class,
            *args,
        ]
        log.debug("running %s", " ".join(command))
        try:
            result = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise LocalKafkaError(f"{main_class} did not finish within {timeout:.0f} s") from exc
        if check and result.returncode != 0:
            raise LocalKafkaError(
                f"{main_class} failed (exit {result.returncode}):\n"
                + _tail(result.stdout + "\n" + result.stderr)
            )
        return result

    # -- lifecycle ------------------------------------------------------------------------

    def up(self, topics: Iterable[TopicSpec] | None = None) -> str:
        """Start the broker (or reuse the one already running from this home) and create
        ``topics`` (None: DEFAULT_TOPICS; an empty iterable: none). Returns ``host:port``."""
        with _file_lock(self.home / ".lock"):
            pid = self._live_pid()
            state = self._read_state()
            if pid is not None:
                self._port = int(state.get("port", self._port))
                self._controller_port = int(state.get("controller_port", self._controller_port))
                if not wait_for_port(
                    self.settings.host,
                    self._port,
                    self.settings.start_timeout_s,
                    abort=lambda: not self._alive(pid),
                ):
                    raise LocalKafkaError(
                        f"a broker from {self.home} (pid {pid}) is running but "
                        f"{self.bootstrap} does not accept connections; stop it with "
                        f"`rhythm kafka down --home {self.home}`. Log tail:\n" + self._log_tail()
                    )
                if self.settings.port and self.settings.port != self._port:
                    log.warning(
                        "reusing the broker running from %s at %s (not port %d)",
                        self.home,
                        self.bootstrap,
                        self.settings.port,
                    )
                log.info("Kafka is already running at %s (pid %d)", self.bootstrap, pid)
            else:
                self._start()
        self.create_topics(DEFAULT_TOPICS if topics is None else topics)
        return self.bootstrap

    def _start(self) -> None:
        self._remove_runtime_files()
        lib = self.fetch()
        java = self._java()
        self.home.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(assets_dir() / "log4j2.yaml", self.home / "log4j2.yaml")
        auto = self.settings.port == 0 or self.settings.controller_port == 0
        attempts = AUTO_PORT_ATTEMPTS if auto else 1
        started = time.monotonic()
        for attempt in range(1, attempts + 1):
            port, controller_port = self._choose_ports(fresh=attempt > 1)
            if self.settings.sasl_users:
                self._sasl_port = self.settings.sasl_port or next(
                    p
                    for p in ([self._sasl_port] if attempt == 1 and self._sasl_port else [])
                    + free_ports(3, self.settings.host)
                    if p not in (port, controller_port)
                )
            self.server_properties.write_text(
                render_server_properties(
                    self.settings,
                    port=port,
                    controller_port=controller_port,
                    log_dir=self.data_dir,
                    voters=self.voters,
                    sasl_port=self._sasl_port or None,
                )
            )
            self._port, self._controller_port = port, controller_port
            self._ensure_formatted()
            try:
                self._launch(java, lib)
                break
            except _AddressInUseError as exc:
                if attempt == attempts:
                    raise LocalKafkaError(str(exc)) from None
                log.info("ports %d/%d got taken meanwhile; trying others", port, controller_port)
        log.info(
            "Kafka %s is up at %s (pid %s, home %s) in %.1f s",
            self.settings.version,
            self.bootstrap,
            self._proc.pid if self._proc else "?",
            self.home,
            time.monotonic() - started,
        )

    def _choose_ports(self, *, fresh: bool) -> tuple[int, int]:
        """The explicit ports of the settings (which must be free), and for automatic (0)
        ones the last start's if still free (``fresh``: new ones), else free ones."""
        host = self.settings.host
        port, controller_port = self.settings.port, self.settings.controller_port
        for name, value, setting in (
            ("port", port, "PORT"),
            ("controller port", controller_port, "CONTROLLER_PORT"),
        ):
            if value and port_open(host, value, timeout=0.2):
                raise LocalKafkaError(
                    f"the {name} {host}:{value} is already in use (another Kafka?). Choose "
                    f"another with --{name.replace(' ', '-')} or RHYTHM_KAFKA_LOCAL_{setting}, "
                    "or 0 for a free one."
                )
        if port and controller_port:
            return port, controller_port
        last = (self._port, self._controller_port)
        reuse = (
            not fresh
            and all(last)
            and len({*last, port or last[0], controller_port or last[1]}) == 2
            and not any(port_open(host, p, timeout=0.2) for p in last)
        )
        if reuse:
            return port or last[0], controller_port or last[1]
        candidates = [p for p in free_ports(3, host) if p not in (port, controller_port)]
        return port or candidates[0], controller_port or candidates[1]

    def _ensure_formatted(self) -> None:
        """Format the storage once: only when the data dir is absent or empty."""
        data = self.data_dir
        if (data / "meta.properties").is_file():
            return
        if data.is_dir() and any(data.iterdir()):
            raise LocalKafkaError(
                f"{data} is not empty but holds no meta.properties, so it is not a formatted "
                "Kafka log dir; remove it (its data is lost) or choose another home."
            )
        id_file = self.home / "cluster.id"
        cluster_id = id_file.read_text().strip() if id_file.is_file() else ""
        if not cluster_id:
            cluster_id = _new_cluster_id()
            id_file.write_text(cluster_id + "\n")
        log.info("formatting %s (cluster id %s)", data, cluster_id)
        self.run_tool(
            STORAGE_TOOL,
            ["format", "-t", cluster_id, "-c", str(self.server_properties)],
            timeout=120,
        )

    def _launch(self, java: str, lib: Path) -> None:
        self._rotate_log()
        command = [
            java,
            f"-Xmx{self.settings.heap}",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.yaml'}",
            "-cp",
            f"{lib}/*",
            BROKER_MAIN,
            str(self.server_properties),
        ]
        with self.log_file.open("ab") as out:
            offset = out.tell()
            banner = f"\n=== rhythm: starting Kafka {self.settings.version} at {self.bootstrap} "
            out.write((banner + time.strftime("%Y-%m-%d %H:%M:%S") + " ===\n").encode())
            out.flush()
            proc = subprocess.Popen(
                command,
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: not hit by the caller's Ctrl-C
                close_fds=True,
                env={**os.environ, OWNER_ENV: str(os.getpid())} if self.owned else None,
            )
        self._proc = proc
        self.pid_file.write_text(f"{proc.pid}\n")
        self._write_state()
        if wait_for_port(
            self.settings.host,
            self._port,
            self.settings.start_timeout_s,
            abort=lambda: proc.poll() is not None,
        ):
            self._verify_ours(proc)
            return
        tail = self._log_tail(offset)
        if proc.poll() is None:
            self._terminate(proc.pid, timeout=10.0)
            self._remove_runtime_files()
            raise LocalKafkaError(
                f"Kafka did not open {self.bootstrap} within {self.settings.start_timeout_s:.0f} s"
                f" (stopped it). Log tail ({self.log_file}):\n{tail}"
            )
        self._remove_runtime_files()
        self._proc = None
        if "Address already in use" in tail:
            raise _AddressInUseError(
                f"Kafka could not bind {self.bootstrap} or controller port "
                f"{self._controller_port}: address already in use. Log tail:\n{tail}"
            )
        raise LocalKafkaError(
            f"Kafka exited (code {proc.returncode}) before opening {self.bootstrap}. "
            f"Log tail ({self.log_file}):\n{tail}"
        )

    def _verify_ours(self, proc: subprocess.Popen[bytes]) -> None:
        """The open port is served by the process just started: same cluster id. (Another
        process could have taken the port between our check and the broker's bind.)"""
        expected = self._formatted_cluster_id()
        admin = self.admin()  # keep a reference: the future fails if the client is collected
        try:
            # A cluster's node answers once a quorum of its controllers is up: the others
            # may be starting at the same time, so allow the start timeout, not less.
            timeout = max(15.0, self.settings.start_timeout_s)
            found = admin.describe_cluster(request_timeout=timeout).result().cluster_id
        except KafkaException as exc:
            found = f"(no answer: {exc})"
        if proc.poll() is None and found == expected:
            return
        if proc.poll() is None:
            self._terminate(proc.pid, timeout=10.0)
        self._remove_runtime_files()
        self._proc = None
        raise _AddressInUseError(
            f"{self.bootstrap} is served by another Kafka (cluster id {found}, ours {expected})"
            "; choose another port."
        )

    def _formatted_cluster_id(self) -> str:
        try:
            text = (self.data_dir / "meta.properties").read_text()
        except OSError:
            return ""
        match = re.search(r"^cluster\.id=(\S+)", text, re.MULTILINE)
        return match.group(1) if match else ""

    def down(self, timeout: float | None = None) -> bool:
        """Stop the broker: SIGTERM to its process group (controlled shutdown), SIGKILL after
        ``timeout`` seconds (default settings.stop_timeout_s). Returns False if it was not
        running. The data stays; the next ``up`` continues from it."""
        with _file_lock(self.home / ".lock"):
            pid = self._live_pid()
            if pid is None:
                self._remove_runtime_files()
                return False
            started = time.monotonic()
            self._terminate(pid, self.settings.stop_timeout_s if timeout is None else timeout)
            self._remove_runtime_files()
            log.info("Kafka (pid %d) stopped in %.1f s", pid, time.monotonic() - started)
            return True

    def kill(self) -> bool:
        """SIGKILL the broker (no controlled shutdown: for fault tests). False if not running."""
        with _file_lock(self.home / ".lock"):
            pid = self._live_pid()
            if pid is None:
                self._remove_runtime_files()
                return False
            self._signal(pid, signal.SIGKILL)
            self._wait_exit(pid, 30.0)
            self._remove_runtime_files()
            log.info("Kafka (pid %d) killed", pid)
            return True

    def restart(self) -> str:
        """``down()`` then ``up()`` on the same home and ports; creates no topics."""
        self.down()
        return self.up(topics=())

    def is_running(self) -> bool:
        """A broker from this home is alive and accepts connections on its port."""
        pid = self._live_pid()
        if pid is None:
            return False
        port = int(self._read_state().get("port", self._port))
        return port > 0 and port_open(self.settings.host, port)

    def status(self) -> dict[str, Any]:
        """running, pid, bootstrap, version, home, log, topics ({name: partitions}, only when
        running; internal topics excluded)."""
        pid = self._live_pid()
        state = self._read_state()
        port = int(state.get("port", self._port))
        host = str(state.get("host", self.settings.host))
        running = pid is not None and port > 0 and port_open(host, port)
        if running:
            self._port = port
        info: dict[str, Any] = {
            "running": running,
            "pid": pid,
            "bootstrap": f"{host}:{port}",
            "version": str(state.get("version", self.settings.version)),
            "home": str(self.home),
            "log": str(self.log_file),
            "topics": {},
        }
        if running:
            try:
                info["topics"] = self.topics()
            except LocalKafkaError as exc:
                info["topics_error"] = str(exc)
        return info

    def live_pid(self) -> int | None:
        """The running broker's pid (None when none runs from this home)."""
        return self._live_pid()

    def exit_code(self, wait_s: float = 5.0) -> int | None:
        """The exit code of the broker this object started, waiting up to ``wait_s`` for it
        to be reaped (a dying broker's /proc entry empties before it can be); else None."""
        if self._proc is None:
            return None
        try:
            return self._proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            return None

    # -- process bookkeeping --------------------------------------------------------------

    def _alive(self, pid: int) -> bool:
        if self._proc is not None and self._proc.pid == pid:
            return self._proc.poll() is None
        return _pid_alive(pid)

    def _live_pid(self) -> int | None:
        """The pid in the pid file if that process is alive and is this home's broker."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if not self._alive(pid):
            return None
        cmdline = _cmdline(pid)
        if cmdline is not None and str(self.server_properties) not in cmdline:
            return None  # the pid was reused by an unrelated process
        return pid

    def _signal(self, pid: int, sig: signal.Signals) -> None:
        try:
            if os.getpgid(pid) == pid and pid != os.getpgrp():
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            pass

    def _wait_exit(self, pid: int, timeout: float) -> bool:
        if self._proc is not None and self._proc.pid == pid:
            try:
                self._proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                return False
            self._proc = None
            return True
        deadline = time.monotonic() + timeout
        while _pid_alive(pid):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)
        return True

    def _terminate(self, pid: int, timeout: float) -> None:
        self._signal(pid, signal.SIGTERM)
        if not self._wait_exit(pid, timeout):
            log.warning("Kafka (pid %d) did not stop within %.0f s: SIGKILL", pid, timeout)
            self._signal(pid, signal.SIGKILL)
            self._wait_exit(pid, 30.0)

    def _remove_runtime_files(self) -> None:
        self.pid_file.unlink(missing_ok=True)

    def _read_state(self) -> dict[str, Any]:
        try:
            state = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    def _write_state(self) -> None:
        state = {
            "host": self.settings.host,
            "port": self._port,
            "controller_port": self._controller_port,
            "sasl_port": self._sasl_port,
            "version": self.settings.version,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        self.state_file.write_text(json.dumps(state, indent=1) + "\n")

    def _rotate_log(self) -> None:
        with contextlib.suppress(OSError):
            if self.log_file.stat().st_size > LOG_ROTATE_BYTES:
                os.replace(self.log_file, self.log_file.with_suffix(".log.1"))

    def _log_tail(self, offset: int = 0, lines: int = 40) -> str:
        try:
            with self.log_file.open("rb") as handle:
                handle.seek(offset)
                text = handle.read().decode(errors="replace")
        except OSError:
            return "(no log)"
        return _tail(text, lines) or "(empty log)"


# --------------------------------------------------------------------------------------------
# Several nodes
# --------------------------------------------------------------------------------------------

#: In a cluster's home: its size, cluster id and every node's ports (``rhythm kafka status``).
CLUSTER_FILE = "cluster.json"


class LocalKafkaCluster(_Kafka):
    """N local Kafka nodes (``settings.brokers``), each broker and controller, all voters of
    one KRaft quorum, formatted with one cluster id. Each node is a LocalKafka with its own
    home, ports and log dir::

        <home>/cluster.json     size, cluster id, every node's ports
        <home>/node-<i>/        node i's home (node.id i): server.properties, data/, broker.log

    With three nodes any one may be down: the quorum (2 of 3) keeps a controller, topics have 3
    replicas and ``min.insync.replicas`` 2, so writes with acks=all go on. A node's ports stay
    the same across restarts (they are in every node's controller.quorum.voters).
    """

    def __init__(self, settings: LocalKafkaSettings | None = None, *, owned: bool = False) -> None:
        self.settings = settings if settings is not None else LocalKafkaSettings()
        self.home = self.settings.home
        self.owned = owned
        state = self._read_state()
        if state and int(state.get("brokers", 0)) >= 1:
            # A cluster lives here already: its size wins over the settings'.
            self.settings = self.settings.model_copy(update={"brokers": int(state["brokers"])})
        self.nodes: list[LocalKafka] = self._make_nodes(state.get("nodes", []))

    # -- layout -----------------------------------------------------------------------------

    @property
    def state_file(self) -> Path:
        return self.home / CLUSTER_FILE

    @property
    def log_file(self) -> Path:
        """The first node's log (each node has its own: node-<i>/broker.log)."""
        return self.home / "node-1" / "broker.log"

    @property
    def bootstrap(self) -> str:
        """Every node's ``host:port``, comma-separated (``bootstrap.servers``)."""
        return ",".join(node.bootstrap for node in self.nodes)

    def node(self, node_id: int) -> LocalKafka:
        """The node with ``node.id`` ``node_id`` (1..N): to kill or restart it alone."""
        for node in self.nodes:
            if node.settings.node_id == node_id:
                return node
        raise LocalKafkaError(f"no node {node_id} in the cluster at {self.home}")

    def _read_state(self) -> dict[str, Any]:
        try:
            state = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    def _ports(self) -> list[tuple[int, int]]:
        """(port, controller_port) per node: port + 2i and controller_port + 2i, free ones
        for 0."""
        n, s = self.settings.brokers, self.settings
        if s.port and s.controller_port:
            pairs = [(s.port + 2 * i, s.controller_port + 2 * i) for i in range(n)]
        else:
            free = iter(free_ports(2 * n, s.host))
            pairs = [(s.port + 2 * i if s.port else next(free), next(free)) for i in range(n)]
            if s.controller_port:
                pairs = [(p, s.controller_port + 2 * i) for i, (p, _) in enumerate(pairs)]
        flat = [p for pair in pairs for p in pair]
        if len(set(flat)) != len(flat) or max(flat) > 65535:
            raise LocalKafkaError(
                f"the ports of {n} nodes overlap or run past 65535: {pairs}; choose port and "
                "controller_port apart (nodes use port+2i, controller_port+2i) or 0"
            )
        return pairs

    def _make_nodes(self, recorded: list[dict[str, Any]]) -> list[LocalKafka]:
        """LocalKafka objects for the recorded layout, or for a new one (ports chosen now)."""
        if recorded:
            pairs = [(int(n["port"]), int(n["controller_port"])) for n in recorded]
        else:
            pairs = self._ports()
        host = self.settings.host
        voters = ",".join(f"{i}@{host}:{c}" for i, (_, c) in enumerate(pairs, start=1))
        return [
            LocalKafka(
                self.settings.model_copy(
                    update={
                        "home": self.home / f"node-{i}",
                        "node_id": i,
                        "port": port,
                        "controller_port": controller_port,
                    }
                ),
                owned=self.owned,
                voters=voters,
            )
            for i, (port, controller_port) in enumerate(pairs, start=1)
        ]

    def _write_layout(self) -> str:
        """Record the layout and give every node home the cluster id (one for all: a node
        formatted with another id would not join). Returns the id."""
        state = self._read_state()
        cluster_id = str(state.get("cluster_id") or _new_cluster_id())
        for node in self.nodes:
            node.home.mkdir(parents=True, exist_ok=True)
            id_file = node.home / "cluster.id"
            if not id_file.is_file():
                id_file.write_text(cluster_id + "\n")
        nodes = [
            {"node_id": n.settings.node_id, "port": n.port, "controller_port": n.controller_port}
            for n in self.nodes
        ]
        self.home.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(
            json.dumps(
                {"brokers": len(self.nodes), "cluster_id": cluster_id, "nodes": nodes}, indent=1
            )
            + "\n"
        )
        return cluster_id

    # -- lifecycle --------------------------------------------------------------------------

    def fetch(self) -> Path:
        return self.nodes[0].fetch()

    def run_tool(
        self,
        main_class: str,
        args: list[str],
        timeout: float = 300.0,
        *,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        return self.nodes[0].run_tool(main_class, args, timeout, check=check)

    def up(self, topics: Iterable[TopicSpec] | None = None) -> str:
        """Start every node that is not running (all at once: a node serves clients only once
        a quorum of controllers is up) and create ``topics`` (None: DEFAULT_TOPICS; empty:
        none). Returns the bootstrap list."""
        with _file_lock(self.home / ".lock"):
            fresh = not self.state_file.is_file()
            self.fetch()
            self._write_layout()
            try:
                self._start_all()
            except LocalKafkaError:
                if not fresh or self.settings.port or self.settings.controller_port:
                    raise
                # Automatic ports of a new cluster taken meanwhile: once more with others.
                log.info("a new cluster's ports got taken meanwhile; trying others")
                self._stop_all(10.0)
                self.state_file.unlink(missing_ok=True)
                self.nodes = self._make_nodes([])
                self._write_layout()
                self._start_all()
        self.create_topics(DEFAULT_TOPICS if topics is None else topics)
        return self.bootstrap

    def _start_all(self) -> None:
        errors: dict[int, BaseException] = {}

        def start(node: LocalKafka) -> None:
            try:
                node.up(topics=())
            except BaseException as exc:  # reported below, with the other nodes'
                errors[node.settings.node_id] = exc

        threads = [threading.Thread(target=start, args=(node,)) for node in self.nodes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise LocalKafkaError(
                "; ".join(f"node {i}: {exc}" for i, exc in sorted(errors.items()))
            )

    def _stop_all(self, timeout: float | None) -> list[bool]:
        results: dict[int, bool] = {}

        def stop(node: LocalKafka) -> None:
            results[node.settings.node_id] = node.down(timeout)

        threads = [threading.Thread(target=stop, args=(node,)) for node in self.nodes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return [results.get(node.settings.node_id, False) for node in self.nodes]

    def down(self, timeout: float | None = None) -> bool:
        """Stop every node (all at once; SIGKILL after ``timeout``). False if none was
        running. The data stays."""
        return any(self._stop_all(timeout))

    def kill(self) -> bool:
        """SIGKILL every node. False if none was running."""
        return any([node.kill() for node in self.nodes])

    def restart(self) -> str:
        self.down()
        return self.up(topics=())

    def is_running(self) -> bool:
        """Every node is alive and accepts connections."""
        return bool(self.nodes) and all(node.is_running() for node in self.nodes)

    def status(self) -> dict[str, Any]:
        """As LocalKafka.status, for the whole cluster (running: every node is), plus
        ``nodes``: each node's status."""
        nodes = []
        for node in self.nodes:
            one = node.status()
            one.pop("topics", None)
            nodes.append({"node_id": node.settings.node_id, **one})
        running = bool(nodes) and all(n["running"] for n in nodes)
        info: dict[str, Any] = {
            "running": running,
            "pid": ",".join(str(n["pid"]) for n in nodes if n["pid"]) or None,
            "bootstrap": self.bootstrap,
            "version": self.settings.version,
            "home": str(self.home),
            "log": str(self.home / "node-*" / "broker.log"),
            "brokers": len(nodes),
            "nodes": nodes,
            "topics": {},
        }
        if any(n["running"] for n in nodes):
            try:
                info["topics"] = self.topics()
            except LocalKafkaError as exc:
                info["topics_error"] = str(exc)
        return info


def open_local_kafka(
    settings: LocalKafkaSettings | None = None, *, owned: bool = False
) -> LocalKafka | LocalKafkaCluster:
    """The local Kafka of ``settings.home``: a cluster when ``settings.brokers`` > 1 or the
    home already holds one (so `rhythm kafka down/status` need no --brokers), else one node."""
    settings = settings if settings is not None else LocalKafkaSettings()
    if settings.brokers > 1 or (settings.home / CLUSTER_FILE).is_file():
        return LocalKafkaCluster(settings, owned=owned)
    return LocalKafka(settings, owned=owned)


def stop_orphans(timeout: float = 30.0) -> list[int]:
    """Stop the brokers started with ``owned=True`` whose owner process has died (a test run
    killed before its teardown); returns their pids. Only this user's processes are visible
    (``/proc/<pid>/environ``), and brokers not started as owned are never touched."""
    orphans: list[int] = []
    marker = OWNER_ENV.encode() + b"="
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit():
            continue
        cmdline = _cmdline(int(entry.name))
        if not cmdline or BROKER_MAIN not in cmdline:
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        owners = [item[len(marker) :] for item in environ if item.startswith(marker)]
        if owners and owners[0].isdigit() and not _pid_alive(int(owners[0])):
            orphans.append(int(entry.name))
    for pid in orphans:
        log.warning("stopping orphaned Kafka broker (pid %d) of a dead test run", pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for pid in orphans:
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _pid_alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
    return orphans


class _AddressInUseError(LocalKafkaError):
    """The broker could not bind its ports (automatic ports taken between choice and bind)."""
