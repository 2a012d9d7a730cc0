"""The terminal's copy of HQ's denylist (挂失): a snapshot plus deltas, versioned.

A snapshot replaces the whole list; a delta applies only on top of the version it was
made from. A delta that does not fit (we missed one, or started late) is not guessed at:
the terminal reports that it needs the snapshot, which HQ keeps retained, and applies
that instead. Each change is one SQLite transaction, then one swap of the in-memory set
that taps consult, so a tap sees either the old or the new list, never half of one. The
list survives restarts: a terminal that boots offline still refuses lost cards.
"""

from __future__ import annotations

import enum
import logging
import threading

from protocol.topics import DenylistDelta, DenylistSnapshot
from terminal_fw.local_store import LocalStore

log = logging.getLogger(__name__)


class DeltaOutcome(enum.Enum):
    APPLIED = "applied"
    ALREADY_HAVE = "already have"  # a delta we already applied (redelivery)
    NEED_SNAPSHOT = "need snapshot"  # a gap: we do not hold its from_version


class Denylist:
    def __init__(self, store: LocalStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self.store.execute("CREATE TABLE IF NOT EXISTS denylist (card_id TEXT PRIMARY KEY,"
                           " reason TEXT NOT NULL, effective_at_ms INTEGER NOT NULL)")
        self.version = int(self.store.get("denylist_version", 0))
        self._cards = frozenset(r[0] for r in self.store.execute("SELECT card_id FROM denylist"))

    def __contains__(self, card_id: object) -> bool:
        return card_id in self._cards

    def cards(self) -> frozenset[str]:
        """The current list, for the tap runner's check before every card operation."""
        return self._cards

    def apply_snapshot(self, snap: DenylistSnapshot) -> bool:
        """Replace the list with ``snap`` unless ours is newer; True if it changed."""
        with self._lock:
            if snap.version < self.version or (snap.version == self.version and self.version):
                return False
            with self.store.transaction() as conn:
                conn.execute("DELETE FROM denylist")
                conn.executemany(
                    "INSERT OR REPLACE INTO denylist VALUES (?, ?, ?)",
                    [(e.card_id, e.reason, e.effective_at_ms) for e in snap.cards])
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('denylist_version', ?)",
                             (str(snap.version),))
            self._cards = frozenset(e.card_id for e in snap.cards)
            self.version = snap.version
        log.info("denylist snapshot %d applied (%d cards)", snap.version, len(snap.cards))
        return True

    def apply_delta(self, delta: DenylistDelta) -> DeltaOutcome:
        with self._lock:
            if delta.to_version <= self.version:
                return DeltaOutcome.ALREADY_HAVE
            if delta.from_version != self.version:
                log.info("denylist delta %d→%d does not follow our %d: need the snapshot",
                         delta.from_version, delta.to_version, self.version)
                return DeltaOutcome.NEED_SNAPSHOT
            with self.store.transaction() as conn:
                conn.executemany("DELETE FROM denylist WHERE card_id = ?",
                                 [(c,) for c in delta.removed])
                conn.executemany(
                    "INSERT OR REPLACE INTO denylist VALUES (?, ?, ?)",
                    [(e.card_id, e.reason, e.effective_at_ms) for e in delta.added])
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('denylist_version', ?)",
                             (str(delta.to_version),))
            self._cards = (self._cards - set(delta.removed)) | {e.card_id for e in delta.added}
            self.version = delta.to_version
        log.info("denylist delta %d→%d applied", delta.from_version, delta.to_version)
        return DeltaOutcome.APPLIED
