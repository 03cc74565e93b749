"""`rhythm digest --for user:u-42`: preview one person's daily digest from the store, as the
notifier would build it now (plain text on stdout, the HTML page with --html)."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Annotated

import typer

from rhythm.stack.cli.foreground import fail, invalid_settings
from rhythm.stack.cli.simulate import StoreOption, open_store

_REF = re.compile(r"[^:\s]+:[^\s]+")


def register(app: typer.Typer) -> None:
    app.command("digest")(digest)


def digest(
    person: Annotated[
        str,
        typer.Option("--for", help="The person, as type:id (e.g. user:u-42).", show_default=False),
    ],
    tenant: Annotated[
        str, typer.Option(help="The person's tenant (needed when several have that id).")
    ] = "",
    html: Annotated[
        Path | None, typer.Option(help="Also write the digest as one HTML page here.")
    ] = None,
    dsn: StoreOption = None,
) -> None:
    """Preview the daily digest of one person, built from the store now.

    What they owe (open heads-ups naming them, oldest first), the accounts and contacts they
    are close to that went quiet, the biggest movers among their entities and communities,
    ranked by score x closeness x recency, at most RHYTHM_NOTIFIER_DIGEST_ITEMS (10). The
    person comes from the directory (rhythm.people, from Client.identify()); their zone and
    working hours date it. Nothing is sent or recorded.
    """
    from pydantic import ValidationError

    from rhythm.notifier.digest import build_digest
    from rhythm.notifier.digest_render import digest_html, digest_text
    from rhythm.notifier.digest_store import client_rows, fetch_inputs, find_people
    from rhythm.notifier.schedule import local_day, working_time
    from rhythm.notifier.settings import NotifierSettings

    if not _REF.fullmatch(person):
        fail(f"--for takes a person as type:id, e.g. user:u-42 (got {person!r})")
    try:
        settings = NotifierSettings()
    except ValidationError as exc:
        invalid_settings(exc, "RHYTHM_NOTIFIER_*")
    store, client, where = open_store(dsn)
    now = time.time_ns() // 1_000_000
    try:
        rows = client_rows(client)
        found = find_people(rows, database=store.database, person=person, tenant=tenant)
        if len(found) > 1:
            tenants = ", ".join(p.tenant for p in found)
            fail(f"{person} is a person in several tenants ({tenants}): say which with --tenant")
        if not found:
            scope = f" of tenant {tenant!r}" if tenant else ""
            fail(
                f"no person {person}{scope} in {store.database}.people ({where}): the directory "
                "has the people told to Client.identify()"
            )
        who = found[0]
        inputs = fetch_inputs(
            rows, database=store.database, tenant=who.tenant, person=person, now_ms=now,
            engaged_days=settings.engaged_days,
        )  # fmt: skip
    except typer.Exit:
        raise
    except Exception as exc:
        fail(f"the store ({where}) could not answer: {exc}")
    finally:
        client.close()
    wt = working_time(
        who, settings.default_timezone, settings.default_working_hours,
        settings.default_working_days,
    )  # fmt: skip
    built = build_digest(
        tenant=who.tenant, person=person, name=who.traits.name, zone=wt.zone,
        day=local_day(now, wt.zone), now_ms=now, inputs=inputs,
        engaged_days=settings.engaged_days, cap=settings.digest_items,
    )  # fmt: skip
    typer.echo(digest_text(built), nl=False)
    if html is not None:
        html.parent.mkdir(parents=True, exist_ok=True)
        html.write_text(digest_html(built), encoding="utf-8")
        typer.echo(f"HTML digest: {html.resolve()}", err=True)
