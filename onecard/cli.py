"""``onecard``: one command for HQ, terminals, the broker, simulators and the demo."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import signal
import sys
from pathlib import Path

import click

from protocol.money import MAX_FEN

DEFAULT_HQ_DB = "sqlite:///onecard-hq.db"

#: The latest moment a date option takes: 9999-12-31T23:59:59.999Z in epoch ms.
MAX_EPOCH_MS = 253_402_300_799_999
#: The most bytes a JSON document given on the command line may have.
MAX_DOCUMENT_BYTES = 1024 * 1024

PORT = click.IntRange(1, 65535)


class BoundedFloat(click.ParamType):
    """A finite number of seconds (or hours, or a rate) within ``[low, high]``; click's
    FloatRange lets NaN through, and ``inf`` or ``1e308`` would overflow a timedelta."""

    name = "seconds"

    def __init__(self, low: float, high: float, *, low_open: bool = False) -> None:
        self.low, self.high, self.low_open = low, high, low_open

    def convert(self, value, param, ctx) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        below = number <= self.low if self.low_open else number < self.low
        if not math.isfinite(number) or below or number > self.high:
            bracket = "(" if self.low_open else "["
            self.fail(f"{value!r} is not in the range {bracket}{self.low:g}, {self.high:g}]",
                      param, ctx)
        return number


class CommandLine(click.Group):
    """The top-level group: turns known failures of the system around a command (a
    database, broker or file that is not usable) into one line and exit 1. Only with
    ``--verbose`` does the traceback show; bad arguments are click's usage errors (2)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - the one place that reports, not hides
            if ctx.params.get("verbose"):
                raise
            raise click.ClickException(_explain(exc)) from None


def _explain(exc: BaseException) -> str:
    """One line saying what went wrong, for an operator; no internals beyond the cause."""
    import sqlalchemy.exc as sa

    def first_line(text: object) -> str:
        return (str(text).strip().splitlines() or [""])[0]

    if isinstance(exc, sa.ArgumentError | sa.NoSuchModuleError):
        return f"not a usable database URL (sqlite:///path.db or postgresql+psycopg://...): {first_line(exc)}"
    if isinstance(exc, sa.OperationalError):
        return f"cannot use the database: {first_line(exc.orig or exc)}"
    if isinstance(exc, sa.SQLAlchemyError):
        return f"database error: {first_line(exc.orig if isinstance(exc, sa.DBAPIError) else exc)}"
    if isinstance(exc, RecursionError):
        return "input nested too deeply"
    if isinstance(exc, OverflowError):
        return f"a number is too large: {first_line(exc)}"
    if isinstance(exc, TimeoutError | ConnectionError):
        return f"could not connect: {first_line(exc) or type(exc).__name__}"
    if isinstance(exc, OSError):
        return first_line(exc) or type(exc).__name__
    detail = first_line(exc)
    if isinstance(exc, ValueError | RuntimeError | LookupError) and detail:
        return detail
    return (f"unexpected {type(exc).__name__}: {detail} (run with --verbose for details)"
            if detail else f"unexpected {type(exc).__name__} (run with --verbose for details)")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        logging.getLogger("alembic").setLevel(logging.WARNING)


@click.group(cls=CommandLine, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True,
              help="Log debug detail, and show the traceback of an unexpected failure.")
def main(verbose: bool) -> None:
    """OneCard: membership and stored-value cards for venue chains (会员一卡通).

    \b
    Quick start:
      onecard demo                     broker, HQ and a simulated fleet, live
      onecard demo --headless --duration 30 --report report.json
      onecard hq add-device ...        register a terminal's public key at HQ
      onecard hq run ...               run HQ ingest against a broker
    """
    _setup_logging(verbose)


# --- hq ----------------------------------------------------------------------------


no_fleet_option = click.option(
    "--no-fleet", is_flag=True,
    help="Do not answer UID authorisation and clock requests here (another HQ process does).")


def _answering_fleet(engine, *, host: str, port: int, username: str, password: str,
                     client_id: str, tls=None):
    """HQ's fleet service beside an ingest worker: answers UID authorisation from the
    registry (``onecard hq uid-credential``), the denylist first, and the clock echo."""
    import threading

    from hq_server.denylist import denylist_snapshot
    from hq_server.fleet_commands import FleetService
    from hq_server.uid_credentials import authoriser

    def denylisted(card_id: str) -> bool:
        return any(e.card_id == card_id for e in denylist_snapshot(engine).cards)

    fleet = FleetService(host=host, port=port, username=username, password=password,
                         client_id=f"{client_id}-fleet", authorise=authoriser(engine),
                         denylisted=denylisted)
    if tls is not None:
        fleet.client.tls_set_context(tls)

    def start() -> None:  # in the background: ingest must not wait for it
        try:
            fleet.start(timeout=30)
            click.echo("HQ fleet service answering UID authorisation and the clock", err=True)
        except TimeoutError:  # paho keeps retrying, like the ingest worker
            click.echo("HQ fleet service: broker not reachable yet, retrying", err=True)

    fleet.starting = threading.Thread(target=start, name="hq-fleet-start", daemon=True)
    fleet.starting.start()
    return fleet


def _run_ingest(worker, fleet) -> None:
    """Run the worker and the fleet service under one supervisor until SIGTERM/Ctrl-C.

    A thread that dies is restarted with its reason logged; one that keeps dying stops
    the process with a non-zero status, so systemd restarts it. Each thread's health is
    written to the database for ``onecard hq status`` and ``GET /health``.
    """
    from hq_server.supervision import Supervisor

    supervisor = Supervisor(worker.client_id, engine=worker.engine)
    if fleet is not None:
        supervisor.add(fleet.component())
    code = 0
    try:
        code = worker.run_forever(supervisor)
    except KeyboardInterrupt:
        pass
    finally:
        if fleet is not None:
            fleet.starting.join(timeout=5)
            fleet.stop()
    if code:
        click.echo(f"HQ stopped: {supervisor.failure}", err=True)
        sys.exit(code)


@main.group()
def hq() -> None:
    """HQ server: ledger, ingest and the device registry."""


def _database_url(ctx, param, url: str) -> str:
    """A usage error, before anything is opened, for a URL HQ cannot use at all."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise click.BadParameter(f"{url[:60]!r} is not a database URL (sqlite:///path.db "
                                 "or postgresql+psycopg://...)", ctx, param) from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise click.BadParameter(f"HQ runs on SQLite or PostgreSQL, not {parsed.drivername}",
                                 ctx, param)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        folder = Path(parsed.database).parent
        if not folder.is_dir():
            raise click.BadParameter(f"folder {folder} does not exist", ctx, param)
    return url


db_option = click.option(
    "--db", default=lambda: os.environ.get("ONECARD_HQ_DB", DEFAULT_HQ_DB), show_default=DEFAULT_HQ_DB,
    callback=_database_url,
    help="HQ database URL: sqlite:///path.db or postgresql+psycopg://... (env ONECARD_HQ_DB).",
)


@hq.command("add-device")
@db_option
@click.option("--device-id", required=True, help="The terminal's id, e.g. gate-01.")
@click.option("--public-key", required=True, help="Its Ed25519 public key, 64 hex digits.")
@click.option("--store", required=True, help="The store the terminal belongs to.")
@click.option("--role", default="gate", show_default=True,
              type=click.Choice(["gate", "handheld", "kiosk"]))
def hq_add_device(db: str, device_id: str, public_key: str, store: str, role: str) -> None:
    """Register a terminal so HQ accepts the records it signs."""
    from hq_server.devices import RegistryError, add_device
    from hq_server.schema import open_engine

    try:
        add_device(open_engine(db), device_id, public_key, store, role)
    except RegistryError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"registered {device_id} ({role}) for store {store}")


@hq.command("list-devices")
@db_option
def hq_list_devices(db: str) -> None:
    """List registered terminals with their ingest progress."""
    from hq_server.devices import list_devices
    from hq_server.schema import open_engine

    for d in list_devices(open_engine(db)):
        click.echo(f"{d['device_id']:<20} {d['role']:<9} {d['store']:<12} {d['status']:<8} "
                   f"acked through #{d['contiguous_through']}")


@hq.command("migrate")
@db_option
@click.option("--show", is_flag=True, help="Only print the current and newest revisions.")
def hq_migrate(db: str, show: bool) -> None:
    """Bring the HQ database to the newest schema (Alembic; every HQ command does it too)."""
    from hq_server.migrations import current_revisions, head_revisions, upgrade
    from hq_server.schema import open_engine

    engine = open_engine(db, migrate=False)
    if not show:
        upgrade(engine)
    with engine.connect() as conn:
        current = ", ".join(current_revisions(conn)) or "(empty)"
    click.echo(f"database at {current}; newest {', '.join(head_revisions())}")


@hq.command("verify-ledger")
@db_option
@click.option("--signatures", is_flag=True,
              help="Also check every stored record's signature again (slower audit).")
def hq_verify_ledger(db: str, signatures: bool) -> None:
    """Recompute every balance from the entries and check that all of it balances."""
    from hq_server.ledger import check_ledger
    from hq_server.schema import open_engine

    check = check_ledger(open_engine(db), signatures=signatures)
    for asset, total in sorted(check.asset_totals.items()):
        click.echo(f"{asset:<24} sum over all accounts: {total}")
    click.echo(", ".join(f"{n} {what}" for what, n in check.figures.items()))
    if not check.balanced:
        for problem in check.problems:
            click.echo(f"PROBLEM: {problem}")
        raise click.ClickException("the ledger does not balance")
    click.echo("ledger balanced: every transaction, account total and record checked")


_EPOCH_MS = re.compile(r"[0-9]{1,15}")


def _when_ms(text: str, param: str | None = None) -> int:
    """An ISO date/time (UTC unless it says otherwise) or epoch milliseconds, between
    1970 and the year 9999; anything else is a usage error naming ``param``."""
    from datetime import UTC, datetime

    def bad(why: str) -> click.BadParameter:
        return click.BadParameter(f"{why}: {text[:40]!r} (e.g. 2026-11-01 or epoch ms)",
                                  param_hint=param)

    if _EPOCH_MS.fullmatch(text):
        ms = int(text)
    elif text.isascii() and text[:1].isdigit():
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            raise bad("not a date or time") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        ms = int(when.timestamp() * 1000)
    else:
        raise bad("not a date or time")
    if not 0 <= ms <= MAX_EPOCH_MS:
        raise bad("not between 1970 and the year 9999")
    return ms


def _date_option(text: str | None, param: str) -> int | None:
    return None if text is None else _when_ms(text, param)


@hq.command("reconcile")
@db_option
@click.option("--card", default=None, help="Only this card (default: every card that is due).")
@click.option("--auto-denylist-clones", is_flag=True, help="Denylist cards seen cloned.")
def hq_reconcile(db: str, card: str | None, auto_denylist_clones: bool) -> None:
    """Compare cards' records with each other and with the ledger now (对账)."""
    from hq_server.reconciliation import ReconcileConfig, reconcile_card_in_db, reconcile_due
    from hq_server.schema import open_engine

    engine, config = open_engine(db), ReconcileConfig(auto_denylist_clones)
    if card:
        report, summary = reconcile_card_in_db(engine, card, config)
        click.echo(f"card {card}: ledger purse {report.expected.purse} fen, card shows "
                   f"{report.card_purse} fen at counter {report.card_counter}; "
                   f"{len(report.anomalies)} anomalies")
    else:
        summary = reconcile_due(engine, config, limit=1_000_000)
        click.echo(f"{summary.cards} cards reconciled")
    for a in summary.new_anomalies:
        click.echo(f"NEW {a.severity:<6} {a.kind:<18} {a.card_id}: {a.summary}")


@hq.command("anomalies")
@db_option
@click.option("--card", default=None, help="Only this card.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON with the evidence.")
def hq_anomalies(db: str, card: str | None, as_json: bool) -> None:
    """List open anomalies: clones, rollbacks, forged top-ups, late denylist hits."""
    from hq_server.reconciliation import open_anomalies
    from hq_server.schema import open_engine

    found = open_anomalies(open_engine(db), card)
    if as_json:
        click.echo(json.dumps(found, indent=2, ensure_ascii=False))
        return
    for a in found:
        click.echo(f"{a['severity']:<6} {a['kind']:<18} {a['card_id']:<12} {a['summary']}")
    click.echo(f"{len(found)} open")


@hq.command("reverse")
@db_option
@click.argument("txn_id")
@click.option("--reason", required=True, help="Why, in words; kept with the reversal.")
@click.option("--operator", required=True, help="Who asks for it.")
def hq_reverse(db: str, txn_id: str, reason: str, operator: str) -> None:
    """Correct a ledger transaction by posting its exact reversal (冲正)."""
    from hq_server.ledger import LedgerError, reverse_transaction
    from hq_server.schema import open_engine

    try:
        click.echo(f"posted {reverse_transaction(open_engine(db), txn_id, reason, operator)}")
    except LedgerError as exc:
        raise click.ClickException(str(exc)) from None


@hq.command("settlement")
@db_option
@click.option("--from", "start", required=True, help="Period start: 2026-11-01 or epoch ms.")
@click.option("--to", "end", required=True, help="Period end (exclusive).")
@click.option("--post", is_flag=True, help="Book the period to the stores' settlement accounts.")
def hq_settlement(db: str, start: str, end: str, post: bool) -> None:
    """Who owes whom between stores for a period (跨店结算)."""
    from hq_server.ledger import LedgerError
    from hq_server.schema import open_engine
    from hq_server.settlement import period_matrix, post_settlement
    from protocol.money import format_fen

    start_ms, end_ms = _when_ms(start, "--from"), _when_ms(end, "--to")
    engine = open_engine(db)
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


@hq.command("denylist")
@db_option
@click.argument("action", type=click.Choice(["show", "add", "remove"]))
@click.argument("card_id", required=False)
@click.option("--reason", default="", help="Why (add/remove), e.g. 'reported lost'.")
@click.option("--since", default=None, help="When the card stopped being good (add).")
def hq_denylist(db: str, action: str, card_id: str | None, reason: str, since: str | None) -> None:
    """Show or change the denylist (挂失); running workers send changes to terminals."""
    from hq_server.denylist import (
        DenylistError,
        add_to_denylist,
        denylist_snapshot,
        remove_from_denylist,
    )
    from hq_server.schema import open_engine

    since_ms = _date_option(since, "--since")
    engine = open_engine(db)
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


@hq.group("uid-credential")
def hq_uid_credential() -> None:
    """UID-only credentials (EM4100 ID cards, QR codes) that HQ approves online.

    A terminal that reads such a credential asks HQ; HQ approves it only if it is
    registered here, active, within its dates, for an allowed purpose and amount."""


@hq_uid_credential.command("add")
@db_option
@click.argument("kind", type=click.Choice(["em4100", "qr"]))
@click.argument("credential")
@click.option("--holder", required=True, help="Whose it is: the member number or ticket reference.")
@click.option("--purpose", "purposes", multiple=True, default=("visit",), show_default=True,
              help="A use it may be approved for; repeat for several.")
@click.option("--max-amount-fen", type=click.IntRange(0, MAX_FEN), default=0, show_default=True,
              help="Most money one use may take, in fen (0: visits only).")
@click.option("--valid-from", default=None, help="First moment it is good: ISO date/time (UTC) or epoch ms.")
@click.option("--valid-to", default=None, help="Moment it stops being good: ISO date/time (UTC) or epoch ms.")
def hq_uid_credential_add(db: str, kind: str, credential: str, holder: str,
                          purposes: tuple[str, ...], max_amount_fen: int,
                          valid_from: str | None, valid_to: str | None) -> None:
    """Register CREDENTIAL (the ID card's number or the QR code's text) for a holder."""
    from hq_server.schema import open_engine
    from hq_server.uid_credentials import UidCredentialError, add_credential

    from_ms, to_ms = _date_option(valid_from, "--valid-from"), _date_option(valid_to, "--valid-to")
    try:
        c = add_credential(open_engine(db), kind, credential, holder, purposes=purposes,
                           max_amount_fen=max_amount_fen, valid_from_ms=from_ms,
                           valid_to_ms=to_ms)
    except UidCredentialError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{c.kind}:{c.credential} registered for {c.holder}")


@hq_uid_credential.command("revoke")
@db_option
@click.argument("kind", type=click.Choice(["em4100", "qr"]))
@click.argument("credential")
def hq_uid_credential_revoke(db: str, kind: str, credential: str) -> None:
    """Stop CREDENTIAL being approved online (use `hq denylist add` for a lost card)."""
    from hq_server.schema import open_engine
    from hq_server.uid_credentials import UidCredentialError, revoke_credential

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
    from hq_server.schema import open_engine
    from hq_server.uid_credentials import list_credentials

    rows = list_credentials(open_engine(db), holder)
    for c in rows:
        click.echo(f"{c.kind + ':' + c.credential:<32} {c.holder:<16} {c.status:<8} "
                   f"{','.join(c.purposes):<12} max {c.max_amount_fen} fen "
                   f"from {c.valid_from_ms or '-'} to {c.valid_to_ms or '-'}")
    click.echo(f"{len(rows)} credentials")


@hq.command("fleet")
@db_option
def hq_fleet(db: str) -> None:
    """Terminals with their presence: online, last seen, backlog, versions."""
    from hq_server.presence import fleet_presence
    from hq_server.schema import open_engine

    for device_id, p in fleet_presence(open_engine(db)).items():
        state = "online" if p["online"] else f"offline ({p['offline_reason'] or 'never seen'})"
        click.echo(f"{device_id:<16} {state:<22} sw {p['software_version'] or '-':<10} "
                   f"outbox {p['outbox_depth'] if p['outbox_depth'] is not None else '-':<6} "
                   f"HQ behind by {p['upload_backlog']}")


@hq.command("run")
@db_option
@click.option("--broker-host", default="127.0.0.1", show_default=True)
@click.option("--broker-port", type=PORT, required=True)
@click.option("--username", default="hq@onecard", show_default=True)
@click.option("--password", envvar="ONECARD_HQ_BROKER_PASSWORD", required=True,
              help="Broker password (env ONECARD_HQ_BROKER_PASSWORD).")
@click.option("--client-id", default="hq-ingest-1", show_default=True)
@click.option("--auto-denylist-clones", is_flag=True,
              help="Denylist a card as soon as reconciliation sees it cloned.")
@no_fleet_option
def hq_run(db: str, broker_host: str, broker_port: int, username: str, password: str,
           client_id: str, auto_denylist_clones: bool, no_fleet: bool) -> None:
    """Run HQ ingest: verify device records, post them, acknowledge them; and (unless
    --no-fleet) answer terminals' UID authorisation requests and clock samples."""
    from hq_server.ingest_worker import IngestWorker
    from hq_server.reconciliation import ReconcileConfig
    from hq_server.schema import open_engine

    engine = open_engine(db)
    worker = IngestWorker(engine, host=broker_host, port=broker_port,
                          username=username, password=password, client_id=client_id,
                          reconcile_config=ReconcileConfig(auto_denylist_clones))
    fleet = None if no_fleet else _answering_fleet(
        engine, host=broker_host, port=broker_port, username=username, password=password,
        client_id=client_id)
    signal.signal(signal.SIGTERM, lambda *_: worker._stop.set())
    click.echo(f"HQ ingest on {broker_host}:{broker_port}, ledger {db}", err=True)
    _run_ingest(worker, fleet)


# --- terminal ------------------------------------------------------------------------


@main.group()
def terminal() -> None:
    """Terminal runtime: identity, outbox and uplink."""


@terminal.command("init")
@click.option("--secrets", "secrets_dir", type=click.Path(path_type=Path), required=True,
              help="Folder for the device's keys (made with mode 0700).")
@click.option("--device-id", required=True)
@click.option("--store", required=True)
def terminal_init(secrets_dir: Path, device_id: str, store: str) -> None:
    """Create the device's signing key (first start) and print its public key."""
    from terminal_fw.identity import load_or_create

    ident = load_or_create(secrets_dir, device_id, store)
    click.echo(json.dumps({"device_id": ident.device_id, "store": ident.store,
                           "public_key": ident.public_key_hex}))


@terminal.command("outbox")
@click.option("--store-db", type=click.Path(path_type=Path, exists=True), required=True)
def terminal_outbox(store_db: Path) -> None:
    """Show what the terminal still holds for HQ."""
    from terminal_fw.outbox import Outbox

    box = Outbox(store_db)
    click.echo(f"made {box.last_seq} records, HQ acknowledged through #{box.acked_through}, "
               f"{box.backlog()} waiting")


# --- sim -----------------------------------------------------------------------------


@main.group()
def sim() -> None:
    """Simulated hardware behind the real stacks (PC/SC via vpcd, PN532 on a pty)."""


def _run_until_interrupted(runner, **kwargs) -> None:
    import threading

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):  # Ctrl-C stops cleanly (and saves)
        signal.signal(sig, lambda *_: stop.set())
    runner(say=lambda m: click.echo(m, err=True), stop=stop, **kwargs)


def _card_dump(ctx, param, dump: Path) -> Path:
    """The dump file, checked to hold a 1K card; a usage error saying why if it does not."""
    from simulators.mifare_classic import CardDumpError, load_dump

    try:
        load_dump(dump)
        return dump
    except CardDumpError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


card_dump = click.option("--card", "dump", required=True, callback=_card_dump,
                         type=click.Path(path_type=Path, exists=True, dir_okay=False),
                         help="A 1024-byte MIFARE Classic 1K dump (.mfd).")
save_option = click.option("--save", is_flag=True, help="Write the card back to the dump at exit.")


@sim.command("pcsc")
@card_dump
@save_option
@click.option("--port", type=PORT, default=35963, show_default=True,
              help="vpcd port (35963 = Virtual PCD 00 00, 35964 = 00 01).")
@click.option("--model", type=click.Choice(["acr1252u", "acr122u"]), default="acr1252u",
              show_default=True,
              help="Reader model: acr1252u reads/writes up to 3 blocks per APDU (ACS "
                   "Multiple Blocks Mode); acr122u one block per APDU.")
def sim_pcsc(dump: Path, save: bool, port: int, model: str) -> None:
    """A virtual PC/SC reader (through pcscd + vpcd) with the card from DUMP on it."""
    from simulators.sim_runner import run_pcsc

    _run_until_interrupted(run_pcsc, dump=dump, port=port, save=save,
                           multi_block=model == "acr1252u")


@sim.command("pn532")
@card_dump
@save_option
def sim_pn532(dump: Path, save: bool) -> None:
    """An emulated PN532 on a pty with the card from DUMP in its field."""
    from simulators.sim_runner import run_pn532

    _run_until_interrupted(run_pn532, dump=dump, save=save)


@sim.command("ioboard")
@click.option("--safe-state", type=click.Choice(["locked", "free"]), default="locked",
              show_default=True, help="What the door does when the terminal stops talking.")
@click.option("--no-walk", is_flag=True, help="Nobody walks through (every passage times out).")
def sim_ioboard(safe_state: str, no_walk: bool) -> None:
    """The gate I/O board's firmware in MicroPython on a pty, with a turnstile."""
    from simulators.ioboard import run_ioboard

    _run_until_interrupted(run_ioboard, safe_state=int(safe_state == "free"),
                           walk_after_s=None if no_walk else 0.5)


# --- demo ----------------------------------------------------------------------------


@main.command()
@click.option("--headless", is_flag=True, help="No live screen; for scripts and CI.")
@click.option("--duration", type=BoundedFloat(0, 7 * 86400, low_open=True), default=None,
              help="Seconds of tapping before the drain (default: until Ctrl-C; 30 headless).")
@click.option("--report", type=click.Path(path_type=Path), default=None,
              help="Write a JSON report here at the end.")
@click.option("--gates", type=click.IntRange(1, 64), default=3, show_default=True,
              help="Simulated gates.")
@click.option("--tap-rate", type=BoundedFloat(0, 1000, low_open=True), default=4.0,
              show_default=True,
              help="Taps per second per gate.")
@click.option("--outage", type=BoundedFloat(0, 7 * 86400), default=None,
              help="Seconds one gate spends without its broker connection (default: a third of the run).")
def demo(headless: bool, duration: float | None, report: Path | None, gates: int,
         tap_rate: float, outage: float | None) -> None:
    """Run the broker, HQ and a simulated fleet of gates with members tapping.

    One gate loses its broker connection for a while and catches up. At the end the
    taps stop, every backlog drains, and the figures are checked.
    """
    from onecard.demo import DemoConfig, run_demo

    if headless and duration is None:
        duration = 30.0
    config = DemoConfig(gates=gates, duration=duration, tap_rate=tap_rate, outage=outage,
                        headless=headless)
    result = run_demo(config)
    if report:
        report.write_text(json.dumps(result, indent=2, sort_keys=True))
        click.echo(f"report written to {report}", err=True)
    ok = (result["records_made"] == result["records_ledgered"] and result["ledger_balanced"]
          and all(d["backlog"] == 0 for d in result["devices"].values()))
    if not ok:
        click.echo("demo figures do not add up: see the report", err=True)
        sys.exit(1)


# --- broker, enrolment and operators (mutual TLS) ------------------------------------


@main.group()
def broker() -> None:
    """Production broker: device and service CAs, mutual TLS config, store bridges."""


site_option = click.option(
    "--site", "site_root", type=click.Path(path_type=Path), required=True,
    default=lambda: os.environ.get("ONECARD_SITE"),
    help="Folder made by `onecard broker init` (env ONECARD_SITE).")


@broker.command("init")
@click.argument("root", type=click.Path(path_type=Path))
@click.option("--hostname", "hostnames", multiple=True, required=True,
              help="Name or address terminals use for the broker (repeatable).")
@click.option("--api-hostname", "api_hostnames", multiple=True,
              help="Name or address of HQ's HTTPS API (default: the broker's).")
@click.option("--device-port", type=PORT, default=8883, show_default=True)
@click.option("--service-port", type=PORT, default=8884, show_default=True)
@click.option("--device-bind", default="0.0.0.0", show_default=True)
@click.option("--service-bind", default="127.0.0.1", show_default=True,
              help="Keep the services listener on HQ's internal network.")
def broker_init(root: Path, hostnames: tuple[str, ...], api_hostnames: tuple[str, ...],
                device_port: int, service_port: int, device_bind: str, service_bind: str) -> None:
    """Make the CAs, HQ's broker config and certificates, and HQ's credentials in ROOT."""
    from broker_config.install import SiteConfig, init_site
    from broker_config.pki import PkiError

    try:
        site = init_site(root, SiteConfig(list(hostnames), device_port, service_port,
                                          device_bind, service_bind,
                                          list(api_hostnames) or None))
    except (PkiError, PermissionError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"site ready in {site.root}\n"
               f"  broker:  mosquitto -c {site.broker.conf}\n"
               f"  HQ API:  onecard hq serve-api --site {site.root}\n"
               f"  keep {site.pki} secret and backed up: it holds the CA keys")


@broker.command("store-init")
@click.argument("directory", type=click.Path(path_type=Path))
@site_option
@click.option("--store", required=True)
@click.option("--hostname", "hostnames", multiple=True, required=True,
              help="Name or address the store's terminals use for this broker.")
@click.option("--hq-host", required=True, help="Where the store reaches HQ's services listener.")
@click.option("--device-port", type=PORT, default=8883, show_default=True)
def broker_store_init(directory: Path, site_root: Path, store: str, hostnames: tuple[str, ...],
                      hq_host: str, device_port: int) -> None:
    """Make a store broker folder (config, server cert, bridge identity) to copy to a store."""
    from broker_config.install import Site, init_store_broker
    from broker_config.pki import PkiError

    try:
        files = init_store_broker(Site(site_root), directory, store=store,
                                  hostnames=list(hostnames), hq_host=hq_host,
                                  device_port=device_port)
    except (PkiError, PermissionError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"store broker for {store} in {files.directory}: mosquitto -c {files.conf}")


@broker.command("renew-crl")
@site_option
def broker_renew_crl(site_root: Path) -> None:
    """Re-sign both CRLs and reload the broker (monthly: an expired CRL locks out all)."""
    from broker_config.install import Site, reload_broker, renew_crls

    site = Site(site_root)
    renew_crls(site)
    reloaded = reload_broker(site.broker.pid_file)
    click.echo("CRLs renewed" + ("; broker reloaded" if reloaded else "; broker not running"))


@broker.command("run")
@site_option
def broker_run(site_root: Path) -> None:
    """Run HQ's broker in the foreground with the site's config (single machine)."""
    from broker_config.install import Site
    from broker_config.runner import MtlsBroker

    b = MtlsBroker(Site(site_root).broker).start()
    click.echo(f"broker: devices on {b.port}, services on {b.service_port}", err=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        assert b.proc is not None
        b.proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        b.stop()


@hq.command("create-admin")
@db_option
@click.option("--username", default="admin", show_default=True)
@click.password_option(envvar="ONECARD_ADMIN_PASSWORD",
                       help="Asked for when not given (env ONECARD_ADMIN_PASSWORD).")
def hq_create_admin(db: str, username: str, password: str) -> None:
    """Create an HQ operator with admin rights (the first one, or another)."""
    from hq_server.operators import OperatorError, create_operator
    from hq_server.schema import open_engine

    try:
        create_operator(open_engine(db), username, password, "admin")
    except OperatorError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"operator {username} created")


@hq.command("enrolment-token")
@db_option
@click.option("--store", required=True)
@click.option("--role", required=True, type=click.Choice(["gate", "handheld", "kiosk"]))
@click.option("--ttl-hours", type=BoundedFloat(0, 24 * 366, low_open=True), default=24.0,
              show_default=True, help="How long the token stays good (at most a year).")
@click.option("--operator", "created_by", default=lambda: f"cli:{os.environ.get('USER', 'root')}",
              help="Recorded as the token's creator.")
def hq_enrolment_token(db: str, store: str, role: str, ttl_hours: float, created_by: str) -> None:
    """Create a one-time enrolment token and print it (it is shown only this once)."""
    import datetime as dt

    from hq_server.enrolment import EnrolmentError, create_token
    from hq_server.schema import open_engine

    try:
        issued = create_token(open_engine(db), store, role, created_by,
                              dt.timedelta(hours=ttl_hours))
    except EnrolmentError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(issued.token)


def _site_authority(site_root: Path, broker_host: str):
    from broker_config.install import Site, SiteDeviceCA

    return SiteDeviceCA(Site(site_root), broker_host)


@hq.command("serve-api")
@db_option
@site_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=PORT, default=8443, show_default=True)
@click.option("--broker-host", default=None,
              help="Broker address given to terminals (default: the site's first hostname).")
@click.option("--services-host", default="127.0.0.1", show_default=True,
              help="Where HQ reaches the broker's services listener (to cut off devices).")
def hq_serve_api(db: str, site_root: Path, host: str, port: int, broker_host: str | None,
                 services_host: str) -> None:
    """Serve HQ's HTTPS API (enrolment, tokens, revocation); OpenAPI at /openapi.json."""
    from broker_config.install import Site
    from hq_server.api.app import create_app
    from hq_server.api.server import serve
    from hq_server.enrolment import BrokerAddress
    from hq_server.schema import open_engine

    site = Site(site_root)
    config = site.config
    address = BrokerAddress(broker_host or config.hostnames[0], config.device_port)
    app = create_app(open_engine(db), _site_authority(site_root, services_host), address)
    click.echo(f"HQ API on https://{host}:{port} (terminals sent to "
               f"{address.host}:{address.port})", err=True)
    serve(app, host, port, site.api_cert, site.api_key)


@hq.command("revoke-device")
@db_option
@site_option
@click.argument("device_id")
@click.option("--reason", required=True, help="Why, for the device's history.")
def hq_revoke_device(db: str, site_root: Path, device_id: str, reason: str) -> None:
    """Revoke a terminal: the broker refuses it and HQ quarantines its records."""
    from hq_server.enrolment import EnrolmentError, revoke_device
    from hq_server.schema import open_engine

    try:
        serials = revoke_device(open_engine(db), _site_authority(site_root, "127.0.0.1"),
                                device_id, f"cli:{os.environ.get('USER', 'root')}", reason)
    except EnrolmentError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"{device_id} revoked; certificates on the CRL: {len(serials)}")


@hq.command("ingest")
@db_option
@site_option
@click.option("--broker-host", default="127.0.0.1", show_default=True,
              help="Where HQ reaches the broker's services listener.")
@click.option("--client-id", default="hq-ingest-1", show_default=True,
              help="One per worker: workers share the load on a shared subscription.")
@no_fleet_option
def hq_ingest(db: str, site_root: Path, broker_host: str, client_id: str,
              no_fleet: bool) -> None:
    """Run HQ ingest against the production broker (mutual TLS, identity hq@onecard);
    and (unless --no-fleet) answer terminals' UID authorisation and clock samples."""
    from broker_config.install import Site, service_tls_context
    from hq_server.ingest_worker import IngestWorker
    from hq_server.schema import open_engine

    site = Site(site_root)
    engine = open_engine(db)
    worker = IngestWorker(engine, host=broker_host, port=site.config.service_port,
                          username="", password="", client_id=client_id)
    worker.client.tls_set_context(service_tls_context(site))
    fleet = None if no_fleet else _answering_fleet(
        engine, host=broker_host, port=site.config.service_port, username="", password="",
        client_id=client_id, tls=service_tls_context(site))
    signal.signal(signal.SIGTERM, lambda *_: worker._stop.set())
    click.echo(f"HQ ingest on {broker_host}:{site.config.service_port} (mutual TLS)", err=True)
    _run_ingest(worker, fleet)


def _fleet_service(site_root: Path, broker_host: str):
    """HQ's fleet service on the production broker (mutual TLS, identity hq@onecard)."""
    from broker_config.install import Site, service_tls_context
    from hq_server.fleet_commands import FleetService

    site = Site(site_root)
    fleet = FleetService(host=broker_host, port=site.config.service_port, username="",
                         password="", client_id=f"hq-cli-{os.getpid()}", answer=False)
    fleet.client.tls_set_context(service_tls_context(site))
    return fleet.start()


def _check_broker(site_root: Path, broker_host: str) -> None:
    """Refuse at once, in one line, when the site folder is not one or its broker's
    services listener does not answer (instead of a paho timeout's traceback)."""
    import socket

    from broker_config.install import Site

    try:
        port = Site(site_root).config.service_port
    except (OSError, ValueError, TypeError) as exc:
        raise click.ClickException(f"{site_root} is not a site folder made by "
                                   f"`onecard broker init` ({exc})") from None
    try:
        socket.create_connection((broker_host, port), timeout=5).close()
    except OSError as exc:
        raise click.ClickException(f"the broker's services listener at {broker_host}:{port} "
                                   f"is not reachable ({exc.strerror or exc})") from None


@hq.command("push-config")
@site_option
@click.option("--device", "device_id", required=True, help="The terminal's device id.")
@click.option("--broker-host", default="127.0.0.1", show_default=True)
@click.option("--wait", type=BoundedFloat(0, 3600), default=15.0, show_default=True,
              help="Seconds to wait for the terminal's report (0: do not wait).")
@click.argument("document", type=click.File("rb"))
def hq_push_config(site_root: Path, device_id: str, broker_host: str, wait: float,
                   document) -> None:
    """Make DOCUMENT (JSON) the terminal's desired config; print what it reports."""
    from protocol.terminal_config import ConfigError

    raw = document.read(MAX_DOCUMENT_BYTES + 1)
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise click.ClickException(f"document too large (over {MAX_DOCUMENT_BYTES} bytes)")
    try:
        doc = json.loads(raw)
    except RecursionError:
        raise click.ClickException("not JSON we accept: nested too deeply") from None
    except ValueError as exc:
        raise click.ClickException(f"not JSON: {exc}") from None
    _check_broker(site_root, broker_host)
    fleet = _fleet_service(site_root, broker_host)
    try:
        version = fleet.publish_config(device_id, doc)
    except ConfigError as exc:
        fleet.stop()
        raise click.ClickException(f"config refused before sending: {exc}") from None
    try:
        if wait and fleet.wait(lambda: device_id in fleet.reports and (
                fleet.reports[device_id].version >= version
                or fleet.reports[device_id].refused_version >= version), wait):
            report = fleet.reports[device_id]
            click.echo(report.to_json().decode())
            if report.version < version:
                raise click.ClickException(f"{device_id} refused version {version}: {report.error}")
        elif wait:
            click.echo(f"version {version} published; {device_id} has not reported it yet "
                       "(offline terminals take it when they connect)", err=True)
    finally:
        fleet.stop()


@hq.command("command")
@site_option
@click.option("--device", "device_id", required=True, help="The terminal's device id.")
@click.option("--broker-host", default="127.0.0.1", show_default=True)
@click.option("--arg", "args", multiple=True, help="KEY=JSON value, e.g. on=true (repeatable).")
@click.option("--wait", type=BoundedFloat(0, 3600), default=15.0, show_default=True,
              help="Seconds to wait for the terminal's answer.")
@click.argument("name", type=click.Choice(["sync_now", "reload_config", "open_gate",
                                           "maintenance", "collect_logs"]))
def hq_command(site_root: Path, device_id: str, broker_host: str, args: tuple[str, ...],
               wait: float, name: str) -> None:
    """Send a command to a terminal and print its answer."""
    parsed = {}
    for item in args:
        key, eq, value = item.partition("=")
        if not key or not eq:
            raise click.BadParameter(f"{item[:40]!r} is not KEY=VALUE", param_hint="--arg")
        try:
            parsed[key] = json.loads(value)
        except RecursionError:
            raise click.BadParameter("value nested too deeply", param_hint="--arg") from None
        except ValueError:
            parsed[key] = value
    _check_broker(site_root, broker_host)
    fleet = _fleet_service(site_root, broker_host)
    try:
        result = fleet.result(fleet.send_command(device_id, name, parsed), wait)
    finally:
        fleet.stop()
    if result is None:
        raise click.ClickException(f"{device_id} did not answer within {wait:g} s")
    click.echo(result.to_json().decode())
    if not result.ok:
        raise click.ClickException(result.detail)


@hq.command("status")
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def hq_status(db: str, as_json: bool) -> None:
    """Which parts of HQ are alive and how far behind they are (exit 1 if any is not).

    Read from the health rows each running HQ process writes every few seconds: a part
    whose last beat is older than three intervals is dead, whatever it last said.
    """
    from hq_server.schema import open_engine
    from hq_server.supervision import hq_health

    health = hq_health(open_engine(db))
    if as_json:
        click.echo(json.dumps(health, sort_keys=True))
    else:
        if not health["components"]:
            click.echo("no HQ process has reported (is `onecard hq run` / `hq ingest` running?)")
        for c in health["components"]:
            figures = ", ".join(f"{k} {v}" for k, v in sorted(c["progress"].items())
                                if v is not None)
            click.echo(f"{c['process']:<16} {c['component']:<15} {c['status']:<10} "
                       f"beat {c['beat_age_ms'] / 1000:.1f}s ago, restarts {c['restarts']}"
                       + (f", {figures}" if figures else "")
                       + (f"\n{'':<33}last error: {c['last_error']}" if c["last_error"] else ""))
        gaps = health["gaps_pending"]
        click.echo(f"gaps pending: {gaps['records']} records on {gaps['devices']} devices")
        click.echo("HQ: all parts alive" if health["ok"] else "HQ: NOT all parts alive")
    if not health["ok"]:
        sys.exit(1)


@terminal.command("enrol")
@click.option("--hq", "hq_url", required=True, help="HQ's API, https://...")
@click.option("--token", envvar="ONECARD_ENROL_TOKEN", required=True,
              help="One-time enrolment token from HQ (env ONECARD_ENROL_TOKEN).")
@click.option("--secrets", "secrets_dir", type=click.Path(path_type=Path), required=True,
              help="The device's secrets folder (made with mode 0700).")
@click.option("--ca", "ca_file", type=click.Path(path_type=Path, exists=True), default=None,
              help="CA certificate to trust for HQ (default: the system's).")
def terminal_enrol(hq_url: str, token: str, secrets_dir: Path, ca_file: Path | None) -> None:
    """Enrol this terminal: make its keys, send the public parts and the token to HQ."""
    from terminal_fw.enrolment import EnrolmentFailed, enrol

    try:
        done = enrol(hq_url, token, secrets_dir, ca_file=ca_file)
    except EnrolmentFailed as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps({"device_id": done.device_id, "store": done.store, "role": done.role,
                           "broker": f"{done.broker_host}:{done.broker_port}"}))


terminal.add_command(terminal_enrol, "enroll")  # the spelling of earlier releases


@terminal.command("roll-keys")
@click.option("--hq", "hq_url", required=True)
@click.option("--secrets", "secrets_dir", type=click.Path(path_type=Path), required=True)
@click.option("--store-db", type=click.Path(path_type=Path, exists=True), required=True,
              help="The terminal's outbox: it must be empty (HQ acked every record).")
@click.option("--ca", "ca_file", type=click.Path(path_type=Path, exists=True), default=None)
def terminal_roll_keys(hq_url: str, secrets_dir: Path, store_db: Path,
                       ca_file: Path | None) -> None:
    """Replace the signing and MQTT keys; HQ revokes the old ones at once."""
    from terminal_fw.enrolment import EnrolmentFailed, roll_keys
    from terminal_fw.outbox import Outbox

    backlog = Outbox(store_db).backlog()
    if backlog:
        raise click.ClickException(
            f"{backlog} records still wait for HQ's ack; they are signed with the current "
            "key and HQ would refuse them after the roll. Let the uplink drain first.")
    try:
        done = roll_keys(hq_url, secrets_dir, ca_file=ca_file)
    except EnrolmentFailed as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{done.device_id}: new keys in place; reconnect the uplink")


@terminal.command("run")
@click.option("--settings", "settings_file", type=click.Path(path_type=Path, exists=True),
              default=None, help="Local settings (TOML), e.g. /etc/onecard/terminal.toml.")
@click.option("--secrets", "secrets_dir", type=click.Path(path_type=Path), default=None,
              help="The enrolled secrets folder (overrides the settings file).")
@click.option("--data", "data_dir", type=click.Path(path_type=Path), default=None,
              help="Outbox and local store folder (overrides the settings file).")
@click.option("--role", type=click.Choice(["gate", "handheld", "kiosk"]), default=None,
              help="Default: the role HQ enrolled the terminal for.")
@click.option("--broker-host", default=None)
@click.option("--broker-port", type=PORT, default=None)
@click.option("--broker-password", envvar="ONECARD_BROKER_PASSWORD", default=None,
              help="Password broker for development (env ONECARD_BROKER_PASSWORD); "
                   "enrolled terminals use mutual TLS.")
@click.option("--pcsc-entry", default=None, help="PC/SC entry reader name or prefix.")
@click.option("--pcsc-exit", default=None, help="PC/SC exit reader name or prefix.")
@click.option("--uid-reader", "uid_readers", multiple=True,
              help="Serial UID reader PORT:KIND (KIND em4100 or qr); repeatable.")
@click.option("--mock-gpio", is_flag=True, help="gpiozero mock pins (no Raspberry Pi).")
@click.option("--admit-timeout", type=BoundedFloat(0, 3600, low_open=True), default=None,
              help="Seconds the turnstile stays released for one passage.")
@click.option("--events", is_flag=True, help="Print each decision as a JSON line on stdout.")
def terminal_run(settings_file: Path | None, secrets_dir: Path | None, data_dir: Path | None,
                 role: str | None, broker_host: str | None, broker_port: int | None,
                 broker_password: str | None, pcsc_entry: str | None, pcsc_exit: str | None,
                 uid_readers: tuple[str, ...], mock_gpio: bool, admit_timeout: float | None,
                 events: bool) -> None:
    """Run the terminal (gate, handheld or kiosk) from its enrolled identity."""
    from terminal_fw.runtime import RuntimeSettings, serve

    overrides = {"secrets_dir": secrets_dir, "data_dir": data_dir, "role": role,
                 "broker_host": broker_host, "broker_port": broker_port,
                 "broker_password": broker_password, "pcsc_entry": pcsc_entry,
                 "pcsc_exit": pcsc_exit, "admit_timeout_s": admit_timeout}
    if uid_readers:
        specs = [u.rsplit(":", 1) for u in uid_readers]
        for spec, given in zip(specs, uid_readers, strict=True):
            if len(spec) != 2 or not spec[0] or spec[1] not in ("em4100", "qr"):
                raise click.BadParameter(f"{given[:60]!r} is not PORT:KIND with KIND em4100 "
                                         "or qr", param_hint="--uid-reader")
        overrides["uid_readers"] = [{"port": p, "kind": k} for p, k in specs]
    if mock_gpio:
        overrides["gpio"] = {"mock": True}
    if events:
        overrides["events"] = lambda e: print(json.dumps(e, default=str), flush=True)
    if settings_file is not None:
        try:
            settings = RuntimeSettings.from_toml(settings_file, **overrides)
        except (ValueError, TypeError, KeyError, OSError) as exc:
            raise click.ClickException(f"settings file {settings_file}: {exc}") from None
    else:
        if secrets_dir is None or data_dir is None:
            raise click.UsageError("give --settings, or --secrets and --data")
        settings = RuntimeSettings(**{k: v for k, v in overrides.items() if v is not None})
    try:
        serve(settings)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None


# --- HQ's catalogue and the business rules it checks (issue 11) ------------------------


@hq.group("catalogue")
def hq_catalogue() -> None:
    """The chain's catalogue as HQ holds it, to check record prices and bonus tiers."""


@hq_catalogue.command("set")
@db_option
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--effective", default=None,
              help="When it comes into force: ISO date/time (UTC) or epoch ms (default: now).")
def hq_catalogue_set(db: str, file: str, effective: str | None) -> None:
    """Load FILE (catalogue JSON, or a pushed config holding one) as a new version."""
    from hq_server.catalogue import load_catalogue_file, set_catalogue
    from hq_server.schema import open_engine
    from protocol.products import CatalogueError

    try:
        catalogue = load_catalogue_file(file)
        at = _when_ms(effective) if effective else None
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
    import time

    from sqlalchemy import select

    from hq_server.catalogue import load_history
    from hq_server.schema import counters, open_engine

    engine = open_engine(db)
    history = load_history(engine)
    current = history.in_force(int(time.time() * 1000))
    if as_json:
        click.echo(json.dumps(current.to_dict() if current else None, indent=2, sort_keys=True))
        return
    if current is None:
        with engine.connect() as conn:
            unpriced = conn.execute(select(counters.c.value).where(
                counters.c.name == "records_unpriced")).scalar() or 0
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


@hq.group("rules")
def hq_rules() -> None:
    """Records that broke business rules, and devices held for them."""


@hq_rules.command("breaks")
@db_option
@click.option("--device", default=None, help="Only this device.")
def hq_rules_breaks(db: str, device: str | None) -> None:
    """Rule breaks HQ found (their value is in suspense:<device>)."""
    from sqlalchemy import select

    from hq_server.schema import devices, open_engine, rule_breaks

    engine = open_engine(db)
    q = select(rule_breaks).order_by(rule_breaks.c.id)
    if device:
        q = q.where(rule_breaks.c.device_id == device)
    with engine.connect() as conn:
        rows = conn.execute(q).mappings().all()
        held = [d for (d,) in conn.execute(select(devices.c.device_id).where(
            devices.c.status == "held"))]
    for r in rows:
        seen = "reviewed" if r["reviewed_at_ms"] else "open"
        click.echo(f"{r['device_id']}#{r['seq']}  card {r['card_id']}  {r['rule']}  "
                   f"[{seen}]  {r['reason']}")
    click.echo(f"{len(rows)} rule break(s); held devices: {', '.join(held) or 'none'}")


@hq_rules.command("release")
@db_option
@click.argument("device_id")
@click.option("--operator", required=True, help="Who releases it.")
@click.option("--reason", required=True, help="Why, in words (kept in the device's history).")
def hq_rules_release(db: str, device_id: str, operator: str, reason: str) -> None:
    """Let a held device's records in again; it resends what HQ held back."""
    from hq_server.record_rules import release_device
    from hq_server.schema import open_engine

    if not release_device(open_engine(db), device_id, operator=operator, reason=reason):
        raise click.ClickException(f"device {device_id!r} is not held")
    click.echo(f"{device_id} released")


if __name__ == "__main__":
    main()
