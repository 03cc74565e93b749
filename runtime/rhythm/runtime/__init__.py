"""rhythm.runtime: what every running part of Rhythm shares (the client, the processors, the
sink, the notifier, the stack's CLI): Kafka connection settings, end offsets and lag, the
health server, metrics conventions, process helpers. Its dependencies are the client's own
(confluent-kafka, pydantic, prometheus-client), so the client stays light."""
