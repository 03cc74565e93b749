"""`rhythm connect imap` and `rhythm import mbox`: email as activity (docs/mail.md).

Settings come from `RHYTHM_MAIL_*` (the client's from `RHYTHM_KAFKA_*` / `RHYTHM_CLIENT_*`;
our mail domains from the processors' tenant setting); the options here override them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError

from rhythm.stack.cli.foreground import fail, invalid_settings, run_in_foreground, setup_logging

if TYPE_CHECKING:
    from rhythm.connectors.mail.settings import MailSettings

connect_app = typer.Typer(help="Long-running connectors: activity from other systems.")
import_app = typer.Typer(help="One-off imports of existing activity.")


def register(app: typer.Typer) -> None:
    app.add_typer(connect_app, name="connect")
    app.add_typer(import_app, name="import")
    connect_app.command("imap")(connect_imap)
    import_app.command("mbox")(import_mbox)


def _settings(bootstrap: str | None, **given: Any) -> MailSettings:
    from rhythm.connectors.mail.settings import MailSettings
    from rhythm.producers import ClientSettings, KafkaSettings

    values = {k: v for k, v in given.items() if v is not None}
    if bootstrap is not None:
        values["client"] = ClientSettings(kafka=KafkaSettings(bootstrap_servers=bootstrap))
    try:
        return MailSettings(**values)
    except ValidationError as exc:
        invalid_settings(exc, "RHYTHM_MAIL_*")


Bootstrap = Annotated[
    str | None, typer.Option(help="Kafka bootstrap servers (default $RHYTHM_KAFKA_*).")
]
Tenant = Annotated[str | None, typer.Option(help="Whose mail (default $RHYTHM_MAIL_TENANT).")]
StateDir = Annotated[
    Path | None,
    typer.Option(help="Checkpoints and the thread/publish index (default .rhythm/mail-connector)."),
]


def connect_imap(
    tenant: Tenant = None,
    state_dir: StateDir = None,
    bootstrap: Bootstrap = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Sync an IMAP account's mailboxes into rhythm.events, incrementally, until stopped.

    RHYTHM_MAIL_IMAP_HOST, _IMAP_USER, _IMAP_PASSWORD (or _IMAP_PASSWORD_FILE), _MAILBOXES
    (default ["INBOX","Sent"]), _IMAP_SECURITY (tls, starttls, none). Headers only; IDLE on
    the first mailbox, a full pass every _POLL_S. SIGTERM or Ctrl-C: finishes the batch in
    hand and exits. Prints one JSON line when the first pass is done.
    """
    from rhythm.connectors.mail.imap import ImapSync
    from rhythm.connectors.mail.pipeline import MailPipeline
    from rhythm.runtime.health import HealthServer

    setup_logging(verbose)
    settings = _settings(bootstrap, tenant=tenant, state_dir=state_dir)
    try:
        pipeline = MailPipeline(settings)
        sync = ImapSync(settings, pipeline)
    except ValueError as exc:
        fail(str(exc))
    server = None
    if settings.metrics_port:
        server = HealthServer(
            settings.metrics_host, settings.metrics_port, pipeline.metrics.registry, sync.progress
        ).start()

    def run(stop: Any, ready: Any) -> None:
        try:
            sync.run(stop, lambda info: ready({**info, "metrics": server and server.url}))
        finally:
            pipeline.close()
            if server is not None:
                server.stop()

    run_in_foreground("mail connector", "rhythm.connectors.mail", "stopping", run)


def import_mbox(
    path: Annotated[Path, typer.Argument(help="An mbox file, a Maildir, or a folder of them.")],
    tenant: Tenant = None,
    state_dir: StateDir = None,
    bootstrap: Bootstrap = None,
) -> None:
    """Import an mbox file, a Maildir (with its folders) or a tree of them into rhythm.events.

    Threads across all of it; a re-import or an overlapping one publishes nothing twice.
    Prints a JSON summary; exit 1 if Kafka did not take every event (run it again).
    """
    from rhythm.connectors.mail.mbox import import_path
    from rhythm.connectors.mail.pipeline import MailPipeline
    from rhythm.connectors.mail.publish import NotDeliveredError

    setup_logging(False)
    if not path.exists():
        fail(f"{path}: no such file or directory", 2)
    settings = _settings(bootstrap, tenant=tenant, state_dir=state_dir)
    try:
        pipeline = MailPipeline(settings)
    except ValueError as exc:
        fail(str(exc))
    try:
        result = import_path(pipeline, path)
    except NotDeliveredError as exc:
        fail(f"{exc}; what was delivered is recorded, run the import again")
    finally:
        pipeline.close()
    counts = {k: v for k, v in sorted(pipeline.counts.items()) if v}
    typer.echo(
        json.dumps(
            {
                "mailboxes": result.mailboxes,
                "messages": result.messages,
                "events": result.events,
                "skipped": result.skipped,
                "counts": counts,
            }
        )
    )
