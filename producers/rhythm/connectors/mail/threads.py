"""Threads: which conversation each message belongs to, as one stable root id.

Jamie Zawinski's algorithm (https://www.jwz.org/doc/threading.html), steps 1 and 2: one
container per Message-ID, seen or only referenced; each message's References (then its
In-Reply-To) link its ancestors parent to child, never overriding a link already made and
never making a loop, and the message's own parent is its last reference. The root of a
message is its top-most ancestor *id*, present or not: JWZ's later steps (pruning empty
containers, promoting children) would make that root depend on whether the first message
happens to be in this folder or import, and a thread's `context_id` must not.

Across batches (IMAP passes, imports, folders) the store keeps id -> root for every id met,
first come first kept: a message whose path touches a known id takes that id's root (the
earliest such id on its path), so a thread keeps one root whatever order its messages come
in. Only a message with no threading headers at all, whose subject says it is a reply, falls
back on the subject: the latest thread with the same normalised subject, if one of its
participants is among this message's and it was active within `SUBJECT_WINDOW_MS`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from rhythm.connectors.mail.headers import MailHeaders, normalise_subject, subject_prefix
from rhythm.connectors.mail.store import Store

SUBJECT_WINDOW_MS = 30 * 86_400_000
MAX_DEPTH = 10_000  # a References chain longer than any real thread: cut, not followed


@dataclass(slots=True)
class _Container:
    id: str
    parent: _Container | None = None

    def ancestor_of(self, other: _Container) -> bool:
        """Is self `other` or one of its ancestors?"""
        node: _Container | None = other
        depth = 0
        while node is not None and depth < MAX_DEPTH:
            if node is self:
                return True
            node, depth = node.parent, depth + 1
        return False


def link(messages: Sequence[tuple[str, list[str]]]) -> dict[str, list[str]]:
    """JWZ steps 1-2 over (message id, parents oldest first): each message's path of ids
    from its thread's root down to itself."""
    table: dict[str, _Container] = {}

    def container(i: str) -> _Container:
        c = table.get(i)
        if c is None:
            c = table[i] = _Container(i)
        return c

    for mid, parents in messages:
        this = container(mid)
        prev: _Container | None = None
        for ref in parents[:MAX_DEPTH]:
            c = container(ref)
            if prev is not None and c.parent is None and c is not prev and not c.ancestor_of(prev):
                c.parent = prev
            prev = c
        # the message's own parent: its last reference, unless that makes a loop
        if prev is not None and prev is not this and not this.ancestor_of(prev):
            this.parent = prev
    paths: dict[str, list[str]] = {}
    for mid, _ in messages:
        path: list[str] = []
        node: _Container | None = table[mid]
        seen: set[str] = set()
        while node is not None and node.id not in seen and len(path) < MAX_DEPTH:
            seen.add(node.id)
            path.append(node.id)
            node = node.parent
        paths[mid] = path[::-1]
    return paths


def participant_hash(address: str) -> str:
    return hashlib.sha256(address.encode()).hexdigest()[:12]


class Threader:
    """Roots for batches of messages, kept consistent through the store."""

    def __init__(self, store: Store, tenant: str) -> None:
        self.store = store
        self.tenant = tenant

    def subject_key(self, subject: str) -> str:
        digest = hashlib.sha256(f"{self.tenant}\n{normalise_subject(subject)}".encode())
        return digest.hexdigest()[:32]

    def roots(self, batch: Sequence[tuple[MailHeaders, int]]) -> dict[str, str]:
        """message id -> root id for (headers, time ms) in the batch, in time order."""
        ordered = sorted(batch, key=lambda b: (b[1], b[0].message_id))
        paths = link([(h.message_id, h.parents) for h, _ in ordered])
        out: dict[str, str] = {}
        with self.store.transaction():
            for h, when in ordered:
                out[h.message_id] = self._root(h, when, paths[h.message_id])
        return out

    def _root(self, h: MailHeaders, when: int, path: list[str]) -> str:
        known = self.store.roots(self.tenant, path)
        root = next((known[i] for i in path if i in known), None)
        if root is None and len(path) == 1:
            root = self._by_subject(h, when)
        if root is None:
            root = path[0]
        self.store.keep_roots(self.tenant, [(i, root) for i in path])
        if normalise_subject(h.subject):
            people = [participant_hash(a) for a in [h.sender or "", *h.to, *h.cc] if a]
            self.store.keep_subject(self.tenant, self.subject_key(h.subject), root, when, people)
        return root

    def _by_subject(self, h: MailHeaders, when: int) -> str | None:
        if h.parents or subject_prefix(h.subject) != "reply" or not normalise_subject(h.subject):
            return None
        found = self.store.subject(self.tenant, self.subject_key(h.subject))
        if found is None:
            return None
        root, last_ms, participants = found
        people = {participant_hash(a) for a in [h.sender or "", *h.to, *h.cc] if a}
        if abs(when - last_ms) > SUBJECT_WINDOW_MS or not people & set(participants):
            return None
        return root
