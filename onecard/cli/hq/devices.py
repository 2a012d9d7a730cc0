"""The device registry and the fleet: register, enrol and revoke terminals, see their
presence, push their config and send them commands."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import click

from onecard.cli.options import (
    MAX_DOCUMENT_BYTES,
    BoundedFloat,
    actor_option,
    db_option,
    refusals,
    site_option,
)

ROLES = click.Choice(["gate", "handheld", "kiosk"])


@click.command("add-device")
@db_option
@actor_option
@click.option("--device-id", required=True, help="The terminal's id, e.g. gate-01.")
@click.option("--public-key", required=True, help="Its Ed25519 public key, 64 hex digits.")
@click.option("--store", required=True, help="The store the terminal belongs to.")
@click.option("--role", default="gate", show_default=True, type=ROLES)
def hq_add_device(db: str, actor, device_id: str, public_key: str, store: str,
                  role: str) -> None:
    """Register a terminal so HQ accepts the records it signs."""
    from hq_server.db.engine import open_engine
    from hq_server.devices.registry import RegistryError, add_device
    from hq_server.operators.places import authorise_at_store

    engine = open_engine(db)
    with refusals():
        authorise_at_store(actor, engine, "devices.write", store)
    try:
        add_device(engine, device_id, public_key, store, role)
    except RegistryError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"registered {device_id} ({role}) for store {store}")


@click.command("list-devices")
@db_option
def hq_list_devices(db: str) -> None:
    """List registered terminals with their ingest progress."""
    from hq_server.db.engine import open_engine
    from hq_server.devices.registry import list_devices

    for d in list_devices(open_engine(db)):
        click.echo(f"{d['device_id']:<20} {d['role']:<9} {d['store']:<12} {d['status']:<8} "
                   f"acked through #{d['contiguous_through']}")


@click.command("enrolment-token")
@db_option
@actor_option
@click.option("--store", required=True)
@click.option("--role", required=True, type=ROLES)
@click.option("--ttl-hours", type=BoundedFloat(0, 24 * 366, low_open=True), default=24.0,
              show_default=True, help="How long the token stays good (at most a year).")
@click.option("--site", "site_root", type=click.Path(path_type=Path), default=None,
              help="The site folder (env ONECARD_SITE): print the whole join line, with "
                   "HQ's CA pinned by its hash, instead of the bare token.")
@click.option("--hq-url", default=None,
              help="HQ's API as the terminal reaches it (default: https://<the site's "
                   "first hostname>:8443).")
@click.option("--qr/--no-qr", default=True, show_default=True,
              help="Also draw the join line as a QR code (on stderr).")
def hq_enrolment_token(db: str, actor, store: str, role: str, ttl_hours: float,
                       site_root: Path | None, hq_url: str | None, qr: bool) -> None:
    """Create a one-time enrolment token; print the line to run on the terminal.

    With --site (or ONECARD_SITE) the output is the one command a technician runs on the
    new terminal; without it, the bare token (shown only this once).
    """
    import os

    from hq_server.db.engine import open_engine
    from hq_server.devices.enrolment import EnrolmentError, create_token
    from hq_server.operators.places import authorise_at_store

    site_root = site_root or (Path(os.environ["ONECARD_SITE"])
                              if os.environ.get("ONECARD_SITE") else None)
    engine = open_engine(db)
    with refusals():
        authorise_at_store(actor, engine, "devices.write", store)
    try:
        issued = create_token(engine, store, role, actor.operator,
                              dt.timedelta(hours=ttl_hours))
    except EnrolmentError as exc:
        raise click.ClickException(exc.message) from None
    if site_root is None:
        click.echo(issued.token)
        return
    from onecard.site import join_line

    try:
        line = join_line(site_root, issued.token, hq_url)
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"{site_root} is not a site folder ({exc})") from None
    if qr:
        import segno

        click.echo(segno.make(line, error="m").terminal(compact=True) or "", err=True)
    click.echo(line)


@click.group("card-keys")
def hq_card_keys() -> None:
    """The chain's card master keys (卡密钥), held by HQ and handed to terminals."""


@hq_card_keys.command("init")
@site_option
@click.option("--chain-id", type=click.IntRange(1, 2**32 - 1), required=True,
              help="The chain's number, written into every card key's derivation.")
def hq_card_keys_init(site_root: Path, chain_id: int) -> None:
    """Make the chain's card masters in the site folder (once; never replaced)."""
    from hq_server.devices.card_keys import init_card_keys
    from onecard.site import card_keys_file

    path = card_keys_file(site_root)
    try:
        init_card_keys(path, chain_id)
    except (FileExistsError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"card keys of chain {chain_id} in {path} (mode 0600); terminals receive "
               "them when they join")


@click.command("revoke-device")
@db_option
@actor_option
@site_option
@click.argument("device_id")
@click.option("--reason", required=True, help="Why, for the device's history.")
def hq_revoke_device(db: str, actor, site_root: Path, device_id: str, reason: str) -> None:
    """Revoke a terminal: the broker refuses it and HQ quarantines its records."""
    from hq_server.db.engine import open_engine
    from hq_server.devices.enrolment import EnrolmentError, revoke_device
    from hq_server.operators.places import authorise_at_device
    from onecard.site import device_authority

    engine = open_engine(db)
    with refusals():
        authorise_at_device(actor, engine, "devices.write", device_id)
    try:
        serials = revoke_device(engine, device_authority(site_root), device_id,
                                actor.operator, reason)
    except EnrolmentError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"{device_id} revoked; certificates on the CRL: {len(serials)}")


@click.command("fleet")
@db_option
def hq_fleet(db: str) -> None:
    """Terminals with their presence: online, last seen, backlog, versions."""
    from hq_server.db.engine import open_engine
    from hq_server.devices.presence import fleet_presence

    for device_id, p in fleet_presence(open_engine(db)).items():
        state = "online" if p["online"] else f"offline ({p['offline_reason'] or 'never seen'})"
        click.echo(f"{device_id:<16} {state:<22} sw {p['software_version'] or '-':<10} "
                   f"outbox {p['outbox_depth'] if p['outbox_depth'] is not None else '-':<6} "
                   f"HQ behind by {p['upload_backlog']}")


def _fleet_client(site_root: Path, broker_host: str):
    """A fleet client on the site's broker; the site and its broker checked first, so a
    wrong folder or a broker that is down is one line, not a paho timeout."""
    from onecard.site import SiteUnusable, check_broker, fleet_client

    try:
        check_broker(site_root, broker_host)
    except SiteUnusable as exc:
        raise click.ClickException(str(exc)) from None
    return fleet_client(site_root, broker_host)


def _read_document(document) -> dict:
    raw = document.read(MAX_DOCUMENT_BYTES + 1)
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise click.ClickException(f"document too large (over {MAX_DOCUMENT_BYTES} bytes)")
    try:
        return json.loads(raw)
    except RecursionError:
        raise click.ClickException("not JSON we accept: nested too deeply") from None
    except ValueError as exc:
        raise click.ClickException(f"not JSON: {exc}") from None


def _may_command(db: str, device_id: str) -> None:
    """The signed-in operator may change this terminal (devices.write at its store)."""
    from hq_server.db.engine import open_engine
    from hq_server.operators.places import authorise_at_device
    from onecard.cli.options import current_actor

    engine = open_engine(db)
    with refusals():
        authorise_at_device(current_actor(db, engine), engine, "devices.write", device_id)


@click.command("push-config")
@db_option
@site_option
@click.option("--device", "device_id", default=None, help="One terminal's device id.")
@click.option("--store", default=None,
              help="A store: HQ keeps DOCUMENT as the store's config (new terminals get it "
                   "at enrolment) and sends it to every terminal of the store.")
@click.option("--broker-host", default="127.0.0.1", show_default=True)
@click.option("--wait", type=BoundedFloat(0, 3600), default=15.0, show_default=True,
              help="Seconds to wait for the terminal's report (0: do not wait).")
@click.argument("document", type=click.File("rb"))
def hq_push_config(db: str, site_root: Path, device_id: str | None, store: str | None,
                   broker_host: str, wait: float, document) -> None:
    """Make DOCUMENT (JSON) the desired config of a terminal or a store; print one JSON
    line per terminal: its device id, the version sent and the version it runs."""
    from hq_server.db.engine import open_engine
    from hq_server.fleet.config_push import PushRefused, push_config
    from hq_server.operators.places import authorise_at_device, authorise_at_store
    from onecard.cli.options import current_actor

    if (device_id is None) == (store is None):
        raise click.UsageError("give --device or --store (one of them)")
    doc = _read_document(document)
    engine = open_engine(db)
    actor = current_actor(db, engine)
    with refusals():
        if store is not None:
            authorise_at_store(actor, engine, "devices.write", store)
        else:
            authorise_at_device(actor, engine, "devices.write", device_id)
    fleet = _fleet_client(site_root, broker_host)
    try:
        outcomes = push_config(fleet, doc, device_id=device_id, store=store, engine=engine,
                               actor=actor.operator, wait_s=wait)
    except PushRefused as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        fleet.stop()
    for outcome in outcomes:
        click.echo(json.dumps(outcome.to_json()))
    failed = [o for o in outcomes if o.refused]
    if failed:
        raise click.ClickException("; ".join(f"{o.device_id} refused version {o.version}: "
                                             f"{o.error}" for o in failed))


def _command_args(items: tuple[str, ...]) -> dict:
    """``KEY=JSON`` pairs; a value that is not JSON is taken as a string."""
    parsed = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not key or not eq:
            raise click.BadParameter(f"{item[:40]!r} is not KEY=VALUE", param_hint="--arg")
        try:
            parsed[key] = json.loads(value)
        except RecursionError:
            raise click.BadParameter("value nested too deeply", param_hint="--arg") from None
        except ValueError:
            parsed[key] = value
    return parsed


@click.command("command")
@db_option
@site_option
@click.option("--device", "device_id", required=True, help="The terminal's device id.")
@click.option("--broker-host", default="127.0.0.1", show_default=True)
@click.option("--arg", "args", multiple=True, help="KEY=JSON value, e.g. on=true (repeatable).")
@click.option("--wait", type=BoundedFloat(0, 3600), default=15.0, show_default=True,
              help="Seconds to wait for the terminal's answer.")
@click.argument("name", type=click.Choice(["sync_now", "reload_config", "open_gate",
                                           "maintenance", "collect_logs"]))
def hq_command(db: str, site_root: Path, device_id: str, broker_host: str,
               args: tuple[str, ...], wait: float, name: str) -> None:
    """Send a command to a terminal and print its answer."""
    parsed = _command_args(args)
    _may_command(db, device_id)
    fleet = _fleet_client(site_root, broker_host)
    try:
        result = fleet.result(fleet.send_command(device_id, name, parsed), wait)
    finally:
        fleet.stop()
    if result is None:
        raise click.ClickException(f"{device_id} did not answer within {wait:g} s")
    click.echo(result.to_json().decode())
    if not result.ok:
        raise click.ClickException(result.detail)


COMMANDS = [hq_add_device, hq_list_devices, hq_enrolment_token, hq_revoke_device, hq_fleet,
            hq_push_config, hq_command, hq_card_keys]
