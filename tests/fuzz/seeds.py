"""Writes the seed corpus of tests/fuzz/corpus/ (a few valid inputs per target).

The corpus is kept in the repository; run ``python -m tests.fuzz.seeds`` again only when
a format changes, and add findings worth keeping by hand (see docs/testing.md).
"""

from __future__ import annotations

import json
from dataclasses import replace

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol import ioboard_frames as io
from protocol import pcsc_apdu as apdu
from protocol import pn532_frames as pn
from protocol.card_format import personalise_image
from protocol.card_state import CardState
from protocol.fleet import (
    Command,
    CommandResult,
    ConfigReport,
    TimeSample,
    UidAuthRequest,
    UidAuthResponse,
)
from protocol.record import GENESIS_HASH, Operation, TransactionRecord
from protocol.topics import Ack, Birth, Death, Heartbeat
from simulators.mifare_classic import MifareClassic1K
from tests.card_world import CATALOGUE, CHAIN, KEYS, UID
from tests.fuzz.targets import CORPUS, MESSAGE_CLASSES
from tests.runtime_world import config_doc


def seeds() -> dict[str, list[bytes]]:
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    visit = TransactionRecord(
        device_id="gate-01", seq=1, prev_hash=GENESIS_HASH, device_time_ms=1_795_000_000_000,
        card_id="M00001", operation=Operation.TAKE_VISIT, store="store-01", product="swim",
        visits_before=10, visits_after=9, card_counter=7, operator="张三")
    records = [visit.sign(key).wire,
               replace(visit, seq=2, extra={"note": "a", "n": [1, 2.5, None]}).sign(key).wire]
    messages = [Ack(7, (9, 11)), Birth(3, 1_795_000_000_000, "1.0", "gate", "store-01",
                                        readers={"pcsc": "ok"}),
                Death(3), Heartbeat(3, 1_795_000_000_000, 2, readers={"pn532": "absent"}),
                ConfigReport(4, 5, "bad"), UidAuthRequest("r-1", "0012345678", "em4100", 3000),
                UidAuthResponse("r-1", True, approval="a-9"), Command("c-1", "reboot", {"x": 1}),
                CommandResult("c-1", "reboot", True, data={"y": "z"}), TimeSample(5, 6)]
    message_seeds = [bytes([MESSAGE_CLASSES.index(type(m))]) + m.to_json()
                     for m in messages if m is not None]
    state = CardState(card_id="M00001", chain_id=CHAIN, card_product="gold", issued_day=8918,
                      expiry_day=10013, counter=1, purse_fen=12345)
    blank = MifareClassic1K.blank(UID).to_mfd()
    images = [personalise_image(blank, state, KEYS, CATALOGUE),
              personalise_image(blank, replace(state, counter=9, visits={"swim": 3}), KEYS, CATALOGUE)]
    pn532 = [pn.host_command(pn.IN_LIST_PASSIVE_TARGET, b"\x01\x00"),
             pn.ACK + pn.chip_response(pn.GET_FIRMWARE_VERSION, b"\x32\x01\x06\x07"),
             pn.NACK + pn.ERROR_FRAME + pn.build_frame(0xD5, bytes(300))]
    apdus = [apdu.get_uid(), apdu.load_key(0, bytes(6)), apdu.authenticate(4, 0x60, 0),
             apdu.read_binary(4, 48), apdu.update_binary(5, bytes(range(16))),
             apdu.value_operation(8, apdu.ValueOp.DECREMENT, 100), apdu.restore_value(8, 9),
             apdu.read_value(8), b"\x00\x00\x01\x2c\x90\x00"]
    serial = [b"\x00\x00" + b"0012345678\r\n", b"\x00\x05" + b"\x020A0B0C0D0E0E\x03",
              b"\x01\x03" + b"https://example.com/m/M00001\n\r\nsecond\n"]
    ioboard = [io.encode_frame(1, io.OPEN, io.open_payload(b"ABCDEFGH", 3000))[:-1],
               io.encode_frame(2, io.HELLO, io.hello_payload(1, 0, 0, 3)),
               io.state_payload(1, 3, 77, b"ABCDEFGH", 5),
               io.encode_frame(3, io.ACK, b"\x02") + io.encode_frame(4, io.PASSAGE,
                                                                    io.passage_payload(bytes(8), 0, 1)),
               ]
    configs = [json.dumps(config_doc(1)).encode(),
               json.dumps({"version": 2, "opening_hours": {"mon": ["08:00-12:00"]},
                           "utc_offset_minutes": -300}).encode()]
    return {"record": records, "messages": message_seeds, "card_image": images, "pn532": pn532,
            "pcsc_apdu": apdus, "serial_uid": serial, "ioboard": ioboard, "config": configs}


def main() -> None:
    for name, inputs in seeds().items():
        folder = CORPUS / name
        folder.mkdir(parents=True, exist_ok=True)
        for i, data in enumerate(inputs):
            (folder / f"seed-{i:02d}").write_bytes(data)


if __name__ == "__main__":
    main()
