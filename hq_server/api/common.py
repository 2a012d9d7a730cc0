"""What every router of API v1 shares: cursor pagination, idempotency keys, edit conflicts.

- **Cursor pagination**: a list answers ``{"items": [...], "next_cursor": "..."}``; the
  cursor is opaque to clients (base64url of the last row's sort key), stable under inserts
  (keyset pagination, never OFFSET), and refused with a problem when tampered with.
- **Idempotency keys**: every POST that changes money or state accepts an
  ``Idempotency-Key`` header. The first request with a key runs; a retry with the same key
  and the same body gets the first answer again (nothing runs twice); the same key with a
  different body is refused (422). Keys are per operator and kept for
  :data:`IDEMPOTENCY_TTL_MS`.
- **Edit conflicts**: every editable resource has a ``version``; an edit must say which
  version it edits (``If-Match: "<version>"`` or ``version`` in the body). When another
  operator changed it meanwhile the edit is refused with 409, the current representation
  and the fields that changed (:class:`EditConflict`), and nothing is applied.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

IDEMPOTENCY_TTL_MS = 24 * 3600 * 1000
MAX_PAGE = 200
DEFAULT_PAGE = 50


class BadCursor(ValueError):
    """A cursor this API did not make (HTTP 400)."""


class IdempotencyKeyReused(ValueError):
    """The same Idempotency-Key with a different request (HTTP 422)."""


class IdempotencyInProgress(RuntimeError):
    """The first request with this key has not finished yet (HTTP 409; retry later)."""


class EditConflict(Exception):
    """The resource changed since the version the edit was based on (HTTP 409)."""

    def __init__(self, current: dict[str, Any], changed: list[str]) -> None:
        super().__init__(f"changed meanwhile: {', '.join(changed) or 'version'}")
        self.current = current
        self.changed = changed


def encode_cursor(key: tuple[Any, ...]) -> str:
    raw = json.dumps(list(key), separators=(",", ":"), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None, arity: int) -> tuple[Any, ...] | None:
    """The sort key a cursor holds, or None for the first page; BadCursor otherwise."""
    if not cursor:
        return None
    try:
        if len(cursor) > 512:
            raise ValueError("too long")
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = json.loads(raw)
    except (ValueError, TypeError):
        raise BadCursor("this cursor was not made by this API") from None
    if not isinstance(key, list) or len(key) != arity or not all(
            isinstance(v, (str, int)) and not isinstance(v, bool) for v in key):
        raise BadCursor("this cursor was not made by this API")
    return tuple(key)


def page_limit(limit: int | None) -> int:
    return DEFAULT_PAGE if limit is None else max(1, min(int(limit), MAX_PAGE))


def check_version(expected: int | None, current: dict[str, Any],
                  based_on: dict[str, Any] | None = None) -> None:
    """Refuse an edit based on another version than ``current["version"]``.

    ``based_on`` (what the client last saw, when it sent it) narrows ``changed`` to the
    fields that really differ; without it every field of ``current`` is reported.
    """
    if expected is None:
        raise EditConflict(current, ["version (send If-Match or version)"])
    if int(expected) == int(current["version"]):
        return
    if based_on is None:
        changed = sorted(k for k in current if k != "version")
    else:
        changed = sorted(k for k in current if k != "version" and based_on.get(k) != current[k])
    raise EditConflict(current, changed)


@dataclass(frozen=True)
class StoredAnswer:
    status: int
    body: Any


def request_hash(method: str, path: str, body: bytes) -> str:
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + body).hexdigest()


def run_idempotent(engine: Engine, operator: str, key: str | None, method: str, path: str,
                   body: bytes, run: Callable[[], StoredAnswer], now_ms: int) -> StoredAnswer:
    """Run ``run`` once per (operator, key); a retry gets the stored answer.

    Without a key, ``run`` simply runs. Only answers below 500 are stored: a server error
    may be retried with the same key.
    """
    if not key:
        return run()
    if len(key) > 128 or not key.isprintable():
        raise IdempotencyKeyReused("Idempotency-Key must be at most 128 printable characters")
    from hq_server.db.tables import idempotency_keys as t

    digest = request_hash(method, path, body)
    with engine.begin() as conn:
        conn.execute(delete(t).where(t.c.created_at_ms < now_ms - IDEMPOTENCY_TTL_MS))
        row = conn.execute(select(t).where((t.c.operator == operator) & (t.c.key == key))
                           ).mappings().first()
        if row is None:
            try:
                with conn.begin_nested():
                    conn.execute(insert(t).values(operator=operator, key=key,
                                                  request_hash=digest, status=None,
                                                  body_json=None, created_at_ms=now_ms))
            except IntegrityError:
                row = conn.execute(select(t).where((t.c.operator == operator)
                                                   & (t.c.key == key))).mappings().first()
    if row is not None:
        if row["request_hash"] != digest:
            raise IdempotencyKeyReused("this Idempotency-Key was used for another request")
        if row["status"] is None:
            raise IdempotencyInProgress("the first request with this Idempotency-Key is "
                                        "still running")
        return StoredAnswer(int(row["status"]), json.loads(row["body_json"]))
    try:
        answer = run()
    except BaseException:
        with engine.begin() as conn:
            conn.execute(delete(t).where((t.c.operator == operator) & (t.c.key == key)))
        raise
    with engine.begin() as conn:
        if answer.status < 500:
            conn.execute(update(t).where((t.c.operator == operator) & (t.c.key == key))
                         .values(status=answer.status,
                                 body_json=json.dumps(answer.body, default=str)))
        else:
            conn.execute(delete(t).where((t.c.operator == operator) & (t.c.key == key)))
    return answer
