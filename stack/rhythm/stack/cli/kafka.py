"""`rhythm kafka ...`: the local Apache Kafka (one node, or `--brokers N`) from a shell."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from rhythm.schemas.topics import TopicSpec
from rhythm.stack.kafka import (
    LocalKafka,
    LocalKafkaCluster,
    LocalKafkaError,
    LocalKafkaSettings,
    open_local_kafka,
)

app = typer.Typer(
    name="kafka",
    help="The local Apache Kafka (KRaft: one node, or a cluster with --brokers N), assembled "
    "from Maven Central.",
    no_args_is_help=True,
    add_completion=False,
)

T = TypeVar("T")

HomeOption = Annotated[
    Path | None,
    typer.Option(
        help="Broker home (config, data, log). Default: $RHYTHM_KAFKA_LOCAL_HOME or "
        "<repo>/.rhythm/kafka.",
        show_default=False,
    ),
]


def _kafka(**overrides: Any) -> LocalKafka | LocalKafkaCluster:
    """The local Kafka (a node or the cluster living in its home) from the environment plus
    the command line's explicit options."""
    given = {key: value for key, value in overrides.items() if value is not None}
    try:
        settings = LocalKafkaSettings(**given)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'settings'}: {error['msg']}"
            for error in exc.errors()
        )
        _fail(f"invalid settings (options or RHYTHM_KAFKA_LOCAL_* variables): {problems}")
    return open_local_kafka(settings)


def _fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


def _run(action: Callable[[], T]) -> T:
    """Run ``action``; expected failures become a message and exit code 1, not a traceback."""
    try:
        return action()
    except LocalKafkaError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None


@app.callback()
def _setup(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(
            level=logging.DEBUG if verbose else logging.INFO,
            format="%(message)s",
            stream=sys.stderr,
        )
    elif verbose:
        root.setLevel(logging.DEBUG)


@app.command()
def fetch(home: HomeOption = None) -> None:
    """Assemble the broker's jars from Maven Central into the cache (once; fast afterwards)."""
    kafka = _kafka(home=home)
    lib = _run(kafka.fetch)
    typer.echo(f"Kafka {kafka.settings.version}: {lib}")


@app.command()
def up(
    port: Annotated[
        int | None, typer.Option(help="Client port (default 9092; 0 = a free one).")
    ] = None,
    controller_port: Annotated[
        int | None, typer.Option(help="Controller port (default 9093; 0 = a free one).")
    ] = None,
    home: HomeOption = None,
    topics: Annotated[bool, typer.Option(help="Create the default topics (idempotent).")] = True,
    brokers: Annotated[
        int | None,
        typer.Option(
            help="Nodes (default 1). N > 1: N KRaft nodes, each broker and controller, ports "
            "port+2i / controller-port+2i; topics get 3 replicas, min.insync.replicas 2.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Start the broker(s) in the background (or reuse the running ones) and create the
    topics."""
    kafka = _kafka(port=port, controller_port=controller_port, home=home, brokers=brokers)
    single_here = (kafka.home / "data" / "meta.properties").is_file()
    if (brokers is not None and brokers != kafka.settings.brokers) or (
        isinstance(kafka, LocalKafkaCluster) and single_here
    ):
        _fail(
            f"{kafka.home} holds a {1 if single_here else kafka.settings.brokers}-node Kafka; "
            f"remove it (its data is lost) or choose another --home for {brokers} nodes"
        )
    bootstrap = _run(lambda: kafka.up(None if topics else ()))
    info = kafka.status()
    typer.echo(
        f"Kafka {kafka.settings.version} is up at {bootstrap} "
        f"(pid {info['pid']}, log {info['log']})"
    )


@app.command()
def down(
    home: HomeOption = None,
    timeout: Annotated[
        float | None, typer.Option(help="Seconds before SIGKILL (default 30).", show_default=False)
    ] = None,
) -> None:
    """Stop the broker (controlled shutdown; SIGKILL after --timeout). Data is kept."""
    kafka = _kafka(home=home)
    if _run(lambda: kafka.down(timeout)):
        typer.echo("Kafka stopped")
    else:
        typer.echo(f"Kafka is not running (home {kafka.home})")


@app.command()
def restart(home: HomeOption = None) -> None:
    """Stop and start the broker on the same home and ports."""
    kafka = _kafka(home=home)
    typer.echo(f"Kafka is up at {_run(kafka.restart)}")


@app.command()
def status(
    home: HomeOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Whether the broker runs, where, and its topics. Exit code 0 if running, else 3."""
    kafka = _kafka(home=home)
    info = _run(kafka.status)
    if as_json:
        typer.echo(json.dumps(info, indent=2))
    else:
        _print_status(info)
    if not info["running"]:
        raise typer.Exit(3)


def _print_status(info: dict[str, Any]) -> None:
    state = "running" if info["running"] else "stopped"
    rows = [
        ("state", state),
        ("pid", str(info["pid"] or "-")),
        ("bootstrap", info["bootstrap"]),
        ("version", info["version"]),
        ("home", info["home"]),
        ("log", info["log"]),
    ]
    topics: dict[str, int] = info["topics"]
    console = Console()
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        style = {"running": "green", "stopped": "red"}.get(value, "") if key == "state" else ""
        table.add_row(key, f"[{style}]{value}[/]" if style else value)
    console.print(table)
    if info.get("nodes"):
        node_table = Table(title="nodes", title_justify="left")
        for column in ("node", "state", "pid", "address"):
            node_table.add_column(column)
        for node in info["nodes"]:
            node_state = "[green]running[/]" if node["running"] else "[red]stopped[/]"
            node_table.add_row(
                str(node["node_id"]), node_state, str(node["pid"] or "-"), node["bootstrap"]
            )
        console.print(node_table)
    if topics:
        topic_table = Table(title="topics", title_justify="left")
        topic_table.add_column("name")
        topic_table.add_column("partitions", justify="right")
        for name, partitions in topics.items():
            topic_table.add_row(name, str(partitions))
        console.print(topic_table)
    if "topics_error" in info:
        console.print(f"[yellow]{info['topics_error']}[/]")


def _parse_props(values: list[str] | None) -> dict[str, str]:
    props: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            _fail(f"--prop expects KEY=VALUE, got {item!r}")
        props[key.strip()] = value.strip()
    return props


def _print_numbers(title: str, stats: dict[str, float]) -> None:
    typer.echo(title)
    for key, value in stats.items():
        typer.echo(f"  {key:<20} {value:,.2f}")


@app.command("perf-producer")
def perf_producer(
    *,
    topic: Annotated[str, typer.Option(help="Topic (created if missing).")] = "rhythm.perf",
    num_records: Annotated[int, typer.Option(help="Records to send.")] = 100_000,
    record_size: Annotated[int, typer.Option(help="Bytes per record.")] = 512,
    throughput: Annotated[int, typer.Option(help="Records/s cap (-1: none).")] = -1,
    partitions: Annotated[int, typer.Option(help="Partitions if the topic is created.")] = 4,
    prop: Annotated[
        list[str] | None, typer.Option(help="Producer property KEY=VALUE (repeatable).")
    ] = None,
    home: HomeOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Kafka's ProducerPerformance against the local broker."""
    kafka = _kafka(home=home)
    props = _parse_props(prop)

    def action() -> dict[str, float]:
        if kafka.is_running():
            kafka.create_topics([TopicSpec(topic, partitions, {})])
        return kafka.producer_perf(topic, num_records, record_size, throughput, props)

    stats = _run(action)
    if as_json:
        typer.echo(json.dumps(stats))
    else:
        _print_numbers(f"ProducerPerformance on {topic} at {kafka.bootstrap}", stats)


@app.command("perf-consumer")
def perf_consumer(
    *,
    topic: Annotated[str, typer.Option(help="Topic to read.")] = "rhythm.perf",
    messages: Annotated[int, typer.Option(help="Records to read.")] = 100_000,
    timeout_ms: Annotated[int, typer.Option(help="Stop when idle this long.")] = 10_000,
    group: Annotated[str | None, typer.Option(help="Consumer group (default: fresh).")] = None,
    home: HomeOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Kafka's ConsumerPerformance against the local broker (from the earliest offset)."""
    kafka = _kafka(home=home)

    stats = _run(lambda: kafka.consumer_perf(topic, messages, group=group, timeout_ms=timeout_ms))
    if as_json:
        typer.echo(json.dumps(stats))
    else:
        _print_numbers(f"ConsumerPerformance on {topic} at {kafka.bootstrap}", stats)
