"""The card format: keys, MACs, the two copies, and what a damaged or copied card reads as."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.card_format import (
    COPY_BLOCKS,
    CardFormatError,
    decode_value_block,
    encode_value_block,
    personalise_image,
    read_image,
    state_writes,
    write_image,
)
from protocol.card_state import CardState, RefusalReason
from protocol.keys import ChainKeys, aes_cmac, an10922_aes128, decode_access_bits
from simulators.mifare_classic import MifareClassic1K
from tests.card_world import CATALOGUE, CHAIN, KEYS, UID

NAMES = ["swim", "gym", "sauna", "yoga"]


def test_an10922_published_vector() -> None:
    key = an10922_aes128(
        bytes.fromhex("00112233445566778899AABBCCDDEEFF"), bytes.fromhex("04782E21801D80"),
        bytes.fromhex("3042F5"), b"NXP Abu",
    )
    assert key.hex().upper() == "A8DD63A3B89D54B37CA802473FDA9175"


def test_aes_cmac_rfc4493_vectors() -> None:
    key = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
    assert aes_cmac(key, b"").hex() == "bb1d6929e95937287fa37d129b756746"
    msg = bytes.fromhex("6bc1bee22e409f96e93d7e117393172a")
    assert aes_cmac(key, msg).hex() == "070a16b46b4d4144f79bdd9dd04a287c"


def test_sector_keys_are_per_card_per_sector_and_per_role() -> None:
    other_uid = bytes.fromhex("11223345")
    keys_a = {KEYS.key_a(UID, s) for s in (1, 2, 3)}
    assert len(keys_a) == 3 and all(len(k) == 6 for k in keys_a)
    assert KEYS.key_a(UID, 1) != KEYS.key_a(other_uid, 1)
    assert KEYS.key_a(UID, 1) != KEYS.key_b(UID, 1)
    assert KEYS.mac_key(UID) != KEYS.mac_key(other_uid) and len(KEYS.mac_key(UID)) == 16
    full = an10922_aes128(KEYS.read_master, UID, bytes.fromhex("4F4331"),
                          b"OneCard" + CHAIN.to_bytes(4, "big") + b"\x01")
    assert KEYS.key_a(UID, 1) == full[:6]
    with pytest.raises(PermissionError):
        KEYS.read_only().key_b(UID, 1)


def test_value_block_example_from_the_datasheet() -> None:
    assert encode_value_block(100, 5).hex().upper() == "640000009BFFFFFF6400000005FA05FA"
    assert decode_value_block(encode_value_block(-7, 9)) == (-7, 9)
    assert decode_value_block(bytes.fromhex("640000009BFFFFFF6400000105FA05FA")) is None


def issued_image(state: CardState, uid: bytes = UID) -> bytes:
    return personalise_image(MifareClassic1K.blank(uid).to_mfd(), state, KEYS, CATALOGUE)


BASE = CardState(card_id="M00001", chain_id=CHAIN, card_product="gold", issued_day=8918,
                 expiry_day=10013, counter=1)

states = st.builds(
    lambda purse, visits, counter, flags, pass_, last, uses, group: replace(
        BASE, purse_fen=purse, visits=visits, counter=counter, blocked=flags[0],
        account_open=flags[1], recalled=flags[2],
        pass_product="month" if pass_ else "", pass_from_day=pass_[0] if pass_ else 0,
        pass_to_day=pass_[1] if pass_ else 0, last_use_day=last[0], last_use_minute=last[1],
        uses_today=uses, last_gate_group=group),
    st.integers(0, 2**31 - 1),
    st.dictionaries(st.sampled_from(NAMES), st.integers(0, 65535), max_size=3),
    st.integers(1, 2**32 - 2),
    st.tuples(st.booleans(), st.booleans(), st.booleans()),
    st.none() | st.tuples(st.integers(0, 65535), st.integers(0, 65535)),
    st.tuples(st.integers(0, 65535), st.integers(0, 1439)),
    st.integers(0, 15), st.integers(0, 15),
)


@settings(max_examples=300, deadline=None)
@given(states)
def test_every_state_round_trips_through_the_card_image(state: CardState) -> None:
    image = issued_image(state)
    read = read_image(image, KEYS, CATALOGUE)
    assert read.state == state
    assert read.both_copies_current


def test_layout_blocks_and_trailers() -> None:
    image = issued_image(replace(BASE, purse_fen=12345))
    assert image[64:66] == b"OC" and image[66] == 1 and image[80:86] == b"M00001"
    for block in (8, 12):
        assert decode_value_block(image[block * 16 : block * 16 + 16]) == (12345, block)
    for sector in (1, 2, 3):
        t = image[(sector * 4 + 3) * 16 :][:16]
        assert t[0:6] == KEYS.key_a(UID, sector) and t[10:16] == KEYS.key_b(UID, sector)
        assert decode_access_bits(t[6:9]) == (4, 4, 4, 3)
    assert image[48:64] == MifareClassic1K.blank(UID).to_mfd()[48:64]  # sector 0 untouched


def test_every_single_bit_flip_is_rejected_or_repaired() -> None:
    state = replace(BASE, purse_fen=8800, visits={"swim": 7, "gym": 3}, account_open=True,
                    pass_product="month", pass_from_day=8918, pass_to_day=8947,
                    last_use_day=8918, last_use_minute=600, uses_today=2, last_gate_group=1)
    image = issued_image(state)
    outcomes = {"same": 0, "rejected": 0}
    for byte in range(1024):
        for bit in range(8):
            flipped = bytearray(image)
            flipped[byte] ^= 1 << bit
            try:
                got = read_image(bytes(flipped), KEYS, CATALOGUE).state
            except CardFormatError:
                outcomes["rejected"] += 1
                continue
            assert got == state, f"bit {bit} of byte {byte} changed the state"
            outcomes["same"] += 1
    # the header and block 0 have no second copy: those flips are rejected
    assert outcomes["rejected"] >= 4 * 8 + 3 * 16 * 8


def test_a_dump_copied_onto_another_uid_fails() -> None:
    image = issued_image(replace(BASE, purse_fen=5000))
    other = bytearray(MifareClassic1K.blank(bytes.fromhex("A1B2C3D4")).to_mfd())
    other[64:] = image[64:]
    with pytest.raises(CardFormatError) as err:
        read_image(bytes(other), KEYS, CATALOGUE)
    assert err.value.reason is RefusalReason.TAMPERED


def test_an_edited_purse_with_a_valid_value_block_fails_its_mac() -> None:
    image = bytearray(issued_image(replace(BASE, purse_fen=5000)))
    for block in (8, 12):
        image[block * 16 : block * 16 + 16] = encode_value_block(999_999, block)
    with pytest.raises(CardFormatError) as err:
        read_image(bytes(image), KEYS, CATALOGUE)
    assert err.value.reason is RefusalReason.DAMAGED


def test_unreadable_cards_each_have_their_reason() -> None:
    blank = MifareClassic1K.blank(UID).to_mfd()
    with pytest.raises(CardFormatError) as err:
        read_image(blank, KEYS, CATALOGUE)
    assert err.value.reason is RefusalReason.NOT_ONECARD
    image = bytearray(issued_image(BASE))
    image[66] = 2
    with pytest.raises(CardFormatError) as err:
        read_image(bytes(image), KEYS, CATALOGUE)
    assert err.value.reason is RefusalReason.UNKNOWN_FORMAT
    other_chain = ChainKeys(CHAIN + 1, KEYS.read_master, KEYS.write_master, KEYS.mac_master)
    with pytest.raises(CardFormatError) as err:
        read_image(issued_image(BASE), other_chain, CATALOGUE)
    assert err.value.reason is RefusalReason.WRONG_CHAIN
    with pytest.raises(CardFormatError) as err:
        read_image(issued_image(BASE)[:1000], KEYS, CATALOGUE)
    assert err.value.reason is RefusalReason.DAMAGED


def test_unknown_product_codes_survive_a_rewrite() -> None:
    image = issued_image(replace(BASE, visits={"swim": 4}))
    older = type(CATALOGUE)(card_products=(replace(CATALOGUE.card_products[0], count_products=(),
                                                   passes=()),))  # knows no count products
    read = read_image(image, KEYS, older)
    assert read.state.visits == {"product#10": 4}
    image2 = write_image(image, replace(read.state, counter=read.state.counter + 1), KEYS, older)
    assert read_image(image2, KEYS, CATALOGUE).state.visits == {"swim": 4}


def _apply(image: bytes, writes: list[tuple[int, bytes]]) -> bytes:
    out = bytearray(image)
    for b, data in writes:
        out[b * 16 : b * 16 + 16] = data
    return bytes(out)


@settings(max_examples=1500, deadline=None)
@given(states, states, st.integers(0, 5), st.sampled_from(["before", "after", "garbage"]),
       st.binary(min_size=16, max_size=16), st.sampled_from(["both", "junk0", "junk1"]))
def test_a_write_torn_anywhere_leaves_the_old_or_the_new_state(
    old: CardState, new: CardState, torn_at: int, mode: str, junk: bytes, other: str
) -> None:
    """Pure-code tear property: cut the write sequence at any block, in any way."""
    new = replace(new, counter=old.counter + 1)
    image = issued_image(old)
    if other != "both":  # one copy is junk left by an earlier tear
        image = _apply(image, [(b, junk) for b in COPY_BLOCKS[int(other[-1])]])
    read = read_image(image, KEYS, CATALOGUE)
    commit, mirror = state_writes(read, new, KEYS, CATALOGUE)
    assert commit[0][0] in COPY_BLOCKS[1 - read.newest_slot]
    writes = commit + mirror
    block, data = writes[torn_at]
    before = image[block * 16 : block * 16 + 16]
    landed = {"before": before, "after": data,
              "garbage": bytes(a ^ b for a, b in zip(data, junk, strict=True))}[mode]
    torn = _apply(_apply(image, writes[:torn_at]), [(block, landed)])
    got = read_image(torn, KEYS, CATALOGUE).state
    committed = torn_at > 2 or (torn_at == 2 and landed == data)
    assert got == (new if committed else old)


def test_worked_example_in_the_doc_matches_the_code() -> None:
    import re
    from pathlib import Path

    from protocol.card_format import encode_application
    from protocol.keys import ONECARD_ACCESS, encode_access_bits
    from protocol.products import date_of

    text = (Path(__file__).parents[2] / "docs" / "card-format.md").read_text()
    example = text.split("## 10. Worked example", 1)[1]
    state = CardState(
        card_id="M00001", purse_fen=12345, visits={"swim": 9, "gym": 12}, counter=5, chain_id=7,
        card_product="gold", issued_day=8918, expiry_day=10012, account_open=True,
        pass_product="month", pass_from_day=8918, pass_to_day=8947, last_use_day=8920,
        last_use_minute=615, uses_today=2, last_gate_group=1,
    )
    assert (date_of(8918).isoformat(), date_of(10012).isoformat()) == ("2024-06-01", "2027-05-31")
    blocks = encode_application(state, UID, KEYS, CATALOGUE)
    shown = dict(re.findall(r"block +(\d+): ([0-9A-F ]{47})", example))
    assert {int(b): bytes.fromhex(h) for b, h in shown.items()} == blocks
    for sector in (1, 2, 3):
        assert f"| {sector} | `{KEYS.key_a(UID, sector).hex().upper()}` | " \
               f"`{KEYS.key_b(UID, sector).hex().upper()}` |" in example
    assert f"MAC key: `{KEYS.mac_key(UID).hex().upper()}`" in example
    assert encode_access_bits(ONECARD_ACCESS).hex(" ").upper() in example
    assert read_image(personalise_image(MifareClassic1K.blank(UID).to_mfd(), state, KEYS,
                                        CATALOGUE), KEYS, CATALOGUE).state == state
