"""A new terminal joins HQ in one step and takes a tap: the pinned CA, the card keys and
the store's config handed over by HQ, no push-config, nothing copied by hand."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from broker_config.install import SiteDeviceCA, service_tls_context
from broker_config.runner import free_port
from hq_server.api import ApiServer, create_app
from hq_server.db.engine import open_engine
from hq_server.devices.card_keys import CardKeyring, keys_to_json
from hq_server.devices.enrolment import BrokerAddress, create_token
from hq_server.fleet.store_config import set_store_config
from hq_server.ingest.worker import IngestWorker
from protocol.enrolment import ca_pin
from terminal_fw.enrolment import EnrolmentFailed
from terminal_fw.join import check_in, join
from terminal_fw.runtime import Runtime, RuntimeSettings
from tests.card_world import KEYS
from tests.conftest import have_mosquitto, require
from tests.mtls_helpers import make_site, remove_site, start_broker, wait_for
from tests.runtime_world import config_doc, member_card

pytestmark = pytest.mark.broker
STORE = "store-01"


@pytest.fixture(scope="module")
def hq():
    require(have_mosquitto(), "mosquitto (apt package mosquitto)")
    site = make_site()
    broker = start_broker(site)
    workdir = Path(tempfile.mkdtemp(prefix="onecard-join-"))
    engine = open_engine(f"sqlite:///{workdir / 'hq.db'}")
    keyring = CardKeyring(workdir / "card-keys.json")  # written by the tests that need it
    app = create_app(engine, SiteDeviceCA(site),
                     BrokerAddress("127.0.0.1", site.config.device_port), keyring)
    server = ApiServer(app, "127.0.0.1", free_port(), site.api_cert, site.api_key).start()
    ingest = IngestWorker(engine, host="127.0.0.1", port=site.config.service_port,
                          username="", password="", client_id="hq-ingest-join")
    ingest.client.tls_set_context(service_tls_context(site))
    ingest.start()
    yield site, engine, server, keyring, workdir
    ingest.stop()
    server.stop()
    broker.stop()
    engine.dispose()
    remove_site(site)
    shutil.rmtree(workdir, ignore_errors=True)


def paths(root: Path) -> dict:
    return {"secrets_dir": root / "secrets", "data_dir": root / "data",
            "settings_file": root / "etc" / "terminal.toml", "unit_dir": root / "systemd"}


def test_wrong_pin_sends_nothing_and_no_card_keys_spends_no_token(hq, tmp_path):
    site, engine, server, keyring, workdir = hq
    pin = ca_pin(site.device_ca_cert.read_bytes())
    token = create_token(engine, STORE, "gate", "test").token
    with pytest.raises(EnrolmentFailed) as wrong:
        join(server.url, token, "sha256:" + "0" * 64, start=False, **paths(tmp_path / "a"))
    assert wrong.value.code == "ca_mismatch"
    assert not (tmp_path / "a" / "secrets" / "enrolment.json").exists()
    keyring.path.unlink(missing_ok=True)
    with pytest.raises(EnrolmentFailed) as no_keys:
        join(server.url, token, pin, start=False, **paths(tmp_path / "b"))
    assert no_keys.value.code == "card_keys_missing"
    keyring.path.write_text(json.dumps(keys_to_json(KEYS)))
    # the same token still works once HQ holds the keys: the refusal spent nothing
    done = join(server.url, token, pin, start=False, **paths(tmp_path / "c"))
    assert done.enrolled.store == STORE


def test_a_new_gate_joins_in_one_step_and_takes_a_tap(hq, tmp_path):
    site, engine, server, keyring, workdir = hq
    keyring.path.write_text(json.dumps(keys_to_json(KEYS)))
    set_store_config(engine, STORE, config_doc(3, gate={"group": 0, "accepts": ["swim"]}),
                     "test")
    token = create_token(engine, STORE, "gate", "test").token
    where = paths(tmp_path)
    done = join(server.url, token, ca_pin(site.device_ca_cert.read_bytes()), start=False,
                mock_gpio=True, **where)
    assert done.config_version == 3 and not done.started
    unit = (where["unit_dir"] / "onecard-terminal.service").read_text()
    assert f"terminal run --settings {where['settings_file']}" in unit
    keys_file = where["secrets_dir"] / "chain_keys.json"
    assert oct(keys_file.stat().st_mode)[-3:] == "600"

    settings = RuntimeSettings.from_toml(where["settings_file"], admit_timeout_s=0.05)
    rt = Runtime(settings)
    assert rt.keys == KEYS and rt.config.current.version == 3  # no push-config needed
    rt.apply_check_in(check_in(where["secrets_dir"]))  # what the service does at start
    events: list[dict] = []
    rt.settings.events = events.append
    rt.start()
    try:
        wait_for(rt.online, 30, "online over mutual TLS")
        card = member_card(opening_fen=0, now_ms=int(time.time() * 1000))
        rt.role.on_card(card, "entry")
        decided = [e for e in events if e["event"] in ("gate_open", "refused")]
        assert decided and decided[-1]["event"] == "gate_open", decided
        wait_for(lambda: rt.outbox.acked_through == 1, 30, "HQ acknowledges the tap")
    finally:
        rt.stop()


def test_check_in_gives_a_rotated_key_and_refuses_a_forged_signature(hq, tmp_path):
    import hq_server.devices.provisioning as provisioning
    from hq_server.devices.enrolment import EnrolmentError

    site, engine, server, keyring, workdir = hq
    keyring.path.write_text(json.dumps(keys_to_json(KEYS)))
    token = create_token(engine, STORE, "kiosk", "test").token
    where = paths(tmp_path)
    done = join(server.url, token, ca_pin(site.device_ca_cert.read_bytes()), start=False,
                **where)
    rotated = dict(keys_to_json(KEYS), mac_master="ab" * 16)
    keyring.path.write_text(json.dumps(rotated))
    answer = check_in(where["secrets_dir"])
    assert answer["card_keys"]["mac_master"] == "ab" * 16
    assert abs(answer["hq_time_ms"] - time.time() * 1000) < 600_000
    with pytest.raises(EnrolmentError) as forged:
        provisioning.check_in(engine, keyring, done.enrolled.device_id, "00" * 16, "11" * 64)
    assert forged.value.code == "bad_signature"
