"""From a loss report at HQ to a refused card at every online terminal: figures printed.

Run: .venv/bin/python -m bench.denylist_latency [terminals] [reports]

Starts our broker, HQ's fleet service and ``terminals`` runtimes (gates, in this
process, each with its own MQTT connection, outbox and local store). For each of
``reports`` loss reports HQ publishes a denylist delta (and the new retained snapshot);
the figure is the time from HQ's publish until each terminal has the card in the list its
taps consult (the denylist swap, after its local store committed the change). The
promise to operators is 5 s; the baseline in the same run is a raw paho publish →
subscribe round trip on the same broker. The machine may be shared: the 1-minute load
average is printed.
"""

from __future__ import annotations

import os
import secrets
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from broker_config.render import HQ_USER  # noqa: E402
from broker_config.runner import Broker  # noqa: E402
from hq_server.fleet.service import FleetService  # noqa: E402
from protocol.topics import DenylistDelta, DenylistEntry, DenylistSnapshot  # noqa: E402
from tests.runtime_world import config_doc, make_runtime  # noqa: E402


def raw_round_trip(port: int, password: str, n: int = 50) -> list[float]:
    got = threading.Event()
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    sub.username_pw_set(HQ_USER, password)
    sub.on_message = lambda *a: got.set()
    sub.connect("127.0.0.1", port)
    sub.subscribe("onecard/v1/broadcast/bench", qos=1)
    sub.loop_start()
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    pub.username_pw_set(HQ_USER, password)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    time.sleep(0.5)
    out = []
    for _ in range(n):
        got.clear()
        t0 = time.perf_counter()
        pub.publish("onecard/v1/broadcast/bench", b"x", qos=1)
        got.wait(5)
        out.append(time.perf_counter() - t0)
    for c in (sub, pub):
        c.disconnect()
        c.loop_stop()
    return out


def main(terminals: int = 10, reports: int = 20) -> None:
    hq_password = secrets.token_urlsafe(8)
    users = {HQ_USER: hq_password}
    users.update({f"gate-{i:02d}": secrets.token_urlsafe(8) for i in range(terminals)})
    broker = Broker(users).start()
    root = Path(tempfile.mkdtemp(prefix="onecard-bench-denylist-"))
    hq = FleetService(host="127.0.0.1", port=broker.port, username=HQ_USER,
                      password=hq_password).start()
    runtimes = []
    try:
        for i in range(terminals):
            dev = f"gate-{i:02d}"
            rt = make_runtime(root / dev, device_id=dev, broker_port=broker.port,
                              password=users[dev])
            rt.config.offer(config_doc(1))
            runtimes.append(rt.start())
        deadline = time.monotonic() + 30
        while not all(rt.online() for rt in runtimes) and time.monotonic() < deadline:
            time.sleep(0.05)
        hq.publish_denylist(DenylistSnapshot(1))
        while any(rt.denylist.version != 1 for rt in runtimes) and time.monotonic() < deadline:
            time.sleep(0.05)
        baseline = raw_round_trip(broker.port, hq_password)
        latencies: list[float] = []
        entries: list[DenylistEntry] = []
        for n in range(reports):
            card = f"M{n:05d}"
            entry = DenylistEntry(card, "reported lost", int(time.time() * 1000))
            entries.append(entry)
            seen: dict[int, float] = {}
            t0 = time.perf_counter()
            hq.publish_denylist(DenylistSnapshot(n + 2, tuple(entries)),
                                DenylistDelta(n + 1, n + 2, (entry,)))
            while len(seen) < terminals and time.perf_counter() - t0 < 10:
                for i, rt in enumerate(runtimes):
                    if i not in seen and card in rt.denylist:
                        seen[i] = time.perf_counter() - t0
                time.sleep(0.0005)
            latencies.extend(seen.values())
            missed = terminals - len(seen)
            if missed:
                print(f"report {n}: {missed} terminals did not have the card within 10 s")
            time.sleep(0.2)  # reports arrive one by one, not in a burst
        ms = sorted(x * 1000 for x in latencies)
        base = sorted(x * 1000 for x in baseline)
        print(f"load average (1 min): {os.getloadavg()[0]:.2f}")
        print(f"raw publish->subscribe, 1 subscriber: median {statistics.median(base):.2f} ms, "
              f"max {base[-1]:.2f} ms")
        print(f"loss report -> card refused, {terminals} terminals x {reports} reports: "
              f"median {statistics.median(ms):.2f} ms, p99 {ms[int(len(ms) * 0.99) - 1]:.2f} ms, "
              f"max {ms[-1]:.2f} ms (promise: 5000 ms)")
    finally:
        for rt in runtimes:
            rt.stop()
        hq.stop()
        broker.stop()


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
