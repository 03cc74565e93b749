"""A real local Apache Kafka (one KRaft node or a cluster), assembled from Maven Central jars
and started and stopped by the project. The public names, whichever module holds them."""

from rhythm.stack.kafka.cluster import LocalKafkaCluster, open_local_kafka
from rhythm.stack.kafka.node import LocalKafka
from rhythm.stack.kafka.orphans import stop_orphans
from rhythm.stack.kafka.perf import parse_consumer_perf, parse_producer_perf
from rhythm.stack.kafka.settings import (
    LocalKafkaError,
    LocalKafkaSettings,
    asset_text,
    render_server_properties,
)

__all__ = [
    "LocalKafka",
    "LocalKafkaCluster",
    "LocalKafkaError",
    "LocalKafkaSettings",
    "asset_text",
    "open_local_kafka",
    "parse_consumer_perf",
    "parse_producer_perf",
    "render_server_properties",
    "stop_orphans",
]
