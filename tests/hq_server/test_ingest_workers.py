"""Several ingest workers at once never double a record; gaps are asked for again.

The database tests run several :class:`Ingest` instances in threads on their own
connections, all fed the same records in different orders (as a shared subscription
plus device resends produce). The broker test runs two real workers on a shared
subscription with gates uploading through our mosquitto, on PostgreSQL.
"""

from __future__ import annotations

import random
import secrets
import threading

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import func, select

from broker_config.render import HQ_USER
from hq_server.db.engine import open_engine
from hq_server.db.tables import ledger_transactions
from hq_server.devices.denylist import add_to_denylist
from hq_server.devices.registry import add_device
from hq_server.ingest.acks import gap_report
from hq_server.ingest.batch import Ingest, ingest_all
from hq_server.ingest.worker import IngestWorker
from hq_server.ledger.check import check_ledger
from hq_server.reconciliation.rules import ReconcileConfig
from hq_server.reports.figures import ingest_figures
from protocol.card_state import CardState
from protocol.topics import (
    DENYLIST_DELTA_TOPIC,
    DENYLIST_SNAPSHOT_TOPIC,
    DenylistDelta,
    DenylistSnapshot,
)
from terminal_fw.identity import load_or_create
from terminal_fw.outbox import Outbox
from terminal_fw.uplink import Uplink
from tests.fleet import wait_for
from tests.hq_records import (
    STORES,
    Card,
    CountCard,
    Till,
    VisitGate,
    known_store,
    recharge,
    store_engine,
    url_of,
)


@pytest.fixture(params=STORES)
def engine(request):
    return store_engine(request)


def test_concurrent_workers_post_every_record_exactly_once(engine):
    tills = [Till(f"till-{i}", f"store-{i % 2}").register(engine) for i in range(4)]
    cards = [Card(f"M{i}") for i in range(20)]
    msgs = []
    rng = random.Random(3)
    for _ in range(150):
        till, card = rng.choice(tills), rng.choice(cards)
        msgs.append(till.message(recharge(till, card, rng.randint(1, 999))))
    url = url_of(engine)
    errors: list[BaseException] = []
    retries: list[int] = []

    def worker(seed: int) -> None:
        own = open_engine(url)
        ingest = Ingest(own)
        stream = list(msgs)
        random.Random(seed).shuffle(stream)  # each worker sees every record, in its order
        try:
            for i in range(0, len(stream), 40):
                retries.append(ingest.process(stream[i:i + 40]).retries)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            own.dispose()

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    figures = ingest_figures(engine)
    assert figures["records_ledgered"] == len(msgs)
    assert figures["duplicates_rejected"] == 2 * len(msgs)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(ledger_transactions)).scalar_one() == len(msgs)
    check = check_ledger(engine)
    assert check.balanced, check.problems


def test_a_gap_is_tracked_and_asked_for_again(engine):
    till = Till("gate-01", "store-a").register(engine)
    card = Card("M1")
    signed = [recharge(till, card, 100) for _ in range(5)]
    ingest_all(engine, [till.message(s) for s in (signed[0], signed[2], signed[4])])
    asks = gap_report(engine)
    assert asks["gate-01"].through == 1 and asks["gate-01"].missing == (2, 4)
    ingest_all(engine, [till.message(signed[1]), till.message(signed[3])])
    assert gap_report(engine) == {}


def _device_client(broker, device_id: str, password: str) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"dev-{device_id}-listen",
                         protocol=mqtt.MQTTv5)
    client.username_pw_set(device_id, password)
    return client


def test_two_workers_on_a_shared_subscription_ledger_every_tap_once(pg_url, broker_factory, tmp_path):
    """Gates upload through our broker to two workers on PostgreSQL; a cloned card is
    caught and its denylist delta reaches the terminals."""
    engine = open_engine(pg_url)
    hq_password = secrets.token_urlsafe(12)
    users = {HQ_USER: hq_password}
    gates = []
    for i in range(3):
        device_id = f"gate-{i + 1:02d}"
        ident = load_or_create(tmp_path / device_id / "secrets", device_id, "store-a")
        add_device(engine, device_id, ident.public_key_hex, known_store(engine, "store-a"),
                   "gate")
        users[device_id] = secrets.token_urlsafe(12)
        gates.append((ident, Outbox(tmp_path / device_id / "outbox.db")))
    broker = broker_factory(users)

    deltas: list[DenylistDelta] = []
    listener = _device_client(broker, "gate-03", users["gate-03"])
    listener.on_connect = lambda c, *a: c.subscribe(DENYLIST_DELTA_TOPIC, qos=1)
    listener.on_message = lambda c, u, m: deltas.append(DenylistDelta.from_json(m.payload))
    listener.connect("127.0.0.1", broker.port)
    listener.loop_start()

    workers = [IngestWorker(open_engine(pg_url), host="127.0.0.1", port=broker.port,
                            username=HQ_USER, password=hq_password, client_id=f"hq-ingest-{n}",
                            batch_max=50, reconcile_every=0.5,
                            reconcile_config=ReconcileConfig(auto_denylist_clones=True))
               for n in (1, 2)]
    uplinks = []
    try:
        for w in workers:
            w.start()
        for w in workers:
            assert w.subscribed.wait(30)
        members = [CountCard(CardState(card_id=f"M{n:03d}", visits={"swim": 50}))
                   for n in range(10)]
        clone = CountCard(members[0].read())
        for (ident, outbox), n in zip(gates, range(3), strict=True):
            gate = VisitGate(ident, outbox, "swim")
            for k in range(40):
                gate.tap(members[(k + n) % len(members)])
            if n == 2:
                gate.tap(clone)  # the copy, used at gate 3 after the original moved on
        made = sum(outbox.last_seq for _, outbox in gates)
        for (ident, outbox) in gates:
            up = Uplink(ident.device_id, outbox, host="127.0.0.1", port=broker.port,
                        password=users[ident.device_id], resend_after=3.0)
            up.start()
            uplinks.append(up)
        wait_for(lambda: all(o.backlog() == 0 for _, o in gates), 90,
                 what="every gate's backlog")
        assert ingest_figures(engine)["records_ledgered"] == made
        assert sum(w.totals.posted for w in workers) == made
        assert all(w.totals.posted > 0 for w in workers), "the shared subscription splits work"
        check = check_ledger(engine)
        assert check.balanced, check.problems
        wait_for(lambda: any("M000" in [e.card_id for e in d.added] for d in deltas), 90,
                 what="the denylist delta for the cloned card")
        # An operator's loss report reaches the terminals the same way, within seconds.
        add_to_denylist(engine, "M005", "reported lost at the front desk")
        wait_for(lambda: any("M005" in [e.card_id for e in d.added] for d in deltas), 15,
                 what="the operator's denylist delta")
        snapshots: list[DenylistSnapshot] = []
        late = _device_client(broker, "gate-02", users["gate-02"])  # a terminal starting now
        late.on_connect = lambda c, *a: c.subscribe(DENYLIST_SNAPSHOT_TOPIC, qos=1)
        late.on_message = lambda c, u, m: snapshots.append(DenylistSnapshot.from_json(m.payload))
        late.connect("127.0.0.1", broker.port)
        late.loop_start()
        wait_for(lambda: snapshots and {"M000", "M005"} <= {e.card_id for e in snapshots[-1].cards},
                 15, what="the retained denylist snapshot")
        late.loop_stop()
        late.disconnect()
    finally:
        for up in uplinks:
            up.stop()
        for w in workers:
            w.stop()
        listener.loop_stop()
        listener.disconnect()
