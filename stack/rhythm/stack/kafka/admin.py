"""What a local node and a local cluster offer alike: an admin client, topics, Kafka's tools
and perf runs."""

from __future__ import annotations

import json
import logging
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from rhythm.schemas.topics import TopicSpec
from rhythm.stack.kafka.jars import run_tool
from rhythm.stack.kafka.perf import parse_consumer_perf, parse_producer_perf
from rhythm.stack.kafka.settings import (
    CONSUMER_PERF,
    PRODUCER_PERF,
    LocalKafkaError,
    LocalKafkaSettings,
)

log = logging.getLogger(__name__)


class LocalKafkaBase:
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

    @property
    def state_file(self) -> Path:
        """Where the last start recorded hosts and ports (``rhythm kafka status/down``)."""
        raise NotImplementedError

    def _read_state(self) -> dict[str, Any]:
        """The object in state_file; {} when there is none or it is unreadable."""
        try:
            state = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    def run_tool(
        self,
        main_class: str,
        args: list[str],
        timeout: float = 300.0,
        *,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Run a Java main class from the broker's jars (e.g. a perf tool) and wait for it."""
        return run_tool(self.settings, main_class, args, timeout, check=check)

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
