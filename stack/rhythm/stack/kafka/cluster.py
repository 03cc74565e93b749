"""Several local Kafka nodes as one KRaft cluster (``--brokers N``), and ``open_local_kafka``:
the node or the cluster a home holds."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rhythm.schemas.topics import DEFAULT_TOPICS, TopicSpec
from rhythm.stack.kafka.admin import LocalKafkaBase
from rhythm.stack.kafka.lock import file_lock
from rhythm.stack.kafka.node import LocalKafka
from rhythm.stack.kafka.settings import LocalKafkaError, LocalKafkaSettings, new_cluster_id
from rhythm.stack.ports import free_ports

log = logging.getLogger(__name__)

#: In a cluster's home: its size, cluster id and every node's ports (``rhythm kafka status``).
CLUSTER_FILE = "cluster.json"


class LocalKafkaCluster(LocalKafkaBase):
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
        cluster_id = str(state.get("cluster_id") or new_cluster_id())
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

    def up(self, topics: Iterable[TopicSpec] | None = None) -> str:
        """Start every node that is not running (all at once: a node serves clients only once
        a quorum of controllers is up) and create ``topics`` (None: DEFAULT_TOPICS; empty:
        none). Returns the bootstrap list."""
        with file_lock(self.home / ".lock"):
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
