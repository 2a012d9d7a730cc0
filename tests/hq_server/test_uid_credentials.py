"""HQ's registry of UID-only credentials: every reason HQ gives, the CLI over it, and a
running `onecard hq run` answering a device's request through our broker."""

from __future__ import annotations

import secrets

import pytest
from click.testing import CliRunner

from hq_server.db.engine import open_engine
from hq_server.devices.denylist import add_to_denylist
from hq_server.devices.uid_credentials import (
    UidCredential,
    UidCredentialError,
    add_credential,
    authoriser,
    decide,
    get_credential,
    list_credentials,
    revoke_credential,
)
from onecard.cli import main
from protocol.fleet import UidAuthRequest, UidAuthResponse, uid_request_topic, uid_response_topic
from tests.cli_login import sign_in_cli
from tests.conftest import have_mosquitto, require

NOW = 1_790_000_000_000
CARD = UidCredential("em4100", "0012345678", "M00042", purposes=("visit", "locker"),
                     max_amount_fen=500, valid_from_ms=NOW - 1000, valid_to_ms=NOW + 1000)


def ask(amount_fen: int = 0, purpose: str = "visit") -> UidAuthRequest:
    return UidAuthRequest("r1", CARD.credential, CARD.kind, amount_fen, purpose)


@pytest.mark.parametrize("found, request_, now, reason", [
    (None, ask(), NOW, "unknown credential"),
    (UidCredential(**{**CARD.__dict__, "status": "revoked"}), ask(), NOW, "revoked"),
    (CARD, ask(), NOW - 1001, "not yet valid"),
    (CARD, ask(), NOW + 1000, "expired"),
    (CARD, ask(purpose="shop"), NOW, "purpose 'shop' not allowed"),
    (CARD, ask(amount_fen=501), NOW, "over the per-use limit of 500 fen"),
])
def test_each_refusal_says_why(found, request_, now, reason):
    answer = decide(found, "gate-01", request_, now)
    assert not answer.approved and reason in answer.reason
    assert answer.request_id == "r1" and answer.approval == ""


def test_an_allowed_use_is_approved_with_a_reference():
    first = decide(CARD, "gate-01", ask(amount_fen=500, purpose="locker"), NOW)
    assert first.approved and "M00042" in first.reason and first.approval.startswith("uid-")
    other = decide(CARD, "gate-01", UidAuthRequest("r2", CARD.credential, CARD.kind, 0), NOW)
    assert other.approved and other.approval != first.approval
    open_ended = UidCredential("qr", "T-1", "ticket-9")  # no dates, visits only
    assert decide(open_ended, "gate-01", UidAuthRequest("r3", "T-1", "qr", 0), NOW).approved
    assert not decide(open_ended, "gate-01", UidAuthRequest("r4", "T-1", "qr", 1), NOW).approved


@pytest.fixture
def engine(tmp_path):
    return open_engine(f"sqlite:///{tmp_path / 'hq.db'}")


@pytest.mark.parametrize("args, message", [
    (("ic", "1", "M1"), "unknown credential kind"),
    (("qr", "  ", "M1"), "empty"),
    (("qr", "x" * 129, "M1"), "longer than 128"),
    (("qr", "abc", ""), "holder"),
])
def test_bad_input_is_refused_and_stores_nothing(engine, args, message):
    with pytest.raises(UidCredentialError, match=message):
        add_credential(engine, *args)
    assert list_credentials(engine) == []


def test_registry_add_duplicate_revoke_and_authoriser(engine):
    add_credential(engine, "em4100", "0012345678", "M00042", now_ms=NOW)
    with pytest.raises(UidCredentialError, match="already registered"):
        add_credential(engine, "em4100", "0012345678", "M00099")
    with pytest.raises(UidCredentialError, match="per use"):
        add_credential(engine, "qr", "Q", "M1", max_amount_fen=-1)
    authorise = authoriser(engine)
    assert authorise("gate-01", UidAuthRequest("a", "0012345678", "em4100", 0)).approved
    refused = authorise("gate-01", UidAuthRequest("b", "0012345678", "em4100", 100))
    assert not refused.approved and "per-use limit of 0 fen" in refused.reason
    revoke_credential(engine, "em4100", "0012345678")
    assert get_credential(engine, "em4100", "0012345678").status == "revoked"
    assert "revoked" in authorise("gate-01", UidAuthRequest("c", "0012345678", "em4100", 0)).reason
    with pytest.raises(UidCredentialError, match="already revoked"):
        revoke_credential(engine, "em4100", "0012345678")
    with pytest.raises(UidCredentialError, match="no qr credential"):
        revoke_credential(engine, "qr", "nothing")


def test_cli_add_list_revoke(tmp_path, monkeypatch):
    db = f"sqlite:///{tmp_path / 'hq.db'}"
    sign_in_cli(db, monkeypatch)
    run = CliRunner().invoke
    ok = run(main, ["hq", "uid-credential", "add", "--db", db, "qr", "TICKET-7", "--holder",
                    "M00007", "--purpose", "visit", "--purpose", "locker",
                    "--max-amount-fen", "300", "--valid-to", "2030-01-01"])
    assert ok.exit_code == 0, ok.output
    dup = run(main, ["hq", "uid-credential", "add", "--db", db, "qr", "TICKET-7",
                     "--holder", "M00008"])
    assert dup.exit_code != 0 and "already registered" in dup.output
    bad = run(main, ["hq", "uid-credential", "add", "--db", db, "rfid", "1", "--holder", "M1"])
    assert bad.exit_code != 0
    listed = run(main, ["hq", "uid-credential", "list", "--db", db])
    assert "qr:TICKET-7" in listed.output and "visit,locker" in listed.output
    assert "max 300 fen" in listed.output and "1 credentials" in listed.output
    assert run(main, ["hq", "uid-credential", "revoke", "--db", db, "qr", "TICKET-7"]).exit_code == 0
    assert "revoked" in run(main, ["hq", "uid-credential", "list", "--db", db]).output
    c = get_credential(open_engine(db), "qr", "TICKET-7")
    assert c.valid_to_ms == 1_893_456_000_000 and c.max_amount_fen == 300


@pytest.mark.broker
def test_running_hq_answers_a_device_through_the_broker(tmp_path):
    require(have_mosquitto(), "mosquitto (apt package mosquitto)")
    import queue
    import time

    from tests.fleet import make_fleet, wait_for

    fleet = make_fleet(tmp_path)
    try:
        add_credential(fleet.engine, "em4100", "0012345678", "M00042", max_amount_fen=200)
        add_credential(fleet.engine, "qr", "LOST-1", "M00043")
        add_to_denylist(fleet.engine, "qr.LOST-1", "reported lost")
        password = secrets.token_urlsafe(12)
        fleet.broker.add_user("gate-01", password)
        fleet.broker.reload()
        fleet.start_hq()
        wait_for(lambda: "answering UID" in fleet.hq_log.read_text(), 30, "HQ fleet service")
        answers: queue.Queue[UidAuthResponse] = queue.Queue()
        device = fleet.raw_client("gate-01", password, "gate-01")
        device.on_message = lambda c, u, m: answers.put(UidAuthResponse.from_json(m.payload))
        device.subscribe(uid_response_topic("gate-01"), qos=1)

        def ask_hq(request: UidAuthRequest) -> UidAuthResponse:
            # HQ's subscription may still be settling: ask again until it answers.
            for _ in range(30):
                device.publish(uid_request_topic("gate-01"), request.to_json(), qos=1)
                deadline = time.monotonic() + 2
                while time.monotonic() < deadline:
                    try:
                        answer = answers.get(timeout=0.5)
                    except queue.Empty:
                        continue
                    if answer.request_id == request.request_id:
                        return answer
            raise AssertionError(f"HQ never answered; log: {fleet.hq_log.read_text()[-2000:]}")

        yes = ask_hq(UidAuthRequest("req-1", "0012345678", "em4100", 200))
        assert yes.approved and yes.approval.startswith("uid-") and "M00042" in yes.reason
        no = ask_hq(UidAuthRequest("req-2", "0099999999", "em4100", 0))
        assert not no.approved and "unknown credential" in no.reason
        over = ask_hq(UidAuthRequest("req-3", "0012345678", "em4100", 201))
        assert not over.approved and "per-use limit" in over.reason
        lost = ask_hq(UidAuthRequest("req-4", "LOST-1", "qr", 0))  # registered, but denylisted
        assert not lost.approved and "denylist" in lost.reason
        device.loop_stop()
        device.disconnect()
    finally:
        fleet.close()  # SIGTERM: ingest and the fleet service stop together
    assert fleet.hq_procs[0].returncode == 0, fleet.hq_log.read_text()[-2000:]
