"""The audit log (操作日志), the recycle bin (数据回收站), backups (备份) and restore (恢复).

* ``verify-audit`` — recompute the audit chain; exit 1 with each break at its row;
* ``audit`` — list operator actions (by operator, target, action, period);
* ``recycle-bin list|restore|purge`` — what was deleted, bring it back, remove it for good;
* ``backup``, ``restore``, ``replay-archive`` — see docs/audit-and-backup.md.

Commands that read or change operator data act as a named operator (``--operator``,
env ``ONECARD_OPERATOR``) with that operator's role and scope, and are audited as such.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from onecard.cli.options import actor_option, db_option, optional_when_ms


def _refusal(exc: Exception) -> click.ClickException:
    from hq_server.operators.access import NotVisible

    return click.ClickException("not found" if isinstance(exc, NotVisible) else str(exc))


def _load_anchors(folder: Path | None):
    from hq_server.audit.verify import Anchor
    from hq_server.backup.dump import BackupError, manifests

    if folder is None:
        return []
    try:
        return [Anchor(m.audit_head["seq"], m.audit_head["hash"], f"backup {m.file}")
                for m in manifests(folder) if m.audit_head["seq"] > 0]
    except BackupError as exc:
        raise click.ClickException(str(exc)) from None


@click.command("verify-audit")
@db_option
@click.option("--anchors", type=click.Path(path_type=Path, file_okay=False, exists=True),
              default=None, help="Backup folder: check the chain against the audit head "
              "each backup manifest saw.")
def hq_verify_audit(db: str, anchors: Path | None) -> None:
    """Recompute the audit log's hash chain from its rows; report every changed, deleted
    or inserted row (exit 1)."""
    from hq_server.audit.verify import verify_audit
    from hq_server.db.engine import open_engine

    check = verify_audit(open_engine(db), _load_anchors(anchors))
    for problem in check.problems:
        click.echo(f"PROBLEM: {problem}")
    if not check.intact:
        raise click.ClickException(f"the audit log was tampered with: {len(check.problems)} "
                                   "problem(s)")
    click.echo(f"audit log intact: {check.rows} rows, head {check.head_seq} "
               f"{check.head_hash[:16]}")


@click.command("audit")
@db_option
@actor_option
@click.option("--by", "by_operator", default=None, help="Only this operator's actions.")
@click.option("--target", default=None, help="kind or kind:id, e.g. member:M0001.")
@click.option("--action", default=None, help="member.update, or a prefix: member.*")
@click.option("--from", "start", default=None, help="Period start: 2026-11-01 or epoch ms.")
@click.option("--to", "end", default=None, help="Period end (exclusive).")
@click.option("--limit", type=click.IntRange(1, 200), default=50, show_default=True)
@click.option("--cursor", default=None, help="The next_cursor a previous page printed.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def hq_audit(db: str, actor, by_operator: str | None, target: str | None,
             action: str | None, start: str | None, end: str | None, limit: int,
             cursor: str | None, as_json: bool) -> None:
    """List operator actions (操作日志), newest first, as far as your scope reaches."""
    from hq_server.api.common import BadCursor
    from hq_server.audit.query import AuditFilter, BadAuditFilter, list_actions
    from hq_server.db.engine import open_engine
    from hq_server.operators.access import Forbidden

    engine = open_engine(db)
    try:
        wanted = AuditFilter(by_operator, target, action, optional_when_ms(start, "--from"),
                             optional_when_ms(end, "--to"))
        items, next_cursor = list_actions(engine, actor, wanted,
                                          cursor, limit)
    except (BadAuditFilter, BadCursor, Forbidden) as exc:
        raise _refusal(exc) from None
    for item in items:
        if as_json:
            click.echo(json.dumps(item, ensure_ascii=False, sort_keys=True))
        else:
            click.echo(f"{item['seq']:>8} {item['at_ms']} {item['operator']:<16} "
                       f"{item['action']:<20} {item['target_kind']}:{item['target_id']} "
                       f"store={item['store'] or '-'} from {item['origin']}")
    if next_cursor:
        click.echo(f"next page: --cursor {next_cursor}", err=True)


@click.group("recycle-bin")
def recycle_bin() -> None:
    """The recycle bin (数据回收站): deleted members, products and operators."""


def _bin_errors():
    from hq_server.api.common import BadCursor
    from hq_server.operators.access import Forbidden, NotVisible
    from hq_server.recycle.bin import CannotRestore, NotInBin, RetentionNotOver
    from hq_server.recycle.registry import UnknownBinKind

    return (BadCursor, Forbidden, NotVisible, NotInBin, RetentionNotOver, CannotRestore,
            UnknownBinKind, ValueError)


def _echo_entry(entry) -> None:
    click.echo(f"{entry.entry_id:>6} {entry.kind:<10} {entry.target_id:<20} {entry.label:<30} "
               f"store={entry.store or '-'} {entry.state} by {entry.deleted_by} at "
               f"{entry.deleted_at_ms}, purgeable from {entry.purge_after_ms}")


@recycle_bin.command("list")
@db_option
@actor_option
@click.option("--kind", default=None, help="member, product, operator, ...")
@click.option("--state", type=click.Choice(["in_bin", "restored", "purged"]),
              default="in_bin", show_default=True)
@click.option("--limit", type=click.IntRange(1, 200), default=50, show_default=True)
@click.option("--cursor", default=None)
def recycle_list(db: str, actor, kind: str | None, state: str, limit: int,
                 cursor: str | None) -> None:
    """What is in the bin, newest first, as far as your scope reaches."""
    from hq_server.db.engine import open_engine
    from hq_server.recycle.bin import list_bin

    engine = open_engine(db)
    try:
        items, next_cursor = list_bin(engine, actor, kind=kind,
                                      state=state, cursor=cursor, limit=limit)
    except _bin_errors() as exc:
        raise _refusal(exc) from None
    for entry in items:
        _echo_entry(entry)
    if next_cursor:
        click.echo(f"next page: --cursor {next_cursor}", err=True)


@recycle_bin.command("restore")
@db_option
@actor_option
@click.argument("entry_id", type=click.IntRange(1, 2**31 - 1))
def recycle_restore(db: str, actor, entry_id: int) -> None:
    """Bring a deleted thing back (店长 and above, in their scope)."""
    from hq_server.clock import system_clock
    from hq_server.db.engine import open_engine
    from hq_server.recycle.bin import restore_from_bin

    engine = open_engine(db)
    try:
        entry = restore_from_bin(engine, actor, entry_id,
                                 system_clock())
    except _bin_errors() as exc:
        raise _refusal(exc) from None
    click.echo(f"restored {entry.kind} {entry.target_id}")


@recycle_bin.command("purge")
@db_option
@actor_option
@click.argument("entry_id", type=click.IntRange(1, 2**31 - 1), required=False)
@click.option("--all-expired", is_flag=True, help="Every entry whose retention is over.")
@click.option("--retention-days", type=click.IntRange(1, 3650), default=None,
              help="Retention period (default: env ONECARD_RECYCLE_RETENTION_DAYS or 30).")
def recycle_purge(db: str, actor, entry_id: int | None, all_expired: bool,
                  retention_days: int | None) -> None:
    """Remove deleted things for good (总部管理员 only, after the retention period)."""
    from hq_server.clock import system_clock
    from hq_server.db.engine import open_engine
    from hq_server.recycle.bin import purge_expired, purge_from_bin

    if (entry_id is None) == (not all_expired):
        raise click.UsageError("give an ENTRY_ID or --all-expired")
    engine = open_engine(db)
    try:
        actor = actor
        if all_expired:
            purged = purge_expired(engine, actor, system_clock(), retention_days)
        else:
            assert entry_id is not None
            purged = [purge_from_bin(engine, actor, entry_id, system_clock(),
                                     retention_days)]
    except _bin_errors() as exc:
        raise _refusal(exc) from None
    for entry in purged:
        click.echo(f"purged {entry.kind} {entry.target_id}")
    click.echo(f"{len(purged)} purged")


@click.command("backup")
@db_option
@click.option("--to", "folder", type=click.Path(path_type=Path, file_okay=False),
              required=True, help="Backup folder (created if missing).")
def hq_backup(db: str, folder: Path) -> None:
    """Back up HQ's database while it runs (备份): the copy and its manifest."""
    from hq_server.backup.dump import BackupError, take_backup
    from hq_server.clock import system_clock
    from hq_server.db.engine import open_engine

    try:
        manifest = take_backup(open_engine(db), folder, system_clock())
    except BackupError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"backup {folder / manifest.file}: {manifest.bytes} bytes, sha256 "
               f"{manifest.sha256[:16]}, {len(manifest.last_records)} devices, audit head "
               f"{manifest.audit_head['seq']}")


@click.command("restore")
@db_option
@click.argument("backup", type=click.Path(path_type=Path, dir_okay=False, exists=True))
def hq_restore(db: str, backup: Path) -> None:
    """Restore a backup into an EMPTY database (恢复); then run replay-archive."""
    from hq_server.backup.dump import BackupError, restore_backup
    from hq_server.db.engine import open_engine

    try:
        manifest = restore_backup(backup, db)
    except BackupError as exc:
        raise click.ClickException(str(exc)) from None
    open_engine(db)  # brings an older backup's schema up to date
    click.echo(f"restored {manifest.file} (taken at {manifest.taken_at_ms}); now run "
               "`onecard hq replay-archive`, then verify-ledger and verify-audit")


@click.command("replay-archive")
@db_option
@click.option("--archive", "folder", type=click.Path(path_type=Path, file_okay=False,
                                                     exists=True), required=True,
              help="The archive folder `hq run --archive` writes.")
def hq_replay_archive(db: str, folder: Path) -> None:
    """Feed every acknowledged record of the archive through ingest again (after a
    restore); what the database holds already counts as a duplicate."""
    from hq_server.backup.replay import replay_archive
    from hq_server.db.engine import open_engine

    result = replay_archive(open_engine(db), folder)
    click.echo(f"{result.read} archived records: {result.posted} posted, "
               f"{result.duplicates} already held, {sum(result.rejected.values())} refused "
               f"{dict(result.rejected) or ''}".rstrip())
    if result.damaged_frames or result.unreadable:
        raise click.ClickException(f"{result.damaged_frames} damaged frame(s), "
                                   f"{result.unreadable} unreadable record(s) in the archive")


COMMANDS = [hq_verify_audit, hq_audit, recycle_bin, hq_backup, hq_restore, hq_replay_archive]
