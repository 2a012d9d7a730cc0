"""``onecard hq backup`` and ``onecard hq restore``: a consistent copy of HQ's database.

A backup is two files in the backup folder: the copy (``hq-<UTC time>.sqlite`` made with
SQLite's online backup API while HQ runs, or ``hq-<UTC time>.pgdump``, ``pg_dump``'s
custom format) and its manifest (``<same name>.manifest.json``): when it was taken, the
schema revision, the last record HQ held of every device (so an operator sees what the
archive replay must bring back), the audit chain's head (an anchor for
``verify-audit --anchors``) and the copy's SHA-256. The manifest is read from the
copy's own content (SQLite) or from the very snapshot ``pg_dump`` exported
(PostgreSQL), so it describes exactly what the copy holds. Both files are written under
a temporary name, fsync'd and renamed: a backup folder never holds half a backup.

A restore goes into an **empty** database only (no table at all): restoring over live
data would merge two histories. The copy's hash is checked against its manifest first.
After it, ``replay-archive`` feeds the records acknowledged since (see
:mod:`hq_server.backup.archive`); ``verify-ledger`` and ``verify-audit`` then pass.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, inspect, select, text
from sqlalchemy.engine import Connection, Engine, make_url

from hq_server.db.tables import audit_head, devices

MANIFEST_FORMAT = 1
_MANIFEST_SUFFIX = ".manifest.json"


class BackupError(RuntimeError):
    """A backup or restore that cannot be done, with the reason in words."""


@dataclass(frozen=True)
class Manifest:
    file: str
    taken_at_ms: int
    store: str  # sqlite / postgresql
    schema_revision: list[str]
    last_records: dict[str, int]
    audit_head: dict[str, Any]
    sha256: str
    bytes: int

    def as_json(self) -> dict[str, Any]:
        return {"format": MANIFEST_FORMAT, **self.__dict__}

    @classmethod
    def load(cls, path: Path) -> Manifest:
        try:
            data = json.loads(path.read_text())
            if data.pop("format") != MANIFEST_FORMAT:
                raise ValueError("unknown manifest format")
            return cls(**data)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise BackupError(f"{path} is not a backup manifest: {exc}") from None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _figures(conn: Connection) -> tuple[list[str], dict[str, int], dict[str, Any]]:
    revision = sorted(r for (r,) in conn.execute(text("SELECT version_num FROM alembic_version")))
    last = {d: int(h) for d, h in conn.execute(select(devices.c.device_id,
                                                      devices.c.highest_seen))}
    head = conn.execute(select(audit_head.c.seq, audit_head.c.hash)
                        .where(audit_head.c.id == 1)).first()
    return revision, last, ({"seq": 0, "hash": "0" * 64} if head is None
                            else {"seq": int(head[0]), "hash": str(head[1])})


def _stamp(now_ms: int) -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(now_ms / 1000)) + f"{now_ms % 1000:03d}Z"


def libpq_url(engine: Engine) -> tuple[str, dict[str, str]]:
    """The engine's URL as libpq tools take it, and the environment holding its password
    (never on a command line, where ``ps`` shows it)."""
    url = engine.url.set(drivername="postgresql")
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    return url.set(password=None).render_as_string(hide_password=False), env


def take_backup(engine: Engine, folder: Path | str, now_ms: int) -> Manifest:
    """Copy the database into ``folder`` while HQ runs; write and return its manifest."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"hq-{_stamp(now_ms)}"
    if engine.dialect.name == "sqlite":
        target = folder / f"{name}.sqlite"
        partial = target.with_suffix(".sqlite.partial")
        raw = engine.raw_connection()
        try:
            dest = sqlite3.connect(partial)
            try:
                raw.driver_connection.backup(dest)  # type: ignore[union-attr]
                revision, last, head = _figures_sqlite(dest)
            finally:
                dest.close()
        finally:
            raw.close()
    elif engine.dialect.name == "postgresql":
        target = folder / f"{name}.pgdump"
        partial = target.with_suffix(".pgdump.partial")
        revision, last, head = _pg_dump(engine, partial)
    else:
        raise BackupError(f"no backup for {engine.dialect.name}")
    _fsync(partial)
    os.replace(partial, target)
    manifest = Manifest(target.name, now_ms, engine.dialect.name, revision, last, head,
                        _sha256(target), target.stat().st_size)
    mpath = folder / f"{name}{_MANIFEST_SUFFIX}"
    tmp = mpath.with_suffix(".partial")
    tmp.write_text(json.dumps(manifest.as_json(), indent=2, sort_keys=True))
    _fsync(tmp)
    os.replace(tmp, mpath)
    _fsync(folder)
    return manifest


def _figures_sqlite(dest: sqlite3.Connection) -> tuple[list[str], dict[str, int], dict[str, Any]]:
    engine = create_engine("sqlite://", creator=lambda: dest)
    with engine.connect() as conn:
        return _figures(conn)


def _pg_dump(engine: Engine, partial: Path) -> tuple[list[str], dict[str, int], dict[str, Any]]:
    """pg_dump of HQ's schema from a snapshot the manifest's figures are read from."""
    if shutil.which("pg_dump") is None:
        raise BackupError("pg_dump is not installed (apt package postgresql-client)")
    url, env = libpq_url(engine)
    with engine.connect() as conn:
        conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))
        snapshot = conn.execute(text("SELECT pg_export_snapshot()")).scalar_one()
        schema = conn.execute(text("SELECT current_schema()")).scalar_one()
        figures = _figures(conn)
        done = subprocess.run(
            ["pg_dump", "--format=custom", "--no-owner", "--no-privileges",
             f"--snapshot={snapshot}", f"--schema={schema}", f"--file={partial}", url],
            env=env, capture_output=True, text=True, timeout=3600)
        conn.rollback()
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        raise BackupError(f"pg_dump failed: {done.stderr.strip()[:500]}")
    return figures


def latest_manifest(folder: Path | str) -> Path | None:
    found = sorted(Path(folder).glob(f"hq-*{_MANIFEST_SUFFIX}"))
    return found[-1] if found else None


def manifests(folder: Path | str) -> list[Manifest]:
    return [Manifest.load(p) for p in sorted(Path(folder).glob(f"hq-*{_MANIFEST_SUFFIX}"))]


def _manifest_for(backup: Path) -> Manifest:
    stem = backup.name.rsplit(".", 1)[0]
    return Manifest.load(backup.with_name(stem + _MANIFEST_SUFFIX))


def is_empty(engine: Engine) -> bool:
    """True when the database (PostgreSQL: the engine's schema) holds no table at all."""
    with engine.connect() as conn:
        return not inspect(conn).get_table_names()


def restore_backup(backup: Path | str, url: str) -> Manifest:
    """Restore ``backup`` (its manifest beside it) into the empty database at ``url``."""
    backup = Path(backup)
    if not backup.is_file():
        raise BackupError(f"no backup file at {backup}")
    manifest = _manifest_for(backup)
    if manifest.file != backup.name:
        raise BackupError(f"the manifest beside {backup.name} describes {manifest.file}")
    if _sha256(backup) != manifest.sha256:
        raise BackupError(f"{backup.name} does not match its manifest's SHA-256: damaged "
                          "or changed since the backup")
    target = create_engine(url)
    try:
        if target.dialect.name != manifest.store:
            raise BackupError(f"this is a {manifest.store} backup; {url.split(':')[0]} "
                              "cannot take it")
        if not is_empty(target):
            raise BackupError("the target database is not empty: restore only goes into an "
                              "empty database (create a new one, or drop this one first)")
        if target.dialect.name == "sqlite":
            database = make_url(url).database
            if not database or database == ":memory:":
                raise BackupError("restore into a database file, not into memory")
            source = sqlite3.connect(f"file:{backup}?mode=ro", uri=True)
            dest = sqlite3.connect(database)
            try:
                source.backup(dest)
            finally:
                source.close()
                dest.close()
        else:
            _pg_restore(target, backup)
        if is_empty(target):
            raise BackupError("the backup restored no table: it was taken from another "
                              "PostgreSQL schema than this URL's")
    finally:
        target.dispose()
    return manifest


def _pg_restore(target: Engine, backup: Path) -> None:
    if shutil.which("pg_restore") is None:
        raise BackupError("pg_restore is not installed (apt package postgresql-client)")
    url, env = libpq_url(target)
    with target.connect() as conn:
        schema = conn.execute(text("SELECT current_schema()")).scalar_one()
    done = subprocess.run(
        ["pg_restore", "--no-owner", "--no-privileges", "--exit-on-error",
         "--single-transaction", f"--schema={schema}", f"--dbname={url}", str(backup)],
        env=env, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise BackupError(f"pg_restore failed: {done.stderr.strip()[:500]}")


def prune_backups(folder: Path | str, keep: int) -> list[str]:
    """Delete all but the newest ``keep`` backups (copy and manifest); returns the names."""
    gone = []
    for manifest in manifests(folder)[:-keep] if keep > 0 else []:
        for name in (manifest.file,
                     manifest.file.rsplit(".", 1)[0] + _MANIFEST_SUFFIX):
            (Path(folder) / name).unlink(missing_ok=True)
        gone.append(manifest.file)
    return gone
