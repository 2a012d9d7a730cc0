"""Backups (备份), restore (恢复) and the archive of acknowledged records.

* :mod:`.dump` — ``onecard hq backup``: a consistent copy of HQ's database (SQLite's
  online backup API, ``pg_dump`` for PostgreSQL) and its manifest; ``onecard hq
  restore`` into an empty database only.
* :mod:`.archive` — the append-only archive of every signed record HQ acknowledged,
  fsync'd before the ack leaves, so records terminals deleted after the last backup can
  be fed through ingest again (``onecard hq replay-archive``).
* :mod:`.schedule` — the backup as a supervised part of ``hq run``.
"""
