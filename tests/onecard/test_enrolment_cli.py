"""The operator's path through the CLI, each step its own process, as in the guide:
broker init → broker run → create-admin → serve-api → enrolment-token → terminal enroll
→ revoke-device."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from broker_config.runner import free_port
from terminal_fw.enrolment import mqtt_tls_context
from tests.conftest import have_mosquitto, require
from tests.mtls_helpers import Probe, wait_for

pytestmark = pytest.mark.broker
ONECARD = [sys.executable, "-m", "onecard.cli"]


def run(*args: str, env: dict | None = None, ok: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([*ONECARD, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})
    if ok:
        assert done.returncode == 0, done.stderr
    return done


def test_operator_enrols_and_revokes_a_terminal_from_the_command_line():
    require(have_mosquitto(), "mosquitto (apt package mosquitto)")
    root = Path(tempfile.mkdtemp(prefix="onecard-cli-site-"))
    root.chmod(0o755)  # mosquitto, running as its own user, must reach site/broker
    site = root / "site"
    db = f"sqlite:///{root / 'hq.db'}"
    device_port, service_port, api_port = free_port(), free_port(), free_port()
    procs: list[subprocess.Popen] = []
    try:
        run("broker", "init", str(site), "--hostname", "127.0.0.1", "--device-port",
            str(device_port), "--service-port", str(service_port), "--device-bind", "127.0.0.1")
        again = run("broker", "init", str(site), "--hostname", "127.0.0.1", ok=False)
        assert again.returncode != 0 and "refusing to replace" in again.stderr
        assert oct((site / "pki").stat().st_mode)[-3:] == "700"

        procs.append(subprocess.Popen([*ONECARD, "broker", "run", "--site", str(site)],
                                      stderr=subprocess.PIPE))
        run("hq", "create-admin", "--db", db, "--username", "ops",
            env={"ONECARD_ADMIN_PASSWORD": "a long enough password"})
        weak = run("hq", "create-admin", "--db", db, "--username", "ops2",
                   env={"ONECARD_ADMIN_PASSWORD": "short"}, ok=False)
        assert "at least 12" in weak.stderr
        procs.append(subprocess.Popen([*ONECARD, "hq", "serve-api", "--db", db, "--site",
                                       str(site), "--port", str(api_port)],
                                      stderr=subprocess.PIPE))
        token = run("hq", "enrolment-token", "--db", db, "--store", "pool-east",
                    "--role", "gate").stdout.strip()
        assert token.startswith("oce_")

        secrets = root / "terminal" / "secrets"
        url = f"https://127.0.0.1:{api_port}"
        enrolled = None
        deadline = time.monotonic() + 60
        while enrolled is None:  # the API process may still be starting
            done = run("terminal", "enroll", "--hq", url, "--secrets", str(secrets), "--ca",
                       str(site / "hq" / "device-ca.pem"), env={"ONECARD_ENROL_TOKEN": token},
                       ok=False)
            if done.returncode == 0:
                enrolled = json.loads(done.stdout)
            else:
                assert "cannot reach HQ" in done.stderr, done.stderr
                assert time.monotonic() < deadline, done.stderr
                time.sleep(0.5)
        assert token not in done.stdout + done.stderr  # never echoed back
        device_id = enrolled["device_id"]
        assert enrolled["broker"] == f"127.0.0.1:{device_port}"

        probe = Probe(device_port, mqtt_tls_context(secrets))
        assert probe.connect()
        out = run("hq", "revoke-device", "--db", db, "--site", str(site), device_id,
                  "--reason", "card reader stolen").stdout
        assert f"{device_id} revoked" in out
        assert probe.closed.wait(15)
        probe.close()
        refused = Probe(device_port, mqtt_tls_context(secrets))
        wait_for(lambda: not refused.connect(timeout=3), what="revoked terminal refused")
        refused.close()
        listing = run("hq", "list-devices", "--db", db).stdout
        assert device_id in listing and "revoked" in listing
    finally:
        for p in procs:
            p.send_signal(signal.SIGINT)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(root, ignore_errors=True)
