"""The one place a terminal signs records.

Every record a terminal makes — a tap's, a checkout's, a UID credential's use — is
signed here with the device's key and appended to the outbox, which places it in the
device's chain (sequence number, hash of the previous record). The record's content
comes from :mod:`protocol.card_ops`; nothing else builds or signs one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from protocol.record import SignedRecord, TransactionRecord
from terminal_fw.identity import DeviceIdentity
from terminal_fw.outbox import Outbox


class Recorder:
    """Signs records into one device's outbox."""

    def __init__(self, identity: DeviceIdentity, outbox: Outbox) -> None:
        self.identity = identity
        self.outbox = outbox

    def sign(self, records: Iterable[TransactionRecord], *, conn: sqlite3.Connection | None = None,
             flags: int = 0, extra: dict[str, Any] | None = None) -> tuple[SignedRecord, ...]:
        """Sign ``records`` (with ``flags`` and ``extra`` added) into the outbox: in the
        caller's open transaction ``conn`` (which commits them together with its own
        change), or in a durable transaction of their own."""
        if conn is None:
            with self.outbox.transaction() as own:
                return self.sign(records, conn=own, flags=flags, extra=extra)
        signed = []
        for r in records:
            if flags or extra:
                r = replace(r, flags=r.flags | flags, extra={**r.extra, **(extra or {})})
            signed.append(self.outbox.append_in(conn, r, self.identity.signing_key))
        return tuple(signed)
