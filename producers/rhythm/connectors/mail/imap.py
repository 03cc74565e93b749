"""`rhythm connect imap`: an IMAP account's mailboxes, synced incrementally, for good.

Each pass, per mailbox (EXAMINE: read-only, nothing is marked seen): UIDVALIDITY and the
UIDs after the checkpoint's; then in batches `UID FETCH (BODY.PEEK[HEADER] INTERNALDATE)`
(headers only, PEEK: the \\Seen flag is left alone; Gmail's X-GM-LABELS too when offered),
published through the pipeline, and only then the checkpoint moves. Between passes the
connector IDLEs on the first mailbox (new mail there starts a pass at once) or sleeps,
with a full pass at least every `poll_s`. A lost connection or a Kafka that does not
acknowledge is retried with doubling backoff; the checkpoint never moves past what Kafka
acknowledged.

IMAPClient (https://github.com/mjs/imapclient) rather than the standard library's imaplib:
imaplib in Python 3.11 has no IDLE and leaves FETCH responses as raw bytes to parse by hand
(literals, INTERNALDATE, UIDVALIDITY), which is where such clients go wrong; IMAPClient
parses them, does IDLE and STARTTLS with an `ssl.SSLContext`, and is well maintained.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from rhythm.connectors.mail.checkpoints import Checkpoint, Checkpoints
from rhythm.connectors.mail.mapping import Source
from rhythm.connectors.mail.pipeline import MailPipeline, RawMessage
from rhythm.connectors.mail.publish import NotDeliveredError
from rhythm.connectors.mail.settings import MailSettings
from rhythm.runtime.health import Progress

log = logging.getLogger("rhythm.connectors.mail")
# IMAPClient logs every command at DEBUG (it masks LOGIN, but headers are personal data).
logging.getLogger("imapclient").setLevel(logging.WARNING)

HEADER = b"BODY[HEADER]"
RETRYABLE = (IMAPClientError, OSError, socket.error, ssl.SSLError, NotDeliveredError)


class ImapSync:
    def __init__(
        self, settings: MailSettings, pipeline: MailPipeline, progress: Progress | None = None
    ) -> None:
        if not settings.imap_host or not settings.imap_user:
            raise ValueError("set RHYTHM_MAIL_IMAP_HOST and RHYTHM_MAIL_IMAP_USER")
        self.settings = settings
        self.pipeline = pipeline
        self.checkpoints = Checkpoints(settings.state_dir / "checkpoints.json")
        self.account = settings.account()
        self._missing: set[str] = set()
        self.passes = 0
        self.progress = progress or Progress("mail", settings.stall_after_s)

    def connect(self) -> IMAPClient:
        s = self.settings
        context = ssl.create_default_context(
            cafile=str(s.imap_ca_file) if s.imap_ca_file is not None else None
        )
        client = IMAPClient(
            s.imap_host,
            port=s.port(),
            ssl=s.imap_security == "tls",
            ssl_context=context,
            timeout=s.imap_timeout_s,
        )
        try:
            if s.imap_security == "starttls":
                client.starttls(context)
            client.normalise_times = False  # INTERNALDATE keeps its zone
            client.login(s.imap_user, s.password())
        except BaseException:
            _logout(client)
            raise
        return client

    # -- one pass ----------------------------------------------------------------------------

    def sync(self, client: IMAPClient) -> int:
        """One pass over every mailbox; return the events published."""
        sent = 0
        for mailbox in self.settings.mailboxes:
            self.progress.beat()
            sent += self.sync_mailbox(client, mailbox)
        self.passes += 1
        self.pipeline.metrics.passes.inc()
        self.pipeline.metrics.last_pass.set_to_current_time()
        self.progress.beat()
        return sent

    def sync_mailbox(self, client: IMAPClient, mailbox: str) -> int:
        if not client.folder_exists(mailbox):
            if mailbox not in self._missing:
                self._missing.add(mailbox)
                log.warning("mailbox %r does not exist on this account: skipped", mailbox)
            return 0
        info = client.select_folder(mailbox, readonly=True)
        uidvalidity = int(info[b"UIDVALIDITY"])
        checkpoint = self.checkpoints.get(self.account, mailbox)
        last = 0
        since = checkpoint.since if checkpoint is not None else None
        if checkpoint is not None and checkpoint.uidvalidity == uidvalidity:
            last = checkpoint.last_uid
        elif checkpoint is not None:
            log.warning("%s: UIDVALIDITY changed: reading the mailbox again", mailbox)
        if checkpoint is None and self.settings.since_days > 0:
            # a new mailbox: its recent mail only, by delivery date (IMAP SINCE), now and in
            # every later pass, so mail older than the cut-off is never read, crash or not
            cutoff = datetime.now(UTC) - timedelta(days=self.settings.since_days)
            since = cutoff.date().isoformat()
        criteria: list[Any] = ["UID", f"{last + 1}:*"]
        if since is not None:
            criteria += ["SINCE", date.fromisoformat(since)]
        uids = sorted(u for u in client.search(criteria) if u > last)
        if not uids:
            if checkpoint is None or checkpoint.uidvalidity != uidvalidity:
                self.checkpoints.put(self.account, mailbox, Checkpoint(uidvalidity, last, since))
            return 0
        labels = client.has_capability("X-GM-EXT-1")
        items = [b"BODY.PEEK[HEADER]", b"INTERNALDATE"] + ([b"X-GM-LABELS"] if labels else [])
        sent = 0
        for i in range(0, len(uids), self.settings.batch):
            chunk = uids[i : i + self.settings.batch]
            data = client.fetch(chunk, items)
            raws = [_raw(data[u], mailbox) for u in chunk if u in data and HEADER in data[u]]
            sent += self.pipeline.process(raws)
            self.progress.beat()
            self.checkpoints.put(self.account, mailbox, Checkpoint(uidvalidity, chunk[-1], since))
        log.info("%s: %d new messages, %d events", mailbox, len(uids), sent)
        return sent

    # -- between passes ------------------------------------------------------------------------

    def wait(self, client: IMAPClient, stop: threading.Event) -> None:
        """Until new mail in the first mailbox (IDLE), `poll_s`, or stop."""
        s = self.settings
        deadline = time.monotonic() + s.poll_s
        first = next((m for m in s.mailboxes if m not in self._missing), None)
        if not (s.idle and first and client.has_capability("IDLE")):
            while not stop.is_set() and time.monotonic() < deadline:
                self.progress.beat()
                stop.wait(min(1.0, max(0.0, deadline - time.monotonic())))
            return
        client.select_folder(first, readonly=True)
        client.idle()
        try:
            while not stop.is_set() and time.monotonic() < deadline:
                self.progress.beat()
                responses = client.idle_check(timeout=1.0)
                if any(_news(r) for r in responses):
                    return
        finally:
            client.idle_done()

    def run(self, stop: threading.Event, on_ready: Callable[[dict[str, Any]], None]) -> None:
        """Sync until `stop`: reconnects with doubling backoff on any retryable failure."""
        backoff = 1.0
        ready = False
        while not stop.is_set():
            client = None
            try:
                client = self.connect()
                while not stop.is_set():
                    self.sync(client)
                    backoff = 1.0
                    if not ready:
                        ready = True
                        self.progress.set_ready(True)
                        on_ready({"account": self.account, "mailboxes": self.settings.mailboxes})
                    self.wait(client, stop)
            except RETRYABLE as exc:
                self.pipeline.metrics.errors.labels(type(exc).__name__).inc()
                log.warning(
                    "IMAP sync interrupted (%s: %s); again in %.0f s",
                    type(exc).__name__,
                    str(exc)[:200],
                    backoff,
                )
                until = time.monotonic() + backoff
                while not stop.is_set() and time.monotonic() < until:
                    self.progress.beat()  # waiting on purpose is not a stall
                    stop.wait(min(1.0, max(0.0, until - time.monotonic())))
                backoff = min(backoff * 2, self.settings.retry_max_s)
            finally:
                if client is not None:
                    _logout(client)


def _raw(item: dict[bytes, Any], mailbox: str) -> RawMessage:
    internal = item.get(b"INTERNALDATE")
    labels = tuple(
        (x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x)).strip("\\")
        for x in item.get(b"X-GM-LABELS") or ()
    )
    return RawMessage(
        bytes(item[HEADER]),
        Source(mailbox, internal if isinstance(internal, datetime) else None, labels),
    )


def _news(response: Any) -> bool:
    return (
        isinstance(response, tuple)
        and len(response) >= 2
        and response[1]
        in (
            b"EXISTS",
            b"RECENT",
        )
    )


def _logout(client: IMAPClient) -> None:
    try:
        client.logout()
    except Exception:  # a dead connection: nothing to say goodbye to
        with contextlib.suppress(Exception):
            client.shutdown()
