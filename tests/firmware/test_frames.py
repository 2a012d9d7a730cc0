"""The frame codec and link both sides run: stuffing, CRC, resynchronisation, retries."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import ioboard_frames as frames

payloads = st.binary(max_size=frames.MAX_PAYLOAD)


def test_crc16_is_ccitt_false() -> None:
    assert frames.crc16(b"123456789") == 0x29B1  # the catalogue's check value


@given(st.binary(max_size=600))
def test_cobs_round_trips_and_leaves_no_zero(data: bytes) -> None:
    stuffed = frames.cobs_encode(data)
    assert 0 not in stuffed
    assert frames.cobs_decode(stuffed) == data


@given(st.integers(0, 255), st.integers(0, 255), payloads)
def test_a_frame_decodes_to_what_was_encoded(seq: int, kind: int, payload: bytes) -> None:
    wire = frames.encode_frame(seq, kind, payload)
    assert wire.endswith(b"\x00") and 0 not in wire[:-1]
    assert len(wire) <= frames.MAX_ENCODED
    assert frames.FrameReader().feed(wire) == [(seq, kind, payload)]


@settings(max_examples=300)
@given(payloads, st.data())
def test_a_garbled_frame_is_dropped_and_the_next_one_is_read(payload: bytes, data) -> None:
    wire = bytearray(frames.encode_frame(7, frames.PASSAGE, payload))
    at = data.draw(st.integers(0, len(wire) - 2))
    flip = data.draw(st.integers(1, 255))
    wire[at] ^= flip
    reader = frames.FrameReader()
    good = frames.encode_frame(8, frames.STATE, b"ok")
    # one damaged byte never passes as a frame (CRC-16 catches it); the next frame is read
    assert reader.feed(bytes(wire) + good) == [(8, frames.STATE, b"ok")]
    assert reader.errors >= 1


@given(st.binary(max_size=400))
def test_noise_never_raises_and_the_stream_recovers(noise: bytes) -> None:
    reader = frames.FrameReader()
    reader.feed(noise)
    good = frames.encode_frame(1, frames.HELLO, b"\x00\x01\x00\x00\x01")
    assert reader.feed(b"\x00" + good)[-1] == (1, frames.HELLO, b"\x00\x01\x00\x00\x01")


def test_oversized_frames_are_refused_on_both_sides() -> None:
    reader = frames.FrameReader()
    assert reader.feed(b"\x01" * 500 + b"\x00") == [] and reader.errors == 1
    try:
        frames.encode_frame(0, frames.OPEN, b"x" * (frames.MAX_PAYLOAD + 1))
    except frames.FrameError:
        pass
    else:
        raise AssertionError("an oversized payload was encoded")


def _pump(a: frames.Link, b: frames.Link, now: int, lose_a_to_b: int = 0,
          lose_b_to_a: int = 0) -> tuple[list, list]:
    """One exchange; the first ``lose_*`` bytes of output are lost."""
    out_a = a.transmit(now)
    out_b = b.transmit(now)
    return (b.receive(b"" if lose_a_to_b else out_a), a.receive(b"" if lose_b_to_a else out_b))


def test_a_message_whose_ack_is_lost_is_repeated_and_taken_once() -> None:
    pi, board = frames.Link(retry_ms=10), frames.Link(retry_ms=10)
    pi.send(frames.OPEN, frames.open_payload(b"R" * 8, 5000))
    now = 0
    at_board, _ = _pump(pi, board, now)
    assert at_board == [(frames.OPEN, b"R" * 8 + b"\x13\x88")]
    board.transmit(now)  # the board's ack is lost on the way
    taken = list(at_board)
    for _ in range(5):
        now += 50
        at_board, _ = _pump(pi, board, now)
        taken += at_board
    assert taken == [(frames.OPEN, b"R" * 8 + b"\x13\x88")] and board.duplicates >= 1
    assert pi.pending() == 0


def test_a_restarted_peer_is_heard_although_its_numbers_start_again() -> None:
    board = frames.Link()
    old = frames.Link()
    old.send(frames.STATUS)
    assert board.receive(old.transmit(0)) == [(frames.STATUS, b"")]
    new = frames.Link()  # the terminal restarted: seq 0 again
    new.send(frames.STATUS)
    assert board.receive(new.transmit(0)) == []  # a duplicate, by its number...
    newer = frames.Link()
    newer.send(frames.SYNC, frames.u16(9))
    newer.send(frames.STATUS)
    got = board.receive(newer.transmit(0))
    newer.receive(board.transmit(0))  # the acknowledgement lets the next message go
    got += board.receive(newer.transmit(1))
    assert got == [(frames.SYNC, b"\x00\x09"), (frames.STATUS, b"")]  # ...unless it says SYNC


def test_the_terminal_gives_up_after_its_tries_and_the_board_never_does() -> None:
    pi = frames.Link(max_tries=3, retry_ms=10)
    pi.send(frames.OPEN, frames.open_payload(b"A" * 8, 100))
    for now in range(0, 2000, 10):
        pi.transmit(now)
    assert pi.pending() == 0 and [f[1] for f in pi.failed] == [frames.OPEN]
    board = frames.Link(max_tries=0, retry_ms=10)
    board.send(frames.PASSAGE, frames.passage_payload(b"A" * 8, frames.COMPLETED, 1))
    sent = sum(bool(board.transmit(now)) for now in range(0, 60_000, 10))
    assert board.pending() == 1 and sent > 50 and not board.failed


def test_a_full_queue_drops_state_reports_never_passages() -> None:
    link = frames.Link(max_queue=3)
    link.send(frames.PASSAGE, frames.passage_payload(b"1" * 8, 0, 1))
    link.send(frames.STATE, b"")
    link.send(frames.PASSAGE, frames.passage_payload(b"2" * 8, 0, 2))
    assert link.send(frames.PASSAGE, frames.passage_payload(b"3" * 8, 0, 3)) >= 0
    assert [m[1] for m in link.queue] == [frames.PASSAGE] * 3
    assert link.send(frames.PASSAGE, b"") == -1


def test_the_worked_example_in_docs_matches_the_encoder() -> None:
    import re
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "ioboard.md").read_text()
    example = doc.split("### Worked example", 1)[1]
    before, stuffed, ack = (bytes.fromhex(b) for b in re.findall(r"```text\n(.*?)```", example,
                                                                   re.S)[:3])
    payload = frames.open_payload(bytes.fromhex("0123456789abcdef"), 8000)
    assert stuffed == frames.encode_frame(5, frames.OPEN, payload)
    assert frames.cobs_decode(stuffed[:-1]) == before
    assert ack == frames.encode_frame(0, frames.ACK, b"\x05")
