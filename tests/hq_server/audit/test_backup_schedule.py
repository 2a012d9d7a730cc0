"""Backups on a schedule in ``hq run``: taken when the newest is older than the period,
pruned to the number kept, and a failure never stops HQ."""

from __future__ import annotations

from pathlib import Path

import pytest

from hq_server.backup.dump import manifests
from hq_server.backup.schedule import RETRY_AFTER_S, BackupSchedule, ScheduledBackups
from hq_server.db.engine import open_engine
from hq_server.process.settings import HqSettings

HOUR_MS = 3600 * 1000


class Clock:
    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


def test_backups_follow_the_period_and_keep_the_newest(sqlite_url, tmp_path):
    engine = open_engine(sqlite_url)
    clock = Clock(1_800_000_000_000)
    folder = tmp_path / "backups"
    backups = ScheduledBackups(engine, BackupSchedule(folder, every_hours=6, keep=2), clock)
    assert backups.run_once() is not None
    clock.now_ms += 5 * HOUR_MS
    assert backups.run_once() is None  # not due yet
    for _ in range(3):
        clock.now_ms += 6 * HOUR_MS
        assert backups.run_once() is not None
    kept = manifests(folder)
    assert [m.taken_at_ms for m in kept] == [clock.now_ms - 6 * HOUR_MS, clock.now_ms]
    assert len(list(folder.iterdir())) == 4  # two copies, two manifests
    # A restarted HQ counts from the newest backup in the folder.
    again = ScheduledBackups(engine, BackupSchedule(folder, every_hours=6, keep=2), clock)
    assert again.run_once() is None


def test_a_failed_backup_is_reported_not_fatal(sqlite_url, tmp_path):
    engine = open_engine(sqlite_url)
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the backup folder should be")
    backups = ScheduledBackups(engine, BackupSchedule(blocked / "sub", every_hours=1),
                               Clock(1_800_000_000_000))
    assert backups.round() == RETRY_AFTER_S
    progress = backups.component().progress()
    assert progress["last_backup"] is None and "Not a directory" in progress["last_error"]
    blocked.unlink()
    assert backups.round() == 1.0
    progress = backups.component().progress()
    assert progress["last_backup"].endswith(".sqlite") and progress["last_error"] is None


def test_settings_carry_the_schedule_and_the_archive(tmp_path):
    with pytest.raises(ValueError):
        BackupSchedule(tmp_path, every_hours=0)
    with pytest.raises(ValueError):
        BackupSchedule(tmp_path, keep=0)
    settings = HqSettings("sqlite:///x.db", ingest=False, fleet=False,
                          api=_api(tmp_path), archive_dir=tmp_path / "a",
                          backups=BackupSchedule(tmp_path / "b"))
    assert settings.backups.every_hours == 24 and settings.backups.keep == 14
    assert settings.archive_dir == Path(tmp_path / "a")


def _api(tmp_path):
    from hq_server.devices.enrolment import BrokerAddress
    from hq_server.process.settings import ApiSettings

    return ApiSettings(tmp_path / "cert.pem", tmp_path / "key.pem",
                       BrokerAddress("127.0.0.1", 8883), None)
