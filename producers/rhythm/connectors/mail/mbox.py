"""`rhythm import mbox FILE|DIR`: mbox files and Maildirs (Maildir++ folders too).

A FILE is an mbox. A DIR is a Maildir (it has cur/ and new/; its `.Folder` subfolders are
read too), or a tree searched for mbox files (a first line starting "From ") and Maildirs.
Each message's header block is read up to its first blank line; the body is never read into
the parser. The mailbox name (a tag on the events) is the mbox file's stem ("Sent.mbox" ->
Sent), "INBOX" for a Maildir's root, the folder name for a Maildir++ folder. The delivery
time that checks the Date is the mbox From_ line's date or the Maildir file's mtime.

The whole import is threaded together (parents first, whatever file they are in), then
published in batches; re-importing, or importing overlapping files, publishes nothing twice.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path

from rhythm.connectors.mail.headers import parse_headers
from rhythm.connectors.mail.mapping import Source, occurred_at
from rhythm.connectors.mail.pipeline import MailPipeline, RawMessage
from rhythm.schemas.rules import epoch_millis

log = logging.getLogger("rhythm.connectors.mail")
MAX_HEADER_BYTES = 1 << 20  # a header block larger than this is cut there


@dataclass(frozen=True, slots=True)
class ImportResult:
    mailboxes: int
    messages: int
    events: int
    skipped: int


def is_maildir(path: Path) -> bool:
    return (path / "cur").is_dir() and (path / "new").is_dir()


def is_mbox(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(5) == b"From "
    except OSError:
        return False


def sources(path: Path) -> Iterator[tuple[str, Path, str]]:
    """(mailbox name, path, "mbox"|"maildir") for everything importable under `path`."""
    if path.is_file():
        yield _mbox_name(path), path, "mbox"
        return
    if is_maildir(path):
        yield "INBOX", path, "maildir"
        for sub in sorted(path.iterdir()):
            if sub.name.startswith(".") and sub.is_dir() and is_maildir(sub):
                yield sub.name.lstrip(".").replace(".", "/"), sub, "maildir"
        return
    for root, dirs, files in os.walk(path):
        here = Path(root)
        for d in sorted(dirs):
            if is_maildir(here / d):
                yield from sources(here / d)
        dirs[:] = [d for d in sorted(dirs) if not is_maildir(here / d) and d not in _MAILDIR]
        for name in sorted(files):
            if is_mbox(here / name):
                yield _mbox_name(here / name), here / name, "mbox"


_MAILDIR = {"cur", "new", "tmp"}


def _mbox_name(path: Path) -> str:
    return path.name.removesuffix(".mbox") if path.suffix == ".mbox" else path.name


def read_mbox(path: Path, mailbox: str) -> Iterator[RawMessage]:
    """Each message's From_ line date and header block, streaming (no whole-file read)."""
    with path.open("rb") as f:
        from_line: bytes | None = None
        header: list[bytes] = []
        in_header = False
        size = 0
        after_blank = True  # a separator starts the file or follows a blank line
        for line in f:
            if line.startswith(b"From ") and after_blank and not in_header:
                if from_line is not None:
                    yield _raw(b"".join(header), mailbox, _from_date(from_line))
                from_line, header, in_header, size = line, [], True, 0
                after_blank = False
                continue
            after_blank = line in (b"\n", b"\r\n")
            if in_header:
                if line in (b"\n", b"\r\n"):
                    in_header = False
                elif size < MAX_HEADER_BYTES:
                    header.append(line)
                    size += len(line)
        if from_line is not None:
            yield _raw(b"".join(header), mailbox, _from_date(from_line))


def read_maildir(path: Path, mailbox: str) -> Iterator[RawMessage]:
    for sub in ("new", "cur"):
        folder = path / sub
        for name in sorted(os.listdir(folder)):
            file = folder / name
            if name.startswith(".") or not file.is_file():
                continue
            header: list[bytes] = []
            size = 0
            with file.open("rb") as f:
                for line in f:
                    if line in (b"\n", b"\r\n") or size >= MAX_HEADER_BYTES:
                        break
                    header.append(line)
                    size += len(line)
            mtime = datetime.fromtimestamp(file.stat().st_mtime, UTC)
            yield _raw(b"".join(header), mailbox, mtime)


def _raw(header: bytes, mailbox: str, delivered: datetime | None) -> RawMessage:
    return RawMessage(header + b"\n", Source(mailbox, delivered))


def _from_date(line: bytes) -> datetime | None:
    # "From sender@example.com Mon Sep  7 09:12:00 2026"
    parts = line.decode("ascii", "replace").split(None, 2)
    if len(parts) < 3:
        return None
    try:
        when = parsedate_to_datetime(parts[2].strip())
    except (TypeError, ValueError, IndexError):
        return None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


def import_path(pipeline: MailPipeline, path: Path, batch: int = 1000) -> ImportResult:
    """Import every mailbox under `path`: thread them all together, publish in batches."""
    raws: list[RawMessage] = []
    boxes = 0
    for mailbox, where, kind in sources(path):
        boxes += 1
        reader = read_mbox if kind == "mbox" else read_maildir
        raws.extend(reader(where, mailbox))
    # Parents before children: thread roots then come out the same as on a live sync.
    keyed = []
    for raw in raws:
        h = parse_headers(raw.header)
        when = occurred_at(h, raw.source.delivered, pipeline.settings)
        keyed.append((epoch_millis(when[0]) if when else 0, raw))
    keyed.sort(key=lambda k: k[0])
    before = dict(pipeline.counts)
    events = 0
    for i in range(0, len(keyed), batch):
        events += pipeline.process([raw for _, raw in keyed[i : i + batch]])
    skipped = pipeline.counts["skipped_no_sender_or_date"] - before.get(
        "skipped_no_sender_or_date", 0
    )
    return ImportResult(boxes, len(raws), events, skipped)
