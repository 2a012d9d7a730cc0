"""Transaction record v1: the signed, chained unit of every value change.

A terminal makes one record per value change (a visit taken, a purse debited, ...),
signs it with its Ed25519 key and keeps it until HQ acknowledges it. HQ accepts each
(device id, sequence) once, checks the signature and the per-device hash chain, and
posts it to the ledger.

The canonical encoding is a fixed field order with big-endian integers and
length-prefixed ASCII/UTF-8 strings (see ``docs/protocol.md`` for the byte table and a
worked example). Decoding is strict: a byte stream decodes only if re-encoding the
result gives back exactly the same bytes, so one record has exactly one encoding and
the signature covers every byte that carries meaning.
"""

from __future__ import annotations

import enum
import hashlib
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from protocol.ids import MAX_ID, MAX_PRODUCT, describe, is_id
from protocol.money import MAX_FEN

MAGIC = b"OC"
VERSION = 1
SIGNATURE_SIZE = 64
HASH_SIZE = 32
#: prev_hash of a device's first record (sequence 1).
GENESIS_HASH = bytes(HASH_SIZE)
MAX_EXTRA_BYTES = 4096
#: How deep ``extra`` may nest ({} and [] levels). Checked on the bytes before the JSON
#: parser runs: a parser recurses per level, and a few thousand levels of a valid-looking
#: record would otherwise raise RecursionError inside HQ.
MAX_EXTRA_DEPTH = 16
MAX_VISITS = 1_000_000
MAX_POINTS = 10_000_000_000
#: The highest sequence number. Both HQ stores keep integers in signed 64 bits (SQLite
#: INTEGER, PostgreSQL bigint) and ingest computes ``seq + 1``; 2**53 - 1 also stays exact
#: in JSON readers that use doubles (acks, the dashboard). A device making a thousand
#: records a second needs 285,000 years to reach it.
MAX_SEQ = 2**53 - 1
#: Device clocks, in ms since the epoch, below 2**62: room for the arithmetic on them.
MAX_DEVICE_TIME_MS = 2**62 - 1


class Operation(enum.IntEnum):
    """What a record did to the card. The numbers are part of the wire format."""

    ISSUE = 1  # personalise a blank card (发卡)
    OPEN_ACCOUNT = 2  # open the purse with an opening amount (开户)
    RECHARGE = 3  # top up the purse, maybe with a bonus (充值)
    DEBIT = 4  # pay for a checkout from the purse (消费)
    ADD_VISITS = 5  # sell visits of a count product (充次)
    TAKE_VISIT = 6  # one entry through a gate (刷卡入闸)
    REFUND = 7  # reverse an earlier debit back onto the purse (退款)
    RECALL = 8  # take the card back and wipe it (收缴)
    BLOCK = 9  # a denylisted card marked blocked on the card (挂失拦截)
    UID_VISIT = 10  # entry on a UID-only credential (ID card, QR), no value on the card
    SELL_PASS = 11  # sell or renew a time pass on the card (办/续时段卡)


class Flag(enum.IntFlag):
    """Bits in the record's ``flags`` field."""

    NONE = 0
    OFFLINE = 1  # decided while the terminal had no HQ connection
    UNDER_RISK_CAP = 2  # accepted under an offline risk cap (UID-only credentials)
    UNCONFIRMED_CARD_WRITE = 4  # the card write could not be confirmed (power cut)
    #: the write's own answer was lost (power cut, card pulled); the card, read back at
    #: a later tap, showed exactly the state it meant to leave. Another terminal's
    #: identical write (same operation, same minute) would read the same, so HQ treats
    #: a collision on its counter as one card, not a clone.
    CONFIRMED_ON_READBACK = 8


_KNOWN_FLAGS = int(Flag.OFFLINE | Flag.UNDER_RISK_CAP | Flag.UNCONFIRMED_CARD_WRITE
                   | Flag.CONFIRMED_ON_READBACK)


class Reason(enum.Enum):
    """Why a record was refused. Each value is a reason an operator can act on."""

    MALFORMED = "malformed field"
    UNKNOWN_VERSION = "unknown version"
    BAD_SIGNATURE = "bad signature"
    UNKNOWN_DEVICE = "unknown device"
    REVOKED_DEVICE = "revoked device"
    HELD_DEVICE = "device held after a business-rule break (records wait on the device)"
    WRONG_TOPIC = "published under another device's topic"
    BROKEN_CHAIN = "broken chain"
    IMPOSSIBLE_AMOUNT = "impossible amount"
    CONFLICTING_DUPLICATE = "same sequence, different content"


class RecordRejected(ValueError):
    """A record that must not be accepted, with the reason in words."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class TransactionRecord:
    """The content of a record, before signing. All amounts are integer fen."""

    device_id: str
    seq: int
    prev_hash: bytes
    device_time_ms: int
    card_id: str
    operation: Operation
    store: str
    product: str = ""
    purse_before: int = 0
    purse_after: int = 0
    visits_before: int = 0
    visits_after: int = 0
    cash_fen: int = 0
    bonus_fen: int = 0
    points_delta: int = 0
    card_counter: int = 0
    operator: str = ""
    flags: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def encode(self) -> bytes:
        """The canonical bytes that the signature covers."""
        return encode_body(self)

    def sign(self, key: Ed25519PrivateKey) -> SignedRecord:
        body = self.encode()
        return SignedRecord(self, body, key.sign(body))


@dataclass(frozen=True)
class SignedRecord:
    """A record with its canonical body and Ed25519 signature, as it travels."""

    record: TransactionRecord
    body: bytes
    signature: bytes

    @property
    def wire(self) -> bytes:
        """What is published: body followed by the 64-byte signature."""
        return self.body + self.signature

    @property
    def record_hash(self) -> bytes:
        """SHA-256 of the wire bytes: the next record's ``prev_hash``."""
        return hashlib.sha256(self.wire).digest()


# --- encoding ---------------------------------------------------------------------


def _ident_ok(value: object, min_len: int) -> bool:
    if min_len == 0:  # the product: empty, or a product name (at most MAX_PRODUCT)
        return value == "" or is_id(value, MAX_PRODUCT)
    return is_id(value, MAX_ID)


def _ident(value: str, name: str, *, min_len: int) -> bytes:
    if not _ident_ok(value, min_len):
        empty = f" (or empty, at most {MAX_PRODUCT})" if min_len == 0 else ""
        raise RecordRejected(Reason.MALFORMED, f"{name} must be {describe()}{empty}")
    return bytes([len(value)]) + value.encode("ascii")


def _text(value: str, name: str, *, max_len: int = 64) -> bytes:
    raw = value.encode("utf-8")
    if len(raw) > max_len or any(ch in value for ch in "\x00\r\n"):
        raise RecordRejected(Reason.MALFORMED, f"{name} must be at most {max_len} UTF-8 bytes")
    return bytes([len(raw)]) + raw


def canonical_json(data: dict[str, Any]) -> bytes:
    """Sorted keys, no spaces, UTF-8: one encoding for one value."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _check_ranges(r: TransactionRecord) -> None:
    def need(ok: bool, reason: Reason, detail: str) -> None:
        if not ok:
            raise RecordRejected(reason, detail)

    ints = {
        "seq": r.seq, "device_time_ms": r.device_time_ms, "purse_before": r.purse_before,
        "purse_after": r.purse_after, "visits_before": r.visits_before,
        "visits_after": r.visits_after, "cash_fen": r.cash_fen, "bonus_fen": r.bonus_fen,
        "points_delta": r.points_delta, "card_counter": r.card_counter, "flags": r.flags,
    }
    for name, value in ints.items():
        need(isinstance(value, int) and not isinstance(value, bool), Reason.MALFORMED,
             f"{name} must be an integer")
    need(1 <= r.seq <= MAX_SEQ, Reason.MALFORMED, f"seq must be 1..{MAX_SEQ}")
    need(isinstance(r.prev_hash, bytes) and len(r.prev_hash) == HASH_SIZE, Reason.MALFORMED,
         "prev_hash must be 32 bytes")
    need(0 <= r.device_time_ms <= MAX_DEVICE_TIME_MS, Reason.MALFORMED,
         "device time out of range")
    for name in ("purse_before", "purse_after"):
        need(0 <= ints[name] <= MAX_FEN, Reason.IMPOSSIBLE_AMOUNT,
             f"{name}={ints[name]} fen is outside 0..{MAX_FEN}")
    for name in ("cash_fen", "bonus_fen"):
        need(abs(ints[name]) <= MAX_FEN, Reason.IMPOSSIBLE_AMOUNT,
             f"{name}={ints[name]} fen is beyond {MAX_FEN}")
    for name in ("visits_before", "visits_after"):
        need(0 <= ints[name] <= MAX_VISITS, Reason.IMPOSSIBLE_AMOUNT,
             f"{name}={ints[name]} is outside 0..{MAX_VISITS}")
    need(abs(r.points_delta) <= MAX_POINTS, Reason.IMPOSSIBLE_AMOUNT, "points out of range")
    need(0 <= r.card_counter < 2**32, Reason.MALFORMED, "card_counter must fit 32 bits")
    need(0 <= r.flags <= _KNOWN_FLAGS and not r.flags & ~_KNOWN_FLAGS, Reason.MALFORMED,
         f"unknown flag bits in {r.flags:#06x}")
    need(isinstance(r.extra, dict), Reason.MALFORMED, "extra must be a JSON object")


def encode_body(r: TransactionRecord) -> bytes:
    """Encode ``r`` canonically; raise RecordRejected if a field is out of range."""
    _check_ranges(r)
    try:
        op = Operation(r.operation)
    except ValueError:
        raise RecordRejected(Reason.MALFORMED, f"unknown operation {r.operation!r}") from None
    try:
        extra = canonical_json(r.extra) if r.extra else b""
    except (TypeError, ValueError, RecursionError):
        raise RecordRejected(Reason.MALFORMED, "extra is not a JSON object") from None
    if len(extra) > MAX_EXTRA_BYTES:
        raise RecordRejected(Reason.MALFORMED, f"extra is over {MAX_EXTRA_BYTES} bytes")
    if extra_depth(extra) > MAX_EXTRA_DEPTH:
        raise RecordRejected(Reason.MALFORMED, f"extra nests deeper than {MAX_EXTRA_DEPTH} levels")
    return b"".join(
        [
            MAGIC,
            bytes([VERSION]),
            _ident(r.device_id, "device_id", min_len=1),
            struct.pack(">Q", r.seq),
            r.prev_hash,
            struct.pack(">q", r.device_time_ms),
            _ident(r.card_id, "card_id", min_len=1),
            bytes([op]),
            _ident(r.product, "product", min_len=0),
            struct.pack(
                ">qqiiqqqIH",
                r.purse_before, r.purse_after, r.visits_before, r.visits_after,
                r.cash_fen, r.bonus_fen, r.points_delta, r.card_counter, r.flags,
            ),
            _ident(r.store, "store", min_len=1),
            _text(r.operator, "operator"),
            struct.pack(">H", len(extra)),
            extra,
        ]
    )


# --- decoding ---------------------------------------------------------------------

_NUMBERS = struct.Struct(">qqiiqqqIH")


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int, name: str) -> bytes:
        if self.pos + n > len(self.data):
            raise RecordRejected(Reason.MALFORMED, f"record ends inside {name}")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def short(self, name: str) -> bytes:
        return self.take(self.take(1, name)[0], name)

    def ident(self, name: str, *, min_len: int = 1) -> str:
        raw = self.short(name)
        value = raw.decode("ascii") if raw.isascii() else "\x00"
        if not _ident_ok(value, min_len):
            raise RecordRejected(Reason.MALFORMED, f"{name} must be {describe()}")
        return value


def extra_depth(raw: bytes) -> int:
    """How deep the JSON in ``raw`` nests, counted on the bytes (strings skipped).

    Linear and without recursion, so it can run on hostile input before a parser does.
    """
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return deepest


def _refuse_constant(name: str) -> Any:
    raise RecordRejected(Reason.MALFORMED, f"extra holds {name}, which JSON does not have")


def decode_body(body: bytes) -> TransactionRecord:
    """Decode canonical bytes into a record; raise RecordRejected with the reason.

    Total: whatever the bytes, the outcome is a record or RecordRejected (an unexpected
    error inside is reported as a malformed record, never raised as itself).
    """
    try:
        return _decode_body(body)
    except RecordRejected:
        raise
    except Exception as exc:  # noqa: BLE001 - hostile bytes must never escape as a crash
        raise RecordRejected(Reason.MALFORMED,
                             f"undecodable record ({type(exc).__name__})") from None


def _decode_body(body: bytes) -> TransactionRecord:
    if not isinstance(body, (bytes, bytearray)):
        raise RecordRejected(Reason.MALFORMED, "record must be bytes")
    body = bytes(body)
    rd = _Reader(body)
    if rd.take(2, "magic") != MAGIC:
        raise RecordRejected(Reason.MALFORMED, "not a OneCard record (magic bytes)")
    version = rd.take(1, "version")[0]
    if version != VERSION:
        raise RecordRejected(Reason.UNKNOWN_VERSION, f"record version {version}, this build reads {VERSION}")
    device_id = rd.ident("device_id")
    (seq,) = struct.unpack(">Q", rd.take(8, "seq"))
    prev_hash = rd.take(HASH_SIZE, "prev_hash")
    (device_time_ms,) = struct.unpack(">q", rd.take(8, "device_time"))
    card_id = rd.ident("card_id")
    op_code = rd.take(1, "operation")[0]
    try:
        operation = Operation(op_code)
    except ValueError:
        raise RecordRejected(Reason.MALFORMED, f"unknown operation code {op_code}") from None
    product = rd.ident("product", min_len=0)
    numbers = _NUMBERS.unpack(rd.take(_NUMBERS.size, "amounts"))
    store = rd.ident("store")
    try:
        operator = rd.short("operator").decode("utf-8")
    except UnicodeDecodeError:
        raise RecordRejected(Reason.MALFORMED, "operator is not UTF-8") from None
    (extra_len,) = struct.unpack(">H", rd.take(2, "extra length"))
    if extra_len > MAX_EXTRA_BYTES:
        raise RecordRejected(Reason.MALFORMED, f"extra is over {MAX_EXTRA_BYTES} bytes")
    extra_raw = rd.take(extra_len, "extra")
    if rd.pos != len(body):
        raise RecordRejected(Reason.MALFORMED, f"{len(body) - rd.pos} unexpected trailing bytes")
    extra: dict[str, Any] = {}
    if extra_raw:
        if extra_depth(extra_raw) > MAX_EXTRA_DEPTH:
            raise RecordRejected(Reason.MALFORMED,
                                 f"extra nests deeper than {MAX_EXTRA_DEPTH} levels")
        try:
            extra = json.loads(extra_raw.decode("utf-8"), parse_constant=_refuse_constant)
        except (UnicodeDecodeError, ValueError):
            raise RecordRejected(Reason.MALFORMED, "extra is not JSON") from None
        if not isinstance(extra, dict) or not extra:
            raise RecordRejected(Reason.MALFORMED, "extra must be a non-empty JSON object")
    record = TransactionRecord(
        device_id=device_id, seq=seq, prev_hash=prev_hash, device_time_ms=device_time_ms,
        card_id=card_id, operation=operation, store=store, product=product,
        purse_before=numbers[0], purse_after=numbers[1], visits_before=numbers[2],
        visits_after=numbers[3], cash_fen=numbers[4], bonus_fen=numbers[5],
        points_delta=numbers[6], card_counter=numbers[7], flags=numbers[8],
        operator=operator, extra=extra,
    )
    _check_canonical(record, extra_raw)
    return record


def _check_canonical(record: TransactionRecord, extra_raw: bytes) -> None:
    """What a decoded record must satisfy so that encoding it gives back the same bytes.

    Cheaper than encoding again on the ingest hot path; the property tests check that a
    record passing here re-encodes to exactly the bytes it came from.
    """
    if len(record.operator.encode()) > 64 or any(ch in record.operator for ch in "\x00\r\n"):
        raise RecordRejected(Reason.MALFORMED, "operator must be at most 64 UTF-8 bytes")
    _check_ranges(record)
    if extra_raw and canonical_json(record.extra) != extra_raw:
        raise RecordRejected(Reason.MALFORMED, "extra is not canonical JSON")


def decode_wire(wire: bytes) -> SignedRecord:
    """Split wire bytes into body and signature and decode the body (no verification)."""
    if not isinstance(wire, (bytes, bytearray)) or len(wire) <= SIGNATURE_SIZE:
        raise RecordRejected(Reason.MALFORMED, "record too short to hold a signature")
    wire = bytes(wire)
    body, signature = wire[:-SIGNATURE_SIZE], wire[-SIGNATURE_SIZE:]
    return SignedRecord(decode_body(body), body, signature)


def verify_wire(
    wire: bytes, public_key_for: Callable[[str], Ed25519PublicKey | None]
) -> SignedRecord:
    """Decode and check the signature of one record.

    ``public_key_for`` maps a device id to its registered public key, or None when the
    device is unknown. The chain (``prev_hash``) is checked by the caller, who knows the
    neighbouring records: see :func:`check_chain_link`.
    """
    signed = decode_wire(wire)
    key = public_key_for(signed.record.device_id)
    if key is None:
        raise RecordRejected(Reason.UNKNOWN_DEVICE, f"device {signed.record.device_id!r} is not registered")
    try:
        key.verify(signed.signature, signed.body)
    except InvalidSignature:
        raise RecordRejected(
            Reason.BAD_SIGNATURE,
            f"signature does not match device {signed.record.device_id!r}'s key",
        ) from None
    check_consistency(signed.record)
    return signed


def check_chain_link(previous: SignedRecord | bytes | None, record: TransactionRecord) -> None:
    """Check that ``record`` follows ``previous`` (a record, its hash, or None for seq 1)."""
    if record.seq == 1:
        expected = GENESIS_HASH
    elif previous is None:
        return  # the predecessor has not arrived yet; checked when it does
    else:
        expected = previous.record_hash if isinstance(previous, SignedRecord) else previous
    if record.prev_hash != expected:
        raise RecordRejected(
            Reason.BROKEN_CHAIN,
            f"record {record.device_id}#{record.seq} does not follow the device's record #{record.seq - 1}",
        )


def check_consistency(r: TransactionRecord) -> None:
    """Refuse records whose before/after figures cannot come from their operation."""
    purse_delta = r.purse_after - r.purse_before
    visits_delta = r.visits_after - r.visits_before
    op = r.operation

    def need(ok: bool, detail: str) -> None:
        if not ok:
            raise RecordRejected(Reason.IMPOSSIBLE_AMOUNT, f"{op.name}: {detail}")

    if op in (Operation.TAKE_VISIT,):
        need(visits_delta in (-1, 0), "a visit takes one visit, or none on a time pass")
        need(purse_delta == 0, "a visit does not change the purse")
    elif op == Operation.RECHARGE:
        need(purse_delta > 0, "a recharge must raise the purse")
        need(r.cash_fen >= 0 and r.bonus_fen >= 0 and r.cash_fen + r.bonus_fen == purse_delta,
             "paid + bonus must equal the rise of the purse")
    elif op == Operation.OPEN_ACCOUNT:
        need(r.purse_before == 0 and r.cash_fen >= 0 and r.bonus_fen >= 0
             and r.cash_fen + r.bonus_fen == purse_delta,
             "an account opens from zero with paid + bonus")
    elif op == Operation.DEBIT:
        need(purse_delta <= 0, "a debit cannot raise the purse")
        need(r.cash_fen >= 0, "cash paid for a shortfall cannot be negative")
    elif op == Operation.REFUND:
        need(purse_delta >= 0 and r.cash_fen <= 0, "a refund returns value to the purse or pays cash out")
    elif op == Operation.ADD_VISITS:
        need(visits_delta > 0, "adding visits must raise the count")
        need(r.cash_fen >= 0, "visits are paid for, not paid out")
    elif op == Operation.SELL_PASS:
        need(visits_delta == 0, "a pass sale moves no visits")
        need(purse_delta <= 0 and r.cash_fen >= 0, "a pass is paid for from the purse or in cash")
    elif op in (Operation.ISSUE, Operation.BLOCK, Operation.UID_VISIT):
        need(purse_delta == 0 and visits_delta == 0, "this operation moves no value")
    elif op == Operation.RECALL:
        need(r.purse_after == 0 and r.visits_after == 0, "a recalled card is left empty")


def with_seq(record: TransactionRecord, seq: int, prev_hash: bytes) -> TransactionRecord:
    """The same record content placed at a position in the device's chain."""
    return replace(record, seq=seq, prev_hash=prev_hash)
