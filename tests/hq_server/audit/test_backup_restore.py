"""Backup, restore and the archive of acknowledged records, on both stores.

The scenario the issue names: back up, ingest and acknowledge more (the terminal then
deletes those records), lose the database, restore the backup, replay the archive:
every acknowledged record is present exactly once, the ledger balances and the audit
chain verifies.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, func, select, text

from hq_server.audit.log import record_action
from hq_server.audit.verify import verify_audit
from hq_server.backup import archive as archive_module
from hq_server.backup.archive import AckArchive, ArchiveFailed, ArchiveRead, read_archive
from hq_server.backup.dump import BackupError, Manifest, restore_backup, take_backup
from hq_server.backup.replay import replay_archive
from hq_server.db.engine import open_engine
from hq_server.db.tables import devices, records
from hq_server.ingest.batch import Ingest
from hq_server.ledger.check import check_ledger
from onecard.cli.hq import group
from tests.hq_records import STORES, Card, Till, debit, recharge, store_engine, url_of
from tests.hq_server.audit.helpers import ADMIN, S1, make_chain


@pytest.fixture(params=STORES)
def engine(request):
    return store_engine(request)


def _records(till: Till, card: Card, n: int) -> list[tuple[str, bytes]]:
    out = []
    for i in range(n):
        signed = recharge(till, card, 1_000) if i % 2 == 0 else debit(till, card, 300)
        out.append(till.message(signed))
    return out


def _lose(engine) -> str:
    """The database is gone: the file deleted, or the schema dropped. Returns its URL,
    now pointing at an empty database."""
    url = url_of(engine)
    if engine.dialect.name == "sqlite":
        engine.dispose()
        for suffix in ("", "-wal", "-shm"):
            Path(engine.url.database + suffix).unlink(missing_ok=True)
    else:
        with engine.begin() as conn:
            schema = conn.execute(text("SELECT current_schema()")).scalar_one()
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        engine.dispose()
    return url


def test_backup_ingest_more_lose_restore_replay(engine, tmp_path):
    make_chain(engine)
    till = Till("T-0001", "S1").register(engine)
    card = Card("C-0001")
    archive = AckArchive(tmp_path / "archive")
    ingest = Ingest(engine, archive=archive)
    before_backup = ingest.process(_records(till, card, 10))
    assert before_backup.acks["T-0001"].through == 10
    with engine.begin() as conn:
        record_action(conn, ADMIN, "store.update", "store", "S1", {"name": "S1"},
                      {"name": "东店"}, now_ms=5_000, place=S1)

    manifest = take_backup(engine, tmp_path / "backups", now_ms=1_800_000_000_000)
    assert manifest.last_records == {"T-0001": 10}
    assert manifest.audit_head["seq"] == 1

    after_backup = ingest.process(_records(till, card, 10))
    assert after_backup.acks["T-0001"].through == 20  # the terminal deletes 11..20 now
    ingest.close()
    archive.close()

    url = _lose(engine)
    restore_backup(tmp_path / "backups" / manifest.file, url)
    restored = open_engine(url)
    with restored.connect() as conn:
        assert conn.execute(select(func.max(records.c.seq))).scalar() == 10

    replay = replay_archive(restored, tmp_path / "archive")
    assert (replay.read, replay.posted, replay.duplicates) == (20, 10, 10)
    assert not replay.rejected and not replay.damaged_frames
    with restored.connect() as conn:
        seqs = conn.execute(select(records.c.seq).where(records.c.device_id == "T-0001")
                            .order_by(records.c.seq)).scalars().all()
        through = conn.execute(select(devices.c.contiguous_through)).scalar_one()
    assert seqs == list(range(1, 21)) and through == 20
    assert check_ledger(restored, signatures=True).balanced
    assert verify_audit(restored).intact

    again = replay_archive(restored, tmp_path / "archive")  # replaying twice is harmless
    assert (again.posted, again.duplicates) == (0, 20)
    assert check_ledger(restored).balanced


def test_restore_refuses_a_database_that_is_not_empty(engine, tmp_path):
    manifest = take_backup(engine, tmp_path, now_ms=1_800_000_000_000)
    with pytest.raises(BackupError, match="not empty"):
        restore_backup(tmp_path / manifest.file, url_of(engine))


def test_restore_refuses_a_damaged_backup(engine, tmp_path):
    manifest = take_backup(engine, tmp_path, now_ms=1_800_000_000_000)
    copy = tmp_path / manifest.file
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    url = _lose(engine)
    with pytest.raises(BackupError, match="SHA-256"):
        restore_backup(copy, url)


def test_the_manifest_describes_the_copy(engine, tmp_path):
    make_chain(engine)
    with engine.begin() as conn:
        entry = record_action(conn, ADMIN, "store.update", "store", "S1", None, {"n": 1},
                              now_ms=1, place=S1)
    manifest = take_backup(engine, tmp_path, now_ms=1_800_000_000_000)
    loaded = Manifest.load(tmp_path / (manifest.file.rsplit(".", 1)[0] + ".manifest.json"))
    assert loaded == manifest
    assert loaded.audit_head == {"seq": 1, "hash": entry.hash}
    assert loaded.schema_revision and loaded.store == engine.dialect.name
    assert not list(tmp_path.glob("*.partial"))


def test_backup_and_restore_commands(engine, tmp_path):
    runner = CliRunner()
    folder = tmp_path / "backups"
    taken = runner.invoke(group, ["backup", "--db", url_of(engine), "--to", str(folder)])
    assert taken.exit_code == 0, taken.output
    copy = next(p for p in folder.iterdir() if not p.name.endswith(".json"))
    refused = runner.invoke(group, ["restore", "--db", url_of(engine), str(copy)])
    assert refused.exit_code == 1 and "not empty" in refused.output
    url = _lose(engine)
    done = runner.invoke(group, ["restore", "--db", url, str(copy)])
    assert done.exit_code == 0, done.output
    assert "replay-archive" in done.output
    ok = runner.invoke(group, ["verify-audit", "--db", url, "--anchors", str(folder)])
    assert ok.exit_code == 0, ok.output


# --- the archive itself (no database needed) -------------------------------------------


def test_the_archive_is_written_after_the_commit_and_before_the_acks(sqlite_url, tmp_path):
    engine = open_engine(sqlite_url)
    till = Till("T-0002", "S1").register(engine)
    archive = AckArchive(tmp_path / "a")
    seen_committed = []
    append = archive.append

    def checking_append(payloads):
        with create_engine(sqlite_url).connect() as other:  # another connection
            seen_committed.append(other.execute(select(func.count()).select_from(records))
                                  .scalar())
        return append(payloads)

    archive.append = checking_append
    result = Ingest(engine, archive=archive).process(_records(till, Card("C"), 3))
    assert seen_committed == [3] and result.acks["T-0002"].through == 3
    assert len(list(read_archive(tmp_path / "a"))) == 3


def test_no_ack_when_the_archive_cannot_be_made_durable(sqlite_url, tmp_path, monkeypatch):
    engine = open_engine(sqlite_url)
    till = Till("T-0003", "S1").register(engine)
    archive = AckArchive(tmp_path / "a")
    ingest = Ingest(engine, archive=archive)

    def broken_fsync(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(archive_module.os, "fsync", broken_fsync)
    with pytest.raises(ArchiveFailed):
        ingest.process(_records(till, Card("C"), 2))  # no BatchResult: nothing to publish
    monkeypatch.undo()
    with pytest.raises(ArchiveFailed, match="failed earlier"):  # until HQ restarts
        ingest.process(_records(till, Card("C2"), 1))


def test_a_torn_last_frame_is_cut_and_a_damaged_one_is_counted(tmp_path):
    folder = tmp_path / "a"
    archive = AckArchive(folder, segment_bytes=64)
    archive.append([b"x" * 40])
    archive.append([b"y" * 40, b"z" * 10])  # over 64 bytes: a second segment
    archive.close()
    segments = sorted(folder.iterdir())
    assert [p.name for p in segments] == ["records-000001.seg", "records-000002.seg"]
    with segments[-1].open("ab") as fh:
        fh.write(b"\x00\x00\x00\x30torn")  # a crash mid-write
    AckArchive(folder, segment_bytes=64).close()
    assert list(read_archive(folder)) == [b"x" * 40, b"y" * 40, b"z" * 10]
    data = bytearray(segments[0].read_bytes())
    data[-1] ^= 1
    segments[0].write_bytes(bytes(data))
    summary = ArchiveRead()
    assert list(read_archive(folder, summary)) == [b"y" * 40, b"z" * 10]
    assert (summary.damaged, summary.records, summary.segments) == (1, 2, 2)


def test_replay_reports_damage_and_garbage_without_stopping(sqlite_url, tmp_path):
    engine = open_engine(sqlite_url)
    till = Till("T-0004", "S1").register(engine)
    archive = AckArchive(tmp_path / "a")
    archive.append([b"not a record at all", _records(till, Card("C"), 1)[0][1]])
    archive.close()
    result = replay_archive(engine, tmp_path / "a")
    assert (result.read, result.unreadable, result.posted) == (2, 1, 1)
    out = CliRunner().invoke(group, ["replay-archive", "--db", sqlite_url, "--archive",
                                     str(tmp_path / "a")])
    assert out.exit_code == 1 and "1 unreadable" in out.output
    assert os.path.exists(tmp_path / "a" / "records-000001.seg")
