"""The local stack and the `rhythm` command line: a real Kafka assembled from Maven Central,
the processors, the sink, the notifier and Prometheus, started and stopped by `rhythm` and the
Makefile; the simulated month and its report."""
