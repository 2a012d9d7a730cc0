"""Acknowledgements: how far HQ holds every record of a device, and what it misses.

An ack is only ever computed from what is committed: a device deletes records up to
``through`` on receiving it, so acking a record HQ might still lose would lose money.
"""

from __future__ import annotations

from itertools import islice

from sqlalchemy import select, update
from sqlalchemy.engine import Connection, Engine

from hq_server.db.tables import devices, records
from protocol.topics import Ack

MAX_MISSING_REPORTED = 100


_ADVANCE_WINDOW = 2000



def advance(conn: Connection, device_id: str) -> Ack:
    """Move the device's contiguous mark over what is committed; report the gaps.

    The device row is locked first (PostgreSQL, FOR NO KEY UPDATE: the records'
    foreign-key locks must not block it), so two workers finishing batches of the same
    device compute their acks one after the other, each over committed records.
    """
    through, highest = conn.execute(
        select(devices.c.contiguous_through, devices.c.highest_seen)
        .where(devices.c.device_id == device_id).with_for_update(key_share=True)).one()
    above: list[int] = []
    while True:
        above = [s for (s,) in conn.execute(
            select(records.c.seq).where((records.c.device_id == device_id) & (records.c.seq > through))
            .order_by(records.c.seq).limit(_ADVANCE_WINDOW))]
        moved = 0
        for seq in above:
            if seq != through + 1:
                break
            through = seq
            moved += 1
        above = above[moved:]
        if above or moved < _ADVANCE_WINDOW:
            break
    highest = max([highest, through, *above[-1:]])
    present = set(above)
    window_end = above[-1] if above else through
    missing = tuple(islice((s for s in range(through + 1, window_end) if s not in present),
                           MAX_MISSING_REPORTED))
    conn.execute(update(devices).where(devices.c.device_id == device_id)
                 .values(contiguous_through=through, highest_seen=highest))
    return Ack(through, missing)



def gap_report(engine: Engine) -> dict[str, Ack]:
    """Devices with a hole in what HQ holds: the ack to send them again (a re-request).

    A device whose missing record's ack was lost would otherwise wait for its resend
    timer; asking again costs one small message per device with a gap.
    """
    out: dict[str, Ack] = {}
    with engine.connect() as conn:
        gapped = [d for (d,) in conn.execute(select(devices.c.device_id).where(
            devices.c.highest_seen > devices.c.contiguous_through))]
    for device_id in gapped:
        with engine.begin() as conn:
            ack = advance(conn, device_id)
        if ack.missing:
            out[device_id] = ack
    return out
