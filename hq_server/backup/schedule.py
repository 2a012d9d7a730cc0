"""Backups on a schedule, as a supervised part of ``hq run`` (see hq_server.process)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import Engine

from hq_server.backup.dump import Manifest, latest_manifest, prune_backups, take_backup
from hq_server.clock import Clock, system_clock
from hq_server.process.supervision import Component

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackupSchedule:
    """Where backups go, how often (hours), and how many are kept."""

    folder: Path
    every_hours: float = 24.0
    keep: int = 14

    def __post_init__(self) -> None:
        if not 0 < self.every_hours <= 24 * 31:
            raise ValueError("backups are taken every 0 to 744 hours")
        if self.keep < 1:
            raise ValueError("at least one backup is kept")


#: Seconds before a failed backup is tried again.
RETRY_AFTER_S = 300.0


class ScheduledBackups:
    """Takes a backup when the newest one in the folder is older than the period (so a
    restarted HQ does not back up again at once), then prunes to ``keep``.

    A failed backup (backup disk full, pg_dump missing) must not stop ingest: it is
    logged, shown in ``hq status`` (``last_error``) and tried again after
    :data:`RETRY_AFTER_S`.
    """

    def __init__(self, engine: Engine, schedule: BackupSchedule,
                 clock: Clock = system_clock) -> None:
        self.engine, self.schedule, self.clock = engine, schedule, clock
        self._stop = threading.Event()
        self.last_error: str | None = None
        self.last: Manifest | None = None
        newest = latest_manifest(schedule.folder) if schedule.folder.is_dir() else None
        if newest is not None:
            self.last = Manifest.load(newest)

    def due(self, now_ms: int) -> bool:
        period = int(self.schedule.every_hours * 3600 * 1000)
        return self.last is None or now_ms - self.last.taken_at_ms >= period

    def run_once(self) -> Manifest | None:
        now = self.clock()
        if not self.due(now):
            return None
        self.last = take_backup(self.engine, self.schedule.folder, now)
        log.info("backup %s taken (%d bytes)", self.last.file, self.last.bytes)
        prune_backups(self.schedule.folder, self.schedule.keep)
        return self.last

    def round(self) -> float:
        """One round: a backup if due. Returns the seconds until the next round."""
        try:
            self.run_once()
        except Exception as exc:  # noqa: BLE001 - a backup failure must not stop HQ
            self.last_error = f"{type(exc).__name__}: {str(exc)[:300]}"
            log.error("scheduled backup failed (%s); trying again in %.0f s",
                      self.last_error, RETRY_AFTER_S)
            return RETRY_AFTER_S
        self.last_error = None
        return 1.0

    def _run(self) -> None:
        pause = 1.0
        while not self._stop.wait(pause):
            pause = self.round()

    def component(self) -> Component:
        return Component("backup", self._run, stop=self._stop.set,
                         progress=lambda: {"last_backup": self.last.file if self.last
                                           else None, "last_error": self.last_error})
