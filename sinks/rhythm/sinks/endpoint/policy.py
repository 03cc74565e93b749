"""Who may do what on the query endpoint, and what no one may do there.

- Two roles: the **admin** (one user name and password, for `rhythm migrate`, a second sink
  writing through the endpoint, tests) and **analysts** (every other user name; the analyst
  password if one is configured). Analysts run on a handle with ClickHouse's own
  `readonly = 1` (SELECT, SHOW, DESCRIBE, EXISTS, EXPLAIN; no SET, no SETTINGS clause, no
  table functions but harmless ones, no writes or DDL: the engine refuses them), set by the
  endpoint after the per-query limits. Credentials are compared in constant time.
- A GET never changes anything (as ClickHouse: `readonly = 2` for the admin on a GET).
- Nothing reaches the sink's files, processes or the network, whoever asks: the engine's own
  parser checks each statement (one statement only; `formatQuerySingleLine` refuses
  several), then `EXPLAIN AST` lists every function, table function and engine it names; any
  of the engine's table functions outside a short list of pure ones, the engines that read
  or write outside the store, dictionary sources, `INTO OUTFILE`, BACKUP/RESTORE and SYSTEM
  statements are refused with code 497 (ACCESS_DENIED) before anything runs.
- Browsers: a request naming a foreign `Origin` (or `Sec-Fetch-Site: cross-site`) is refused,
  and so is a `Host` that is neither an IP address, `localhost`, nor a configured name (DNS
  rebinding always comes with a name).
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from pydantic import SecretStr

from rhythm.sinks.endpoint.engine import EngineError

__all__ = [
    "ADMIN",
    "ANALYST",
    "Credentials",
    "Limits",
    "PolicyError",
    "Principal",
    "analyst_settings",
    "check_ast",
    "check_browser",
    "has_outfile",
    "tsv_escape",
]

Role = Literal["admin", "analyst"]
ADMIN: Role = "admin"
ANALYST: Role = "analyst"

#: table functions that only compute (no files, processes or network)
SAFE_TABLE_FUNCTIONS = frozenset(
    {"numbers", "numbers_mt", "zeros", "zeros_mt", "generaterandom", "generate_series",
     "generateseries", "values", "view", "viewifpermitted", "viewexplain", "null", "merge",
     "format", "dictionary", "mergetreeindex", "mergetreeprojection", "primes", "loop",
     "sqlstandardvalues", "timeseriesdata", "timeseriestags", "timeseriesmetrics"}
)  # fmt: skip
#: engines (table and database) that read or write outside the store, lower case
OUTWARD_ENGINES = frozenset(
    {"file", "url", "s3", "s3queue", "hdfs", "mysql", "postgresql", "materializedpostgresql",
     "materializedmysql", "odbc", "jdbc", "mongodb", "redis", "sqlite", "executable",
     "executablepool", "kafka", "rabbitmq", "nats", "filelog", "azureblobstorage",
     "azurequeue", "iceberg", "icebergs3", "deltalake", "hudi", "hive", "distributed",
     "remote", "remotesecure", "cluster", "clusterallreplicas", "input", "gcs", "oss",
     "cosn", "arrowflight", "ytsaurus", "datalakecatalog", "backup", "filesystem"}
)  # fmt: skip
_DENIED_STATEMENTS = ("BackupQuery", "RestoreQuery", "SYSTEM query", "Dictionary definition")
_FUNCTION = re.compile(r"^\s*Function(?:WithKeyValueArguments)?\s+(\S+)", re.MULTILINE)
_KEY_VALUE = re.compile(r"^\s*FunctionWithKeyValueArguments\b", re.MULTILINE)
_STRING = re.compile(r"'(?:[^'\\]|\\.)*'|`(?:[^`\\]|\\.)*`|\"(?:[^\"\\]|\\.)*\"")
_OUTFILE = re.compile(r"\bINTO\s+OUTFILE\b", re.IGNORECASE)


class PolicyError(EngineError):
    """Refused by the endpoint's rules: a ClickHouse code and a message saying why."""


def denied(what: str) -> PolicyError:
    return PolicyError(
        497, f"Code: 497. DB::Exception: {what} is not allowed on this endpoint. (ACCESS_DENIED)"
    )


@dataclass(frozen=True)
class Principal:
    user: str
    role: Role


@dataclass(frozen=True)
class Credentials:
    """The endpoint's users: the admin's name and password, the analysts' password (None:
    analysts need none, loopback only)."""

    admin_user: str
    admin_password: SecretStr
    analyst_password: SecretStr | None = None

    def authenticate(self, user: str, password: str) -> Principal:
        """Constant-time comparisons; the error never says which part was wrong."""
        user = user or "default"
        given = password.encode()
        is_admin_name = hmac.compare_digest(user.encode(), self.admin_user.encode())
        admin_ok = hmac.compare_digest(given, self.admin_password.get_secret_value().encode())
        if is_admin_name:
            if admin_ok:
                return Principal(user, ADMIN)
            raise _auth_failed(user)
        expected = self.analyst_password
        if expected is None:
            return Principal(user, ANALYST)
        if hmac.compare_digest(given, expected.get_secret_value().encode()):
            return Principal(user, ANALYST)
        raise _auth_failed(user)


def _auth_failed(user: str) -> PolicyError:
    safe = re.sub(r"[^A-Za-z0-9_.@-]", "?", user)[:64]
    return PolicyError(
        516,
        f"Code: 516. DB::Exception: {safe}: Authentication failed: password is incorrect, or "
        "there is no user with such name. (AUTHENTICATION_FAILED)",
    )


@dataclass(frozen=True)
class Limits:
    """Per-query limits for analysts (0 = none). An analyst may lower them, never raise."""

    max_execution_time: int = 60
    max_result_rows: int = 0
    max_result_bytes: int = 1024**3
    max_memory_usage: int = 2 * 1024**3
    max_threads: int = 2

    def settings(self) -> dict[str, str]:
        out = {
            "max_execution_time": str(self.max_execution_time),
            "max_result_rows": str(self.max_result_rows),
            "max_result_bytes": str(self.max_result_bytes),
            "max_memory_usage": str(self.max_memory_usage),
            "max_threads": str(self.max_threads),
            "result_overflow_mode": "throw",
            "timeout_overflow_mode": "throw",
        }
        return {k: v for k, v in out.items() if v != "0"}


#: settings an analyst never sets (the limits are clamped separately)
_PROTECTED = frozenset(
    {"readonly", "allow_ddl", "allow_introspection_functions", "max_parser_depth",
     "max_query_size", "max_ast_elements", "max_ast_depth", "max_memory_usage_for_user",
     "max_concurrent_queries_for_user", "max_concurrent_queries_for_all_users",
     "result_overflow_mode", "timeout_overflow_mode", "max_block_size",
     "max_bytes_before_external_group_by", "max_bytes_before_external_sort"}
)  # fmt: skip


def analyst_settings(requested: Mapping[str, str], limits: Limits) -> dict[str, str]:
    """The settings an analyst's request runs with: what it asked for, but the limits only
    ever lowered (a higher or unlimited value becomes the limit, as a `max` constraint
    would) and the protected settings dropped; then the limits the request did not lower."""
    caps = {
        "max_execution_time": limits.max_execution_time,
        "max_result_rows": limits.max_result_rows,
        "max_result_bytes": limits.max_result_bytes,
        "max_memory_usage": limits.max_memory_usage,
        "max_threads": limits.max_threads,
    }
    out: dict[str, str] = {}
    for name, value in requested.items():
        if name in _PROTECTED:
            continue
        cap = caps.get(name)
        if cap is not None and cap:
            try:
                number = int(float(value))
            except ValueError:
                continue
            out[name] = str(min(number, cap) if number > 0 else cap)
        else:
            out[name] = value
    for name, value in limits.settings().items():
        out.setdefault(name, value)
    return out


def tsv_escape(text: str) -> str:
    """A value for a String query parameter (the engine reads them TSV-escaped)."""
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def has_outfile(formatted: str) -> bool:
    """`INTO OUTFILE` in a statement as the engine formatted it (string literals aside)."""
    return bool(_OUTFILE.search(_STRING.sub("''", formatted)))


def check_ast(ast: str, table_functions: Iterable[str]) -> None:
    """Refuse a statement (its `EXPLAIN AST`) that reaches outside the store."""
    outward = {f.lower() for f in table_functions} - SAFE_TABLE_FUNCTIONS | OUTWARD_ENGINES
    first = ast.lstrip().split("\n", 1)[0]
    for kind in _DENIED_STATEMENTS:
        if first.startswith(kind) or f" {kind}" in ast:
            raise denied(kind.replace(" query", "").replace("Query", "").upper())
    if _KEY_VALUE.search(ast):
        raise denied("A dictionary source")
    for name in _FUNCTION.findall(ast):
        if name.lower() in outward:
            raise denied(f"{name}()")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _host_name(value: str) -> str:
    value = value.strip().lower()
    if value.startswith("["):
        return value[: value.find("]") + 1] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def check_browser(
    headers: Mapping[str, str], allowed_hosts: Iterable[str], allowed_origins: Iterable[str]
) -> None:
    """Refuse what only a browser tricked by a web page would send (CSRF, DNS rebinding)."""
    host = headers.get("Host")
    if host is not None:
        name = _host_name(host)
        allowed = {h.lower() for h in allowed_hosts} | {"localhost"}
        if not (_is_ip(name) or name in allowed):
            raise PolicyError(
                497,
                f"Code: 497. DB::Exception: Host {name[:80]!r} is not this endpoint's address "
                "or a configured name (RHYTHM_SINK_HTTP_ALLOWED_HOSTS). (ACCESS_DENIED)",
            )
    origin = headers.get("Origin")
    if origin is not None and origin.rstrip("/") not in {o.rstrip("/") for o in allowed_origins}:
        raise PolicyError(
            497,
            "Code: 497. DB::Exception: requests from web pages (Origin "
            f"{origin[:80]!r}) are refused (RHYTHM_SINK_HTTP_ALLOWED_ORIGINS). (ACCESS_DENIED)",
        )
    if (headers.get("Sec-Fetch-Site") or "").lower() in ("cross-site", "same-site"):
        raise PolicyError(
            497, "Code: 497. DB::Exception: cross-site requests are refused. (ACCESS_DENIED)"
        )
