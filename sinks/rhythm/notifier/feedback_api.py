"""The HTTP API behind a heads-up's feedback links (standard library, in a thread of the
notifier; on 127.0.0.1 by default: put a proxy in front to reach it from elsewhere).

    GET  /feedback/<action>?t=<token>    a confirmation page (nothing happens: mail scanners
                                         and link previews fetch links)
    POST /feedback/<action>              does it: form or JSON with `t`, and for snooze
                                         `until` (epoch ms or ISO 8601) or `for_s` (seconds)

`action` is done, snooze or not_useful, and must be the token's own. Answers: 200 (recorded:
published to `rhythm.feedback`, which the notifier applies), 400 (a malformed token or
request), 403 (a forged token or one for another action), 404, 409 (this link was used
already), 410 (the link expired), 413, 503 (Kafka did not take it: try again). JSON when the
request accepts `application/json`, else a small HTML page. Tokens are never logged.
"""

from __future__ import annotations

import html
import json
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from confluent_kafka import Producer

from rhythm.notifier.feedback import (
    ACTION_LABELS,
    FeedbackNotPublishedError,
    feedback_from_link,
    publish,
)
from rhythm.notifier.ledger import Ledger
from rhythm.notifier.metrics import NotifierMetrics
from rhythm.notifier.settings import NotifierSettings
from rhythm.notifier.signing import TokenError, read_token
from rhythm.schemas.feedback import FEEDBACK_KINDS, feedback_id

__all__ = ["FeedbackApi", "RequestError", "parse_until"]

log = logging.getLogger(__name__)

MAX_BODY = 16 * 1024
MAX_SNOOZE_MS = 90 * 86_400_000
_SNOOZE_CHOICES = (
    (3600, "1 hour"),
    (4 * 3600, "4 hours"),
    (86_400, "1 day"),
    (7 * 86_400, "1 week"),
)


class RequestError(ValueError):
    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


def parse_until(fields: dict[str, str], now_ms: int) -> int:
    """The snooze's end (epoch ms) from `until` (epoch ms or ISO 8601 with a zone) or
    `for_s`; in the future and at most 90 days ahead."""
    raw_until, raw_for = fields.get("until", "").strip(), fields.get("for_s", "").strip()
    try:
        if raw_until:
            if raw_until.isdigit():
                until = int(raw_until)
            else:
                moment = datetime.fromisoformat(raw_until.replace("Z", "+00:00"))
                if moment.tzinfo is None:
                    raise RequestError("until: give a time zone (e.g. Z or +01:00)")
                until = int(moment.timestamp() * 1000)
        elif raw_for:
            until = now_ms + int(float(raw_for) * 1000)
        else:
            raise RequestError("snooze needs until (epoch ms or ISO 8601) or for_s")
    except ValueError as exc:
        if isinstance(exc, RequestError):
            raise
        raise RequestError(f"until / for_s: {exc}") from None
    if until <= now_ms:
        raise RequestError("until is not in the future")
    if until - now_ms > MAX_SNOOZE_MS:
        raise RequestError("snooze at most 90 days")
    return until


def _page(title: str, body: str) -> bytes:
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        "<meta name='robots' content='noindex'>"
        f"<title>{html.escape(title)}</title></head>"
        f"<body style='font-family:sans-serif;max-width:40em;margin:2em auto'>"
        f"<h1 style='font-size:1.3em'>{html.escape(title)}</h1>{body}</body></html>"
    ).encode()


class FeedbackApi:
    def __init__(
        self,
        settings: NotifierSettings,
        metrics: NotifierMetrics,
        producer: Producer | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.now = now
        self._key = settings.feedback_key()
        self._producer = producer or Producer(
            {**settings.kafka.to_librdkafka(), "enable.idempotence": True, "acks": "all"}
        )
        self._ledger = Ledger(settings.ledger_path)  # its own connection, read here
        self._lock = threading.Lock()
        self._used: set[str] = set()  # published by this process (the ledger may lag)
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                api._serve(self, post=False)

            def do_POST(self) -> None:
                api._serve(self, post=True)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the request line holds the token: never logged

        self._httpd = ThreadingHTTPServer((settings.feedback_host, settings.feedback_port), Handler)
        self._httpd.daemon_threads = True
        self.port: int = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="rhythm-feedback-api", daemon=True
        )

    def start(self) -> FeedbackApi:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._producer.flush(5)
        with self._lock:
            self._ledger.close()

    @property
    def url(self) -> str:
        return f"http://{self.settings.feedback_host}:{self.port}"

    # -- requests ---------------------------------------------------------------------------

    def _serve(self, request: BaseHTTPRequestHandler, post: bool) -> None:
        wants_json = "application/json" in request.headers.get("Accept", "")
        try:
            status, result = self._handle(request, post)
        except RequestError as exc:
            status, result = exc.status, {"error": exc.reason}
        except TokenError as exc:
            status, result = exc.status, {"error": exc.reason}
        self.metrics.feedback_api.labels(str(status)).inc()
        if wants_json:
            result.get("confirm", {}).pop("token", None)
            body, content_type = json.dumps(result).encode(), "application/json"
        else:
            body, content_type = self._html(status, result), "text/html; charset=utf-8"
        request.send_response(status)
        request.send_header("Content-Type", content_type)
        request.send_header("Content-Length", str(len(body)))
        request.send_header("Cache-Control", "no-store")
        request.send_header("Referrer-Policy", "no-referrer")  # the token is in the URL
        request.end_headers()
        request.wfile.write(body)

    def _handle(self, request: BaseHTTPRequestHandler, post: bool) -> tuple[int, dict[str, Any]]:
        url = urllib.parse.urlsplit(request.path)
        parts = url.path.strip("/").split("/")
        if len(parts) != 2 or parts[0] != "feedback" or parts[1] not in FEEDBACK_KINDS:
            raise RequestError("not found: /feedback/<done|snooze|not_useful>?t=<token>", 404)
        action = parts[1]
        fields = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
        if post:
            fields.update(self._body(request))
        token = fields.get("t", "")
        if not token:
            raise RequestError("no token (t)")
        now = self.now()
        claims = read_token(self._key, token, action, now)
        fid = feedback_id("link", token)
        with self._lock:
            used = fid in self._used or self._ledger.has_feedback(fid)
            alert = self._ledger.alert(claims.alert_id)
        if used:
            raise RequestError("this link was used already", 409)
        described = {
            "action": action,
            "alert_id": claims.alert_id,
            "recipient": claims.recipient,
            "about": None if alert is None else f"{alert['entity_type']} {alert['entity_id']}",
            "token": token,
        }
        if not post:
            return 200, {"confirm": described}
        now_ms = int(now * 1000)
        until = parse_until(fields, now_ms) if action == "snooze" else None
        fb = feedback_from_link(claims, token, now_ms, until, alert)
        try:
            publish(
                self._producer, self.settings.feedback_topic, fb, self.settings.request_timeout_s
            )
        except FeedbackNotPublishedError as exc:
            log.warning("feedback %s not published: %s", fb.feedback_id, exc)
            raise RequestError("not recorded (Kafka did not answer): try again", 503) from None
        with self._lock:
            self._used.add(fid)
        log.info("feedback %s (%s on alert %s) published", fid, action, claims.alert_id)
        return 200, {
            "recorded": {
                "feedback_id": fb.feedback_id, "action": action, "alert_id": fb.alert_id,
                "recipient": fb.recipient, "snooze_until": until,
            }
        }  # fmt: skip

    def _body(self, request: BaseHTTPRequestHandler) -> dict[str, str]:
        length = int(request.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise RequestError("request too large", 413)
        raw = request.rfile.read(length) if length else b""
        if not raw:
            return {}
        if request.headers.get("Content-Type", "").startswith("application/json"):
            try:
                data = json.loads(raw)
            except ValueError:
                raise RequestError("body: not JSON") from None
            if not isinstance(data, dict):
                raise RequestError("body: a JSON object please")
            return {str(k): str(v) for k, v in data.items() if v is not None}
        parsed = urllib.parse.parse_qs(raw.decode(errors="replace"))
        return {k: v[-1] for k, v in parsed.items()}

    # -- pages --------------------------------------------------------------------------------

    def _html(self, status: int, result: dict[str, Any]) -> bytes:
        if "error" in result:
            return _page(f"Not done ({status})", f"<p>{html.escape(result['error'])}</p>")
        if "recorded" in result:
            r = result["recorded"]
            what = ACTION_LABELS.get(r["action"], r["action"])
            return _page("Thank you", f"<p>Recorded: <strong>{html.escape(what)}</strong>.</p>")
        c = result["confirm"]
        label = ACTION_LABELS.get(c["action"], c["action"])
        about = f" about {html.escape(c['about'])}" if c.get("about") else ""
        extra = ""
        if c["action"] == "snooze":
            options = "".join(f"<option value='{s}'>{n}</option>" for s, n in _SNOOZE_CHOICES)
            extra = f"<p><label>Remind me in <select name='for_s'>{options}</select></label></p>"
        return _page(
            f"{label}?",
            f"<p>The heads-up{about} (alert {html.escape(c['alert_id'])}) for "
            f"{html.escape(c['recipient'])}.</p>"
            f"<form method='post'><input type='hidden' name='t' "
            f"value='{html.escape(c['token'], quote=True)}'>{extra}"
            f"<button type='submit'>{html.escape(label)}</button></form>",
        )
