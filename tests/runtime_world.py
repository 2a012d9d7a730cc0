"""A terminal runtime for tests: identity, chain keys, settings, a config document, cards."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from simulators.mifare_classic import MifareClassic1K
from terminal_fw.identity import load_or_create
from terminal_fw.runtime import Runtime, RuntimeSettings, write_chain_keys
from tests.card_world import CATALOGUE, KEYS, T0

STORE = "store-01"


def config_doc(version: int = 1, **changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "version": version,
        "catalogue": CATALOGUE.to_dict(),
        "price_list": [{"sku": "tea", "name": "Green tea", "category": "food",
                        "unit_price_fen": 1500},
                       {"sku": "massage", "name": "Massage", "category": "spa",
                        "unit_price_fen": 20000}],
        "gate": {"group": 1, "accepts": ["swim"], "exit": "card"},
        "risk_caps": {"per_credential_amount_fen": 10000, "per_credential_count": 2,
                      "terminal_total_fen": 15000, "max_offline_age_s": 3600},
        "uid": {"visit_amount_fen": 3000, "online_timeout_s": 2.0},
        "heartbeat_s": 0.5,
        "unconfirmed_report_after_s": 3600,
    }
    doc.update(changes)
    return doc


def member_card(uid: bytes = bytes.fromhex("11223344"), card_id: str = "M00001",
                packages: int = 1, opening_fen: int = 0, now_ms: int = T0) -> MifareClassic1K:
    """A gold card with ``packages`` x 10 swim visits (and ``opening_fen`` on the purse)."""
    from tests.card_tx import personalise

    card = MifareClassic1K.blank(uid)
    personalise(card, card_id, "gold", opening_fen=opening_fen,
                visits=(("swim", packages),) if packages else (), now_ms=now_ms)
    return card


def prepare_terminal(root: Path, device_id: str = "gate-01") -> Path:
    """Secrets folder with the device's identity and the chain's card keys."""
    secrets_dir = root / "secrets"
    load_or_create(secrets_dir, device_id, STORE)
    write_chain_keys(secrets_dir, KEYS)
    return secrets_dir


def make_settings(root: Path, *, device_id: str = "gate-01", role: str = "gate",
                  broker_port: int = 1, password: str | None = None,
                  **kw: Any) -> RuntimeSettings:
    secrets_dir = prepare_terminal(root, device_id)
    return RuntimeSettings(secrets_dir=secrets_dir, data_dir=root / "data", role=role,
                           broker_port=broker_port,
                           broker_password=password if password is not None
                           else secrets.token_urlsafe(8),
                           gpio={"mock": True}, admit_timeout_s=0.05, resend_after_s=1.0, **kw)


def make_runtime(root: Path, **kw: Any) -> Runtime:
    return Runtime(make_settings(root, **kw))
