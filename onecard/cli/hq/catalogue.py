"""The chain's catalogue as HQ holds it, and the business rules HQ checks records by:
the rule breaks it found and the devices it holds for them."""

from __future__ import annotations

import json

import click

from onecard.cli.options import actor_option, authorised, db_option, refusals, when_ms


@click.group("catalogue")
def hq_catalogue() -> None:
    """The chain's catalogue as HQ holds it, to check record prices and bonus tiers."""


@hq_catalogue.command("set")
@db_option
@actor_option
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--effective", default=None,
              help="When it comes into force: ISO date/time (UTC) or epoch ms (default: now).")
def hq_catalogue_set(db: str, actor, file: str, effective: str | None) -> None:
    """Load FILE (catalogue JSON, or a pushed config holding one) as a new version."""
    from hq_server.catalogue.versions import load_catalogue_file, set_catalogue
    from hq_server.db.engine import open_engine
    from hq_server.operators.access import Place
    from protocol.products import CatalogueError

    authorised(actor, "catalogue.write", Place(None))
    try:
        catalogue = load_catalogue_file(file)
        at = when_ms(effective) if effective else None
        version = set_catalogue(open_engine(db), catalogue, effective_at_ms=at)
    except CatalogueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"catalogue version {version} stored: {len(catalogue.count_products)} count "
               f"product(s), {len(catalogue.passes)} pass(es), "
               f"{len(catalogue.bonus_tiers)} bonus tier(s)")


@hq_catalogue.command("show")
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print the catalogue in force as JSON.")
def hq_catalogue_show(db: str, as_json: bool) -> None:
    """The catalogue versions HQ holds and the one in force now."""
    from hq_server.catalogue.versions import load_history, unpriced_records
    from hq_server.clock import system_clock
    from hq_server.db.engine import open_engine

    engine = open_engine(db)
    history = load_history(engine)
    current = history.in_force(system_clock())
    if as_json:
        click.echo(json.dumps(current.to_dict() if current else None, indent=2, sort_keys=True))
        return
    if current is None:
        unpriced = unpriced_records(engine)
        click.echo(f"no catalogue: prices and bonus tiers are not checked "
                   f"({unpriced} record(s) posted unchecked)")
        return
    for v in history.versions:
        click.echo(f"version {v.version}  in force from {v.effective_at_ms}")
    for c in current.count_products:
        click.echo(f"  count {c.name}: {c.visits} visits for {c.price_fen} fen")
    for p in current.passes:
        click.echo(f"  pass {p.name} ({p.length}): {p.price_fen} fen")
    for t in current.bonus_tiers:
        click.echo(f"  bonus: pay {t.min_paid_fen} fen, get {t.bonus_fen} fen")


@click.group("rules")
def hq_rules() -> None:
    """Records that broke business rules, and devices held for them."""


@hq_rules.command("breaks")
@db_option
@click.option("--device", default=None, help="Only this device.")
def hq_rules_breaks(db: str, device: str | None) -> None:
    """Rule breaks HQ found (their value is in suspense:<device>)."""
    from hq_server.db.engine import open_engine
    from hq_server.ingest.device_holds import rule_breaks_report

    rows, held = rule_breaks_report(open_engine(db), device)
    for r in rows:
        seen = "reviewed" if r.reviewed else "open"
        click.echo(f"{r.device_id}#{r.seq}  card {r.card_id}  {r.rule}  [{seen}]  {r.reason}")
    click.echo(f"{len(rows)} rule break(s); held devices: {', '.join(held) or 'none'}")


@hq_rules.command("release")
@db_option
@actor_option
@click.argument("device_id")
@click.option("--reason", required=True, help="Why, in words (kept in the device's history).")
def hq_rules_release(db: str, actor, device_id: str, reason: str) -> None:
    """Let a held device's records in again; it resends what HQ held back."""
    from hq_server.db.engine import open_engine
    from hq_server.ingest.device_holds import release_device
    from hq_server.operators.places import authorise_at_device

    engine = open_engine(db)
    with refusals():
        authorise_at_device(actor, engine, "devices.write", device_id)
    if not release_device(engine, device_id, operator=actor.operator, reason=reason):
        raise click.ClickException(f"device {device_id!r} is not held")
    click.echo(f"{device_id} released")


COMMANDS = [hq_catalogue, hq_rules]
