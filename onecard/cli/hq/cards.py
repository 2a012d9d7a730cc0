"""Cards at HQ: the card registry (卡片档案), the denylist (挂失) and UID-only credentials
(ID cards, QR codes)."""

from __future__ import annotations

import click

from onecard.cli.options import (
    actor_option,
    authorised,
    current_actor,
    db_option,
    each_page,
    optional_when_ms,
)
from protocol.money import MAX_FEN


@click.command("denylist")
@db_option
@click.argument("action", type=click.Choice(["show", "add", "remove"]))
@click.argument("card_id", required=False)
@click.option("--reason", default="", help="Why (add/remove), e.g. 'reported lost'.")
@click.option("--since", default=None, help="When the card stopped being good (add).")
def hq_denylist(db: str, action: str, card_id: str | None, reason: str, since: str | None) -> None:
    """Show or change the denylist (挂失); running workers send changes to terminals."""
    from hq_server.db.engine import open_engine
    from hq_server.devices.denylist import (
        DenylistError,
        add_to_denylist,
        denylist_snapshot,
        remove_from_denylist,
    )

    since_ms = optional_when_ms(since, "--since")
    engine = open_engine(db)
    if action != "show":  # the denylist is the chain's: chain-wide operators change it
        from hq_server.operators.access import Place

        authorised(current_actor(db, engine), "cards.write", Place(None))
    try:
        if action == "add":
            change = add_to_denylist(engine, card_id or "", reason, effective_at_ms=since_ms)
            click.echo(f"denylist version {change.version}")
        elif action == "remove":
            click.echo(f"denylist version {remove_from_denylist(engine, card_id or '', reason).version}")
        else:
            snap = denylist_snapshot(engine)
            for e in snap.cards:
                click.echo(f"{e.card_id:<16} {e.reason}")
            click.echo(f"version {snap.version}, {len(snap.cards)} cards")
    except DenylistError as exc:
        raise click.ClickException(str(exc)) from None


@click.group("uid-credential")
def hq_uid_credential() -> None:
    """UID-only credentials (EM4100 ID cards, QR codes) that HQ approves online.

    A terminal that reads such a credential asks HQ; HQ approves it only if it is
    registered here, active, within its dates, for an allowed purpose and amount."""


@hq_uid_credential.command("add")
@db_option
@actor_option
@click.argument("kind", type=click.Choice(["em4100", "qr"]))
@click.argument("credential")
@click.option("--holder", required=True, help="Whose it is: the member number or ticket reference.")
@click.option("--purpose", "purposes", multiple=True, default=("visit",), show_default=True,
              help="A use it may be approved for; repeat for several.")
@click.option("--max-amount-fen", type=click.IntRange(0, MAX_FEN), default=0, show_default=True,
              help="Most money one use may take, in fen (0: visits only).")
@click.option("--valid-from", default=None, help="First moment it is good: ISO date/time (UTC) or epoch ms.")
@click.option("--valid-to", default=None, help="Moment it stops being good: ISO date/time (UTC) or epoch ms.")
def hq_uid_credential_add(db: str, actor, kind: str, credential: str, holder: str,
                          purposes: tuple[str, ...], max_amount_fen: int,
                          valid_from: str | None, valid_to: str | None) -> None:
    """Register CREDENTIAL (the ID card's number or the QR code's text) for a holder."""
    from hq_server.db.engine import open_engine
    from hq_server.devices.uid_credentials import UidCredentialError, add_credential
    from hq_server.operators.access import Place

    authorised(actor, "cards.write", Place(None))
    from_ms = optional_when_ms(valid_from, "--valid-from")
    to_ms = optional_when_ms(valid_to, "--valid-to")
    try:
        c = add_credential(open_engine(db), kind, credential, holder, purposes=purposes,
                           max_amount_fen=max_amount_fen, valid_from_ms=from_ms,
                           valid_to_ms=to_ms)
    except UidCredentialError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{c.kind}:{c.credential} registered for {c.holder}")


@hq_uid_credential.command("revoke")
@db_option
@actor_option
@click.argument("kind", type=click.Choice(["em4100", "qr"]))
@click.argument("credential")
def hq_uid_credential_revoke(db: str, actor, kind: str, credential: str) -> None:
    """Stop CREDENTIAL being approved online (use `hq denylist add` for a lost card)."""
    from hq_server.db.engine import open_engine
    from hq_server.devices.uid_credentials import UidCredentialError, revoke_credential
    from hq_server.operators.access import Place

    authorised(actor, "cards.write", Place(None))
    try:
        revoke_credential(open_engine(db), kind, credential)
    except UidCredentialError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{kind}:{credential.strip()} revoked")


@hq_uid_credential.command("list")
@db_option
@click.option("--holder", default=None, help="Only this holder's credentials.")
def hq_uid_credential_list(db: str, holder: str | None) -> None:
    """Registered UID credentials with their status, purposes and limits."""
    from hq_server.db.engine import open_engine
    from hq_server.devices.uid_credentials import list_credentials

    rows = list_credentials(open_engine(db), holder)
    for c in rows:
        click.echo(f"{c.kind + ':' + c.credential:<32} {c.holder:<16} {c.status:<8} "
                   f"{','.join(c.purposes):<12} max {c.max_amount_fen} fen "
                   f"from {c.valid_from_ms or '-'} to {c.valid_to_ms or '-'}")
    click.echo(f"{len(rows)} credentials")


def _card_refusals(run):
    from hq_server.cards.errors import CardError, CardNotFound
    from hq_server.operators.access import Forbidden, NotVisible

    try:
        return run()
    except (CardError, CardNotFound, Forbidden) as exc:
        raise click.ClickException(str(exc)) from None
    except NotVisible:
        raise click.ClickException("no such card") from None


@click.group("card")
def hq_card() -> None:
    """The card registry (卡片档案): every card HQ knows, its state and history."""


@hq_card.command("list")
@db_option
@actor_option
@click.option("--state", default=None, help="blank, issued, open, lost, blocked, frozen, "
              "recalled or replaced.")
@click.option("--store", default=None, help="Only cards issued at this store.")
@click.option("--member", default=None, help="Only this member's cards.")
@click.option("--product", default=None, help="Only cards of this card product.")
@click.option("--limit", type=click.IntRange(1, 1_000_000), default=1000, show_default=True)
def hq_card_list(db: str, actor, state: str | None, store: str | None,
                 member: str | None, product: str | None, limit: int) -> None:
    """The cards you may see, by card id."""
    from hq_server.cards.registry import list_cards
    from hq_server.db.engine import open_engine

    engine, shown = open_engine(db), 0
    pages = each_page(lambda cursor, n: _card_refusals(lambda: list_cards(
        engine, actor, state=state, store=store, member=member, product=product,
        cursor=cursor, limit=n)), limit)
    for c in pages:
        click.echo(f"{c['card_id']:<18} {c['state']:<9} {c['product'] or '-':<14} "
                   f"{c['issuing_store'] or '-':<14} {c['member_id'] or '-'}")
        shown += 1
    click.echo(f"{shown} cards")


@hq_card.command("show")
@db_option
@actor_option
@click.argument("card_id")
def hq_card_show(db: str, actor, card_id: str) -> None:
    """One card: state, product, member, issuing store, UIDs and history."""
    from hq_server.cards.registry import get_card
    from hq_server.db.engine import open_engine

    c = _card_refusals(lambda: get_card(open_engine(db), actor, card_id))
    click.echo(f"{c['card_id']}  {c['state']}")
    click.echo(f"  product        {c['product'] or '-'}")
    click.echo(f"  member         {c['member_id'] or '-'}")
    click.echo(f"  issuing store  {c['issuing_store'] or '-'}")
    click.echo(f"  UIDs           {', '.join(c['uids']) or '-'}")
    click.echo(f"  version        {c['version']}")
    for h in c["history"]:
        click.echo(f"  {h['at_ms']}  {h['event']:<11} {h['state_before'] or '-':>9} -> "
                   f"{h['state_after']:<9} {h['source']}")


@hq_card.command("add")
@db_option
@actor_option
@click.argument("card_id")
@click.option("--store", required=True, help="The store holding the blank card.")
@click.option("--product", default="", help="The card product it will be issued as.")
@click.option("--uid", "uids", multiple=True, help="The chip's UID in hex (repeatable).")
def hq_card_add(db: str, actor, card_id: str, store: str, product: str,
                uids: tuple[str, ...]) -> None:
    """Take a blank card into stock (白卡入库) so HQ knows it before it is issued."""
    from hq_server.cards.registry import register_card
    from hq_server.clock import system_clock
    from hq_server.db.engine import open_engine

    c = _card_refusals(lambda: register_card(open_engine(db), actor, card_id,
                                             store=store, product=product, uids=uids,
                                             now_ms=system_clock()))
    click.echo(f"card {c['card_id']} registered blank at {c['issuing_store']}")


COMMANDS = [hq_card, hq_denylist, hq_uid_credential]
