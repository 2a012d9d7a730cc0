"""``onecard``: one command for HQ, terminals, the broker, simulators and the demo."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from pathlib import Path

import click

DEFAULT_HQ_DB = "sqlite:///onecard-hq.db"


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log debug detail.")
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


@main.group()
def hq() -> None:
    """HQ server: ledger, ingest and the device registry."""


db_option = click.option(
    "--db", default=lambda: os.environ.get("ONECARD_HQ_DB", DEFAULT_HQ_DB), show_default=DEFAULT_HQ_DB,
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
def hq_verify_ledger(db: str) -> None:
    """Recompute every balance from the entries and check that all of it balances."""
    from hq_server.ledger import check_ledger
    from hq_server.schema import open_engine

    check = check_ledger(open_engine(db))
    for asset, total in sorted(check.asset_totals.items()):
        click.echo(f"{asset:<24} sum over all accounts: {total}")
    if not check.balanced:
        for txn, asset, total in check.unbalanced_transactions:
            click.echo(f"UNBALANCED {txn} {asset}: {total}", err=True)
        raise click.ClickException("the ledger does not balance")
    click.echo("ledger balanced")


@hq.command("run")
@db_option
@click.option("--broker-host", default="127.0.0.1", show_default=True)
@click.option("--broker-port", type=int, required=True)
@click.option("--username", default="hq@onecard", show_default=True)
@click.option("--password", envvar="ONECARD_HQ_BROKER_PASSWORD", required=True,
              help="Broker password (env ONECARD_HQ_BROKER_PASSWORD).")
@click.option("--client-id", default="hq-ingest-1", show_default=True)
def hq_run(db: str, broker_host: str, broker_port: int, username: str, password: str,
           client_id: str) -> None:
    """Run HQ ingest: verify device records, post them, acknowledge them."""
    from hq_server.ingest_worker import IngestWorker
    from hq_server.schema import open_engine

    worker = IngestWorker(open_engine(db), host=broker_host, port=broker_port,
                          username=username, password=password, client_id=client_id)
    signal.signal(signal.SIGTERM, lambda *_: worker._stop.set())
    click.echo(f"HQ ingest on {broker_host}:{broker_port}, ledger {db}", err=True)
    try:
        worker.run_forever()
    except KeyboardInterrupt:
        pass


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


# --- demo ----------------------------------------------------------------------------


@main.command()
@click.option("--headless", is_flag=True, help="No live screen; for scripts and CI.")
@click.option("--duration", type=float, default=None,
              help="Seconds of tapping before the drain (default: until Ctrl-C; 30 headless).")
@click.option("--report", type=click.Path(path_type=Path), default=None,
              help="Write a JSON report here at the end.")
@click.option("--gates", type=int, default=3, show_default=True, help="Simulated gates.")
@click.option("--tap-rate", type=float, default=4.0, show_default=True,
              help="Taps per second per gate.")
@click.option("--outage", type=float, default=None,
              help="Seconds one gate spends without its broker connection (default: a third of the run).")
def demo(headless: bool, duration: float | None, report: Path | None, gates: int,
         tap_rate: float, outage: float | None) -> None:
    """Run the broker, HQ and a simulated fleet of gates with members tapping.

    One gate loses its broker connection for a while and catches up. At the end the
    taps stop, every backlog drains, and the figures are checked.
    """
    from onecard.demo import DemoConfig, run_demo

    if gates < 1:
        raise click.BadParameter("at least one gate", param_hint="--gates")
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


if __name__ == "__main__":
    main()
