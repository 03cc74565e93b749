"""Scale-out configuration without a broker: a cluster's nodes and their server.properties,
and what each of several processor workers gets of its own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from rhythm.processors.settings import ProcessorSettings
from rhythm.runtime.kafka_settings import KafkaSettings
from rhythm.stack.kafka import (
    LocalKafka,
    LocalKafkaCluster,
    LocalKafkaError,
    LocalKafkaSettings,
    open_local_kafka,
    render_server_properties,
)
from rhythm.stack.supervisor.workers import worker_env

from .test_kafka_config import parse_properties


def cluster(tmp_path: Path, **settings: object) -> LocalKafkaCluster:
    return LocalKafkaCluster(LocalKafkaSettings(home=tmp_path, **settings))  # type: ignore[arg-type]


def test_a_cluster_numbers_its_nodes_and_spaces_their_ports(tmp_path: Path) -> None:
    kafka = cluster(tmp_path, brokers=3, port=19092, controller_port=19093)
    assert [n.settings.node_id for n in kafka.nodes] == [1, 2, 3]
    assert [(n.port, n.controller_port) for n in kafka.nodes] == [
        (19092, 19093),
        (19094, 19095),
        (19096, 19097),
    ]
    assert kafka.bootstrap == "127.0.0.1:19092,127.0.0.1:19094,127.0.0.1:19096"
    assert [n.home for n in kafka.nodes] == [tmp_path / f"node-{i}" for i in (1, 2, 3)]
    assert kafka.node(2) is kafka.nodes[1]
    with pytest.raises(LocalKafkaError):
        kafka.node(4)


def test_automatic_ports_are_distinct(tmp_path: Path) -> None:
    kafka = cluster(tmp_path, brokers=3, port=0, controller_port=0)
    ports = [p for n in kafka.nodes for p in (n.port, n.controller_port)]
    assert len(set(ports)) == 6 and all(ports)


def test_overlapping_ports_are_refused(tmp_path: Path) -> None:
    with pytest.raises(LocalKafkaError, match="overlap"):
        cluster(tmp_path, brokers=3, port=19092, controller_port=19094)


def test_every_node_votes_and_topics_get_three_replicas(tmp_path: Path) -> None:
    kafka = cluster(tmp_path, brokers=3, port=19092, controller_port=19093)
    node = kafka.node(2)
    props = parse_properties(
        render_server_properties(
            node.settings,
            port=node.port,
            controller_port=node.controller_port,
            log_dir=node.data_dir,
            voters=node.voters,
        )
    )
    assert props["node.id"] == "2"
    assert props["controller.quorum.voters"] == (
        "1@127.0.0.1:19093,2@127.0.0.1:19095,3@127.0.0.1:19097"
    )
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19094,CONTROLLER://127.0.0.1:19095"
    assert props["log.dirs"] == str(tmp_path / "node-2" / "data")
    assert props["default.replication.factor"] == "3"
    assert props["min.insync.replicas"] == "2"
    for key in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor"):
        assert props[key] == "3", key
    assert props["transaction.state.log.min.isr"] == "2"
    assert kafka.replication_factor == 3


def test_two_nodes_get_two_replicas_and_need_both_for_acks_all(tmp_path: Path) -> None:
    props = parse_properties(
        render_server_properties(
            LocalKafkaSettings(home=tmp_path, brokers=2, port=1, controller_port=2)
        )
    )
    assert (props["default.replication.factor"], props["min.insync.replicas"]) == ("2", "2")


def test_one_node_is_unchanged(tmp_path: Path) -> None:
    props = parse_properties(
        render_server_properties(
            LocalKafkaSettings(home=tmp_path, port=19092, controller_port=19093)
        )
    )
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["default.replication.factor"] == "1"
    assert props["min.insync.replicas"] == "1"
    assert LocalKafka(LocalKafkaSettings(home=tmp_path)).replication_factor == 1


def test_the_layout_is_recorded_and_found_again(tmp_path: Path) -> None:
    kafka = cluster(tmp_path, brokers=3, port=0, controller_port=0)
    cluster_id = kafka._write_layout()
    state = json.loads((tmp_path / "cluster.json").read_text())
    assert state["brokers"] == 3 and state["cluster_id"] == cluster_id
    for node in kafka.nodes:
        assert (node.home / "cluster.id").read_text().strip() == cluster_id
    # Without --brokers, the home's cluster is found, with the same ports.
    again = open_local_kafka(LocalKafkaSettings(home=tmp_path))
    assert isinstance(again, LocalKafkaCluster)
    assert again.bootstrap == kafka.bootstrap
    assert isinstance(open_local_kafka(LocalKafkaSettings(home=tmp_path / "x")), LocalKafka)


def test_each_worker_gets_its_own_state_and_ports(tmp_path: Path) -> None:
    settings = ProcessorSettings(
        kafka=KafkaSettings(bootstrap_servers="a:1,b:2,c:3"),
        data_dir=tmp_path,
        metrics_port=9465,
        web_port=0,
    )
    envs = [worker_env(settings, i) for i in range(3)]
    assert [e["RHYTHM_PROCESSOR_DATA_DIR"] for e in envs] == [
        str(tmp_path / f"worker-{i}") for i in range(3)
    ]
    assert [e["RHYTHM_PROCESSOR_METRICS_PORT"] for e in envs] == ["9465", "9466", "9467"]
    assert {e["RHYTHM_PROCESSOR_WEB_PORT"] for e in envs} == {"0"}
    assert {e["RHYTHM_KAFKA_BOOTSTRAP_SERVERS"] for e in envs} == {"a:1,b:2,c:3"}
    assert all("RHYTHM_PROCESSOR_INSTANCE_ID" not in e for e in envs)  # dynamic membership


def test_each_worker_of_a_static_group_gets_its_own_instance_id(tmp_path: Path) -> None:
    settings = ProcessorSettings(data_dir=tmp_path, instance_id="rhythm-processors-0")
    envs = [worker_env(settings, i) for i in range(2)]
    ids = [e["RHYTHM_PROCESSOR_INSTANCE_ID"] for e in envs]
    assert ids == ["rhythm-processors-0-0", "rhythm-processors-0-1"]
    with pytest.raises(ValidationError, match="instance_id"):
        ProcessorSettings(instance_id="two words")


def test_cli_status_of_a_stopped_cluster_lists_its_nodes(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from rhythm.stack.cli.kafka import app

    cluster(tmp_path, brokers=3, port=29092, controller_port=29093)._write_layout()
    result = CliRunner().invoke(app, ["status", "--home", str(tmp_path), "--json"])
    assert result.exit_code == 3, result.output  # not running
    info = json.loads(result.output)
    assert info["brokers"] == 3 and not info["running"]
    assert [n["bootstrap"] for n in info["nodes"]] == [
        "127.0.0.1:29092",
        "127.0.0.1:29094",
        "127.0.0.1:29096",
    ]
    # A cluster's home refuses another size.
    result = CliRunner().invoke(app, ["up", "--home", str(tmp_path), "--brokers", "2"])
    assert result.exit_code == 1 and "3-node" in result.output
