#!/usr/bin/env bash
# Rhythm's topics on a Kafka cluster: the partitions and configs of
# rhythm.schemas.topics.DEFAULT_TOPICS (tests/unit/test_deploy_files.py checks that they
# agree), replicated three times with min.insync.replicas=2 so that an acks=all write
# survives one broker down. Idempotent (--if-not-exists). The processors create their
# internal rhythm.updates topic and Faust's changelogs themselves, with
# RHYTHM_PROCESSOR_REPLICATION_FACTOR.
#   BOOTSTRAP=host:port[,...] REPLICATION_FACTOR=3 MIN_INSYNC_REPLICAS=2 create-topics.sh
set -euo pipefail

BOOTSTRAP=${BOOTSTRAP:-kafka-1:9092}
REPLICATION_FACTOR=${REPLICATION_FACTOR:-3}
MIN_INSYNC_REPLICAS=${MIN_INSYNC_REPLICAS:-2}
KAFKA_TOPICS=${KAFKA_TOPICS:-/opt/kafka/bin/kafka-topics.sh}

create() { # name partitions [config=value ...]
    local name=$1 partitions=$2
    shift 2
    local configs=(--config "min.insync.replicas=${MIN_INSYNC_REPLICAS}")
    for config in "$@"; do
        configs+=(--config "$config")
    done
    "$KAFKA_TOPICS" --bootstrap-server "$BOOTSTRAP" --create --if-not-exists \
        --topic "$name" --partitions "$partitions" \
        --replication-factor "$REPLICATION_FACTOR" "${configs[@]}"
}

create rhythm.events 4 cleanup.policy=delete retention.ms=604800000 \
    message.timestamp.type=CreateTime max.message.bytes=1048576
create rhythm.history 1 cleanup.policy=delete retention.ms=604800000 \
    message.timestamp.type=CreateTime max.message.bytes=1048576
create rhythm.signals 4 cleanup.policy=delete retention.ms=604800000
create rhythm.alerts 2 cleanup.policy=delete retention.ms=2592000000
create rhythm.dead_letters 1 cleanup.policy=delete retention.ms=2592000000
create rhythm.people 2 cleanup.policy=compact
create rhythm.notifications 2 cleanup.policy=compact
create rhythm.feedback 2 cleanup.policy=delete retention.ms=31536000000
