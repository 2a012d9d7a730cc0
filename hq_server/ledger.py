"""The ledger's own operations: posting to accounts, reversals, and the full check.

Writing goes through :func:`apply_to_accounts` (running totals guarded by the
database's floor constraint) plus plain inserts of transactions and entries; nothing in
the ledger is ever updated or deleted (database triggers refuse it). Reading:
:func:`check_ledger` recomputes every balance from the entries (``onecard hq
verify-ledger``), :func:`account_balance` and :func:`ingest_figures` give figures.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Table, bindparam, case, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.expression import Executable

from hq_server.postings import Entry, account_rule, check_balanced, txn_id
from hq_server.schema import (
    counters,
    devices,
    ledger_accounts,
    ledger_entries,
    ledger_transactions,
    quarantine,
    quarantine_budget,
    records,
)
from protocol.record import RecordRejected, verify_wire


def dialect_insert(conn: Connection):
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


_BULK: dict[tuple[str, str], tuple[str, tuple[str, ...] | None]] = {}


def bulk_execute(conn: Connection, name: str, make: Callable[[], Executable],
                 rows: list[dict[str, Any]]) -> None:
    """Run one statement for many rows straight through the driver's executemany.

    Ingest writes thousands of rows a second; SQLAlchemy's per-row parameter handling
    cost more than the database itself. The statement (whose parameters must all be
    ``bindparam``s named like the row keys) is compiled once per dialect and ``name``.
    """
    if not rows:
        return
    key = (conn.dialect.name, name)
    cached = _BULK.get(key)
    if cached is None:
        compiled = make().compile(dialect=conn.dialect)
        cached = _BULK[key] = (str(compiled), tuple(compiled.positiontup or ())
                               if compiled.positional else None)
    sql, order = cached
    params = [tuple(r[k] for k in order) for r in rows] if order is not None else rows
    conn.exec_driver_sql(sql, params)


def copy_rows(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert many rows: PostgreSQL's COPY (one round trip, no per-row statement),
    elsewhere the driver's executemany. Every row has the same keys."""
    if not rows:
        return
    columns = list(rows[0])
    if conn.dialect.name != "postgresql":
        bulk_execute(conn, f"insert:{table.name}:{','.join(columns)}",
                     lambda: insert(table).values({c: bindparam(c) for c in columns}), rows)
        return
    if not conn.in_transaction():
        conn.begin()  # so that the caller's commit covers what the driver does below
    cursor = conn.connection.driver_connection.cursor()
    with cursor.copy(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row([row[c] for c in columns])


def _account_create(conn: Connection) -> Executable:
    ins = dialect_insert(conn)(ledger_accounts).values(
        {c: bindparam(c) for c in ("account", "asset", "kind", "credit_floor")})
    return ins.on_conflict_do_nothing(index_elements=[ledger_accounts.c.account])


def _account_add() -> Executable:
    a = ledger_accounts.c
    return (update(ledger_accounts).where(a.account == bindparam("b_account"))
            .values(debits=a.debits + bindparam("b_debits"),
                    credits=a.credits + bindparam("b_credits")))


AccountTotals = dict[str, tuple[str, int, int]]  # account → (asset, debits, credits)


def account_totals(entries: Iterable[Entry]) -> AccountTotals:
    """What ``entries`` add to each account, refusing an account in two assets."""
    totals: dict[str, list] = {}
    for e in entries:
        row = totals.get(e.account)
        if row is None:
            row = totals[e.account] = [e.asset, 0, 0]
        elif row[0] != e.asset:
            raise ValueError(f"account {e.account} would hold two assets: {row[0]}, {e.asset}")
        if e.amount > 0:
            row[1] += e.amount
        else:
            row[2] -= e.amount
    return {acct: (a, d, c) for acct, (a, d, c) in totals.items()}


def create_accounts(conn: Connection, totals: AccountTotals,
                    known: set[str] | frozenset[str] = frozenset()) -> set[str]:
    """Create the accounts of ``totals`` that do not exist yet, with zero totals.

    ``known`` names accounts the caller knows exist (accounts are never deleted), to
    save the work. Returns the names it tried to create. Takes no lock on an existing
    account, so it can come early in a transaction.
    """
    created = sorted(acct for acct in totals if acct not in known)
    rows = [{"account": acct, "asset": totals[acct][0], "kind": account_rule(acct).kind,
             "credit_floor": account_rule(acct).credit_floor} for acct in created]
    if conn.dialect.name == "postgresql":
        if rows:
            conn.exec_driver_sql(
                "INSERT INTO ledger_accounts (account, asset, kind, credit_floor) "
                "SELECT * FROM unnest(%(a)s::text[], %(s)s::text[], %(k)s::text[], "
                "%(f)s::boolean[]) ON CONFLICT (account) DO NOTHING",
                {"a": [r["account"] for r in rows], "s": [r["asset"] for r in rows],
                 "k": [r["kind"] for r in rows], "f": [r["credit_floor"] for r in rows]})
    else:
        bulk_execute(conn, "account_create", lambda: _account_create(conn), rows)
    return set(created)


def add_to_accounts(conn: Connection, totals: AccountTotals) -> None:
    """Add to the accounts' running totals (they must exist).

    The database refuses it (and so the whole transaction) if an account would go below
    its floor. Rows are locked in account order, so concurrent PostgreSQL writers never
    deadlock; callers do this late in their transaction, as these rows (a store's cash)
    are the ones every writer needs.
    """
    accounts = sorted(totals)
    if not accounts:
        return
    if conn.dialect.name == "postgresql":
        # NO KEY UPDATE, as the UPDATE itself takes: plain FOR UPDATE would also wait for
        # the key-share locks that other writers' ledger entries hold on these accounts
        # (foreign key), which deadlocks two workers.
        conn.exec_driver_sql("SELECT account FROM ledger_accounts WHERE account = "
                             "ANY(%(a)s::text[]) ORDER BY account FOR NO KEY UPDATE",
                             {"a": accounts})
        conn.exec_driver_sql(
            "UPDATE ledger_accounts AS a SET debits = a.debits + v.d, credits = a.credits + v.c "
            "FROM unnest(%(accounts)s::text[], %(debits)s::bigint[], %(credits)s::bigint[]) "
            "AS v(account, d, c) WHERE a.account = v.account",
            {"accounts": accounts, "debits": [totals[x][1] for x in accounts],
             "credits": [totals[x][2] for x in accounts]})
        return
    bulk_execute(conn, "account_add", _account_add, [
        {"b_account": acct, "b_debits": totals[acct][1], "b_credits": totals[acct][2]}
        for acct in accounts])


def apply_to_accounts(conn: Connection, entries: Iterable[Entry],
                      known: set[str] | frozenset[str] = frozenset()) -> set[str]:
    """Add ``entries`` to their accounts' running debit and credit totals.

    Creates accounts on first use and returns the names it created (see
    :func:`create_accounts`), then adds (see :func:`add_to_accounts`): the floor check
    judges the account's new totals, not a would-be row holding only these entries.
    """
    totals = account_totals(entries)
    created = create_accounts(conn, totals, known)
    add_to_accounts(conn, totals)
    return created


@dataclass(frozen=True)
class LedgerCheck:
    """The result of recomputing the ledger from its entries.

    ``balanced`` is True only when every check holds; ``problems`` says in words what
    does not (at most a hundred of each kind).
    """

    balanced: bool
    unbalanced_transactions: list[tuple[str, str, int]]
    asset_totals: dict[str, int]
    problems: list[str] = field(default_factory=list)
    figures: dict[str, int] = field(default_factory=dict)


def check_ledger(engine: Engine, *, signatures: bool = False) -> LedgerCheck:
    """Recompute everything from the entries and compare with what is stored.

    Checks: every transaction balances per asset; each asset sums to zero over all
    accounts; each account's running debit/credit totals equal the sum of its entries;
    no purse, visit or points account is below zero; every posted record has exactly
    its one transaction and every record transaction its posted record; a reversal is
    the exact negation of the transaction it reverses; each device's stored records
    follow each other on its hash chain, and no posted record's predecessor is missing
    or quarantined. With ``signatures``, every stored record's
    Ed25519 signature is checked again against its device's registered key (slow: an
    audit that the records table was not edited).
    """
    e, t, a = ledger_entries.c, ledger_transactions.c, ledger_accounts.c
    problems: list[str] = []
    with engine.connect() as conn:
        bad = [(str(x), str(y), int(z)) for x, y, z in conn.execute(
            select(e.txn_id, e.asset, func.sum(e.amount)).group_by(e.txn_id, e.asset)
            .having(func.sum(e.amount) != 0).limit(100))]
        problems += [f"transaction {txn} does not balance in {asset}: {total}"
                     for txn, asset, total in bad]
        totals = {asset: int(total) for asset, total in conn.execute(
            select(e.asset, func.sum(e.amount)).group_by(e.asset))}
        problems += [f"{asset} sums to {total} over all accounts, not 0"
                     for asset, total in totals.items() if total]

        debit = func.sum(case((e.amount > 0, e.amount), else_=0))
        credit = func.sum(case((e.amount < 0, -e.amount), else_=0))
        recomputed = {acct: (asset, int(d), int(c)) for acct, asset, d, c in conn.execute(
            select(e.account, e.asset, debit, credit).group_by(e.account, e.asset))}
        stored = {acct: (asset, int(d), int(c), bool(floor)) for acct, asset, d, c, floor in
                  conn.execute(select(a.account, a.asset, a.debits, a.credits, a.credit_floor))}
        for acct, (asset, d, c) in recomputed.items():
            held = stored.get(acct)
            if held is None or held[:3] != (asset, d, c):
                problems.append(f"account {acct}: entries give {asset} debits {d} credits {c}, "
                                f"stored totals say {held[:3] if held else 'nothing'}")
            if account_rule(acct).credit_floor and d > c:
                problems.append(f"account {acct} is {d - c} {asset} below zero")
        for acct, (_asset, d, c, _floor) in stored.items():
            if acct not in recomputed and (d or c):
                problems.append(f"account {acct} has totals {d}/{c} but no entries")

        posted = records.c.status == "posted"
        # Record ↔ transaction, one to one, compared as sets (the ledger has no index on
        # device and sequence: the transaction id is derived from them).
        posted_records = {(d, q) for d, q in conn.execute(
            select(records.c.device_id, records.c.seq).where(posted))}
        record_txns: dict[tuple[str, int], str] = {}
        for x, d, q in conn.execute(select(t.txn_id, t.device_id, t.seq).where(
                t.device_id.is_not(None) & (t.kind != "reversal") & (t.kind != "settlement"))):
            record_txns[(d, q)] = x
            if x != txn_id(d, q) and len(problems) < 1000:
                problems.append(f"transaction {x} should be named {txn_id(d, q)}")
        problems += [f"record {d}#{q} is posted but has no ledger transaction"
                     for d, q in sorted(posted_records - record_txns.keys())[:100]]
        problems += [f"transaction {record_txns[k]} has no posted record behind it"
                     for k in sorted(record_txns.keys() - posted_records)[:100]]

        for rev, orig in conn.execute(
                select(t.txn_id, t.reverses).where(t.reverses.is_not(None))).all():
            lines: dict[tuple[str, str], int] = defaultdict(int)
            for account, asset, amount in conn.execute(
                    select(e.account, e.asset, e.amount).where(e.txn_id.in_([rev, orig]))).all():
                lines[(account, asset)] += amount
            if any(lines.values()):
                problems.append(f"reversal {rev} is not the exact negation of {orig}")
        r, p = records.alias("r"), records.alias("p")
        # A correlated lookup by primary key per record (a plain self-join on seq - 1
        # made SQLite scan the table once per row).
        before = (select(p.c.record_hash).where(
            (p.c.device_id == r.c.device_id) & (p.c.seq == r.c.seq - 1)
            & (p.c.status == "posted")).scalar_subquery())
        unchained = conn.execute(
            select(r.c.device_id, r.c.seq).where(
                (r.c.status == "posted") & (r.c.seq > 1) & (r.c.prev_hash != before))
            .limit(100)).all()
        problems += [f"record {d}#{q} does not follow {d}#{q - 1} on the device's chain"
                     for d, q in unchained]
        # A posted record vouches for its predecessor; one whose predecessor HQ never got,
        # or refused, stands on a chain nobody checked (a gap the device has not filled,
        # or value built on a record HQ did not accept).
        before_status = (select(p.c.status).where(
            (p.c.device_id == r.c.device_id) & (p.c.seq == r.c.seq - 1)).scalar_subquery())
        for d, q, status in conn.execute(
                select(r.c.device_id, r.c.seq, before_status).where(
                    (r.c.status == "posted") & (r.c.seq > 1)
                    & ((before_status.is_(None)) | (before_status != "posted")))
                .order_by(r.c.device_id, r.c.seq).limit(100)):
            problems.append(
                f"record {d}#{q} is posted but its predecessor {d}#{q - 1} is missing"
                if status is None else
                f"record {d}#{q} is posted but its predecessor {d}#{q - 1} is {status}")
        if signatures:
            problems += _signature_problems(conn)
        figures = {
            "transactions": conn.execute(select(func.count()).select_from(ledger_transactions)).scalar_one(),
            "entries": conn.execute(select(func.count()).select_from(ledger_entries)).scalar_one(),
            "accounts": len(stored),
            "posted_records": conn.execute(select(func.count()).select_from(records).where(posted)).scalar_one(),
            "quarantine_dropped": _quarantine_dropped(conn),
        }
    return LedgerCheck(not problems, bad, totals, problems, figures)


def _signature_problems(conn: Connection) -> list[str]:
    keys: dict[str, Ed25519PublicKey | None] = {}
    for device_id, hex_key in conn.execute(select(devices.c.device_id, devices.c.public_key)):
        try:
            keys[device_id] = Ed25519PublicKey.from_public_bytes(bytes.fromhex(hex_key))
        except ValueError:
            keys[device_id] = None
    problems: list[str] = []
    for device_id, seq, wire, stored_hash in conn.execute(
            select(records.c.device_id, records.c.seq, records.c.wire, records.c.record_hash)):
        wire = bytes(wire)
        try:
            signed = verify_wire(wire, keys.get)
        except RecordRejected as exc:
            problems.append(f"record {device_id}#{seq}: {exc}")
            continue
        r = signed.record
        if (r.device_id, r.seq) != (device_id, seq) or signed.record_hash != bytes(stored_hash):
            problems.append(f"record {device_id}#{seq}: stored columns disagree with its bytes")
        if len(problems) >= 100:
            break
    return problems


class LedgerError(ValueError):
    """A ledger operation that cannot be done, with the reason in words."""


def reverse_transaction(engine: Engine, original: str, reason: str, operator: str,
                        now_ms: int | None = None) -> str:
    """Post the exact negation of transaction ``original``: the only way to correct it.

    Its id is ``rev:<original>`` and the database allows one reversal per transaction.
    Refused, changing nothing, when the original does not exist, is itself a reversal,
    was already reversed, or when taking its value back would leave a card's purse,
    visits or points below zero (the value has been spent since).
    """
    if not reason.strip() or not operator.strip():
        raise LedgerError("a reversal needs a reason and the operator who asks for it")
    rev_id = f"rev:{original}"
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    t = ledger_transactions.c
    try:
        with engine.begin() as conn:
            row = conn.execute(select(ledger_transactions).where(t.txn_id == original)).mappings().first()
            if row is None:
                raise LedgerError(f"no ledger transaction {original!r}")
            if row["reverses"] is not None:
                raise LedgerError(f"{original} is itself a reversal; post a new transaction instead")
            if conn.execute(select(t.txn_id).where(t.reverses == original)).first():
                raise LedgerError(f"{original} was already reversed")
            entries = [Entry(acct, asset, -amount) for acct, asset, amount in conn.execute(
                select(ledger_entries.c.account, ledger_entries.c.asset, ledger_entries.c.amount)
                .where(ledger_entries.c.txn_id == original).order_by(ledger_entries.c.id))]
            for entry in entries:
                if entry.amount > 0 and account_rule(entry.account).credit_floor:
                    d, c = conn.execute(select(ledger_accounts.c.debits, ledger_accounts.c.credits)
                                        .where(ledger_accounts.c.account == entry.account)).one()
                    if c - d < entry.amount:
                        raise LedgerError(
                            f"reversing {original} would take {entry.amount} {entry.asset} from "
                            f"{entry.account}, which holds only {c - d}")
            conn.execute(insert(ledger_transactions).values(
                txn_id=rev_id, device_id=row["device_id"], seq=row["seq"], kind="reversal",
                store=row["store"], card_id=row["card_id"], posted_at_ms=now_ms, reverses=original,
                memo=json.dumps({"reason": reason, "operator": operator}, ensure_ascii=False)))
            apply_to_accounts(conn, entries)
            if entries:
                conn.execute(insert(ledger_entries), [
                    {"txn_id": rev_id, "account": x.account, "asset": x.asset, "amount": x.amount}
                    for x in entries])
    except IntegrityError as exc:  # a concurrent reversal or spend got there first
        raise LedgerError(f"reversal of {original} refused by the database: {exc.orig}") from None
    return rev_id


def post_transaction(engine: Engine, txn: str, kind: str, store: str, entries: list[Entry],
                     memo: dict[str, Any], now_ms: int | None = None) -> bool:
    """Post a balanced HQ-side transaction (settlement) once; False if ``txn`` exists."""
    check_balanced(entries)
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    with engine.begin() as conn:
        if conn.execute(select(ledger_transactions.c.txn_id)
                        .where(ledger_transactions.c.txn_id == txn)).first():
            return False
        conn.execute(insert(ledger_transactions).values(
            txn_id=txn, kind=kind, store=store, posted_at_ms=now_ms,
            memo=json.dumps(memo, sort_keys=True, ensure_ascii=False)))
        apply_to_accounts(conn, entries)
        if entries:
            conn.execute(insert(ledger_entries), [
                {"txn_id": txn, "account": x.account, "asset": x.asset, "amount": x.amount}
                for x in entries])
    return True


def account_balance(engine: Engine, account: str, asset: str) -> int:
    """Sum of entries (debit positive). A liability such as a purse shows as negative."""
    with engine.connect() as conn:
        total = conn.execute(select(func.coalesce(func.sum(ledger_entries.c.amount), 0)).where(
            (ledger_entries.c.account == account) & (ledger_entries.c.asset == asset))).scalar_one()
    return int(total)


def _quarantine_dropped(conn: Connection) -> int:
    return int(conn.execute(select(func.coalesce(
        func.sum(quarantine_budget.c.dropped_rows), 0))).scalar_one())


def ingest_figures(engine: Engine) -> dict[str, int]:
    """Counts an operator watches: records stored and posted, quarantined and dropped
    (``quarantine_dropped``: refused messages not kept because their device was over its
    quarantine limits), duplicates."""
    with engine.connect() as conn:
        ledgered = conn.execute(select(func.count()).select_from(records)
                                .where(records.c.status == "posted")).scalar_one()
        stored = conn.execute(select(func.count()).select_from(records)).scalar_one()
        quarantined = conn.execute(select(func.count()).select_from(quarantine)).scalar_one()
        dup = conn.execute(select(counters.c.value).where(
            counters.c.name == "duplicates_rejected")).scalar()
        dropped = _quarantine_dropped(conn)
    return {"records_ledgered": int(ledgered), "records_stored": int(stored),
            "quarantined": int(quarantined), "quarantine_dropped": dropped,
            "duplicates_rejected": int(dup or 0)}
