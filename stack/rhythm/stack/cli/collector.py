"""`rhythm collector` (the HTTP collector) and `rhythm keys create|list|revoke` (its write
keys). Settings come from `RHYTHM_COLLECTOR_*` / `RHYTHM_CLIENT_*` / `RHYTHM_KAFKA_*`; the
options here override them. See docs/collector.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError

from rhythm.stack.cli.foreground import fail, invalid_settings, run_in_foreground, setup_logging

if TYPE_CHECKING:
    from rhythm.collector.settings import CollectorSettings

keys_app = typer.Typer(
    help="The collector's write keys (one tenant each, stored hashed).", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.command("collector")(collector)
    app.add_typer(keys_app, name="keys")


def _settings(**given: Any) -> CollectorSettings:
    from rhythm.collector.settings import CollectorSettings

    values = {k: v for k, v in given.items() if v is not None}
    try:
        return CollectorSettings(**values)
    except ValidationError as exc:
        invalid_settings(exc, "RHYTHM_COLLECTOR_*")


KeysFile = Annotated[
    Path | None,
    typer.Option(
        help="The keys file (default $RHYTHM_COLLECTOR_KEYS_FILE or <home>/collector-keys.json)."
    ),
]


def collector(
    port: Annotated[int | None, typer.Option(help="Port (default 8088; 0 = a free one).")] = None,
    host: Annotated[str | None, typer.Option(help="Address (default 127.0.0.1).")] = None,
    keys_file: KeysFile = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Run the HTTP collector in the foreground: /v1/events (canonical JSON) and Segment's
    /v1/track, /v1/batch, /v1/identify in; Kafka out. Answers 200 only once Kafka
    acknowledged. /healthz, /readyz and /metrics on the same port. SIGTERM or Ctrl-C: finishes
    the requests in hand, flushes, exits. Prints one JSON line when ready."""
    from rhythm.collector.app import run_collector

    setup_logging(verbose)
    settings = _settings(port=port, host=host, keys_file=keys_file)
    run_in_foreground(
        "collector",
        "rhythm.collector",
        "stopping",
        lambda stop, ready: run_collector(settings, stop, ready),
    )


def _store(keys_file: Path | None) -> Any:
    from rhythm.collector.keys import KeyStore

    return KeyStore(keys_file or _settings().keys_file)


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Argument(help="The tenant every event sent with it belongs to.")],
    name: Annotated[str, typer.Option(help="What it is for, e.g. checkout-service.")] = "",
    keys_file: KeysFile = None,
) -> None:
    """Create a write key. Prints it once (JSON: key, id, tenant): only its hash is kept."""
    try:
        key, record = _store(keys_file).create(tenant, name)
    except ValueError as exc:
        fail(str(exc), 2)
    typer.echo(json.dumps({"key": key, **record.public()}))


@keys_app.command("list")
def keys_list(keys_file: KeysFile = None) -> None:
    """The keys: id, tenant, name, created, revoked (never the key or its hash)."""
    for record in _store(keys_file).records():
        typer.echo(json.dumps(record.public()))


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (key_...), from `rhythm keys list`.")],
    keys_file: KeysFile = None,
) -> None:
    """Revoke a key: a running collector refuses it from its next request on (401)."""
    try:
        record = _store(keys_file).revoke(key_id)
    except KeyError:
        fail(f"no key {key_id}", 2)
    typer.echo(json.dumps(record.public()))
