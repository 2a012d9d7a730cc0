"""HQ ingest throughput, end to end, against baselines measured in the same run.

End to end means: devices publish signed records (QoS 1) to our mosquitto; HQ ingest
workers on a shared subscription verify them, post them to the ledger, commit, and
acknowledge; the figure stops when every device holds an ack covering its last record.

Baselines, measured in the same run on the same broker configuration:

* raw paho QoS 1 publish → subscribe of the same payloads (no verification, no store);
* raw Ed25519 verification of the same records in one thread;
* pgbench TPC-B (``-c 2 -j 2``) when PostgreSQL is used.

Each configuration gets a fresh broker and a fresh database. Workers and the publishing
devices run as separate processes, as they would in the field. The machine has 2 cores
and may be shared: every line carries the 1-minute load average at its start.

    .venv/bin/python -m bench.ingest                     # sqlite (+ postgresql if up), 1 and 2 workers
    .venv/bin/python -m bench.ingest --records 20000 --store postgresql --workers 2

The run ends with one JSON line per configuration.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

PG_URL = os.environ.get("ONECARD_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
DEVICES = 2
CARDS = 1000


# --- records ----------------------------------------------------------------------------


def make_records(n: int, devices: int, seed: int = 1) -> tuple[dict[str, str], dict[str, list[bytes]]]:
    """Signed, chained records from ``devices`` handhelds (tills): top-ups and spends.

    Returns public keys (hex) and each device's wires in sequence order.
    """
    import random

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from protocol.record import GENESIS_HASH, Operation, TransactionRecord

    rng = random.Random(seed)
    keys = {f"bench-{d:02d}": Ed25519PrivateKey.generate() for d in range(devices)}
    heads = {d: (0, GENESIS_HASH) for d in keys}
    purse = [0] * CARDS
    counter = [0] * CARDS
    wires: dict[str, list[bytes]] = {d: [] for d in keys}
    names = list(keys)
    for i in range(n):
        device = names[i % devices]
        c = rng.randrange(CARDS)
        counter[c] += 1
        seq, head = heads[device]
        common = dict(device_id=device, seq=seq + 1, prev_hash=head, device_time_ms=1_700_000_000_000 + i,
                      card_id=f"C{c:05d}", store=f"store-{int(device[-2:]) % 2}", card_counter=counter[c])
        if purse[c] < 500:
            r = TransactionRecord(operation=Operation.RECHARGE, purse_before=purse[c],
                                  purse_after=purse[c] + 10_000, cash_fen=10_000, **common)
            purse[c] += 10_000
        else:
            r = TransactionRecord(operation=Operation.DEBIT, product="swim", purse_before=purse[c],
                                  purse_after=purse[c] - 500, **common)
            purse[c] -= 500
        signed = r.sign(keys[device])
        heads[device] = (seq + 1, signed.record_hash)
        wires[device].append(signed.wire)
    public = {d: k.public_key().public_bytes(serialization.Encoding.Raw,
                                             serialization.PublicFormat.Raw).hex()
              for d, k in keys.items()}
    return public, wires


def verify_rate(wires: dict[str, list[bytes]], public: dict[str, str], limit: int = 5000) -> float:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    keys = {d: Ed25519PublicKey.from_public_bytes(bytes.fromhex(h)) for d, h in public.items()}
    sample = [(d, w) for d, ws in wires.items() for w in ws][:limit]
    t = time.perf_counter()
    for d, w in sample:
        keys[d].verify(w[-64:], w[:-64])
    return len(sample) / (time.perf_counter() - t)


# --- processes ----------------------------------------------------------------------------


def publisher(port: int, passwords: dict[str, str], wires: dict[str, list[bytes]],
              wait_acks: bool, result: mp.Queue, go: mp.Event) -> None:
    """Devices: publish every record (QoS 1, 100 in flight each); optionally wait for
    HQ's acks to cover the last record. Puts (first_publish, done, missing_acks)."""
    import threading

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from protocol.topics import Ack, ack_topic, records_topic

    acked: dict[str, int] = {d: 0 for d in wires}
    done = threading.Event()
    clients = []
    ready = threading.Barrier(len(wires) + 1)

    def on_message(client, userdata, message):
        device = userdata
        through = Ack.from_json(message.payload).through
        if through > acked[device]:
            acked[device] = through
            if all(acked[d] >= len(wires[d]) for d in wires):
                done.set()

    for device in wires:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"dev-{device}",
                        protocol=mqtt.MQTTv5, userdata=device)
        c.username_pw_set(device, passwords[device])
        c.max_inflight_messages_set(100)
        c.max_queued_messages_set(0)
        c.on_message = on_message
        subscribed = threading.Event()
        c.on_subscribe = lambda *a, ev=subscribed: ev.set()
        c.connect("127.0.0.1", port, keepalive=60)
        c.subscribe(ack_topic(device), qos=1)
        c.loop_start()
        subscribed.wait(10)
        clients.append((device, c))

    last_info = {}

    def pump(device: str, c) -> None:
        ready.wait()
        topic = records_topic(device)
        for w in wires[device]:
            last_info[device] = c.publish(topic, w, qos=1)

    threads = [threading.Thread(target=pump, args=dc) for dc in clients]
    for t in threads:
        t.start()
    result.put(("ready",))
    go.wait()
    first = time.time()
    ready.wait()
    for t in threads:
        t.join()
    if wait_acks:
        done.wait(600)
    else:
        for info in last_info.values():  # PUBACKs come in order: the last one means all
            info.wait_for_publish(600)
    end = time.time()
    missing = sum(len(wires[d]) - acked[d] for d in wires) if wait_acks else 0
    for _, c in clients:
        c.disconnect()
        c.loop_stop()
    result.put((first, end, missing))


def publish_all(port: int, passwords: dict[str, str], wires: dict[str, list[bytes]],
                wait_acks: bool) -> tuple[float, float, int]:
    """Every device publishes from its own process (as separate terminals would), all
    starting together. Returns (first publish, last device done, records not acked)."""
    ctx = mp.get_context("spawn")
    q: mp.Queue = ctx.Queue()
    go = ctx.Event()
    procs = [ctx.Process(target=publisher, args=(port, passwords, {d: w}, wait_acks, q, go))
             for d, w in wires.items()]
    for p in procs:
        p.start()
    time.sleep(0.5)
    results = []
    for _ in procs:
        results.append(q.get(timeout=120))  # connected and subscribed
    go.set()
    results = [q.get(timeout=900) for _ in procs]
    for p in procs:
        p.join(60)
    return (min(r[0] for r in results), max(r[1] for r in results), sum(r[2] for r in results))


def worker(url: str, port: int, hq_password: str, index: int, ready: mp.Event,
           stop: mp.Event, verify_threads: int) -> None:
    from broker_config.render import HQ_USER
    from hq_server.db.engine import open_engine
    from hq_server.ingest.worker import IngestWorker

    w = IngestWorker(open_engine(url), host="127.0.0.1", port=port, username=HQ_USER,
                     password=hq_password, client_id=f"hq-bench-{index}-{uuid.uuid4().hex[:6]}",
                     reconcile_every=None, rerequest_every=None, presence=False, denylist_every=None,
                     verify_threads=verify_threads)
    w.start()
    w.subscribed.wait(30)
    ready.set()
    stop.wait()
    w.stop()


# --- one configuration -------------------------------------------------------------------


def start_broker(devices: list[str]):
    from broker_config.render import HQ_USER
    from broker_config.runner import Broker

    hq_password = secrets.token_urlsafe(12)
    passwords = {d: secrets.token_urlsafe(12) for d in devices}
    broker = Broker({HQ_USER: hq_password, **passwords},
                    directory=Path(tempfile.mkdtemp(prefix="onecard-bench-broker-"))).start()
    return broker, hq_password, passwords


def raw_pubsub(wires: dict[str, list[bytes]]) -> float:
    """Messages/s from first publish to last delivery, one plain QoS 1 subscriber."""
    import threading

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from broker_config.render import HQ_USER
    from protocol.topics import ALL_RECORDS

    broker, hq_password, passwords = start_broker(list(wires))
    total = sum(len(w) for w in wires.values())
    got = [0]
    last = [0.0]
    done = threading.Event()

    def on_message(client, userdata, message):
        got[0] += 1
        if got[0] == total:
            last[0] = time.time()
            done.set()

    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-raw-sub", protocol=mqtt.MQTTv5)
    sub.username_pw_set(HQ_USER, hq_password)
    sub.max_inflight_messages_set(1000)
    sub.on_message = on_message
    subscribed = threading.Event()
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.connect("127.0.0.1", broker.port)
    sub.subscribe(ALL_RECORDS, qos=1)
    sub.loop_start()
    try:
        subscribed.wait(10)
        first, _end, _missing = publish_all(broker.port, passwords, wires, wait_acks=False)
        done.wait(120)
        return total / (last[0] - first) if done.is_set() else float("nan")
    finally:
        sub.disconnect()
        sub.loop_stop()
        broker.stop()


def fresh_database(store: str, workdir: Path) -> tuple[str, callable]:
    if store == "sqlite":
        return f"sqlite:///{workdir / f'hq-{uuid.uuid4().hex[:6]}.db'}", lambda: None
    from sqlalchemy import create_engine, text

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))

    def drop() -> None:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()

    return f"{PG_URL}?options=-csearch_path%3D{schema}", drop


def end_to_end(store: str, workers: int, public: dict[str, str], wires: dict[str, list[bytes]],
               workdir: Path, verify_threads: int) -> dict:
    from hq_server.db.engine import open_engine
    from hq_server.devices.registry import add_device
    from hq_server.ledger.check import check_ledger
    from hq_server.reports.figures import ingest_figures

    url, drop = fresh_database(store, workdir)
    engine = open_engine(url)
    for d, key in public.items():
        add_device(engine, d, key, f"store-{int(d[-2:]) % 2}", "handheld")
    broker, hq_password, passwords = start_broker(list(wires))
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    procs, readies = [], []
    try:
        for i in range(workers):
            ready = ctx.Event()
            p = ctx.Process(target=worker, args=(url, broker.port, hq_password, i, ready, stop,
                                                 verify_threads))
            p.start()
            procs.append(p)
            readies.append(ready)
        for r in readies:
            if not r.wait(60):
                raise RuntimeError("an ingest worker did not start")
        first, end, missing = publish_all(broker.port, passwords, wires, wait_acks=True)
        total = sum(len(w) for w in wires.values())
        figures = ingest_figures(engine)
        balanced = check_ledger(engine).balanced
        return {"records": total, "seconds": round(end - first, 3),
                "records_per_s": round(total / (end - first), 1),
                "all_ledgered": missing == 0 and figures["records_ledgered"] == total and balanced,
                "duplicates": figures["duplicates_rejected"]}
    finally:
        stop.set()
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
        broker.stop()
        engine.dispose()
        drop()


def pgbench_tps(seconds: int = 10) -> float | None:
    exe = shutil.which("pgbench")
    if exe is None:
        return None
    from sqlalchemy import create_engine, text

    schema = f"pgbench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    env = dict(os.environ, PGOPTIONS=f"-c search_path={schema}")
    base = [exe, "-h", "127.0.0.1", "-p", "5432", "-U", "postgres", "test"]
    try:
        subprocess.run([*base[:1], "-i", "-s", "1", "-q", *base[1:]], env=env, check=True,
                       capture_output=True, timeout=300)
        out = subprocess.run([*base[:1], "-c", "2", "-j", "2", "-T", str(seconds), "-n", *base[1:]],
                             env=env, check=True, capture_output=True, text=True, timeout=300).stdout
        match = re.search(r"tps = ([0-9.]+)", out)
        return float(match.group(1)) if match else None
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def postgres_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=20_000)
    ap.add_argument("--store", choices=["sqlite", "postgresql"], action="append",
                    help="repeatable; default: sqlite, and postgresql when it answers")
    ap.add_argument("--workers", type=int, action="append", help="repeatable; default: 1 and 2")
    ap.add_argument("--backlog", type=int, default=50_000,
                    help="records from one device for the backlog drain (0: skip)")
    ap.add_argument("--verify-threads", type=int, default=1,
                    help="signature threads per worker (Ed25519 releases the GIL)")
    args = ap.parse_args()
    stores = args.store or (["sqlite", "postgresql"] if postgres_up() else ["sqlite"])
    worker_counts = args.workers or [1, 2]
    workdir = Path(tempfile.mkdtemp(prefix="onecard-bench-"))

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    log(f"signing {args.records} records from {DEVICES} devices ...")
    public, wires = make_records(args.records, DEVICES)
    verify = verify_rate(wires, public)
    log(f"raw Ed25519 verify: {verify:,.0f}/s (one thread)")
    pubsub = raw_pubsub(wires)
    log(f"raw paho QoS 1 pub->sub: {pubsub:,.0f}/s")
    backlog = None
    if args.backlog:
        log(f"signing a backlog of {args.backlog} records from one device ...")
        backlog = make_records(args.backlog, 1, seed=2)
    lines = []
    for store in stores:
        tps = pgbench_tps() if store == "postgresql" else None
        if tps is not None:
            log(f"pgbench TPC-B: {tps:,.0f} tps")
        for k in worker_counts:
            load = os.getloadavg()[0]
            r = end_to_end(store, k, public, wires, workdir, args.verify_threads)
            line = {"store": store, "workers": k, "records": r["records"],
                    "records_per_s": r["records_per_s"],
                    "baseline_pubsub_per_s": round(pubsub, 1),
                    "ratio_to_pubsub": round(r["records_per_s"] / pubsub, 3),
                    "verify_per_s": round(verify, 1),
                    "ratio_to_verify": round(r["records_per_s"] / verify, 3),
                    "all_ledgered": r["all_ledgered"], "seconds": r["seconds"],
                    "verify_threads": args.verify_threads, "loadavg_1m_before": round(load, 2),
                    "cpus": os.cpu_count()}
            if tps is not None:
                line["pgbench_tps"] = round(tps, 1)
                line["ratio_to_pgbench_tps"] = round(r["records_per_s"] / tps, 3)
            if backlog is not None and k == max(worker_counts):
                b = end_to_end(store, k, *backlog, workdir, args.verify_threads)
                line.update({"backlog_records": b["records"], "backlog_drain_s": b["seconds"],
                             "backlog_all_ledgered": b["all_ledgered"]})
            log(f"{store} x{k}: {r['records_per_s']:,.0f} records/s "
                f"({line['ratio_to_pubsub']:.2f} of pub->sub), all ledgered: {r['all_ledgered']}")
            lines.append(line)
    shutil.rmtree(workdir, ignore_errors=True)
    for line in lines:
        print(json.dumps(line, sort_keys=True))


if __name__ == "__main__":
    main()
