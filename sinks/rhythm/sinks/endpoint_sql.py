"""The old name of `rhythm.sinks.endpoint.sql`, kept only because `rhythm query`
(deploy/rhythm/stack/sink_cli.py, outside the sink) imports it so: delete this module once
the CLI imports `rhythm.sinks.endpoint.sql`."""

from rhythm.sinks.endpoint.sql import output_format

__all__ = ["output_format"]
