"""rhythm.connectors: activity people already create elsewhere, turned into contract events
through the client library (`rhythm.producers.Client`)."""
