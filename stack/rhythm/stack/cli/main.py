"""`rhythm`: the command line. Each group of commands lives in its own small module."""

from __future__ import annotations

import typer

from rhythm.stack.cli.backfill import register as register_backfill_commands
from rhythm.stack.cli.client import register as register_client_commands
from rhythm.stack.cli.collector import register as register_collector_commands
from rhythm.stack.cli.digest import register as register_digest_commands
from rhythm.stack.cli.kafka import app as kafka_app
from rhythm.stack.cli.mail import register as register_mail_commands
from rhythm.stack.cli.notifier import register as register_notifier_commands
from rhythm.stack.cli.processors import register as register_processor_commands
from rhythm.stack.cli.simulate import register as register_sim_commands
from rhythm.stack.cli.sink import register as register_sink_commands
from rhythm.stack.cli.stack import register as register_stack_commands

app = typer.Typer(
    name="rhythm",
    help="Rhythm: enterprise activity stream.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(kafka_app, name="kafka")
register_client_commands(app)
register_backfill_commands(app)
register_processor_commands(app)
register_sink_commands(app)
register_notifier_commands(app)
register_digest_commands(app)
register_stack_commands(app)
register_sim_commands(app)
register_mail_commands(app)
register_collector_commands(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
