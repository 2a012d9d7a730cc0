"""A terminal's configuration as HQ pushes it: one versioned JSON document.

It carries everything a terminal needs to serve taps alone: the card products and
tariffs (:class:`~protocol.products.Catalogue`), the price list of the counter, the
opening hours, which gate group the gate belongs to and what it lets in, and the risk
caps for UID-only credentials taken offline. HQ validates a document with
:func:`parse_config` before publishing it and the terminal validates it again on
receipt: a document either parses whole or is refused whole, with the reason.

Example::

    {"version": 3,
     "catalogue": {...},                       # Catalogue.to_dict()
     "price_list": [{"sku": "tea", "name": "Green tea", "category": "food",
                     "unit_price_fen": 1500}],
     "opening_hours": {"mon": ["06:00-22:00"], "sun": ["08:00-12:00", "14:00-20:00"]},
     "gate": {"group": 1, "accepts": ["swim"], "exit": "card"},
     "risk_caps": {"per_credential_amount_fen": 10000, "per_credential_count": 2,
                   "terminal_total_fen": 100000, "max_offline_age_s": 86400},
     "uid": {"visit_amount_fen": 3000, "online_timeout_s": 1.5},
     "heartbeat_s": 30, "unconfirmed_report_after_s": 300}
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass, field
from typing import Any

from protocol.messages import MessageError, load_json
from protocol.money import MAX_FEN
from protocol.products import Catalogue, CatalogueError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SKU = re.compile(r"^[A-Za-z0-9_.:-]{1,32}$")
_SPAN = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")
MAX_DOCUMENT_BYTES = 60_000  # below the broker's 64 KiB packet limit


class ConfigError(ValueError):
    """A config document that must not be applied; the message says what is wrong."""


@dataclass(frozen=True)
class PriceItem:
    sku: str
    name: str
    category: str
    unit_price_fen: int


@dataclass(frozen=True)
class GateSettings:
    group: int = 0  # anti-passback group (0..15), shared by the gates of one entrance
    accepts: tuple[str, ...] = ()  # products this gate lets in; () = any
    exit: str = "card"  # "card": the exit reader opens for any valid card; "free": always
    #: A member who tapped and turned back (passage not taken): "spent" — the visit is
    #: used, like a torn ticket; "keep" — the entry stays owed, the card's next tap here
    #: is let through free (terminal_fw.passage.entry_spent).
    not_taken: str = "spent"


@dataclass(frozen=True)
class RiskCaps:
    """How much a terminal may take on UID-only credentials while HQ cannot answer.

    Counted over uses HQ has not acknowledged yet (store-and-forward, as payment
    terminals count their offline transactions). Zero means "nothing offline".
    """

    per_credential_amount_fen: int = 0
    per_credential_count: int = 0
    terminal_total_fen: int = 0
    max_offline_age_s: int = 0


@dataclass(frozen=True)
class UidSettings:
    visit_amount_fen: int = 0  # what one entry on a UID-only credential is worth
    online_timeout_s: float = 1.5


@dataclass(frozen=True)
class TerminalConfig:
    version: int
    catalogue: Catalogue = field(default_factory=Catalogue)
    price_list: tuple[PriceItem, ...] = ()
    #: weekday (0 = Monday) → open spans in minutes of the day; empty mapping = always open
    opening_hours: dict[int, tuple[tuple[int, int], ...]] = field(default_factory=dict)
    gate: GateSettings = GateSettings()
    risk_caps: RiskCaps = RiskCaps()
    uid: UidSettings = UidSettings()
    heartbeat_s: float = 30.0
    unconfirmed_report_after_s: float = 300.0
    utc_offset_minutes: int = 480
    document: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def price(self, sku: str) -> PriceItem | None:
        return next((p for p in self.price_list if p.sku == sku), None)

    def is_open(self, now_ms: int) -> bool:
        """Whether the venue is open at ``now_ms`` (venue local time)."""
        if not self.opening_hours:
            return True
        local = _dt.datetime.fromtimestamp(now_ms / 1000, _dt.UTC) + _dt.timedelta(
            minutes=self.utc_offset_minutes)
        minute = local.hour * 60 + local.minute
        return any(a <= minute < b for a, b in self.opening_hours.get(local.weekday(), ()))


#: What a terminal runs before HQ has sent anything: it knows no products, so it
#: refuses every card operation with a clear reason until the first config arrives.
EMPTY = TerminalConfig(version=0)


def _need(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _obj(d: Any, what: str) -> dict[str, Any]:
    _need(isinstance(d, dict), f"{what} must be an object")
    return d


def _number(d: dict[str, Any], key: str, what: str, lo: float, hi: float,
            default: float) -> float:
    v = d.get(key, default)
    _need(isinstance(v, (int, float)) and not isinstance(v, bool) and lo <= v <= hi,
          f"{what}.{key} must be a number in {lo}..{hi}")
    return float(v)


def _fen(d: dict[str, Any], key: str, what: str, default: int = 0) -> int:
    v = d.get(key, default)
    _need(_is_int(v) and 0 <= v <= MAX_FEN, f"{what}.{key} must be whole fen in 0..{MAX_FEN}")
    return v


def _hours(raw: Any) -> dict[int, tuple[tuple[int, int], ...]]:
    hours = _obj(raw, "opening_hours")
    out: dict[int, tuple[tuple[int, int], ...]] = {}
    for day, spans in hours.items():
        _need(day in DAYS, f"opening_hours: unknown day {day!r} (one of {', '.join(DAYS)})")
        _need(isinstance(spans, list), f"opening_hours.{day} must be a list of 'HH:MM-HH:MM'")
        parsed = []
        for span in spans:
            m = _SPAN.match(span) if isinstance(span, str) else None
            _need(m is not None, f"opening_hours.{day}: {span!r} is not 'HH:MM-HH:MM'")
            assert m is not None
            a = int(m.group(1)) * 60 + int(m.group(2))
            b = int(m.group(3)) * 60 + int(m.group(4))
            _need(a < b <= 1440, f"opening_hours.{day}: {span!r} ends before it starts")
            parsed.append((a, b))
        out[DAYS.index(day)] = tuple(parsed)
    return out


def parse_config(document: dict[str, Any] | bytes) -> TerminalConfig:
    """Validate a whole config document; raise ConfigError naming the first problem."""
    if isinstance(document, (bytes, bytearray)):
        _need(len(document) <= MAX_DOCUMENT_BYTES, f"config over {MAX_DOCUMENT_BYTES} bytes")
        try:  # the one bounded reader of every topic: size, nesting, UTF-8, total
            document = load_json(bytes(document), "config", max_bytes=MAX_DOCUMENT_BYTES)
        except MessageError as exc:
            raise ConfigError(f"config is not JSON: {exc}") from None
    d = _obj(document, "config")
    known = {"version", "catalogue", "price_list", "opening_hours", "gate", "risk_caps", "uid",
             "heartbeat_s", "unconfirmed_report_after_s", "utc_offset_minutes"}
    unknown = sorted(set(d) - known)
    _need(not unknown, f"unknown config keys: {', '.join(unknown)}")
    version = d.get("version")
    _need(_is_int(version) and 1 <= version < 2**53, "version must be a whole number >= 1")
    try:
        catalogue = Catalogue.from_dict(_obj(d.get("catalogue", {}), "catalogue"))
    except CatalogueError as exc:
        raise ConfigError(f"catalogue: {exc}") from None
    items = d.get("price_list", [])
    _need(isinstance(items, list) and len(items) <= 500, "price_list must be a list (at most 500)")
    price_list = []
    for i, raw in enumerate(items):
        item = _obj(raw, f"price_list[{i}]")
        sku, name, cat = item.get("sku"), item.get("name", ""), item.get("category", "")
        _need(isinstance(sku, str) and bool(_SKU.match(sku)),
              f"price_list[{i}].sku must be 1..32 of A-Z a-z 0-9 _ . : -")
        _need(isinstance(name, str) and len(name) <= 64 and isinstance(cat, str) and len(cat) <= 32,
              f"price_list[{i}]: name (<= 64) and category (<= 32) must be text")
        price_list.append(PriceItem(sku, name, cat, _fen(item, "unit_price_fen", f"price_list[{i}]")))
    _need(len({p.sku for p in price_list}) == len(price_list), "price_list: a sku appears twice")
    gate_raw = _obj(d.get("gate", {}), "gate")
    group = gate_raw.get("group", 0)
    _need(_is_int(group) and 0 <= group <= 15, "gate.group must be 0..15")
    accepts = gate_raw.get("accepts", [])
    _need(isinstance(accepts, list) and all(isinstance(a, str) for a in accepts),
          "gate.accepts must be a list of product names")
    names = {p.name for p in (*catalogue.card_products, *catalogue.count_products,
                              *catalogue.passes)}
    missing = [a for a in accepts if a not in names]
    _need(not missing, f"gate.accepts names products the catalogue lacks: {', '.join(missing)}")
    exit_mode = gate_raw.get("exit", "card")
    _need(exit_mode in ("card", "free"), "gate.exit must be 'card' or 'free'")
    not_taken = gate_raw.get("not_taken", "spent")
    _need(not_taken in ("keep", "spent"), "gate.not_taken must be 'keep' or 'spent'")
    caps_raw = _obj(d.get("risk_caps", {}), "risk_caps")
    count = caps_raw.get("per_credential_count", 0)
    _need(_is_int(count) and 0 <= count <= 1000, "risk_caps.per_credential_count must be 0..1000")
    age = caps_raw.get("max_offline_age_s", 0)
    _need(_is_int(age) and 0 <= age <= 30 * 86400, "risk_caps.max_offline_age_s must be 0..2592000")
    caps = RiskCaps(_fen(caps_raw, "per_credential_amount_fen", "risk_caps"), count,
                    _fen(caps_raw, "terminal_total_fen", "risk_caps"), age)
    uid_raw = _obj(d.get("uid", {}), "uid")
    uid = UidSettings(_fen(uid_raw, "visit_amount_fen", "uid"),
                      _number(uid_raw, "online_timeout_s", "uid", 0.1, 30, 1.5))
    offset = d.get("utc_offset_minutes", 480)
    _need(_is_int(offset) and -720 <= offset <= 840, "utc_offset_minutes must be -720..840")
    return TerminalConfig(
        version=version, catalogue=catalogue, price_list=tuple(price_list),
        opening_hours=_hours(d.get("opening_hours", {})),
        gate=GateSettings(group, tuple(accepts), exit_mode, not_taken), risk_caps=caps, uid=uid,
        heartbeat_s=_number(d, "heartbeat_s", "config", 0.2, 3600, 30.0),
        unconfirmed_report_after_s=_number(d, "unconfirmed_report_after_s", "config", 0, 86400,
                                           300.0),
        utc_offset_minutes=offset, document=dict(d),
    )
