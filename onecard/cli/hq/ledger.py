"""The ledger from the command line: check it, correct it (冲正), settle stores (跨店结算),
and reconcile cards against it (对账)."""

from __future__ import annotations

import json

import click

from onecard.cli.options import actor_option, authorised, current_actor, db_option, when_ms


@click.command("verify-ledger")
@db_option
@click.option("--signatures", is_flag=True,
              help="Also check every stored record's signature again (slower audit).")
def hq_verify_ledger(db: str, signatures: bool) -> None:
    """Recompute every balance from the entries and check that all of it balances."""
    from hq_server.db.engine import open_engine
    from hq_server.ledger.check import check_ledger

    check = check_ledger(open_engine(db), signatures=signatures)
    for asset, total in sorted(check.asset_totals.items()):
        click.echo(f"{asset:<24} sum over all accounts: {total}")
    click.echo(", ".join(f"{n} {what}" for what, n in check.figures.items()))
    if not check.balanced:
        for problem in check.problems:
            click.echo(f"PROBLEM: {problem}")
        raise click.ClickException("the ledger does not balance")
    click.echo("ledger balanced: every transaction, account total and record checked")


@click.command("reverse")
@db_option
@actor_option
@click.argument("txn_id")
@click.option("--reason", required=True, help="Why, in words; kept with the reversal.")
def hq_reverse(db: str, actor, txn_id: str, reason: str) -> None:
    """Correct a ledger transaction by posting its exact reversal (冲正), as you."""
    from hq_server.db.engine import open_engine
    from hq_server.ledger.writer import LedgerError, reverse_transaction
    from hq_server.operators.access import Place

    authorised(actor, "ledger.write", Place(None))
    try:
        click.echo(f"posted {reverse_transaction(open_engine(db), txn_id, reason, actor.operator)}")
    except LedgerError as exc:
        raise click.ClickException(str(exc)) from None


@click.command("settlement")
@db_option
@click.option("--from", "start", required=True, help="Period start: 2026-11-01 or epoch ms.")
@click.option("--to", "end", required=True, help="Period end (exclusive).")
@click.option("--post", is_flag=True, help="Book the period to the stores' settlement accounts.")
def hq_settlement(db: str, start: str, end: str, post: bool) -> None:
    """Who owes whom between stores for a period (跨店结算)."""
    from hq_server.db.engine import open_engine
    from hq_server.ledger.writer import LedgerError
    from hq_server.settlement.runs import period_matrix, post_settlement
    from protocol.money import format_fen

    start_ms, end_ms = when_ms(start, "--from"), when_ms(end, "--to")
    engine = open_engine(db)
    if post:
        from hq_server.operators.access import Place

        authorised(current_actor(db, engine), "ledger.write", Place(None))
    try:
        if post:
            matrix, posted = post_settlement(engine, start_ms, end_ms)
            click.echo("booked" if posted else "already booked")
        else:
            matrix = period_matrix(engine, start_ms, end_ms)
    except LedgerError as exc:
        raise click.ClickException(str(exc)) from None
    for (a, b), fen in sorted(matrix.owes.items()):
        click.echo(f"{a} owes {b} {format_fen(fen)}")
    for store, fen in sorted(matrix.net.items()):
        click.echo(f"  {store:<16} net {format_fen(fen):>14}")
    click.echo(f"matrix sums to {matrix.total()}")


@click.command("reconcile")
@db_option
@click.option("--card", default=None, help="Only this card (default: every card that is due).")
@click.option("--auto-denylist-clones", is_flag=True, help="Denylist cards seen cloned.")
def hq_reconcile(db: str, card: str | None, auto_denylist_clones: bool) -> None:
    """Compare cards' records with each other and with the ledger now (对账)."""
    from hq_server.cards.errors import CardNotFound
    from hq_server.db.engine import open_engine
    from hq_server.reconciliation.rules import ReconcileConfig
    from hq_server.reconciliation.runs import reconcile_card_in_db, reconcile_due

    engine, config = open_engine(db), ReconcileConfig(auto_denylist_clones)
    if auto_denylist_clones:  # changes the chain's denylist
        from hq_server.operators.access import Place

        authorised(current_actor(db, engine), "cards.write", Place(None))
    if card:
        try:
            report, summary = reconcile_card_in_db(engine, card, config)
        except CardNotFound as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"card {card}: ledger purse {report.expected.purse} fen, card shows "
                   f"{report.card_purse} fen at counter {report.card_counter}; "
                   f"{len(report.anomalies)} anomalies")
    else:
        summary = reconcile_due(engine, config, limit=1_000_000)
        click.echo(f"{summary.cards} cards reconciled")
    for a in summary.new_anomalies:
        click.echo(f"NEW {a.severity:<6} {a.kind:<18} {a.card_id}: {a.summary}")


@click.command("anomalies")
@db_option
@click.option("--card", default=None, help="Only this card.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON with the evidence.")
def hq_anomalies(db: str, card: str | None, as_json: bool) -> None:
    """List open anomalies: clones, rollbacks, forged top-ups, late denylist hits."""
    from hq_server.db.engine import open_engine
    from hq_server.reconciliation.runs import open_anomalies

    found = open_anomalies(open_engine(db), card)
    if as_json:
        click.echo(json.dumps(found, indent=2, ensure_ascii=False))
        return
    for a in found:
        click.echo(f"{a['severity']:<6} {a['kind']:<18} {a['card_id']:<12} {a['summary']}")
    click.echo(f"{len(found)} open")


COMMANDS = [hq_verify_ledger, hq_reverse, hq_settlement, hq_reconcile, hq_anomalies]
