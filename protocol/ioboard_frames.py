"""Frames between a gate terminal and its I/O board, and the link that carries them.

Written once, in the subset both CPython and MicroPython run (no ``__future__``, no
dataclasses, no ``typing`` at run time, no ``del`` on a bytearray slice): the firmware
on the RP2040 (``firmware/rp2040/``, where this file is copied as ``ioboard_frames.py``)
and the terminal's driver (:mod:`terminal_fw.ioboard`) import the same code, so the two
sides cannot disagree about a byte.

A frame on the wire (docs/ioboard.md gives it byte by byte)::

    COBS( version | seq | type | payload (0..48 bytes) | CRC-16 big-endian ) 0x00

The CRC is CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) over version..payload. COBS
removes every zero byte, so 0x00 only ever ends a frame: a receiver that starts in the
middle of a frame, or sees garbage, loses at most that frame and is in step again at
the next zero.

:class:`Link` is the reliability layer, sans-IO (bytes and milliseconds in, bytes
out): every message but an acknowledgement carries a sequence number and is repeated
until the peer acknowledges it; the receiver acknowledges every copy and acts on a
sequence number only once. ``SYNC`` (terminal) and ``HELLO`` (board) start a new
session: the receiving side forgets its duplicate filter, so a restarted peer whose
numbers start again is heard.
"""

VERSION = 1
MAX_PAYLOAD = 48
MAX_FRAME = MAX_PAYLOAD + 5  # version, seq, type, payload, CRC
MAX_ENCODED = MAX_FRAME + MAX_FRAME // 254 + 2  # COBS overhead and the delimiter

# --- message types: terminal -> board ---------------------------------------------
OPEN = 0x01  # ref (8) + timeout_ms (u16): open for one passage
REFUSE = 0x02  # red light and two beeps; the door stays locked
STATUS = 0x03  # token (u16): ask for STATE (also the terminal's heartbeat)
SYNC = 0x04  # session (u16): the terminal (re)started; forget old sequence numbers
# --- board -> terminal ----------------------------------------------------------------
HELLO = 0x41  # boot (u16), reset cause (u8), safe mode (u8), firmware version (u8)
PASSAGE = 0x42  # ref (8), outcome (u8), passages counted since boot (u32)
DOOR_FORCED = 0x43  # times forced since boot (u32)
STATE = 0x44  # mode (u8), inputs (u8), passages (u32), ref (8), token (u16) of the STATUS
SENSOR = 0x45  # sensor (u8), stuck (u8: 1 stuck, 0 working again)
# --- either way -----------------------------------------------------------------------
ACK = 0x7F  # the sequence number acknowledged (u8); never acknowledged itself

NAMES = {OPEN: "OPEN", REFUSE: "REFUSE", STATUS: "STATUS", SYNC: "SYNC", HELLO: "HELLO",
         PASSAGE: "PASSAGE", DOOR_FORCED: "DOOR_FORCED", STATE: "STATE", SENSOR: "SENSOR",
         ACK: "ACK"}
#: Types that start a new session on the receiving side.
SESSION_STARTS = (SYNC, HELLO)

# --- passage outcomes (PASSAGE) ---------------------------------------------------------
COMPLETED = 0  # the passage sensor saw one person through; the door locked behind them
NOT_TAKEN = 1  # nobody passed before the timeout; the door locked again
SENSOR_FAULT = 2  # the passage sensor is stuck: the door was not opened
BUSY = 3  # another passage was open: this one was not opened
OUTCOMES = {COMPLETED: "completed", NOT_TAKEN: "not_taken", SENSOR_FAULT: "sensor_fault",
            BUSY: "busy"}

# --- board modes (STATE) and inputs ------------------------------------------------------
MODE_LOCKED = 0
MODE_OPEN = 1  # open for one passage
MODE_SAFE_LOCKED = 2  # the terminal stopped talking; locked (the default)
MODE_SAFE_FREE = 3  # the terminal stopped talking; free passage (fire exits)
MODES = {MODE_LOCKED: "locked", MODE_OPEN: "open", MODE_SAFE_LOCKED: "safe_locked",
         MODE_SAFE_FREE: "safe_free"}
IN_PASSAGE = 1  # passage sensor active
IN_FORCED = 2  # door-forced sensor active
IN_STUCK = 4  # passage sensor judged stuck
SAFE_LOCKED = 0
SAFE_FREE = 1

# --- reset causes (HELLO) ------------------------------------------------------------
RESET_POWER_ON = 0
RESET_WATCHDOG = 1
RESET_SOFT = 2

REF_LEN = 8
NO_REF = b"\x00" * REF_LEN


class FrameError(ValueError):
    """A frame that cannot be taken: bad stuffing, bad CRC, wrong version or length."""


def crc16(data, crc=0xFFFF):
    """CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection (check value 0x29B1)."""
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            if crc & 0x8000:
                crc = ((crc << 1) ^ 0x1021) & 0xFFFF
            else:
                crc = (crc << 1) & 0xFFFF
    return crc


def cobs_encode(data):
    """Consistent Overhead Byte Stuffing: the result holds no zero byte."""
    out = bytearray()
    block = bytearray()
    for byte in data:
        if byte == 0:
            out.append(len(block) + 1)
            out.extend(block)
            block = bytearray()
        else:
            block.append(byte)
            if len(block) == 254:
                out.append(255)
                out.extend(block)
                block = bytearray()
    out.append(len(block) + 1)
    out.extend(block)
    return bytes(out)


def cobs_decode(data):
    """The bytes ``cobs_encode`` made ``data`` from; FrameError for anything else."""
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        code = data[i]
        if code == 0:
            raise FrameError("zero byte inside a frame")
        end = i + code
        if end > n:
            raise FrameError("COBS block runs past the frame")
        for byte in data[i + 1:end]:
            if byte == 0:
                raise FrameError("zero byte inside a frame")
        out.extend(data[i + 1:end])
        i = end
        if code != 255 and i < n:
            out.append(0)
    return bytes(out)


def encode_frame(seq, kind, payload=b""):
    """One frame, stuffed and delimited, ready for the UART."""
    if not 0 <= seq <= 255 or not 0 <= kind <= 255:
        raise FrameError("seq and type are one byte each")
    if len(payload) > MAX_PAYLOAD:
        raise FrameError(f"payload of {len(payload)} bytes, the most is {MAX_PAYLOAD}")
    body = bytes([VERSION, seq, kind]) + bytes(payload)
    crc = crc16(body)
    return cobs_encode(body + bytes([crc >> 8, crc & 0xFF])) + b"\x00"


def decode_frame(stuffed):
    """``(seq, type, payload)`` of one frame without its 0x00 delimiter."""
    body = cobs_decode(stuffed)
    if len(body) < 5 or len(body) > MAX_FRAME:
        raise FrameError(f"frame of {len(body)} bytes")
    if crc16(body[:-2]) != (body[-2] << 8) | body[-1]:
        raise FrameError("CRC mismatch")
    if body[0] != VERSION:
        raise FrameError(f"frame version {body[0]}")
    return body[1], body[2], bytes(body[3:-2])


class FrameReader:
    """Splits a byte stream into frames. Garbled or oversized frames are counted and
    dropped; the reader is in step again after the next 0x00."""

    def __init__(self):
        self.buffer = bytearray()
        self.overflow = False
        self.errors = 0

    def feed(self, data):
        """The frames completed by ``data``: a list of ``(seq, type, payload)``."""
        frames = []
        for byte in data:
            if byte != 0:
                if len(self.buffer) < MAX_ENCODED:
                    self.buffer.append(byte)
                else:
                    self.overflow = True
                continue
            if self.overflow:
                self.errors += 1
            elif self.buffer:
                try:
                    frames.append(decode_frame(bytes(self.buffer)))
                except FrameError:
                    self.errors += 1
            self.buffer = bytearray()
            self.overflow = False
        return frames


# --- payloads ------------------------------------------------------------------------------


def u16(value):
    return bytes([(value >> 8) & 0xFF, value & 0xFF])


def u32(value):
    return bytes([(value >> 24) & 0xFF, (value >> 16) & 0xFF, (value >> 8) & 0xFF, value & 0xFF])


def get_u16(data, at):
    if len(data) < at + 2:
        raise FrameError("payload too short")
    return (data[at] << 8) | data[at + 1]


def get_u32(data, at):
    if len(data) < at + 4:
        raise FrameError("payload too short")
    return (data[at] << 24) | (data[at + 1] << 16) | (data[at + 2] << 8) | data[at + 3]


def get_ref(data, at):
    if len(data) < at + REF_LEN:
        raise FrameError("payload too short")
    return bytes(data[at:at + REF_LEN])


def open_payload(ref, timeout_ms):
    if len(ref) != REF_LEN:
        raise FrameError(f"a passage reference is {REF_LEN} bytes")
    return bytes(ref) + u16(max(0, min(65535, int(timeout_ms))))


def parse_open(payload):
    """``(ref, timeout_ms)``."""
    return get_ref(payload, 0), get_u16(payload, REF_LEN)


def passage_payload(ref, outcome, passages):
    return bytes(ref) + bytes([outcome]) + u32(passages)


def parse_passage(payload):
    """``(ref, outcome, passages)``."""
    if len(payload) < REF_LEN + 5:
        raise FrameError("payload too short")
    return get_ref(payload, 0), payload[REF_LEN], get_u32(payload, REF_LEN + 1)


def hello_payload(boot, cause, safe_mode, firmware):
    return u16(boot) + bytes([cause, safe_mode, firmware])


def parse_hello(payload):
    """``(boot, reset cause, safe mode, firmware version)``."""
    if len(payload) < 5:
        raise FrameError("payload too short")
    return get_u16(payload, 0), payload[2], payload[3], payload[4]


def state_payload(mode, inputs, passages, ref, token=0):
    return bytes([mode, inputs]) + u32(passages) + bytes(ref) + u16(token)


def parse_state(payload):
    """``(mode, inputs, passages, ref, token)``: ``token`` is the one of the STATUS this
    answers. The board's messages leave in order, so every report queued before that
    STATUS arrived has reached the terminal before this STATE."""
    if len(payload) < 8 + REF_LEN:
        raise FrameError("payload too short")
    return (payload[0], payload[1], get_u32(payload, 2), get_ref(payload, 6),
            get_u16(payload, 6 + REF_LEN))


# --- the link --------------------------------------------------------------------------------


class Link:
    """Stop-and-wait reliability over frames, without I/O: feed it what the UART read
    (:meth:`receive`), write what :meth:`transmit` returns.

    One message is in flight at a time; it is sent again every ``retry_ms`` (doubling up
    to ``max_retry_ms``) until acknowledged, at most ``max_tries`` times (0: forever —
    the board never gives up a passage report). A message given up on lands in
    :attr:`failed`. At most ``max_queue`` messages wait; past that the oldest message
    whose type is in ``droppable`` goes first, and a message is refused (False) if none is.
    """

    def __init__(self, retry_ms=120, max_retry_ms=1000, max_tries=0, max_queue=32,
                 droppable=(STATE, SENSOR)):
        self.reader = FrameReader()
        self.retry_ms = retry_ms
        self.max_retry_ms = max_retry_ms
        self.max_tries = max_tries
        self.max_queue = max_queue
        self.droppable = droppable
        self.queue = []  # [seq, type, payload, tries, next_ms, interval]
        self.acks = []
        self.failed = []
        self.next_seq = 0
        self.last_rx_seq = -1
        self.duplicates = 0
        self.dropped = 0

    @property
    def errors(self):
        """Frames that arrived garbled (bad stuffing, CRC, length or version)."""
        return self.reader.errors

    def send(self, kind, payload=b""):
        """Queue a message; its sequence number, or -1 if the queue is full."""
        if len(self.queue) >= self.max_queue:
            for i in range(1, len(self.queue)):  # never the one in flight
                if self.queue[i][1] in self.droppable:
                    self.queue.pop(i)
                    self.dropped += 1
                    break
            else:
                return -1
        seq = self.next_seq
        self.next_seq = (seq + 1) & 0xFF
        self.queue.append([seq, kind, bytes(payload), 0, 0, self.retry_ms])
        return seq

    def forget_queue(self):
        """Drop everything not yet acknowledged (the peer restarted: it was for the last
        session). Returns what was dropped as ``(seq, type, payload)``."""
        gone = [(m[0], m[1], m[2]) for m in self.queue]
        self.queue = []
        return gone

    def pending(self):
        return len(self.queue)

    def receive(self, data):
        """The new messages in ``data``, as ``(type, payload)``; duplicates of the last
        message are acknowledged again and left out; acknowledgements are consumed."""
        fresh = []
        for seq, kind, payload in self.reader.feed(data):
            if kind == ACK:
                if payload and self.queue and self.queue[0][0] == payload[0] \
                        and self.queue[0][3] > 0:
                    self.queue.pop(0)
                continue
            self.acks.append(seq)
            if kind in SESSION_STARTS:
                self.last_rx_seq = -1
            if seq == self.last_rx_seq:
                self.duplicates += 1
                continue
            self.last_rx_seq = seq
            fresh.append((kind, payload))
        return fresh

    def transmit(self, now_ms):
        """The bytes to write now: acknowledgements first, then the message in flight
        when it is due (first sending or a retry)."""
        out = bytearray()
        for seq in self.acks:
            out.extend(encode_frame(0, ACK, bytes([seq])))
        self.acks = []
        while self.queue:
            head = self.queue[0]
            if head[3] and _ticks_diff(now_ms, head[4]) < 0:
                break
            if self.max_tries and head[3] >= self.max_tries:
                self.queue.pop(0)
                self.failed.append((head[0], head[1], head[2]))
                continue
            out.extend(encode_frame(head[0], head[1], head[2]))
            if head[3]:
                head[5] = min(head[5] * 2, self.max_retry_ms)
            head[3] += 1
            head[4] = now_ms + head[5]
            break
        return bytes(out)


def _ticks_diff(a, b):
    """a - b for millisecond clocks (MicroPython's ticks wrap; CPython's do not)."""
    return a - b
