"""The one grammar for the ids of cards, devices, stores and products.

Ids travel in records, topics, ledger account names (``card:<card>:purse``) and
transaction ids (``<device>#<seq>``). HQ builds those names by joining ids with
separators, so an id must never contain a separator: an id is 1..64 characters of
``A-Z a-z 0-9 _ . -``, starting with a letter or a digit. No ``:`` (account names), no
``#`` (transaction ids), no ``/`` ``+`` ``$`` (MQTT topics), no spaces, nothing outside
ASCII. Starting with a letter or digit keeps ids from reading as command-line options
(``-x``) or as path parts (``.``, ``..``).

Some kinds are shorter because of where they are stored: a card id fits the card's
16-byte id block and a product name is at most 32 characters (catalogue screens, the
ledger's ``visit:<product>`` asset).

Every place that takes an id from outside (the record codec, device registration and
enrolment, the catalogue, the denylist, terminals naming UID credentials) checks it here.
"""

from __future__ import annotations

import hashlib
import re

#: Characters an id may hold; separators used around ids are never among them.
ID_CHARS = "A-Za-z0-9_.-"
#: Characters HQ uses to join ids into names: never allowed in an id.
SEPARATORS = ":#/+$ "
MAX_ID = 64
MAX_CARD_ID = 16
MAX_PRODUCT = 32

_ID = re.compile(rf"[A-Za-z0-9][{ID_CHARS}]*")

#: The same grammar as a pattern string, for places that need one (JSON schemas, docs).
ID_PATTERN = rf"^[A-Za-z0-9][{ID_CHARS}]{{0,{MAX_ID - 1}}}$"


def is_id(value: object, max_len: int = MAX_ID) -> bool:
    """True when ``value`` is an id of at most ``max_len`` characters."""
    return (isinstance(value, str) and 1 <= len(value) <= max_len and value.isascii()
            and _ID.fullmatch(value) is not None)


def is_card_id(value: object) -> bool:
    return is_id(value, MAX_CARD_ID)


def is_device_id(value: object) -> bool:
    return is_id(value, MAX_ID)


def is_store_id(value: object) -> bool:
    return is_id(value, MAX_ID)


def is_product_name(value: object) -> bool:
    return is_id(value, MAX_PRODUCT)


def describe(max_len: int = MAX_ID) -> str:
    """The grammar in words, for error messages."""
    return (f"1..{max_len} characters of A-Z a-z 0-9 _ . -, starting with a letter or digit")


_CREDENTIAL = re.compile(r"[A-Za-z0-9_-]{1,48}")


def credential_card_id(kind: str, credential: str) -> str:
    """The card id a UID credential (ID card, QR code) goes by in records and on the
    denylist, the same at every terminal and at HQ.

    ``em4100.0012345678`` or ``qr.<text>``; a credential with characters an id cannot
    carry, or a dot, goes by a hash of itself (``qr.h.<16 hex>``). The plain form never
    holds a second dot, so the two forms never meet.
    """
    if _CREDENTIAL.fullmatch(credential) and is_id(f"{kind}.{credential}"):
        return f"{kind}.{credential}"
    return f"{kind}.h.{hashlib.sha256(credential.encode()).hexdigest()[:16]}"
