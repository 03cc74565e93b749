"""One local Apache Kafka node (KRaft, broker and controller), started and stopped by the project.

The broker is assembled from Maven Central jars (``assets/pom.xml``, package data) into a
cache outside the repository, formatted once, and run as a detached background process whose
home directory holds everything else::

    <home>/server.properties   rendered from assets/server.properties.template
    <home>/log4j2.yaml         copied from assets/log4j2.yaml
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

import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException

from rhythm.runtime.process import alive, cmdline, stop_group
from rhythm.schemas.topics import DEFAULT_TOPICS, TopicSpec
from rhythm.stack.kafka.admin import LocalKafkaBase
from rhythm.stack.kafka.jars import dist_dir, fetch_jars, java_binary
from rhythm.stack.kafka.lock import file_lock
from rhythm.stack.kafka.settings import (
    AUTO_PORT_ATTEMPTS,
    BROKER_MAIN,
    LOG_ROTATE_BYTES,
    OWNER_ENV,
    STORAGE_TOOL,
    LocalKafkaError,
    LocalKafkaSettings,
    new_cluster_id,
    render_server_properties,
    tail_lines,
    write_asset,
)
from rhythm.stack.ports import free_ports, port_open, wait_for_port

log = logging.getLogger(__name__)


class LocalKafka(LocalKafkaBase):
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
        return dist_dir(self.settings)

    @property
    def lib_dir(self) -> Path:
        return dist_dir(self.settings) / "lib"

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
        """The directory of the broker's jars, downloading them with Maven if not cached."""
        return fetch_jars(self.settings)

    # -- lifecycle ------------------------------------------------------------------------

    def up(self, topics: Iterable[TopicSpec] | None = None) -> str:
        """Start the broker (or reuse the one already running from this home) and create
        ``topics`` (None: DEFAULT_TOPICS; an empty iterable: none). Returns ``host:port``."""
        with file_lock(self.home / ".lock"):
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
        java = java_binary(self.settings)
        self.home.mkdir(parents=True, exist_ok=True)
        write_asset("log4j2.yaml", self.home)
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
            cluster_id = new_cluster_id()
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
            *self.settings.jvm_options,
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
        with file_lock(self.home / ".lock"):
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
        with file_lock(self.home / ".lock"):
            pid = self._live_pid()
            if pid is None:
                self._remove_runtime_files()
                return False
            self._terminate(pid, 30.0, signal.SIGKILL)
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
        return alive(pid)

    def _live_pid(self) -> int | None:
        """The pid in the pid file if that process is alive and is this home's broker."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if not self._alive(pid):
            return None
        argv = cmdline(pid)
        if argv is not None and str(self.server_properties) not in argv:
            return None  # the pid was reused by an unrelated process
        return pid

    def _target(self, pid: int) -> subprocess.Popen[bytes] | int:
        """The broker's Popen when this object started it (so that it is reaped), else its pid."""
        return self._proc if self._proc is not None and self._proc.pid == pid else pid

    def _terminate(self, pid: int, timeout: float, sig: int = signal.SIGTERM) -> None:
        """Stop the broker's process group: `sig`, then SIGKILL after `timeout` s."""
        stop_group(self._target(pid), timeout, sig=sig)
        if self._proc is not None and self._proc.pid == pid and self._proc.poll() is not None:
            self._proc = None

    def _remove_runtime_files(self) -> None:
        self.pid_file.unlink(missing_ok=True)

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
        return tail_lines(text, lines) or "(empty log)"


class _AddressInUseError(LocalKafkaError):
    """The broker could not bind its ports (automatic ports taken between choice and bind)."""
