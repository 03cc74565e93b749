"""Email as activity: IMAP (`rhythm connect imap`) and mbox/Maildir (`rhythm import mbox`).

Only headers are read. Each message becomes one contract event per recipient (actor = the
sender, target = the recipient), in a thread (`context_id`) rebuilt from Message-ID,
In-Reply-To and References; see docs/mail.md for the mapping field by field.

Modules: `settings` (RHYTHM_MAIL_*, the tenant's domains), `headers` (raw header bytes to
`MailHeaders`, tolerant of malformed mail), `threads` (JWZ linking and the durable thread
index), `mapping` (one message to its events), `store` (sqlite: thread index, what was
published, the batch in flight), `checkpoints` (UIDVALIDITY/UID per mailbox, one JSON file
written atomically), `publish` (a batch through the client, exactly once across crashes),
`mbox` (mbox files and Maildirs), `imap` (incremental sync, IDLE or polling).
"""
