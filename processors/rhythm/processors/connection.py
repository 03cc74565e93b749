"""The shared Kafka settings (rhythm.runtime.kafka_settings) in Faust's terms: broker URLs and
SASL/SSL credentials."""

from __future__ import annotations

from typing import Any

import faust

from rhythm.runtime.kafka_settings import KafkaSettings

__all__ = ["broker_urls", "credentials"]


def broker_urls(k: KafkaSettings) -> list[str]:
    return [f"kafka://{h.strip()}" for h in k.bootstrap_servers.split(",")]


def credentials(k: KafkaSettings) -> Any:
    """Faust's credentials for `k` (None: plaintext)."""
    if k.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL") and k.sasl_username:
        ssl_context = None
        if k.security_protocol == "SASL_SSL":
            import ssl

            ssl_context = ssl.create_default_context(cafile=k.ssl_ca_location)
        return faust.SASLCredentials(
            username=k.sasl_username,
            password=k.sasl_password.get_secret_value() if k.sasl_password else None,
            mechanism=k.sasl_mechanism or "PLAIN",
            ssl_context=ssl_context,
        )
    if k.security_protocol == "SSL":
        import ssl

        context = ssl.create_default_context(cafile=k.ssl_ca_location)
        if k.ssl_certificate_location:
            context.load_cert_chain(
                k.ssl_certificate_location,
                k.ssl_key_location,
                k.ssl_key_password.get_secret_value() if k.ssl_key_password else None,
            )
        return faust.SSLCredentials(context)
    return None
