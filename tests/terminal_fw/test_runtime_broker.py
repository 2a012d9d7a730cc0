"""The broker goes away for a while and comes back: every record the terminal made, online
and offline, reaches HQ's ledger exactly once and leaves the terminal only on HQ's ack."""

from __future__ import annotations

import secrets

import pytest
from sqlalchemy import func, select

from hq_server.db.tables import records
from hq_server.devices.registry import add_device
from protocol.record import Flag
from tests.conftest import have_mosquitto, require
from tests.fleet import make_fleet, wait_for
from tests.runtime_world import config_doc, make_runtime, member_card

pytestmark = pytest.mark.broker
TIMEOUT = 60.0


def test_broker_down_and_back_delivers_every_record_once(tmp_path):
    require(have_mosquitto(), "mosquitto (apt package mosquitto)")
    fleet = make_fleet(tmp_path)
    password = secrets.token_urlsafe(8)
    fleet.broker.add_user("gate-01", password)
    fleet.broker.reload()
    rt = make_runtime(tmp_path / "gate-01", broker_port=fleet.broker.port, password=password)
    add_device(fleet.engine, "gate-01", rt.identity.public_key_hex, "store-01")
    rt.config.offer(config_doc(1, gate={"group": 0, "accepts": ["swim"]}))
    opened: list[str] = []
    rt.settings.events = lambda e: opened.append(e["card"]) if e["event"] == "gate_open" else None
    try:
        fleet.start_hq()
        rt.start()
        wait_for(rt.online, TIMEOUT, "terminal online")
        cards = [member_card(uid=bytes([0x10, 0, 0, n]), card_id=f"M{n:05d}") for n in range(4)]
        for card in cards[:2]:
            rt.role.on_card(card, "entry")
        wait_for(lambda: rt.outbox.acked_through == 2, TIMEOUT, "HQ acks the online taps")

        fleet.broker.stop()
        wait_for(lambda: not rt.online(), TIMEOUT, "terminal sees the broker gone")
        for card in cards:
            rt.role.on_card(card, "entry")
        assert rt.uid_use("qr", "TICKET-1", 3000)[0]
        made = rt.outbox.last_seq
        assert made == 7 and rt.outbox.backlog() == 5
        offline = [s.record for s in rt.outbox.records()]
        assert all(r.flags & Flag.OFFLINE for r in offline)

        fleet.broker.start()  # same port, same persistence
        wait_for(lambda: rt.outbox.backlog() == 0, TIMEOUT, "backlog drained after the outage")
        figures = fleet.figures()
        assert figures["records_stored"] == made and figures["quarantined"] == 0
        with fleet.engine.connect() as conn:
            seqs = sorted(s for (s,) in conn.execute(
                select(records.c.seq).where(records.c.device_id == "gate-01")))
            assert seqs == list(range(1, made + 1))
            assert conn.execute(select(func.count()).select_from(records)).scalar_one() == made
        assert rt.outbox.acked_through == made
        assert len(opened) == 6
        # HQ's fleet view: online again, its versions, and the backlog it reported
        from hq_server.devices.presence import fleet_presence

        wait_for(lambda: fleet_presence(fleet.engine)["gate-01"]["outbox_depth"] == 0
                 and fleet_presence(fleet.engine)["gate-01"]["online"], TIMEOUT,
                 "HQ's fleet view catches up")
        view = fleet_presence(fleet.engine)["gate-01"]
        assert (view["role"], view["config_version"], view["last_ack_seq"]) == ("gate", 1, made)
    finally:
        rt.stop()
        fleet.close()
