"""A terminal's identity: its device id and Ed25519 signing key.

The key is made at first start and kept in the device's secrets directory (mode 0700,
key file 0600). It never leaves the device; HQ only ever sees the public half.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol.topics import DEVICE_ID

KEY_FILE = "signing_key.pem"
IDENTITY_FILE = "identity.json"


@dataclass(frozen=True)
class DeviceIdentity:
    device_id: str
    store: str
    signing_key: Ed25519PrivateKey

    @property
    def public_key_hex(self) -> str:
        raw = self.signing_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return raw.hex()


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` with mode 0600 and fsync it, replacing ``path`` atomically.

    A power cut leaves either the old file or the new one, never half of either.
    """
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def load_or_create(secrets_dir: Path, device_id: str, store: str) -> DeviceIdentity:
    """Load the identity in ``secrets_dir``, creating key and directory on first start.

    A directory that already holds an identity for another device id is refused: a
    terminal never silently changes who it is.
    """
    if not DEVICE_ID.match(device_id):
        raise ValueError(f"not a device id: {device_id!r}")
    secrets_dir = Path(secrets_dir)
    secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(secrets_dir, 0o700)
    key_path = secrets_dir / KEY_FILE
    ident_path = secrets_dir / IDENTITY_FILE
    if not ident_path.exists():
        # Written before the key: a power cut between the two leaves an identity
        # without a key, which the next start completes, never a key of unknown owner.
        write_private(ident_path, json.dumps({"device_id": device_id, "store": store}).encode())
    if not key_path.exists():
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_private(key_path, pem)
    saved = json.loads(ident_path.read_text())
    if saved["device_id"] != device_id:
        raise ValueError(
            f"{secrets_dir} holds the identity of {saved['device_id']!r}, not {device_id!r}"
        )
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{key_path} is not an Ed25519 key")
    return DeviceIdentity(device_id, saved["store"], key)
