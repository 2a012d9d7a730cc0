"""From ``hq enrolment-token`` to the first acknowledged tap on a fresh terminal.

``python -m bench.enrol`` starts a site's broker and HQ's API and ingest (in this
process, as the enrolment tests do), gives HQ the chain's card keys and the store's
config, then times what a technician does: ``onecard hq enrolment-token --site ...`` at
HQ (a real CLI process), the printed line run on the terminal (``onecard terminal join
... --no-start``, a real CLI process: the one command typed on the terminal), the
terminal service started from the settings that command wrote (in this process, as
systemd would start it), and a member's card tapped on the simulated reader until HQ
acknowledges the record. Prints JSON with ``seconds`` and ``terminal_commands``.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from broker_config.install import SiteDeviceCA, service_tls_context
from broker_config.runner import free_port
from hq_server.api import ApiServer, create_app
from hq_server.db.engine import open_engine
from hq_server.devices.card_keys import CardKeyring, keys_to_json
from hq_server.devices.enrolment import BrokerAddress
from hq_server.fleet.store_config import set_store_config
from hq_server.ingest.worker import IngestWorker
from terminal_fw.runtime import Runtime, RuntimeSettings
from tests.card_world import KEYS
from tests.mtls_helpers import make_site, remove_site, start_broker, wait_for
from tests.runtime_world import config_doc, member_card

ONECARD = [sys.executable, "-m", "onecard.cli"]
STORE = "store-01"


def main() -> None:
    site = make_site()
    broker = start_broker(site)
    work = Path(tempfile.mkdtemp(prefix="onecard-bench-enrol-"))
    db = f"sqlite:///{work / 'hq.db'}"
    engine = open_engine(db)
    keyring = CardKeyring(work / "card-keys.json")
    keyring.path.write_text(json.dumps(keys_to_json(KEYS)))
    set_store_config(engine, STORE, config_doc(1, gate={"group": 0, "accepts": ["swim"]}),
                     "bench")
    port = free_port()
    app = create_app(engine, SiteDeviceCA(site),
                     BrokerAddress("127.0.0.1", site.config.device_port), keyring)
    server = ApiServer(app, "127.0.0.1", port, site.api_cert, site.api_key).start()
    ingest = IngestWorker(engine, host="127.0.0.1", port=site.config.service_port,
                          username="", password="", client_id="hq-ingest-bench")
    ingest.client.tls_set_context(service_tls_context(site))
    ingest.start()
    rt = None
    try:
        print("HQ up; timing enrolment-token → first acknowledged tap", file=sys.stderr)
        started = time.perf_counter()
        line = subprocess.run(
            [*ONECARD, "hq", "enrolment-token", "--db", db, "--site", str(site.root),
             "--store", STORE, "--role", "gate", "--hq-url", f"https://127.0.0.1:{port}",
             "--no-qr"], capture_output=True, text=True, check=True,
            env={**os.environ}).stdout.strip()
        argv = shlex.split(line)
        assert argv[:3] == ["onecard", "terminal", "join"], line
        root = work / "terminal"
        terminal_commands = [[*ONECARD, *argv[1:], "--secrets", str(root / "secrets"),
                              "--data", str(root / "data"), "--settings",
                              str(root / "terminal.toml"), "--unit-dir", str(root / "systemd"),
                              "--no-start", "--mock-gpio"]]
        for command in terminal_commands:
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode or "ready" not in done.stdout:
                raise SystemExit(f"join failed: {done.stderr}")
        events: list[dict] = []
        rt = Runtime(RuntimeSettings.from_toml(root / "terminal.toml", admit_timeout_s=0.05,
                                               events=events.append)).start()
        wait_for(rt.online, 60, "terminal online")
        rt.role.on_card(member_card(now_ms=int(time.time() * 1000)), "entry")
        if not any(e["event"] == "gate_open" for e in events):
            raise SystemExit(f"the first tap was refused: {events}")
        wait_for(lambda: rt.outbox.acked_through >= 1, 60, "HQ acknowledges the tap")
        seconds = time.perf_counter() - started
        print(json.dumps({"seconds": round(seconds, 2),
                          "terminal_commands": len(terminal_commands)}))
    finally:
        if rt is not None:
            rt.stop()
        ingest.stop()
        server.stop()
        broker.stop()
        engine.dispose()
        remove_site(site)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
