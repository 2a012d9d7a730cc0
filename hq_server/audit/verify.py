"""``onecard hq verify-audit``: recompute the audit chain from its rows and say what broke.

The database refuses UPDATE and DELETE on ``audit_log`` (triggers), so changing history
needs someone who can drop the triggers: the database's owner, or an attacker holding
its password. What they do still shows, because each row carries the SHA-256 of its
content and of the row before it:

* a **changed** row no longer matches its own hash (or, if its hash was recomputed too,
  the next row no longer links to it);
* a **deleted** row leaves a hole in the sequence numbers, or the chain's head
  (``audit_head``) names a later row than the log holds;
* an **inserted** row is one the chain skips (the next row links to the row before
  it), a row renumbered to make room, or a row past the head.

An attacker who rewrites every row from some point on *and* the head recomputes a
consistent chain; the anchors in backup manifests (each holds the head at its time, see
:mod:`hq_server.backup`) catch that too: ``verify-audit --anchors BACKUP_DIR``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from hq_server.audit.log import GENESIS, entry_hash
from hq_server.db.tables import audit_head, audit_log

_CHUNK = 5000
#: How far a renumbered row is looked for (rows inserted or deleted before it).
_RENUMBER_REACH = 8


@dataclass(frozen=True)
class AuditProblem:
    """One thing wrong with the chain, at row ``seq``, in words an operator can act on."""

    seq: int
    kind: str  # changed / deleted / inserted / anchor
    detail: str

    def __str__(self) -> str:
        return f"row {self.seq}: {self.kind}: {self.detail}"


@dataclass
class AuditCheck:
    rows: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS
    problems: list[AuditProblem] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class Anchor:
    """A (seq, hash) the chain held at some moment, kept outside the database."""

    seq: int
    hash: str
    source: str


def _recompute(row: Mapping[str, Any], seq: int | None = None) -> str:
    def parsed(text: str | None) -> Any:
        return None if text is None else json.loads(text)

    return entry_hash(row["prev_hash"], row["seq"] if seq is None else seq, row["at_ms"],
                      row["operator"], row["role"], row["origin"], row["action"],
                      row["target_kind"], row["target_id"], parsed(row["before_json"]),
                      parsed(row["after_json"]), row["store"])


def _rows(engine: Engine) -> Iterator[Mapping[str, Any]]:
    last = None
    while True:
        query = select(audit_log).order_by(audit_log.c.seq).limit(_CHUNK)
        if last is not None:
            query = query.where(audit_log.c.seq > last)
        with engine.connect() as conn:
            chunk = conn.execute(query).mappings().all()
        yield from chunk
        if len(chunk) < _CHUNK:
            return
        last = chunk[-1]["seq"]


def _content_ok(row: Mapping[str, Any]) -> bool:
    try:
        return _recompute(row) == row["hash"]
    except (ValueError, TypeError):  # before/after no longer JSON: changed
        return False


def _renumbered_from(row: Mapping[str, Any]) -> int | None:
    for shift in range(1, _RENUMBER_REACH + 1):
        for original in (row["seq"] - shift, row["seq"] + shift):
            try:
                if original > 0 and _recompute(row, original) == row["hash"]:
                    return original
            except (ValueError, TypeError):
                return None
    return None


def verify_audit(engine: Engine, anchors: Iterable[Anchor] = ()) -> AuditCheck:
    """Walk the whole log in order and report every break, each at its row."""
    check = AuditCheck()
    found: dict[int, AuditProblem] = {}

    def report(seq: int, kind: str, detail: str) -> None:
        found.setdefault(seq, AuditProblem(seq, kind, detail))

    hashes: dict[int, str] = {}
    wanted = {a.seq: a for a in anchors}
    two_back: Mapping[str, Any] | None = None
    prev: Mapping[str, Any] | None = None
    prev_ok = True
    for row in _rows(engine):
        check.rows += 1
        seq = row["seq"]
        if seq in wanted:
            hashes[seq] = row["hash"]
        expected_seq = prev["seq"] + 1 if prev is not None else 1
        expected_prev = prev["hash"] if prev is not None else GENESIS
        ok = _content_ok(row)
        if not ok:
            original = _renumbered_from(row)
            if original is not None:
                report(seq, "inserted", f"this row was renumbered from {original}: rows were "
                       f"inserted or deleted before it")
            else:
                report(seq, "changed", "its content no longer matches its hash (someone "
                       "edited the row)")
        elif seq > expected_seq:
            missing = (f"row {expected_seq}" if seq == expected_seq + 1
                       else f"rows {expected_seq} to {seq - 1}")
            report(expected_seq, "deleted", f"{missing} missing from the log")
        elif row["prev_hash"] != expected_prev:
            if (prev is not None and two_back is not None
                    and row["prev_hash"] == two_back["hash"]):
                report(prev["seq"], "inserted", "the chain skips this row: the next row "
                       "links to the one before it")
            elif prev is not None and prev_ok:
                report(prev["seq"], "changed", "the next row no longer links to it (the row "
                       "was edited and its hash recomputed)")
            elif prev is None:
                report(seq, "deleted", "the first row does not start the chain: earlier "
                       "rows were deleted")
        two_back, prev, prev_ok = prev, row, ok
    head = _head(engine)
    check.head_seq, check.head_hash = head
    last_seq = prev["seq"] if prev is not None else 0
    if head[0] > last_seq:
        span = (f"row {last_seq + 1}" if head[0] == last_seq + 1
                else f"rows {last_seq + 1} to {head[0]}")
        report(last_seq + 1, "deleted", f"{span} missing at the end (the chain's head "
               f"says {head[0]} rows)")
    elif head[0] < last_seq:
        report(head[0] + 1, "inserted", f"rows after {head[0]} were added behind the "
               "chain's head, not by HQ")
    elif prev is not None and head[1] != prev["hash"]:
        report(last_seq, "changed", "the last row differs from the chain's head")
    for anchor in wanted.values():
        if anchor.seq > last_seq:
            report(anchor.seq, "deleted", f"{anchor.source} saw row {anchor.seq}; the log "
                   f"ends at {last_seq}")
        elif hashes.get(anchor.seq) != anchor.hash:
            report(anchor.seq, "anchor", f"differs from the row {anchor.source} saw: the "
                   "chain up to here was rewritten")
    check.problems = [found[s] for s in sorted(found)]
    return check


def _head(engine: Engine) -> tuple[int, str]:
    with engine.connect() as conn:
        row = conn.execute(select(audit_head.c.seq, audit_head.c.hash)
                           .where(audit_head.c.id == 1)).first()
    return (0, GENESIS) if row is None else (int(row[0]), str(row[1]))


def audit_head_now(engine: Engine) -> tuple[int, str]:
    """The chain's head (last seq and hash): what a backup manifest anchors."""
    return _head(engine)
