"""The full check of the ledger (``onecard hq verify-ledger``): recompute, compare, say.

Nothing here writes: the check recomputes every balance from the entries and every
record's place on its device's chain, and says in words what does not hold.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import case, func, select
from sqlalchemy.engine import Connection, Engine

from hq_server.db.tables import (
    devices,
    ledger_accounts,
    ledger_entries,
    ledger_transactions,
    records,
)
from hq_server.ingest.quarantine import quarantine_dropped
from hq_server.ledger.accounts import account_rule, txn_id
from protocol.record import RecordRejected, verify_wire


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
            "quarantine_dropped": quarantine_dropped(conn),
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
