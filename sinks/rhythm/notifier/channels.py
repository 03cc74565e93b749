"""The channels: what a heads-up says (pure) and how it is sent (HTTP, SMTP).

Each `send_*` returns on success and raises `DeliveryError` otherwise, saying whether trying
again may help (`transient`): a receiver that is down, slow, or answers 5xx/408/429 is tried
again later; one that refuses the request (another 4xx: a bad signature, a revoked Slack
webhook) is not, and the delivery is dead-lettered at once.
"""

from __future__ import annotations

import html
import json
import smtplib
import ssl
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any
from zoneinfo import ZoneInfo

from rhythm.notifier.feedback import ACTION_LABELS
from rhythm.notifier.settings import NotifierSettings
from rhythm.notifier.signing import IDEMPOTENCY_HEADER, sign

__all__ = [
    "DeliveryError",
    "compose_email",
    "duration",
    "email_message",
    "headline",
    "send_email",
    "send_webhook",
    "slack_payload",
    "webhook_payload",
]

_TRANSIENT_HTTP = {408, 425, 429}


class DeliveryError(Exception):
    def __init__(self, reason: str, transient: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient


def duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _local(ms: int, zone: ZoneInfo) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).astimezone(zone).strftime("%a %d %b %H:%M %Z")


def headline(alert: dict[str, Any], zone: ZoneInfo) -> str:
    """One line that says what the heads-up is about, in the recipient's time zone."""
    entity = f"{alert['entity_type']} {alert['entity_id']}"
    waited = (alert["fired_at"] - alert["last_event_at"]) / 1000
    since = _local(alert["last_event_at"], zone)
    details = alert.get("details") or {}
    where = f" on {details['channel']}" if isinstance(details.get("channel"), str) else ""
    kind = alert["kind"]
    if kind == "unanswered":
        return (
            f"{entity} has waited {duration(waited)} for a reply{where} (since {since}); "
            f"replies usually come within {duration(alert['expected_within_s'])}"
        )
    if kind == "follow_up":
        return f"No answer from {entity}{where} since {since}: time to follow up?"
    if kind == "silence":
        return (
            f"{entity} has gone quiet: nothing for {duration(waited)} (since {since}), "
            f"unusual against its own rhythm"
        )
    return f"{entity} is active again after a quiet spell ({kind})"


#: Feedback links (action -> URL): done, snooze, not_useful; empty when the API is off.
Links = dict[str, str]


def webhook_payload(
    delivery_key: str,
    alert: dict[str, Any],
    recipient: dict[str, Any],
    text: str,
    links: Links | None = None,
) -> bytes:
    """The generic webhook's JSON body (`links`: the feedback links, when there are)."""
    body = {
        "type": "rhythm.heads_up",
        "idempotency_key": delivery_key,
        "text": text,
        "recipient": recipient,
        "alert": alert,
    }
    if links:
        body["links"] = links
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def slack_payload(
    address: str, alert: dict[str, Any], text: str, links: Links | None = None
) -> bytes:
    """A Slack incoming-webhook message: `text` (notifications, fallbacks) and blocks, the
    feedback links as a line of links (a link opens the confirmation page)."""
    mention = f"{address} " if address.startswith("<@") else f"*{address}* "
    score = alert.get("score", 0.0)
    body: dict[str, Any] = {
        "text": f"{mention}{text}",
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"{mention}{text}"}},
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": f"{alert['kind']} · tenant {alert['tenant']} · "
                        f"score {score:.2f} · alert {alert['alert_id']}",
                    }
                ],
            },
        ],
    }
    if links:
        line = " · ".join(f"<{url}|{ACTION_LABELS.get(a, a)}>" for a, url in links.items())
        body["blocks"].append({"type": "section", "text": {"type": "mrkdwn", "text": line}})
    return json.dumps(body, separators=(",", ":")).encode()


def email_message(
    settings: NotifierSettings,
    delivery_key: str,
    to: str,
    name: str | None,
    alert: dict[str, Any],
    text: str,
    links: Links | None = None,
) -> EmailMessage:
    """A heads-up as mail: plain text and HTML alternatives."""
    greeting = f"Hi {name}," if name else "Hi,"
    plain = (
        f"{greeting}\n\n{text}.\n\n"
        f"Kind: {alert['kind']}   Score: {alert.get('score', 0.0):.2f}\n"
        f"Alert: {alert['alert_id']} (tenant {alert['tenant']})\n"
    )
    if links:
        plain += "\n" + "".join(f"{ACTION_LABELS.get(a, a)}: {u}\n" for a, u in links.items())
    anchors = " &middot; ".join(
        f'<a href="{html.escape(u)}">{html.escape(ACTION_LABELS.get(a, a))}</a>'
        for a, u in (links or {}).items()
    )
    body = (
        '<!doctype html><html><body style="font-family:sans-serif">'
        f"<p>{html.escape(greeting)}</p>"
        f'<p style="font-size:16px"><strong>{html.escape(text)}</strong>.</p>'
        f'<p style="color:#666">Kind: {html.escape(alert["kind"])} &middot; '
        f"score {alert.get('score', 0.0):.2f} &middot; alert {html.escape(alert['alert_id'])}"
        f"</p>{f'<p>{anchors}</p>' if anchors else ''}</body></html>"
    )
    return compose_email(settings, delivery_key, to, name, f"Heads-up: {text[:120]}", plain, body)


def compose_email(
    settings: NotifierSettings,
    delivery_key: str,
    to: str,
    name: str | None,
    subject: str,
    plain: str,
    body_html: str,
) -> EmailMessage:
    """Plain text and HTML alternatives; the Message-ID is derived from the idempotency key,
    so a mail sent twice (a crash right after the server took it) is one thread, one id."""
    msg = EmailMessage()
    msg["From"] = settings.smtp_from
    msg["To"] = f"{name} <{to}>" if name else to
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = f"<{delivery_key}@rhythm.notifier>"
    msg[IDEMPOTENCY_HEADER] = delivery_key
    msg.set_content(plain)
    msg.add_alternative(body_html, subtype="html")
    return msg


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> None:
    request = urllib.request.Request(url, data=body, method="POST")
    request.add_header("Content-Type", "application/json")
    request.add_header("User-Agent", "rhythm-notifier/1")
    for name, value in headers.items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        code = exc.code
        raise DeliveryError(f"http_{code}", code >= 500 or code in _TRANSIENT_HTTP) from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DeliveryError(f"unreachable: {reason}", True) from None


def send_webhook(
    url: str, secret: bytes, key: str, body: bytes, timeout: float, now: float | None = None
) -> None:
    headers = sign(secret, body, time.time() if now is None else now)
    headers[IDEMPOTENCY_HEADER] = key
    _post(url, body, headers, timeout)


def send_slack(url: str, key: str, body: bytes, timeout: float) -> None:
    _post(url, body, {IDEMPOTENCY_HEADER: key}, timeout)


def send_email(settings: NotifierSettings, msg: EmailMessage) -> None:
    host, port, timeout = settings.smtp_host or "", settings.smtp_port, settings.request_timeout_s
    context = ssl.create_default_context(
        cafile=str(settings.smtp_ca_file) if settings.smtp_ca_file else None
    )
    try:
        smtp: smtplib.SMTP
        if settings.smtp_security == "tls":
            smtp = smtplib.SMTP_SSL(host, port, timeout=timeout, context=context)
        else:
            smtp = smtplib.SMTP(host, port, timeout=timeout)
        with smtp:
            if settings.smtp_security == "starttls":
                smtp.starttls(context=context)
            if settings.smtp_user and settings.smtp_password is not None:
                smtp.login(settings.smtp_user, settings.smtp_password.get_secret_value())
            smtp.send_message(msg)
    except smtplib.SMTPResponseException as exc:
        # 4xx: try later; 5xx: the server refuses this mail (a bad address, auth).
        raise DeliveryError(f"smtp_{exc.smtp_code}", exc.smtp_code < 500) from None
    except smtplib.SMTPRecipientsRefused:
        raise DeliveryError("smtp_recipient_refused", False) from None
    except (TimeoutError, smtplib.SMTPException, OSError) as exc:
        raise DeliveryError(f"smtp_unreachable: {type(exc).__name__}", True) from None
