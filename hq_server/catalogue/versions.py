"""The chain's catalogue as HQ holds it: versions, each in force from an effective time.

Terminals get the catalogue in their pushed config; HQ keeps its own copy here so that
ingest can judge a record by the prices and bonus tiers that were in force when the
record was made (:mod:`hq_server.ingest.record_rules`). A version is never changed: a new price
list is a new version with a later effective time.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass

from sqlalchemy import func, insert, select
from sqlalchemy.engine import Connection, Engine

from hq_server.clock import system_clock
from hq_server.db.tables import catalogues
from protocol.products import Catalogue, CatalogueError


@dataclass(frozen=True)
class CatalogueVersion:
    version: int
    effective_at_ms: int
    catalogue: Catalogue


class CatalogueHistory:
    """Every catalogue version HQ holds; :meth:`in_force` picks one for a moment."""

    def __init__(self, versions: list[CatalogueVersion]) -> None:
        self.versions = sorted(versions, key=lambda v: (v.effective_at_ms, v.version))
        self._starts = [v.effective_at_ms for v in self.versions]

    @property
    def latest_version(self) -> int:
        return max((v.version for v in self.versions), default=0)

    def in_force(self, at_ms: int) -> Catalogue | None:
        """The catalogue in force at ``at_ms`` (None: HQ held none then).

        A record made before the first version's effective time is judged by the first
        version: a terminal's clock may run a little behind HQ's."""
        if not self.versions:
            return None
        i = bisect.bisect_right(self._starts, at_ms) - 1
        return self.versions[max(i, 0)].catalogue


def set_catalogue(engine: Engine, catalogue: Catalogue, *, effective_at_ms: int | None = None,
                  now_ms: int | None = None) -> int:
    """Store ``catalogue`` as a new version, in force from ``effective_at_ms`` (default now).

    Returns the version number."""
    now = system_clock() if now_ms is None else now_ms
    effective = now if effective_at_ms is None else effective_at_ms
    if not 0 <= effective < 2**62:
        raise CatalogueError("effective time out of range")
    document = json.dumps(catalogue.to_dict(), sort_keys=True)
    with engine.begin() as conn:
        return int(conn.execute(insert(catalogues).values(
            effective_at_ms=effective, document=document, created_at_ms=now)
            .returning(catalogues.c.version)).scalar_one())


def load_catalogue_file(path: str) -> Catalogue:
    """A catalogue from a JSON file (the form HQ pushes to terminals)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError, RecursionError) as exc:
        raise CatalogueError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise CatalogueError("a catalogue is a JSON object")
    data = data.get("catalogue", data)  # a whole pushed config is accepted too
    return Catalogue.from_dict(data)


def latest_version(conn: Connection) -> int:
    return int(conn.execute(select(func.coalesce(func.max(catalogues.c.version), 0))).scalar_one())


def catalogue_history(conn: Connection) -> CatalogueHistory:
    return CatalogueHistory([
        CatalogueVersion(int(v), int(t), Catalogue.from_dict(json.loads(doc)))
        for v, t, doc in conn.execute(select(catalogues.c.version, catalogues.c.effective_at_ms,
                                             catalogues.c.document))])


def load_history(engine: Engine) -> CatalogueHistory:
    with engine.connect() as conn:
        return catalogue_history(conn)


def unpriced_records(engine: Engine) -> int:
    """How many records were posted while HQ held no catalogue (prices not checked)."""
    from sqlalchemy import select

    from hq_server.db.tables import counters

    with engine.connect() as conn:
        return int(conn.execute(select(counters.c.value).where(
            counters.c.name == "records_unpriced")).scalar() or 0)
