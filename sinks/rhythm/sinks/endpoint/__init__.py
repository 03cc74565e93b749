"""A ClickHouse HTTP interface over the embedded store, served by the running sink.

The embedded engine can be opened by one process only, so while the sink runs, analysts and
tools reach the store through this endpoint, exactly as they would a server:
`clickhouse_connect.get_client(host='127.0.0.1', port=8123)` or
`curl 'http://127.0.0.1:8123/?query=SELECT+1'`.

What it implements of ClickHouse's protocol (enough for clickhouse-connect's connect
sequence, query(), command(), insert(), raw_query/raw_stream, and curl):
- the query from the `query` parameter, the body, or both; `INSERT ... FORMAT f` followed by
  its data, streamed into the engine; multipart form fields;
- `param_<name>` query parameters, `database`, `default_format`, `session_id`/`session_timeout`
  (a session keeps its own handle, SET and USE state), `query_id`; any other parameter is a
  setting for that request;
- request bodies in chunked transfer and lz4/zstd/gzip/deflate/br Content-Encoding;
  responses compressed per Accept-Encoding (unless `enable_http_compression=0`);
- X-ClickHouse-Query-Id, -Format, -Timezone, -Summary, -Server-Display-Name headers; errors
  as the server sends them (status, X-ClickHouse-Exception-Code, `Code: N. DB::Exception`);
- results materialized when `wait_end_of_query=1` (what clickhouse-connect's query() asks) or
  the format has a global header, else streamed block by block (chunked);
- the output format from the statement's FORMAT, `default_format` or the
  `X-ClickHouse-Format` request header; `Native` for the client's `client_protocol_version`
  (clickhouse-go: BlockInfo and custom-serialization bytes, `native.py`); statements chdb
  cannot stream (SHOW, DESCRIBE, EXISTS...) materialized whatever `wait_end_of_query` says;
- `/ping`, `/replicas_status`, and `/rhythm/status` (the sink's state as JSON).
Not implemented: external data tables, `/play`; `X-ClickHouse-Progress` is one header with
the totals (results are produced before the headers go, or streamed without progress).

Who may do what (analysts read-only with per-query limits, the admin credential for writes
and DDL, nothing reaching files, processes or the network, no browser-borne requests) is
`policy.py`. Connections are served by at most `max_connections` threads (beyond that: 503
at once), queries run in bounded slots (analysts' and the admin's apart, so analysts cannot
hold up a sink writing through the endpoint), and each analyst user runs at most
`max_queries_per_user` at once.

The modules, in the order a request meets them:

| module | job |
| --- | --- |
| `server.py` | `QueryEndpoint`: the listening server, its connection cap and query slots |
| `handler.py` | one request: route, authenticate, read, run its statement under the policy |
| `protocol.py` | the HTTP interface's conventions: transport parameters, formats, statuses |
| `codecs.py` | request and response bodies: chunked transfer, compressions, size bounds |
| `sql.py` | what a statement is before it runs: INSERT head and data, FORMAT, result or not |
| `policy.py` | who may do what: roles, limits, statement and browser checks |
| `engine.py` | the embedded engine: chdb handles, sessions, streamed queries and inserts |
| `native.py` | `Native` output for a client's protocol revision |
| `responses.py` | writing a response as a server does: headers, results, streams, errors |

This file imports nothing: a module that needs only `sql.py` (e.g. `rhythm query`) does not
load the engine. The endpoint itself is `rhythm.sinks.endpoint.server.QueryEndpoint`.
"""
