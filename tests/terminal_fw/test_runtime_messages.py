"""Config documents and fleet messages: what is refused, with which reason; the local
denylist's version rules."""

from __future__ import annotations

import json

import pytest

from protocol.fleet import Command, CommandResult, ConfigReport, UidAuthRequest, UidAuthResponse
from protocol.terminal_config import ConfigError, parse_config
from protocol.topics import DenylistDelta, DenylistEntry, DenylistSnapshot, MessageError
from terminal_fw.config_sync import ConfigSync
from terminal_fw.denylist import DeltaOutcome, Denylist
from terminal_fw.local_store import LocalStore
from tests.runtime_world import config_doc


@pytest.mark.parametrize("change,words", [
    ({"version": 0}, "version must be"),
    ({"version": True}, "version must be"),
    ({"surprise": 1}, "unknown config keys: surprise"),
    ({"catalogue": {"card_products": [{"code": 0, "name": "x"}]}}, "catalogue: product 'x'"),
    ({"price_list": [{"sku": "a b", "unit_price_fen": 1}]}, "price_list[0].sku"),
    ({"price_list": [{"sku": "a", "unit_price_fen": 1.5}]}, "price_list[0].unit_price_fen"),
    ({"price_list": [{"sku": "a", "unit_price_fen": 1}, {"sku": "a", "unit_price_fen": 2}]},
     "a sku appears twice"),
    ({"opening_hours": {"funday": []}}, "unknown day 'funday'"),
    ({"opening_hours": {"mon": ["10:00-09:00"]}}, "ends before it starts"),
    ({"gate": {"group": 16}}, "gate.group must be 0..15"),
    ({"gate": {"accepts": ["caviar"]}}, "catalogue lacks: caviar"),
    ({"gate": {"exit": "window"}}, "gate.exit"),
    ({"risk_caps": {"per_credential_amount_fen": -1}}, "risk_caps.per_credential_amount_fen"),
    ({"risk_caps": {"max_offline_age_s": "1d"}}, "max_offline_age_s"),
    ({"uid": {"online_timeout_s": 0}}, "uid.online_timeout_s"),
    ({"heartbeat_s": None}, "heartbeat_s"),
])
def test_a_bad_config_is_refused_whole_with_the_reason(change, words):
    doc = {**config_doc(5), **change}
    with pytest.raises(ConfigError) as err:
        parse_config(doc)
    assert words in str(err.value)


def test_config_sync_keeps_the_old_version_through_bad_and_stale_ones(tmp_path):
    store = LocalStore(tmp_path / "r.db")
    sync = ConfigSync(store)
    assert sync.offer(json.dumps(config_doc(2)).encode()).version == 2
    refused = sync.offer(b"\xff\xfe")
    assert (refused.version, refused.refused_version) == (2, 0) and "not JSON" in refused.error
    bad = sync.offer(config_doc(3, gate={"group": 99}))
    assert (bad.version, bad.refused_version) == (2, 3)
    assert sync.offer(config_doc(1)).version == 2  # older: ignored
    good = sync.offer(config_doc(4))
    assert (good.version, good.refused_version, good.error) == (4, 0, "")
    store.close()
    assert ConfigSync(LocalStore(tmp_path / "r.db")).current.version == 4


def test_local_denylist_versions(tmp_path):
    store = LocalStore(tmp_path / "r.db")
    deny = Denylist(store)
    e = DenylistEntry("M1", "lost", 0)
    assert deny.apply_delta(DenylistDelta(0, 1, (e,))) is DeltaOutcome.APPLIED
    assert deny.apply_delta(DenylistDelta(0, 1, (e,))) is DeltaOutcome.ALREADY_HAVE
    assert deny.apply_delta(DenylistDelta(2, 3, ())) is DeltaOutcome.NEED_SNAPSHOT
    assert deny.apply_snapshot(DenylistSnapshot(3, (DenylistEntry("M2", "", 0),)))
    assert not deny.apply_snapshot(DenylistSnapshot(2, (e,)))  # older: ignored
    assert deny.apply_delta(DenylistDelta(3, 4, (e,), ("M2",))) is DeltaOutcome.APPLIED
    assert deny.cards() == {"M1"} and deny.version == 4
    store.close()
    again = Denylist(LocalStore(tmp_path / "r.db"))
    assert again.cards() == {"M1"} and again.version == 4


@pytest.mark.parametrize("cls,payload", [
    (UidAuthRequest, b'{"request_id": "r1", "credential": "x", "kind": "magstripe", "amount_fen": 1}'),
    (UidAuthRequest, b'{"request_id": "r1", "credential": "x", "kind": "qr", "amount_fen": "1"}'),
    (UidAuthResponse, b'{"request_id": "r1", "approved": "yes"}'),
    (Command, b'{"command_id": "c1", "name": "", "args": {}}'),
    (Command, b'{"command_id": "c1", "name": "sync_now", "args": []}'),
    (CommandResult, b'{"command_id": "c1", "name": "x", "ok": 1}'),
    (ConfigReport, b'{"version": -1}'),
    (ConfigReport, b"not json"),
])
def test_malformed_fleet_messages_are_refused(cls, payload):
    with pytest.raises(MessageError):
        cls.from_json(payload)


def test_fleet_messages_round_trip():
    for message in (UidAuthRequest("r1", "0012345678", "em4100", 3000, "visit", 5),
                    UidAuthResponse("r1", True, "", "A-1"),
                    Command("c1", "maintenance", {"on": True}, 7),
                    CommandResult("c1", "maintenance", True, "on", {"maintenance": True}),
                    ConfigReport(3, 4, "bad", 9)):
        assert type(message).from_json(message.to_json()) == message
