"""Running HQ: ``hq run``, ``hq ingest``, ``hq serve-api``; and ``hq status``, ``hq migrate``.

The three run commands build :class:`~hq_server.process.settings.HqSettings` from their
options and run :class:`~hq_server.process.hq_process.HqProcess`, which composes the
parts and supervises them.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import click

from onecard.cli.options import PORT, BoundedFloat, db_option, site_option

no_fleet_option = click.option(
    "--no-fleet", is_flag=True,
    help="Do not answer UID authorisation and clock requests here (another HQ process does).")


def backup_options(command):
    """``--archive``, ``--backup-dir``, ``--backup-every``, ``--backup-keep`` (docs/audit-and-backup.md)."""
    for option in reversed([
        click.option("--archive", "archive_dir", type=click.Path(path_type=Path),
                     default=None, help="Folder of the archive of acknowledged records "
                     "(fsync'd before each ack; replayed after a restore)."),
        click.option("--backup-dir", type=click.Path(path_type=Path), default=None,
                     help="Take backups (备份) into this folder on a schedule."),
        click.option("--backup-every", type=BoundedFloat(0.01, 744), default=24.0,
                     show_default=True, help="Hours between backups."),
        click.option("--backup-keep", type=click.IntRange(1, 10_000), default=14,
                     show_default=True, help="How many backups are kept."),
    ]):
        command = option(command)
    return command


def backup_settings(archive_dir: Path | None, backup_dir: Path | None, backup_every: float,
                    backup_keep: int) -> dict:
    from hq_server.backup.schedule import BackupSchedule

    return {"archive_dir": archive_dir,
            "backups": BackupSchedule(backup_dir, backup_every, backup_keep)
            if backup_dir else None}


def run_until_stopped(settings) -> None:
    """Run an HQ process until SIGTERM or Ctrl-C; exit non-zero when a part kept dying.

    A thread that dies is restarted with its reason logged; one that keeps dying stops
    the process with a non-zero status, so systemd restarts it. Each thread's health is
    written to the database for ``onecard hq status`` and ``GET /health``.
    """
    from hq_server.process.hq_process import HqProcess

    process = HqProcess(settings, say=lambda line: click.echo(line, err=True))
    signal.signal(signal.SIGTERM, lambda *_: process.request_stop())
    try:
        code = process.run()
    except KeyboardInterrupt:
        code = 0
    if code:
        click.echo(f"HQ stopped: {process.failure}", err=True)
        sys.exit(code)


@click.command("run")
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
@backup_options
def hq_run(db: str, broker_host: str, broker_port: int, username: str, password: str,
           client_id: str, auto_denylist_clones: bool, no_fleet: bool,
           archive_dir: Path | None, backup_dir: Path | None, backup_every: float,
           backup_keep: int) -> None:
    """Run HQ ingest: verify device records, post them, acknowledge them; and (unless
    --no-fleet) answer terminals' UID authorisation requests and clock samples."""
    from hq_server.process.settings import BrokerLink, HqSettings
    from hq_server.reconciliation.rules import ReconcileConfig

    settings = HqSettings(db, BrokerLink(broker_host, broker_port, username, password),
                          client_id=client_id, fleet=not no_fleet,
                          reconcile=ReconcileConfig(auto_denylist_clones),
                          **backup_settings(archive_dir, backup_dir, backup_every,
                                            backup_keep))
    click.echo(f"HQ ingest on {broker_host}:{broker_port}, ledger {db}", err=True)
    run_until_stopped(settings)


@click.command("ingest")
@db_option
@site_option
@click.option("--broker-host", default="127.0.0.1", show_default=True,
              help="Where HQ reaches the broker's services listener.")
@click.option("--client-id", default="hq-ingest-1", show_default=True,
              help="One per worker: workers share the load on a shared subscription.")
@no_fleet_option
@backup_options
def hq_ingest(db: str, site_root: Path, broker_host: str, client_id: str,
              no_fleet: bool, archive_dir: Path | None, backup_dir: Path | None,
              backup_every: float, backup_keep: int) -> None:
    """Run HQ ingest against the production broker (mutual TLS, identity hq@onecard);
    and (unless --no-fleet) answer terminals' UID authorisation and clock samples."""
    from hq_server.process.settings import HqSettings
    from onecard.site import broker_link

    link = broker_link(site_root, broker_host)
    settings = HqSettings(db, link, client_id=client_id, fleet=not no_fleet,
                          **backup_settings(archive_dir, backup_dir, backup_every,
                                            backup_keep))
    click.echo(f"HQ ingest on {broker_host}:{link.port} (mutual TLS)", err=True)
    run_until_stopped(settings)


@click.command("serve-api")
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
    from hq_server.process.settings import HqSettings
    from onecard.site import api_settings

    api = api_settings(site_root, host=host, port=port, broker_host=broker_host,
                       services_host=services_host)
    settings = HqSettings(db, ingest=False, fleet=False, api=api, client_id="hq-api",
                          health_rows=False)
    click.echo(f"HQ API on https://{host}:{port} (terminals sent to "
               f"{api.broker_address.host}:{api.broker_address.port})", err=True)
    run_until_stopped(settings)


@click.command("status")
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def hq_status(db: str, as_json: bool) -> None:
    """Which parts of HQ are alive and how far behind they are (exit 1 if any is not).

    Read from the health rows each running HQ process writes every few seconds: a part
    whose last beat is older than three intervals is dead, whatever it last said.
    """
    from hq_server.db.engine import open_engine
    from hq_server.process.supervision import hq_health

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


@click.command("migrate")
@db_option
@click.option("--show", is_flag=True, help="Only print the current and newest revisions.")
def hq_migrate(db: str, show: bool) -> None:
    """Bring the HQ database to the newest schema (Alembic; every HQ command does it too)."""
    from hq_server.db.engine import open_engine
    from hq_server.db.migrations import current_revisions, head_revisions, upgrade

    engine = open_engine(db, migrate=False)
    if not show:
        upgrade(engine)
    with engine.connect() as conn:
        current = ", ".join(current_revisions(conn)) or "(empty)"
    click.echo(f"database at {current}; newest {', '.join(head_revisions())}")


COMMANDS = [hq_run, hq_ingest, hq_serve_api, hq_status, hq_migrate]
