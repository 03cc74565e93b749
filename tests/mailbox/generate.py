"""A small company's mailboxes, generated with labels: which customer emails our people left
unanswered, and to whom they were sent.

Written from how mail looks, not from the connector's code (nothing here imports it): the
raw RFC 5322 headers each person's mailbox would hold, as mbox files (and one person's as a
Maildir with a Sent folder), and the planted cases. Pure: the same seed gives the same
bytes.

The company (`northwind.test`, people working round the clock for the test's calendar)
gets, over `days` days:
- customer threads: a customer emails one of our people (sometimes with a colleague in Cc;
  5 % without a Message-ID, so our reply can only say "Re:" and threads by subject); we
  answer within 10 min to 5 h; the customer then ends it ("thanks"), asks again (answered),
  or goes quiet, over up to four rounds;
- planted unanswered ones (`planted`, from day 5 to 4 days before the end): nobody of ours
  ever answers; some get our out-of-office auto-reply, some are forwarded to a colleague,
  which answers the customer no more;
- outreach of ours (answered or not, their out-of-office, bounces from a daemon with the
  null sender), a mailing list (List-Id) with on-list replies, a weekly newsletter
  (Precedence: bulk), internal mail among us (one thread of 150 messages), malformed and
  RFC 2047 encoded headers, Dates a year wrong with a right Received stamp;
- every copy where it would be: the sender's Sent, each of our recipients' INBOX, so most
  messages are in two or more mailboxes.
"""

from __future__ import annotations

import mailbox
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

DOMAIN = "northwind.test"
PEOPLE = [f"{n}@{DOMAIN}" for n in ("ann", "bob", "cleo", "dan", "eve", "finn", "gus", "hana")]
LIST = "announce@lists.vendor.test"
LIST_ID = "Vendor announcements <announce.lists.vendor.test>"
REPORT = "Content-Type: multipart/report; report-type=delivery-status"


@dataclass(frozen=True)
class Planted:
    message_id: str  # the customer's email nobody answered (its thread's first message)
    sender: str
    owners: tuple[str, ...]  # our recipients, To first: whom the heads-up should name
    sent_at: datetime


@dataclass
class Company:
    start: datetime
    end: datetime
    # person -> mailbox -> [(delivery time, raw message)]
    boxes: dict[str, dict[str, list[tuple[datetime, bytes]]]] = field(default_factory=dict)
    planted: list[Planted] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)

    def deliver(self, person: str, box: str, when: datetime, raw: bytes) -> None:
        self.boxes.setdefault(person, {}).setdefault(box, []).append((when, raw))


def _date(when: datetime) -> str:
    return when.strftime("%a, %d %b %Y %H:%M:%S +0000")


class _Writer:
    def __init__(self, company: Company, rng: random.Random) -> None:
        self.c = company
        self.rng = rng
        self.n = 0

    def mid(self, host: str) -> str:
        self.n += 1
        return f"{self.n:06d}.{self.rng.getrandbits(40):010x}@{host}"

    def send(
        self,
        sender: str,
        to: list[str],
        subject: str,
        when: datetime,
        *,
        cc: tuple[str, ...] = (),
        mid: str | None = None,
        parents: tuple[str, ...] = (),
        headers: tuple[str, ...] = (),
        date: datetime | None = None,
        name: str = "",
    ) -> str | None:
        """Write the message into every mailbox of ours that holds a copy; its Message-ID."""
        lines = [f"From: {name} <{sender}>" if name else f"From: {sender}"]
        lines += [f"To: {', '.join(to)}", f"Subject: {subject}", f"Date: {_date(date or when)}"]
        if cc:
            lines.append(f"Cc: {', '.join(cc)}")
        if mid:
            lines.append(f"Message-ID: <{mid}>")
        if parents:
            lines.append(f"In-Reply-To: <{parents[-1]}>")
            lines.append("References: " + " ".join(f"<{p}>" for p in parents))
        lines += list(headers)
        lines += ["MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8"]
        head = "\r\n".join(lines) + "\r\n"
        body = "\r\nSomething private that the connector must never read.\r\n"
        if sender.endswith("@" + DOMAIN):
            self.c.deliver(sender, "Sent", when, (head + body).encode())
        arrive = when + timedelta(seconds=self.rng.randint(2, 40))
        received = f"Received: from mx.{DOMAIN} by imap.{DOMAIN}; {_date(arrive)}\r\n"
        for r in dict.fromkeys([*to, *cc]):
            if r.endswith("@" + DOMAIN) and r != sender:
                self.c.deliver(r, "INBOX", arrive, (received + head + body).encode())
        return mid


def generate(
    seed: int = 1, days: int = 42, threads: int = 300, end: datetime | None = None
) -> Company:
    rng = random.Random(f"mailbox-{seed}")
    end = end or datetime(2026, 11, 30, tzinfo=UTC)
    start = end - timedelta(days=days)
    c = Company(start, end)
    w = _Writer(c, rng)

    def at(lo_days: float, hi_days: float) -> datetime:
        return start + timedelta(seconds=int(rng.uniform(lo_days, hi_days) * 86_400))

    def ours_delay() -> timedelta:  # our reply norm: log-uniform 10 min to 5 h
        return timedelta(minutes=10 * (30 ** rng.random()))

    def theirs_delay() -> timedelta:
        return timedelta(minutes=30 * (96 ** rng.random()))

    names = rng.choices(["kim", "lee", "max", "noa", "oli", "pat"], k=120)
    customers = [f"{n}{i}@client{i % 23}.test" for i, n in enumerate(names)]
    for t in range(threads):
        customer, owner = rng.choice(customers), rng.choice(PEOPLE)
        cc = (rng.choice([p for p in PEOPLE if p != owner]),) if rng.random() < 0.2 else ()
        t0 = at(0.2, days - 4)
        subject = f"Order {10_000 + t}: question"
        plant = (t0 - start).days >= 5 and rng.random() < 0.07
        no_id = not plant and rng.random() < 0.05
        odd = rng.random()
        headers: tuple[str, ...] = ()
        date = None
        name = ""
        if odd < 0.03:
            name = "=?utf-8?q?J=C3=B6rg_M=C3=BCller?="
            subject = f"=?iso-8859-1?q?R=E9clamation_{10_000 + t}?="
        elif odd < 0.05:
            date = t0 - timedelta(days=365)  # a sender's clock a year behind
        mid = None if no_id else w.mid(customer.split("@")[1])
        first = w.send(customer, [owner], subject, t0, cc=cc, mid=mid, date=date, name=name,
                       headers=headers)  # fmt: skip
        if plant:
            assert first is not None
            c.planted.append(Planted(first, customer, (owner, *cc), t0))
            c.counts["planted"] += 1
            extra = rng.random()
            if extra < 0.4:  # our out-of-office answers automatically: not a reply
                w.send(owner, [customer], f"Out of office: {subject}", t0 + timedelta(seconds=30),
                       mid=w.mid(DOMAIN), parents=(first,),
                       headers=("Auto-Submitted: auto-replied",))  # fmt: skip
                c.counts["our_auto_reply_on_planted"] += 1
            elif extra < 0.7:  # forwarded to a colleague: still nobody answered the customer
                mate = rng.choice([p for p in PEOPLE if p != owner])
                w.send(owner, [mate], f"Fwd: {subject}", t0 + ours_delay(), mid=w.mid(DOMAIN),
                       parents=(first,))  # fmt: skip
                c.counts["forwarded_on_planted"] += 1
            continue
        chain: tuple[str, ...] = (first,) if first else ()
        when = t0
        rounds = rng.choice([1, 1, 2, 2, 3, 4])
        for r in range(rounds):
            when = when + ours_delay()
            replier = owner if not cc or rng.random() < 0.7 else cc[0]
            re = w.send(replier, [customer], f"Re: {subject}", when, cc=cc, mid=w.mid(DOMAIN),
                        parents=chain)  # fmt: skip
            chain = (*chain, re) if re else chain
            c.counts["our_replies"] += 1
            last = r == rounds - 1
            if last and rng.random() < 0.35:
                c.counts["ended_by_ours"] += 1
                break
            when = when + theirs_delay()
            thanks = last or rng.random() < 0.4
            text = "Re: " + subject
            m = w.send(customer, [replier], text, when, cc=cc, mid=w.mid(customer.split("@")[1]),
                       parents=chain)  # fmt: skip
            chain = (*chain, m) if m else chain
            if thanks:
                c.counts["ended_by_theirs"] += 1
                break
        if no_id:
            c.counts["threads_without_message_id"] += 1
        c.counts["customer_threads"] += 1

    for _ in range(threads // 10):  # outreach of ours
        rep, prospect = (
            rng.choice(PEOPLE),
            f"lead{rng.randrange(10_000)}@prospect{rng.randrange(9)}.test",
        )
        t0 = at(0.2, days - 2)
        subject = f"Introducing Northwind {rng.randrange(1000)}"
        first = w.send(rep, [prospect], subject, t0, mid=w.mid(DOMAIN))
        assert first is not None
        fate = rng.random()
        if fate < 0.35:
            back = t0 + theirs_delay()
            m = w.send(prospect, [rep], "Re: " + subject, back,
                       mid=w.mid(prospect.split("@")[1]), parents=(first,))  # fmt: skip
            assert m is not None
            w.send(rep, [prospect], "Re: " + subject, back + ours_delay(), mid=w.mid(DOMAIN),
                   parents=(first, m))  # fmt: skip
        elif fate < 0.6:
            w.send(prospect, [rep], f"Automatic reply: {subject}", t0 + timedelta(minutes=1),
                   mid=w.mid(prospect.split("@")[1]), parents=(first,),
                   headers=("Auto-Submitted: auto-replied", "X-Autoreply: yes"))  # fmt: skip
            c.counts["their_auto_replies"] += 1
        elif fate < 0.75:
            daemon = f"MAILER-DAEMON@{prospect.split('@')[1]}"
            w.send(daemon, [rep], "Undelivered Mail Returned to Sender", t0 + timedelta(minutes=2),
                   mid=w.mid(prospect.split("@")[1]),
                   headers=("Return-Path: <>", REPORT))  # fmt: skip
            c.counts["bounces"] += 1
        c.counts["outreach"] += 1

    posts: list[str] = []
    for i in range(days // 3):  # a mailing list, with on-list replies by outsiders
        author = f"dev{rng.randrange(30)}@community{rng.randrange(5)}.test"
        parents = (rng.choice(posts),) if posts and rng.random() < 0.4 else ()
        m = w.send(author, [LIST], ("Re: " if parents else "") + f"Release notes {i}",
                   at(0.2, days - 1), cc=tuple(rng.sample(PEOPLE, 3)),
                   mid=w.mid("community.test"), parents=parents,
                   headers=(f"List-Id: {LIST_ID}", "Precedence: list"))  # fmt: skip
        assert m is not None
        posts.append(m)
        c.counts["list_posts"] += 1
    for week in range(days // 7):  # a newsletter
        w.send("news@vendor.test", PEOPLE[:4], f"Vendor weekly #{week}",
               start + timedelta(days=7 * week + 1, hours=6), mid=w.mid("vendor.test"),
               headers=("Precedence: bulk",))  # fmt: skip
        c.counts["newsletters"] += 1
    chain = ()
    for i in range(150):  # a huge internal thread
        sender = PEOPLE[i % len(PEOPLE)]
        m = w.send(sender, [p for p in PEOPLE[:5] if p != sender], "Re: Quarterly planning",
                   start + timedelta(hours=6 + i * 6), mid=w.mid(DOMAIN),
                   parents=chain[-20:])  # fmt: skip
        assert m is not None
        chain = (*chain, m)
        c.counts["internal"] += 1
    for _ in range(threads // 5):  # short internal exchanges
        a, b = rng.sample(PEOPLE, 2)
        t0 = at(0.2, days - 1)
        m = w.send(a, [b], "Lunch?", t0, mid=w.mid(DOMAIN))
        assert m is not None
        w.send(b, [a], "Re: Lunch?", t0 + ours_delay(), mid=w.mid(DOMAIN), parents=(m,))
        c.counts["internal"] += 2
    return c


def write(company: Company, out: Path, maildir_for: str = PEOPLE[1]) -> Path:
    """Each person's mailboxes as out/<name>/INBOX.mbox and Sent.mbox, in delivery order;
    `maildir_for` as a Maildir (out/<name>/Maildir, Sent in its .Sent folder)."""
    for person, boxes in sorted(company.boxes.items()):
        home = out / person.split("@")[0]
        home.mkdir(parents=True, exist_ok=True)
        if person == maildir_for:
            md = mailbox.Maildir(home / "Maildir", create=True)
            for box, messages in sorted(boxes.items()):
                target = md if box == "INBOX" else md.add_folder(box)
                for when, raw in sorted(messages, key=lambda m: m[0]):
                    msg = mailbox.MaildirMessage(raw)
                    msg.set_date(when.timestamp())
                    target.add(msg)
            continue
        for box, messages in sorted(boxes.items()):
            mb = mailbox.mbox(home / f"{box}.mbox", create=True)
            for when, raw in sorted(messages, key=lambda m: m[0]):
                entry = mailbox.mboxMessage(raw)
                entry.set_from("MAILER-DAEMON", when.timetuple())
                mb.add(entry)
            mb.flush()
            mb.close()
    return out
