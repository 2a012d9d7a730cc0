"""Config and denylist reach a running terminal through our broker, whole or not at all;
HQ's commands are each answered."""

from __future__ import annotations

import json
import secrets

import pytest

from broker_config.render import HQ_USER
from hq_server.fleet.service import FleetService
from protocol.card_state import RefusalReason
from protocol.record import Flag, Operation
from protocol.terminal_config import ConfigError
from protocol.topics import DenylistDelta, DenylistEntry, DenylistSnapshot
from terminal_fw.card_memory import CardMemory
from tests.card_world import CATALOGUE, KEYS, T0
from tests.fleet import wait_for
from tests.runtime_world import config_doc, make_runtime, member_card

pytestmark = pytest.mark.broker


def last(events: list[dict]) -> dict:
    """The latest tap decision (MQTT-side events such as config_applied may come between)."""
    return [e for e in events if e["event"] in ("gate_open", "refused")][-1]
TIMEOUT = 30.0  # generous: other test runs share the two cores


@pytest.fixture
def world(broker_factory, tmp_path):
    hq_password, dev_password = secrets.token_urlsafe(8), secrets.token_urlsafe(8)
    broker = broker_factory({HQ_USER: hq_password, "gate-01": dev_password})
    hq = FleetService(host="127.0.0.1", port=broker.port, username=HQ_USER,
                      password=hq_password).start()
    events: list[dict] = []
    rt = make_runtime(tmp_path, broker_port=broker.port, password=dev_password,
                      events=events.append)
    rt.clock = rt.taps.clock = lambda: T0 / 1000  # the card world's morning
    rt.start()
    wait_for(rt.online, TIMEOUT, "terminal online")
    yield broker, hq, rt, events
    rt.stop()
    hq.stop()


def test_config_versions_apply_whole_and_a_bad_one_is_refused_and_reported(world, tmp_path):
    broker, hq, rt, events = world
    assert rt.config.current.version == 0
    rt.role.on_card(member_card(), "entry")
    assert last(events)["reason"] == "no configuration from HQ yet"

    hq.publish_config("gate-01", config_doc(1))
    wait_for(lambda: hq.reports.get("gate-01") and hq.reports["gate-01"].version == 1,
             TIMEOUT, "terminal reports version 1")
    card = member_card()
    rt.role.on_card(card, "entry")
    assert last(events)["event"] == "gate_open"

    # HQ's own check stops a bad document; pushed anyway, the terminal refuses it whole
    bad = config_doc(2, opening_hours={"mon": ["25:00-26:00"]})
    with pytest.raises(ConfigError):
        hq.publish_config("gate-01", bad)
    hq.publish_raw_config("gate-01", json.dumps(bad).encode())
    wait_for(lambda: hq.reports["gate-01"].refused_version == 2, TIMEOUT, "refusal reported")
    report = hq.reports["gate-01"]
    assert report.version == 1 and "opening_hours" in report.error
    assert rt.config.current.version == 1
    hq.publish_raw_config("gate-01", b"{not json")
    wait_for(lambda: "not JSON" in hq.reports["gate-01"].error, TIMEOUT, "refusal reported")
    assert rt.config.current.version == 1

    # a valid version 3 (the gate now lets in gym visits only) replaces 1 at once
    hq.publish_config("gate-01", config_doc(3, gate={"group": 2, "accepts": ["gym"]}))
    wait_for(lambda: hq.reports["gate-01"].version == 3, TIMEOUT, "version 3 reported")
    assert hq.reports["gate-01"].refused_version == 0
    rt.role.on_card(member_card(uid=bytes.fromhex("22334455")), "entry")
    assert last(events)["event"] == "refused" and RefusalReason.EXHAUSTED.value in last(events)["reason"]

    # the applied document survives a restart without any broker
    rt.stop()
    again = make_runtime(tmp_path, broker_port=1)
    try:
        assert again.config.current.version == 3
        assert again.config.current.gate.accepts == ("gym",)
    finally:
        again.store.close()
        again.outbox.close()


def test_denylist_snapshot_then_delta_refuses_a_lost_card_and_a_gap_takes_the_snapshot(world):
    broker, hq, rt, events = world
    hq.publish_config("gate-01", config_doc(1))
    hq.publish_denylist(DenylistSnapshot(1, (DenylistEntry("M09999", "lost", T0),)))
    wait_for(lambda: rt.denylist.version == 1 and rt.config.current.version == 1, TIMEOUT,
             "snapshot 1 and config 1")
    card = member_card()
    rt.role.on_card(card, "entry")
    assert last(events)["event"] == "gate_open"

    lost = DenylistEntry("M00001", "reported lost", T0)
    hq.publish_denylist(DenylistSnapshot(2, (DenylistEntry("M09999", "lost", T0), lost)),
                        DenylistDelta(1, 2, (lost,)))
    wait_for(lambda: rt.denylist.version == 2, TIMEOUT, "delta applied")
    rt.role.on_card(card, "exit")  # refused at the exit too, and blocked on the card
    assert last(events)["event"] == "refused"
    assert RefusalReason.DENYLISTED.value in last(events)["reason"]
    assert CardMemory(card, KEYS, CATALOGUE).read().state.blocked
    assert rt.outbox.records()[-1].record.operation is Operation.BLOCK

    # a delta that does not follow our version is not guessed at: the snapshot is taken
    found = DenylistEntry("M00001", "", T0)
    hq.publish_denylist(DenylistSnapshot(4, (found,)), DenylistDelta(3, 4, (found,), ("M09999",)))
    wait_for(lambda: rt.denylist.version == 4, TIMEOUT, "snapshot 4 after the gap")
    assert rt.denylist.cards() == {"M00001"}
    assert not any(e["event"] == "denylist_applied" and e["version"] == 3 for e in events)


def test_every_command_is_answered(world):
    broker, hq, rt, events = world
    hq.publish_config("gate-01", config_doc(1))
    wait_for(lambda: rt.config.current.version == 1, TIMEOUT, "config")

    def ask(name, args=None):
        result = hq.result(hq.send_command("gate-01", name, args), TIMEOUT)
        assert result is not None, f"no answer to {name}"
        return result

    assert ask("sync_now").ok
    assert ask("reload_config").data == {"running_version": 1}
    opened = rt.role.opened
    assert ask("open_gate", {"operator": "alice"}).ok and rt.role.opened == opened + 1
    on = ask("maintenance", {"on": True})
    assert on.ok and rt.maintenance
    rt.role.on_card(member_card(), "entry")
    assert last(events)["event"] == "refused" and "maintenance" in last(events)["reason"]
    assert not ask("maintenance", {"on": "yes"}).ok
    assert ask("maintenance", {"on": False}).ok and not rt.maintenance
    logs = ask("collect_logs", {"lines": 20})
    assert logs.ok and isinstance(logs.data["lines"], list)
    unknown = ask("reboot_now")
    assert not unknown.ok and "unknown command" in unknown.detail


def test_uid_credentials_are_authorised_online_and_fall_back_to_the_caps(world):
    broker, hq, rt, events = world
    hq.publish_config("gate-01", config_doc(1))
    wait_for(lambda: rt.config.current.version == 1, TIMEOUT, "config")
    members = {"0012345678"}
    from protocol.fleet import UidAuthResponse

    hq.authorise = lambda device, req: UidAuthResponse(
        req.request_id, req.credential in members,
        "" if req.credential in members else "unknown ID card", f"ok-{req.request_id}")
    for _ in range(3):  # online there is no offline cap: HQ decides each use
        rt.role.on_uid("em4100", "0012345678")
        assert last(events)["event"] == "gate_open" and last(events)["flags"] == 0
    rt.role.on_uid("em4100", "0099999999")
    assert last(events) == {"event": "refused", "direction": "entry", "reason": "unknown ID card",
                          "card": "em4100.0099999999"}
    [request_device, request] = hq.uid_requests[0]
    assert request_device == "gate-01" and request.amount_fen == 3000
    approved = [s.record for s in rt.outbox.records()]
    assert [r.extra["approval"].startswith("ok-") for r in approved] == [True] * 3

    hq.stop()  # connected, but nobody answers: the terminal decides under the caps
    rt.role.on_uid("em4100", "0099999999")
    assert last(events)["event"] == "gate_open"
    assert last(events)["flags"] == int(Flag.OFFLINE | Flag.UNDER_RISK_CAP)
    hq.start()  # (the fixture stops it again)
