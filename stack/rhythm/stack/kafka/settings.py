"""Settings of the local Kafka: where it runs and how (LocalKafkaSettings, RHYTHM_KAFKA_LOCAL_*),
its assets (package data in ``assets/``) and the server.properties rendered from them."""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import re
import tempfile
import uuid
from importlib import resources
from pathlib import Path
from string import Template

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

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


def tail_lines(text: str, lines: int = 40) -> str:
    """The last `lines` lines of a tool's output or a log, for error messages."""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def asset_text(name: str) -> str:
    """The text of one of the broker's assets: package data of this package (``assets/``)."""
    return resources.files(__package__).joinpath("assets", name).read_text()


def write_asset(name: str, directory: Path) -> Path:
    """An asset as a file in `directory`, for a process that takes a path (Maven's pom.xml,
    the JVM's log4j config); rewritten (atomically) only when its text changed."""
    text = asset_text(name)
    path = directory / name
    with contextlib.suppress(OSError):
        if path.read_text() == text:
            return path
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}-", dir=directory)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path


def new_cluster_id() -> str:
    """A Kafka Uuid in its string form (URL-safe base64 of 16 random bytes, no padding), as
    ``StorageTool random-uuid`` prints, without starting a JVM for it."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def _project_root() -> Path:
    """The repository root for a source checkout (editable install), else the working dir."""
    root = Path(__file__).resolve().parents[4]
    if (root / "pyproject.toml").is_file() and (root / "stack" / "rhythm" / "stack").is_dir():
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
    # Kafka's own start script (kafka-run-class.sh) runs the broker with these, so the local
    # broker collects as a deployed one does (G1 otherwise aims at 200 ms pauses). Every
    # produce request waits out a pause: the collector bench reports both brokers' pauses
    # (on the shared 2-core machine up to 33-100 ms without these, 13-66 ms with them, the
    # CPU left to the JVM deciding more than the goal).
    jvm_options: list[str] = Field(
        default_factory=lambda: [
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:InitiatingHeapOccupancyPercent=35",
            "-XX:+ExplicitGCInvokesConcurrent",
        ],
        description="The broker's JVM options besides the heap (JSON list).",
    )
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
    template = Template(asset_text("server.properties.template"))
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
