"""rhythm.collector: the HTTP collector (`rhythm collector`, docs/collector.md).

Services that are not Python (Go, Java, Node, browsers) send events over HTTP: Rhythm's
canonical JSON on `/v1/events`, or Segment's Tracking API (`/v1/track`, `/v1/batch`,
`/v1/identify`). Authenticated by per-tenant write keys, rate-limited, and answered 200 only
once Kafka acknowledged, through the client library's producer.

| module | step |
| --- | --- |
| settings.py | `CollectorSettings` (`RHYTHM_COLLECTOR_*`) |
| keys.py | write keys: hashed file, `rhythm keys`, Authorization header |
| body.py | body limits, gzip under a cap, JSON |
| ratelimit.py | token buckets per key and per tenant |
| items.py, canonical.py, segment.py | messages → events / people (ids, clock skew) |
| publisher.py | the client's producer with per-request acknowledgement, bounded buffer |
| metrics.py | Prometheus metrics on the collector's own registry |
| handlers.py, app.py | the aiohttp handlers and server |
"""
