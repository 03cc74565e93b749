"""A client set up for bulk publishing (`rhythm ingest`, `rhythm simulate`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from rhythm.producers import Client, ClientSettings


@contextmanager
def publishing_client(settings: ClientSettings, flush_timeout: float) -> Iterator[Client]:
    """A client that never drops: a full queue waits for room as long as we would wait for
    delivery. On leaving, it waits up to `flush_timeout` for delivery and then gives up what
    is left; everything given up is counted in `client.stats` (see `given_up`)."""
    client = Client(
        settings.model_copy(update={"full_queue_policy": "block", "block_timeout_s": flush_timeout})
    )
    try:
        yield client
        client.flush(flush_timeout)
    finally:
        client.close(0)


def given_up(client: Client) -> Counter[str]:
    """Every event the client gave up, by reason: failed deliveries and full-queue drops."""
    return client.stats.failed + client.stats.dropped
