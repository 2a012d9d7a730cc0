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
