"""Members at chain scale: search, the member page and import, on SQLite and PostgreSQL.

A generator writes, directly in bulk (no service calls, so it takes minutes, not hours),
a chain of 100 stores in 10 regions, ``--members`` members (default 100,000) each with a
card (one in five with two), and ``--records`` ledgered records (default 1,000,000):
each a device record, its ledger transaction and two balanced entries (recharges and
checkouts at the card's store). Then it measures, through the same service functions the
API and the CLI call, as a chain-wide operator:

* ``search_p95_ms``: the 95th percentile of searches by mobile prefix, card number, name
  and pinyin initials (each kind also on its own, ``search_p95_ms_by_kind``);
* ``member_page_p95_ms``: the member page (profile, cards, visits and spend from the
  ledger, the last 20 transactions);
* ``import_s``: importing ``--import-rows`` new members (default: as many as
  ``--members``) from one CSV file, all or nothing, audited row by row.

Goals: search and member page p95 ≤ 50 ms, import ≤ 60 s. One JSON line per store::

    .venv/bin/python bench/members.py                           # full scale, both stores
    .venv/bin/python bench/members.py --members 10000 --records 100000 --store sqlite

The card registry is the chain domain's; until it is in the schema the bench creates a
table of the shape :mod:`hq_server.members.card_link` reads. The generated ledger skips
the accounts' running totals (nothing here reads them): do not run verify-ledger on it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PG_URL = os.environ.get("ONECARD_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
NOW = 1_796_000_000_000
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华建国红梅玉兰飞鹏辉波宇浩婷雪琳欣怡晨阳子轩梓涵一诺思远佳琪雨萱俊杰志强海燕小红春花文博"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def p95(samples: list[float]) -> float:
    return round(statistics.quantiles(samples, n=20)[18], 2) if len(samples) > 1 else samples[0]


class Pinyin:
    """Per-character pinyin, cached: 100,000 names in seconds."""

    def __init__(self) -> None:
        from pypinyin import lazy_pinyin

        self.lazy, self.cache = lazy_pinyin, {}

    def of(self, name: str) -> tuple[str, str]:
        syllables = []
        for ch in name:
            if ch not in self.cache:
                self.cache[ch] = self.lazy(ch)[0]
            syllables.append(self.cache[ch])
        return "".join(syllables), "".join(s[0] for s in syllables)


def open_store(store: str, tmp: Path):
    """A fresh, migrated database: a SQLite file, or a new PostgreSQL schema."""
    from sqlalchemy import create_engine, text

    from hq_server.db.engine import open_engine

    if store == "sqlite":
        return open_engine(f"sqlite:///{tmp / 'members.db'}"), None
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    return open_engine(f"{PG_URL}?options=-csearch_path%3D{schema}"), (admin, schema)


def generate(engine, members: int, records: int, seed: int = 7) -> dict[str, list]:
    """The chain, members, cards and ledgered records, in bulk; what the searches use."""
    from sqlalchemy import insert

    from hq_server.db.bulk import copy_rows
    from hq_server.db.tables import (
        devices,
        ledger_accounts,
        ledger_entries,
        ledger_transactions,
        regions,
        stores,
    )
    from hq_server.db.tables import members as members_t
    from hq_server.db.tables import records as records_t
    from hq_server.members.card_link import CARD_REGISTRY

    rnd = random.Random(seed)
    py = Pinyin()
    with engine.begin() as conn:
        conn.execute(insert(regions), [{"region_id": f"R{r}", "name": f"Region {r}",
                                        "created_at_ms": NOW} for r in range(10)])
        conn.execute(insert(stores), [{"store_id": f"S{s:03d}", "name": f"Store {s}",
                                       "region_id": f"R{s % 10}", "created_at_ms": NOW}
                                      for s in range(100)])
        conn.execute(insert(devices), [{"device_id": f"T{s:03d}", "public_key": "00" * 32,
                                        "store": f"S{s:03d}", "registered_at_ms": NOW}
                                       for s in range(100)])
    started = time.perf_counter()
    member_rows, card_rows, cards_of_store = [], [], {}
    names, mobiles, card_ids = [], [], []
    for i in range(members):
        name = rnd.choice(SURNAMES) + "".join(rnd.choice(GIVEN) for _ in range(rnd.choice((1, 2))))
        full, initials = py.of(name)
        national = f"1{rnd.choice('345678')}{i:09d}"  # 19…: the import file's
        store = f"S{rnd.randrange(100):03d}"
        birthday = f"{rnd.randrange(1950, 2006)}-{rnd.randrange(1, 13):02d}-{rnd.randrange(1, 29):02d}"
        member_id = f"M{i + 1:08d}"
        member_rows.append({
            "member_id": member_id, "store_id": store, "name": name, "mobile": "+86" + national,
            "birthday": birthday, "join_date": f"20{rnd.randrange(10, 26)}-0{rnd.randrange(1, 10)}-15",
            "custom_json": "{}", "name_norm": name, "name_pinyin": full,
            "name_initials": initials, "mobile_search": national,
            "birth_month": int(birthday[5:7]), "status": "active", "version": 1,
            "created_at_ms": NOW, "updated_at_ms": NOW})
        for k in range(2 if rnd.random() < 0.2 else 1):
            card = f"C{i:07d}{k}"
            card_rows.append({"card_id": card, "member_id": member_id, "state": "open",
                              "product": "stored-value", "issuing_store": store,
                              "first_seen_ms": 1, "updated_at_ms": 1})
            cards_of_store.setdefault(store, []).append(card)
            card_ids.append(card)
        names.append(name)
        mobiles.append(national)
    with engine.begin() as conn:
        for i in range(0, len(member_rows), 20_000):
            copy_rows(conn, members_t, member_rows[i:i + 20_000])
        for i in range(0, len(card_rows), 20_000):
            copy_rows(conn, CARD_REGISTRY, card_rows[i:i + 20_000])
        copy_rows(conn, ledger_accounts, [
            {"account": f"card:{c}:purse", "asset": "CNY", "kind": "liability",
             "credit_floor": True, "debits": 0, "credits": 0} for c in card_ids]
            + [{"account": f"store:S{s:03d}:{kind}", "asset": "CNY", "kind": k,
                "credit_floor": False, "debits": 0, "credits": 0}
               for s in range(100) for kind, k in (("cash", "asset"),
                                                    ("revenue:general", "revenue"))])
    log(f"  {members:,} members, {len(card_ids):,} cards in {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    seqs = [0] * 100
    store_cards = [cards_of_store.get(f"S{s:03d}", []) for s in range(100)]
    chunk = 50_000
    for base in range(0, records, chunk):
        recs, txns, entries = [], [], []
        for n in range(base, min(records, base + chunk)):
            s = rnd.randrange(100)
            if not store_cards[s]:
                continue
            seqs[s] += 1
            device, seq, card = f"T{s:03d}", seqs[s], rnd.choice(store_cards[s])
            store = f"S{s:03d}"
            at = NOW - (records - n) * 30_000
            recharge = n % 3 == 0
            amount = rnd.randrange(1000, 50_000) if recharge else rnd.randrange(100, 10_000)
            recs.append({"device_id": device, "seq": seq, "record_hash": bytes(32),
                         "prev_hash": bytes(32), "wire": b"-", "card_id": card,
                         "operation": 3 if recharge else 4, "card_counter": seq,
                         "device_time_ms": at, "received_at_ms": at, "status": "posted"})
            txn = f"{device}#{seq}"
            txns.append({"txn_id": txn, "device_id": device, "seq": seq,
                         "kind": "recharge" if recharge else "debit", "store": store,
                         "card_id": card, "posted_at_ms": at, "reverses": None, "memo": None})
            other = f"store:{store}:cash" if recharge else f"store:{store}:revenue:general"
            sign = -1 if recharge else 1
            entries.append({"txn_id": txn, "account": f"card:{card}:purse", "asset": "CNY",
                            "amount": sign * amount})
            entries.append({"txn_id": txn, "account": other, "asset": "CNY",
                            "amount": -sign * amount})
        with engine.begin() as conn:
            copy_rows(conn, records_t, recs)
            copy_rows(conn, ledger_transactions, txns)
            copy_rows(conn, ledger_entries, entries)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            from sqlalchemy import text

            conn.execute(text("ANALYZE"))
        else:
            conn.exec_driver_sql("ANALYZE")
    log(f"  {records:,} ledgered records in {time.perf_counter() - started:.1f} s")
    return {"names": names, "mobiles": mobiles, "cards": card_ids,
            "pinyin": [py.of(n)[1] for n in names[:2000]]}


def measure(engine, sample: dict[str, list], queries: int, seed: int = 11) -> dict:
    from hq_server.members.service import MemberQuery, find_members, get_member
    from hq_server.operators.access import Actor, Level, Scope

    admin = Actor("bench", "hq_admin", Scope(Level.CHAIN), "bench")
    rnd = random.Random(seed)
    kinds = {
        "mobile_prefix": lambda: MemberQuery(text=rnd.choice(sample["mobiles"])[:7]),
        "card": lambda: MemberQuery(text=rnd.choice(sample["cards"])),
        "name": lambda: MemberQuery(text=rnd.choice(sample["names"])),
        "pinyin": lambda: MemberQuery(text=rnd.choice(sample["pinyin"])),
    }
    by_kind: dict[str, list[float]] = {}
    for kind, make in kinds.items():
        times = by_kind.setdefault(kind, [])
        for _ in range(queries):
            q = make()
            started = time.perf_counter()
            page = find_members(admin, engine, q, limit=20)
            times.append((time.perf_counter() - started) * 1000)
            assert page["items"], f"{kind} search found nothing for {q}"
    pages = []
    for _ in range(queries):
        member_id = f"M{rnd.randrange(len(sample['names'])) + 1:08d}"
        started = time.perf_counter()
        page = get_member(admin, engine, member_id)
        pages.append((time.perf_counter() - started) * 1000)
        assert page["cards"]
    everything = [t for times in by_kind.values() for t in times]
    return {"search_p95_ms": p95(everything),
            "search_p95_ms_by_kind": {k: p95(v) for k, v in by_kind.items()},
            "member_page_p95_ms": p95(pages)}


def import_file(rows: int, seed: int = 13) -> bytes:
    rnd = random.Random(seed)
    lines = ["姓名,手机,store_id,birthday,email"]
    for i in range(rows):
        name = rnd.choice(SURNAMES) + rnd.choice(GIVEN) + rnd.choice(GIVEN)
        lines.append(f"{name},19{i:09d},S{rnd.randrange(100):03d},"
                     f"{rnd.randrange(1950, 2006)}-0{rnd.randrange(1, 10)}-11,m{i}@example.com")
    return ("\n".join(lines) + "\n").encode()


def run(store: str, members: int, records: int, import_rows: int, queries: int) -> dict:
    from hq_server.members.transfer import import_members
    from hq_server.operators.access import Actor, Level, Scope

    with tempfile.TemporaryDirectory() as tmp:
        engine, pg = open_store(store, Path(tmp))
        try:
            log(f"{store}: generating")
            sample = generate(engine, members, records)
            log(f"{store}: measuring searches and member pages")
            figures = measure(engine, sample, queries)
            data = import_file(import_rows)
            admin = Actor("bench", "hq_admin", Scope(Level.CHAIN), "bench")
            started = time.perf_counter()
            report = import_members(admin, engine, data, "bench.csv", NOW)
            import_s = round(time.perf_counter() - started, 2)
            assert report.counts["create"] == import_rows, report.counts
        finally:
            engine.dispose()
            if pg is not None:
                from sqlalchemy import text

                admin_engine, schema = pg
                with admin_engine.begin() as conn:
                    conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    return {"store": store, "members": members, "records": records, **figures,
            "import_rows": import_rows, "import_s": import_s,
            "load_1min": round(os.getloadavg()[0], 2),
            "goals": {"search_p95_ms": 50, "member_page_p95_ms": 50, "import_s": 60}}


def postgres_up() -> bool:
    from sqlalchemy import create_engine, text

    try:
        with create_engine(PG_URL).connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--members", type=int, default=100_000)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--import-rows", type=int, default=None,
                    help="members imported from CSV (default: as many as --members)")
    ap.add_argument("--queries", type=int, default=200, help="per kind of search")
    ap.add_argument("--store", choices=["sqlite", "postgresql"], action="append",
                    help="repeatable; default: sqlite, and postgresql when it answers")
    args = ap.parse_args()
    stores = args.store or (["sqlite", "postgresql"] if postgres_up() else ["sqlite"])
    for store in stores:
        line = run(store, args.members, args.records, args.import_rows or args.members,
                   args.queries)
        print(json.dumps(line, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
