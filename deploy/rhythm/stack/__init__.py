"""The local stack: a real Kafka broker assembled from Maven Central, and (later) the
processors, the sink and Prometheus, started and stopped by `rhythm` and the Makefile."""
