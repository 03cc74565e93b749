"""A digest as people read it: plain text, one self-contained HTML page (inline CSS, no
scripts, nothing fetched: it reads the same in a mail client and a browser), and the
channels' payloads. Pure. Every piece of user data (names, ids, the why lines) is escaped in
the HTML and in Slack's markup."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from email.message import EmailMessage
from html import escape
from typing import Any
from zoneinfo import ZoneInfo

from rhythm.notifier.channels import compose_email
from rhythm.notifier.digest import Digest, DigestItem, summary
from rhythm.notifier.settings import NotifierSettings

__all__ = [
    "digest_email",
    "digest_html",
    "digest_slack_payload",
    "digest_subject",
    "digest_text",
    "digest_webhook_payload",
]

TITLES = {
    "owed": "You owe a reply",
    "quiet": "Gone quiet near you",
    "mover": "On the move among your accounts and contacts",
    "community": "On the move in your communities",
}

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif;
       margin: 24px auto; max-width: 720px; color: #1d1d1f; background: #fff; padding: 0 16px; }
h1 { font-size: 21px; margin: 0 0 4px; }
h2 { font-size: 15px; margin: 22px 0 6px; color: #333; border-bottom: 1px solid #ddd;
     padding-bottom: 3px; }
p.sub { color: #555; margin: 2px 0 12px; font-size: 13px; }
ol { list-style: none; padding: 0; margin: 0; }
li.item { border-left: 6px solid #888; padding: 6px 10px; margin: 8px 0; background: #fafafa; }
li.owed { border-color: #c0392b; } li.quiet { border-color: #d68910; }
li.mover { border-color: #2471a3; } li.community { border-color: #7d3c98; }
.entity { font-weight: 600; } .why { display: block; font-size: 14px; margin-top: 2px; }
.meta { color: #777; font-size: 12px; }
p.empty { color: #555; font-style: italic; }
"""


def _when(ms: int, zone: ZoneInfo) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).astimezone(zone).strftime("%a %d %b %H:%M %Z")


def digest_subject(d: Digest) -> str:
    return f"Your Rhythm digest for {d.day}: {summary(d)}"


def _greeting(d: Digest) -> str:
    return f"Good morning {d.name}," if d.name else "Good morning,"


def _groups(d: Digest) -> list[tuple[str, list[DigestItem]]]:
    out: list[tuple[str, list[DigestItem]]] = []
    for item in d.items:
        if not out or out[-1][0] != item.kind:
            out.append((item.kind, []))
        out[-1][1].append(item)
    return out


def digest_text(d: Digest) -> str:
    lines = [_greeting(d), "", f"{summary(d)} ({d.person}, tenant {d.tenant}, {d.day})"]
    n = 0
    for kind, items in _groups(d):
        lines += ["", TITLES[kind]]
        for item in items:
            n += 1
            lines.append(f"{n:>2}. {item.why}")
            lines.append(f"    [{item.kind} · score {item.score:.2f} · rank {item.rank:.2f}]")
            lines += [f"    {label}: {url}" for label, url in item.links]
    return "\n".join(lines) + "\n"


def digest_html(d: Digest) -> str:
    zone = ZoneInfo(d.zone)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(digest_subject(d))}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{escape(_greeting(d))}</h1>",
        f'<p class="sub" id="summary"><b>{escape(summary(d))}</b><br>'
        f"{escape(d.person)} · tenant {escape(d.tenant)} · {escape(d.day)} · "
        f"as of {escape(_when(d.as_of, zone))}</p>",
    ]
    if not d.items:
        parts.append('<p class="empty">Nothing needs you today.</p>')
    for kind, items in _groups(d):
        parts.append(f"<h2>{escape(TITLES[kind])}</h2><ol>")
        for item in items:
            links = "".join(
                f' · <a href="{escape(url)}">{escape(label)}</a>' for label, url in item.links
            )
            parts.append(
                f'<li class="item {escape(item.kind)}" data-kind="{escape(item.kind)}">'
                f'<span class="entity">{escape(item.entity)}</span>'
                f'<span class="why">{escape(item.why)}</span>'
                f'<span class="meta">score {item.score:.2f} · closeness {item.affinity:.2f}'
                f" · rank {item.rank:.2f}{links}</span></li>"
            )
        parts.append("</ol>")
    parts.append("</body></html>")
    return "\n".join(parts)


def digest_email(settings: NotifierSettings, key: str, to: str, d: Digest) -> EmailMessage:
    return compose_email(
        settings, key, to, d.name, digest_subject(d)[:200], digest_text(d), digest_html(d)
    )


def digest_webhook_payload(key: str, d: Digest, recipient: dict[str, Any]) -> bytes:
    body = {
        "type": "rhythm.digest",
        "idempotency_key": key,
        "text": digest_text(d),
        "recipient": recipient,
        "digest": d.as_dict(),
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def _mrkdwn(text: str) -> str:
    """Slack's escaping: &, < and > are its control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def digest_slack_payload(address: str, d: Digest) -> bytes:
    mention = f"{address} " if address.startswith("<@") else f"*{_mrkdwn(address)}* "
    head = f"{mention}your digest for {d.day}: {_mrkdwn(summary(d))}"
    lines = [f"{n}. {_mrkdwn(i.why)}" for n, i in enumerate(d.items, 1)]
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": head}}]
    if lines:
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)[:2900]}}
        )
    return json.dumps({"text": head, "blocks": blocks}, separators=(",", ":")).encode()
