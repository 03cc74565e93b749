"""The generated company mailbox (tests/mailbox) keeps its own promises: the same seed gives
the same bytes, and a planted message really is never answered by our side."""

from __future__ import annotations

import re
from pathlib import Path

from tests.mailbox.generate import DOMAIN, generate, write


def test_same_seed_same_mailboxes_and_planted_ones_are_never_answered(tmp_path: Path) -> None:
    one, two = generate(seed=5), generate(seed=5)
    assert one.boxes == two.boxes and one.planted == two.planted
    assert len(one.planted) >= 10 and one.counts["customer_threads"] >= 200
    planted = {p.message_id for p in one.planted}
    for boxes in one.boxes.values():
        for messages in boxes.values():
            for _, raw in messages:
                head = raw.split(b"\r\n\r\n", 1)[0].decode()
                refs = set(re.findall(r"<([^<>]+)>", head.partition("References:")[2]))
                sender = re.search(r"^From: (?:.*<)?([^<>\s]+)>?\r?$", head, re.M)
                assert sender is not None
                auto = "Auto-Submitted:" in head or "Fwd:" in head
                if refs & planted and sender.group(1).endswith(DOMAIN):
                    assert auto, "a planted message got a real answer from us"
    out = write(one, tmp_path)
    assert (out / "bob" / "Maildir" / ".Sent").is_dir() and (out / "ann" / "INBOX.mbox").is_file()
