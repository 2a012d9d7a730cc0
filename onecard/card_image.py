"""Issued member cards as dump files, for bench tests (``onecard sim card --issue``).

A bench needs a card that a terminal of the chain accepts: personalised with the chain's
card keys, a card product of the store's catalogue, a purse and visits. Rather than write
bytes by hand, the card is issued the way a service desk issues one (发卡, 开户, 充次):
the deployed tap path (:class:`terminal_fw.tap.TapRunner`) runs
:func:`protocol.card_ops.issue`, :func:`~protocol.card_ops.open_account` and
:func:`~protocol.card_ops.add_visits` on a simulated MIFARE Classic 1K, so the image
carries exactly what a real desk would write (diversified keys, MAC, counter). The desk's
records are signed by a throwaway identity and kept in memory: the image is for benches,
and HQ has never heard of it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol.keys import ChainKeys
from protocol.terminal_config import TerminalConfig, parse_config
from simulators.mifare_classic import MifareClassic1K


class CardImageError(ValueError):
    """The card cannot be issued as asked (unknown product, bad keys file, ...)."""


@dataclass(frozen=True)
class IssuedCard:
    card: MifareClassic1K
    card_id: str
    card_product: str
    purse_fen: int
    visits: dict[str, int]


def load_card_keys(path: Path) -> ChainKeys:
    """The chain's card keys from a key document: ``site/hq/card-keys.json`` (made by
    ``onecard hq card-keys init``) or a terminal's ``chain_keys.json`` (same format)."""
    from protocol.keys import keys_from_json

    try:
        keys = keys_from_json(json.loads(Path(path).read_text()))
    except (OSError, ValueError) as exc:
        raise CardImageError(f"card keys {path}: {exc}") from None
    if keys.write_master is None:
        raise CardImageError(f"card keys {path} hold no write master: issuing needs it")
    return keys


def load_store_config(path: Path) -> TerminalConfig:
    """The store's config document (what ``onecard hq push-config`` takes): its catalogue
    says which card products exist."""
    try:
        return parse_config(json.loads(Path(path).read_text()))
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise CardImageError(f"config {path}: {exc}") from None


def issue_card(keys: ChainKeys, config: TerminalConfig, *, card_id: str, card_product: str,
               uid: bytes, opening_fen: int | None = None,
               visits: tuple[tuple[str, int], ...] = (),
               now_s: float | None = None) -> IssuedCard:
    """A blank card with ``uid``, issued as ``card_id`` of ``card_product``; the purse
    opened with ``opening_fen`` (None: not opened) and ``visits`` as (count product,
    packages) sold. :class:`CardImageError` with the desk's reason if any step is refused."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from protocol.card_ops import add_visits, issue, open_account
    from terminal_fw.identity import DeviceIdentity
    from terminal_fw.outbox import Outbox
    from terminal_fw.tap import IntentJournal, TapRunner

    if len(uid) != 4:
        raise CardImageError("a MIFARE Classic 1K UID has 4 bytes")
    clock = (lambda: now_s) if now_s is not None else time.time
    outbox = Outbox(":memory:")
    desk = TapRunner(DeviceIdentity("bench-desk", "bench", Ed25519PrivateKey.generate()),
                     outbox, IntentJournal(outbox, clock=clock), keys,
                     config=lambda: config, denylist=frozenset, offline=lambda: False,
                     clock=clock, operator="bench")
    card = MifareClassic1K.blank(uid)
    steps: list[tuple[Any, tuple, dict]] = [
        (issue, (), {"card_id": card_id, "card_product": card_product})]
    if opening_fen is not None:
        steps.append((open_account, (opening_fen,), {}))
    steps += [(add_visits, (product, packages), {}) for product, packages in visits]
    try:
        state = None
        for op, args, kwargs in steps:
            result = desk.run(card, op, *args, **kwargs)
            if not result.ok:
                raise CardImageError(f"{op.__name__}: {result.reason}")
            state = result.state
    finally:
        desk.close()
        outbox.close()
    assert state is not None
    return IssuedCard(card, state.card_id, state.card_product, state.purse_fen,
                      dict(state.visits))
