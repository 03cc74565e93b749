"""ClickHouse's HTTP interface conventions the endpoint follows: which URL parameters are
the protocol's own (the rest are settings), which formats stream, their content types, the
HTTP status for an error code, and a request's parameters and body once read. Pure."""

from __future__ import annotations

from collections.abc import Iterator

__all__ = [
    "STREAMABLE",
    "TRANSPORT_PARAMS",
    "Request",
    "content_type",
    "http_status",
    "protocol_version",
]

#: URL parameters that are the protocol's own, not settings for the engine.
TRANSPORT_PARAMS = frozenset(
    {
        "query", "database", "default_format", "session_id", "session_timeout",
        "session_check", "query_id", "user", "password", "quota_key", "compress",
        "decompress", "buffer_size", "wait_end_of_query", "client_protocol_version", "role",
        "stacktrace", "enable_http_compression", "send_progress_in_http_headers",
        "http_headers_progress_interval_ms", "cancel_http_readonly_queries_on_client_close",
        "http_zlib_compression_level", "http_response_buffer_size", "add_http_cors_header",
    }
)  # fmt: skip
#: formats whose blocks can be sent one after another as they come
STREAMABLE = frozenset(
    {"Native", "TabSeparated", "TSV", "TabSeparatedRaw", "TSVRaw", "CSV", "RowBinary",
     "JSONEachRow", "JSONCompactEachRow", "Values", "LineAsString"}
)  # fmt: skip
_CONTENT_TYPES = {
    "Native": "application/octet-stream",
    "RowBinary": "application/octet-stream",
    "RowBinaryWithNamesAndTypes": "application/octet-stream",
    "Arrow": "application/octet-stream",
    "ArrowStream": "application/octet-stream",
    "Parquet": "application/octet-stream",
    "JSON": "application/json; charset=UTF-8",
    "JSONCompact": "application/json; charset=UTF-8",
    "JSONEachRow": "application/x-ndjson; charset=UTF-8",
    "CSV": "text/csv; charset=UTF-8; header=absent",
    "CSVWithNames": "text/csv; charset=UTF-8; header=present",
}
_STATUS = {
    516: 401, 62: 400, 115: 400, 60: 404, 81: 404, 164: 403, 202: 503, 48: 501, 497: 403,
    307: 413, 203: 503,
}  # fmt: skip


def content_type(fmt: str) -> str:
    if fmt in _CONTENT_TYPES:
        return _CONTENT_TYPES[fmt]
    if fmt.startswith(("TabSeparated", "TSV")):
        return "text/tab-separated-values; charset=UTF-8"
    return "text/plain; charset=UTF-8"


def http_status(code: int) -> int:
    """The HTTP status a server answers a ClickHouse error code with (500 for most)."""
    return _STATUS.get(code, 500)


def protocol_version(params: dict[str, str]) -> int:
    """The client's Native protocol revision (`client_protocol_version`; 0 = none)."""
    try:
        return max(0, int(params.get("client_protocol_version") or 0))
    except ValueError:
        return 0


class Request:
    """A parsed request: parameters, and the body as a stream of decoded chunks."""

    def __init__(self, params: dict[str, str], body: Iterator[bytes]) -> None:
        self.params = params
        self.body = body

    def settings(self) -> dict[str, str]:
        return {
            k: v
            for k, v in self.params.items()
            if k not in TRANSPORT_PARAMS and not k.startswith("param_")
        }

    def bind(self) -> dict[str, str]:
        return {k[6:]: v for k, v in self.params.items() if k.startswith("param_")}
