"""What the endpoint needs to know about a statement before handing it to chdb. Pure.

ClickHouse's HTTP interface takes the query from the `query` URL parameter, the body, or
both (parameter, newline, body). An `INSERT ... FORMAT <fmt>` is followed by its data; the
data starts after the first newline after the format name, or after the whitespace if there
is no newline (ClickHouse's rule), so binary data is never mistaken for SQL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "InsertHead",
    "error_code",
    "first_word",
    "output_format",
    "produces_result",
    "split_insert",
    "streams",
    "strip_leading_comments",
    "without_format",
]

_LEADING = re.compile(rb"\A(?:\s+|--[^\n]*(?:\n|\Z)|/\*.*?\*/)*", re.DOTALL)
_INSERT = re.compile(
    rb"INSERT\s+INTO\s+(?P<target>.+?)\s+FORMAT\s+(?P<fmt>[A-Za-z][A-Za-z0-9_]*)",
    re.IGNORECASE | re.DOTALL,
)
_NOT_A_TARGET = re.compile(rb"\b(?:VALUES|SELECT|WITH)\b", re.IGNORECASE)
_TRAILING_FORMAT = re.compile(r"\bFORMAT\s+([A-Za-z][A-Za-z0-9_]*)\s*;?\s*\Z", re.IGNORECASE)
_FORMAT_CLAUSE = re.compile(r"\s+FORMAT\s+[A-Za-z][A-Za-z0-9_]*\s*;?\s*\Z", re.IGNORECASE)
_FIRST_WORD = re.compile(r"[A-Za-z]+|\(")
_RESULT_WORDS = frozenset({"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXISTS", "EXPLAIN"})
#: statements chdb can stream (SHOW, DESCRIBE, EXISTS... it cannot)
_STREAM_WORDS = frozenset({"SELECT", "WITH", "("})
_ERROR_CODE = re.compile(r"Code: (\d+)\.")

#: How far into a body we look for the INSERT statement before its data.
MAX_INSERT_HEAD = 256 * 1024


def strip_leading_comments(sql: bytes) -> bytes:
    match = _LEADING.match(sql)
    return sql[match.end() :] if match else sql


@dataclass(frozen=True)
class InsertHead:
    """`INSERT INTO <target> FORMAT <fmt>` and where its data begins in the text."""

    target: str
    fmt: str
    data_start: int


def split_insert(text: bytes) -> InsertHead | None:
    """The INSERT head of `text` if it is an `INSERT ... FORMAT` with inline data."""
    start = len(text) - len(strip_leading_comments(text))
    match = _INSERT.match(text, start, min(len(text), start + MAX_INSERT_HEAD))
    if match is None or _NOT_A_TARGET.search(match.group("target")):
        # `INSERT ... VALUES ('... FORMAT x')` or `INSERT ... SELECT`: plain SQL, no data
        return None
    pos = match.end()
    # ClickHouse: the data starts after the first newline, if there is one, or after all
    # the whitespace characters, otherwise.
    while pos < len(text) and text[pos] in b" \t\f":
        pos += 1
    if pos < len(text) and text[pos] == ord("\r"):
        pos += 1
    if pos < len(text) and text[pos] == ord("\n"):
        pos += 1
    target = match.group("target").decode("utf-8")
    return InsertHead(target=target, fmt=match.group("fmt").decode(), data_start=pos)


def output_format(sql: str, default: str) -> str:
    """The format the result comes in: the statement's own FORMAT clause, else `default`."""
    match = _TRAILING_FORMAT.search(sql)
    return match.group(1) if match else default


def without_format(sql: str) -> str:
    """The statement without its trailing FORMAT clause (if any)."""
    return _FORMAT_CLAUSE.sub("", sql)


def first_word(sql: str) -> str:
    """The statement's first word in upper case, after comments (`(` for a parenthesised
    query, "" for none)."""
    match = _FIRST_WORD.match(strip_leading_comments(sql.encode()).decode("utf-8", "replace"))
    return match.group(0).upper() if match else ""


def produces_result(sql: str) -> bool:
    """Whether a statement returns rows (a server sends X-ClickHouse-Format for those)."""
    word = first_word(sql)
    return word == "(" or word in _RESULT_WORDS


def streams(sql: str) -> bool:
    """Whether the engine can stream the statement's result block by block."""
    return first_word(sql) in _STREAM_WORDS


def error_code(message: str) -> int:
    """The ClickHouse error code in an exception message (1001 = std::exception if none)."""
    match = _ERROR_CODE.search(message)
    return int(match.group(1)) if match else 1001
