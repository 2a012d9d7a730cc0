"""The chain's card master keys as HQ holds them, and which of them each role receives.

Terminals diversify per-card MIFARE keys from the chain's masters
(:class:`protocol.keys.ChainKeys`). HQ holds the masters in one file beside its other
secrets (``site/hq/card-keys.json``, mode 0600, made by ``onecard hq card-keys init``)
and hands each terminal the masters its role needs, inside the enrolment answer and at
each check-in, both over HQ's TLS API pinned by the terminal. Nobody types or copies
them.

What a role receives (:data:`ROLE_KEYS`): gates, handhelds and kiosks all write cards
(a visit used, a purchase, a recharge), so they get the read, write and MAC masters; a
role that only shows a balance gets the read and MAC masters alone
(:meth:`ChainKeys.read_only`). docs/security.md says what a stolen terminal exposes.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from protocol.keys import ChainKeys, keys_from_json, keys_to_json

#: The masters each role receives: "write" = read + write + MAC, "read" = read + MAC.
ROLE_KEYS = {"gate": "write", "handheld": "write", "kiosk": "write", "display": "read"}


class CardKeysMissing(RuntimeError):
    """HQ holds no card keys: enrolment cannot hand any to a terminal."""


class CardKeyring:
    """The masters in a file, read at each request so a rotation needs no HQ restart."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def keys(self) -> ChainKeys:
        try:
            return keys_from_json(json.loads(self.path.read_text()))
        except FileNotFoundError:
            raise CardKeysMissing(f"{self.path} is missing: run `onecard hq card-keys init`"
                                  ) from None

    def for_role(self, role: str) -> dict[str, Any]:
        """The key document a terminal of ``role`` receives (unknown roles: read only)."""
        keys = self.keys()
        if ROLE_KEYS.get(role, "read") != "write":
            keys = keys.read_only()
        return keys_to_json(keys)


def init_card_keys(path: Path, chain_id: int) -> ChainKeys:
    """Make the chain's masters (random, 16 bytes each) in a new 0600 file; never replaces
    one (cards issued under it would become unreadable)."""
    keys = ChainKeys(chain_id, secrets.token_bytes(16), secrets.token_bytes(16),
                     secrets.token_bytes(16))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise FileExistsError(f"{path} exists: refusing to replace the chain's card keys "
                              "(every issued card depends on them)") from None
    with os.fdopen(fd, "w") as f:
        json.dump(keys_to_json(keys), f)
    return keys
