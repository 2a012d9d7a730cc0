"""Enrolled terminals run each role over the production broker (mutual TLS): HQ pushes
config and denylist, the terminals report them, serve, and HQ acknowledges their records."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import pytest

from broker_config.install import SiteDeviceCA, service_tls_context
from broker_config.runner import free_port
from hq_server.api import ApiServer, create_app
from hq_server.db.engine import open_engine
from hq_server.devices.enrolment import BrokerAddress, create_token
from hq_server.fleet.service import FleetService
from hq_server.ingest.worker import IngestWorker
from protocol.topics import DenylistSnapshot
from terminal_fw.enrolment import enrol
from terminal_fw.runtime import Runtime, RuntimeSettings, write_chain_keys
from tests.card_world import KEYS
from tests.conftest import have_mosquitto, require
from tests.hq_records import known_store
from tests.mtls_helpers import make_site, remove_site, start_broker, wait_for
from tests.runtime_world import config_doc, member_card

pytestmark = pytest.mark.broker
TIMEOUT = 30.0


@pytest.fixture(scope="module")
def hq():
    require(have_mosquitto(), "mosquitto (apt package mosquitto)")
    site = make_site()
    broker = start_broker(site)
    workdir = Path(tempfile.mkdtemp(prefix="onecard-runtime-enrolled-"))
    engine = open_engine(f"sqlite:///{workdir / 'hq.db'}")
    app = create_app(engine, SiteDeviceCA(site), BrokerAddress("127.0.0.1", site.config.device_port))
    server = ApiServer(app, "127.0.0.1", free_port(), site.api_cert, site.api_key).start()
    fleet = FleetService(host="127.0.0.1", port=site.config.service_port, username="",
                         password="", client_id="hq-fleet-t")
    fleet.client.tls_set_context(service_tls_context(site))
    fleet.start()
    ingest = IngestWorker(engine, host="127.0.0.1", port=site.config.service_port,
                          username="", password="", client_id="hq-ingest-rt")
    ingest.client.tls_set_context(service_tls_context(site))
    ingest.start()
    yield site, engine, server, fleet, workdir
    ingest.stop()
    fleet.stop()
    server.stop()
    broker.stop()
    engine.dispose()
    remove_site(site)
    shutil.rmtree(workdir, ignore_errors=True)


def enrolled_runtime(hq, role: str, name: str) -> Runtime:
    site, engine, server, fleet, workdir = hq
    token = create_token(engine, known_store(engine, "store-01"), role, "test").token
    secrets = workdir / name / "secrets"
    enrol(server.url, token, secrets, ca_file=site.device_ca_cert)
    write_chain_keys(secrets, KEYS)
    return Runtime(RuntimeSettings(secrets_dir=secrets, data_dir=workdir / name / "data",
                                   gpio={"mock": True}, admit_timeout_s=0.05))


def test_enrolled_gate_handheld_and_kiosk_run_over_mutual_tls(hq):
    site, engine, server, fleet, workdir = hq
    runtimes = [enrolled_runtime(hq, role, role) for role in ("gate", "handheld", "kiosk")]
    try:
        for rt in runtimes:
            rt.start()
        wait_for(lambda: all(rt.online() for rt in runtimes), TIMEOUT, "all online over TLS")
        gate, handheld, kiosk = runtimes
        assert (gate.role_name, handheld.role_name, kiosk.role_name) == \
            ("gate", "handheld", "kiosk")
        fleet.publish_denylist(DenylistSnapshot(7))
        for rt in runtimes:
            gate_settings = {"group": 0, "accepts": ["swim"]} if rt is gate else {}
            fleet.publish_config(rt.device_id, config_doc(2, gate=gate_settings))
        wait_for(lambda: all(fleet.reports.get(rt.device_id) is not None
                             and fleet.reports[rt.device_id].version == 2 for rt in runtimes),
                 TIMEOUT, "every terminal reports config 2")
        wait_for(lambda: all(rt.denylist.version == 7 for rt in runtimes), TIMEOUT, "denylist 7")

        card = member_card(opening_fen=20000, now_ms=int(time.time() * 1000))
        events: list[dict] = []
        gate.settings.events = events.append
        gate.role.on_card(card, "entry")
        assert [e for e in events if e["event"] in ("gate_open", "refused")][-1]["event"] == \
            "gate_open"
        assert handheld.role.checkout(card, [("tea", 1)]).ok
        assert kiosk.role.recharge(card, 1000, payment_ref="cash").ok
        wait_for(lambda: all(rt.outbox.backlog() == 0 and rt.outbox.last_seq == 1
                             for rt in runtimes), TIMEOUT, "HQ acknowledges every record")
        ops = {rt.role_name: rt.outbox.acked_through for rt in runtimes}
        assert ops == {"gate": 1, "handheld": 1, "kiosk": 1}
    finally:
        for rt in runtimes:
            rt.stop()


def test_operators_push_config_and_send_commands_from_the_command_line(hq, tmp_path,
                                                                        monkeypatch):
    import json
    import subprocess
    import sys

    from tests.cli_login import sign_in_cli

    site, engine, server, fleet, workdir = hq
    db = engine.url.render_as_string(hide_password=False)
    sign_in_cli(db, monkeypatch)  # the subprocesses act as this operator (ONECARD_TOKEN)
    rt = enrolled_runtime(hq, "gate", "cli-gate").start()
    try:
        wait_for(rt.online, TIMEOUT, "online")
        onecard = [sys.executable, "-m", "onecard.cli", "hq"]
        doc = tmp_path / "config.json"
        doc.write_text(json.dumps(config_doc(5)))
        done = subprocess.run([*onecard, "push-config", "--db", db, "--site", str(site.root), "--device",
                               rt.device_id, str(doc)], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["version"] == 5 and rt.config.current.version == 5
        doc.write_text(json.dumps(config_doc(6, gate={"group": 77})))
        refused = subprocess.run([*onecard, "push-config", "--db", db, "--site", str(site.root), "--device",
                                  rt.device_id, str(doc)], capture_output=True, text=True,
                                 timeout=120)
        assert refused.returncode != 0 and "gate.group" in refused.stderr
        done = subprocess.run([*onecard, "command", "--db", db, "--site", str(site.root), "--device",
                               rt.device_id, "maintenance", "--arg", "on=true"],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["data"] == {"maintenance": True} and rt.maintenance
    finally:
        rt.stop()
