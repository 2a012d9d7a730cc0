"""The headless demo: the README's main job, run short, and its report's equalities."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import have_mosquitto, require


def test_headless_demo_report(tmp_path):
    require(have_mosquitto(), "mosquitto (apt package mosquitto)")
    report = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "onecard.cli", "demo", "--headless", "--duration", "9",
         "--outage", "3", "--tap-rate", "6", "--report", str(report)],
        capture_output=True, text=True, timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads(report.read_text())
    assert data["records_made"] > 50
    assert data["records_made"] == data["records_ledgered"]
    assert data["ledger_balanced"] is True
    assert isinstance(data["duplicates_rejected"], int)
    assert sorted(data["devices"]) == ["desk-01", "gate-01", "gate-02", "gate-03"]
    assert data["devices"]["desk-01"]["packages_sold"] >= 40  # one package per member
    for device_id, figures in data["devices"].items():
        assert figures["backlog"] == 0, device_id
        assert figures["made"] == figures["acknowledged"] > 0, device_id
    assert data["anomalies"] == {}, "every card's visits were sold at the desk: no anomaly"
    assert sum(d["made"] for d in data["devices"].values()) == data["records_made"]


def test_ctrl_c_stops_the_taps_and_drains_cleanly(tmp_path):
    """Ctrl-C reaches the whole foreground process group: the demo, HQ and the broker.
    HQ and the broker must outlive it long enough to ledger every record."""
    import os
    import signal
    import time

    require(have_mosquitto(), "mosquitto (apt package mosquitto)")
    report = tmp_path / "report.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "onecard.cli", "demo", "--duration", "120", "--outage", "2",
         "--report", str(report)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # a process group of its own, as a shell gives a job
    )
    time.sleep(8)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-3000:]
    data = json.loads(report.read_text())
    assert data["records_made"] == data["records_ledgered"] > 40
    assert data["ledger_balanced"] is True
    assert all(d["backlog"] == 0 for d in data["devices"].values())
