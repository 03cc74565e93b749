"""rhythm.producers: the client library product services use to emit interaction events.

from rhythm.producers import Client
client = Client()
client.track(tenant="acme", actor=("user", "u-42"), verb="replied", object=("message", "m-1"))
"""

from rhythm.producers.client import Client, ClientClosedError, ErrorCallback
from rhythm.producers.config import ClientSettings
from rhythm.producers.prepare import partition_key, prepare_event
from rhythm.runtime.kafka_settings import KafkaSettings

__all__ = [
    "Client",
    "ClientClosedError",
    "ClientSettings",
    "ErrorCallback",
    "KafkaSettings",
    "partition_key",
    "prepare_event",
]
