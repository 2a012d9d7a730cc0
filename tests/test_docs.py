"""The figures in docs/protocol.md's worked example come from the code."""

from __future__ import annotations

import re
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol.record import GENESIS_HASH, Operation, TransactionRecord

DOC = Path(__file__).parent.parent / "docs" / "protocol.md"


def test_worked_example_matches_the_encoder():
    text = DOC.read_text()
    example = text.split("### Worked example", 1)[1]
    blocks = re.findall(r"```text\n(.*?)```", example, re.S)
    body_hex = "".join(line.split("  ")[0].replace(" ", "") for line in blocks[0].splitlines())
    signature_hex = blocks[1].strip()
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    record = TransactionRecord(
        device_id="gate-01", seq=1, prev_hash=GENESIS_HASH, device_time_ms=1_795_000_000_000,
        card_id="M00001", operation=Operation.TAKE_VISIT, store="store-01", product="swim",
        visits_before=10, visits_after=9, card_counter=7,
    )
    signed = record.sign(key)
    assert bytes.fromhex(body_hex) == signed.body
    assert f"The body is {len(signed.body)} bytes" in example.replace("\n", " ")
    assert signature_hex == signed.signature.hex()
    assert signed.record_hash.hex() in example
    public = key.public_key().public_bytes(serialization.Encoding.Raw,
                                           serialization.PublicFormat.Raw).hex()
    assert public in example
