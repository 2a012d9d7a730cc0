"""Run a simulated ID-card reader or QR scanner on a pty (``onecard sim idcard`` / ``sim qr``).

The emulators of :mod:`simulators.uid_readers` stay open on a pseudo-terminal whose path
is printed for the terminal's settings (``--uid-reader PATH:em4100``). A credential is
presented on demand: each line read from ``lines`` (the command's stdin) is one card held
to the reader or one code scanned, an empty line presents the default credential again,
and ``every`` presents the default credential on a timer, for soak tests. A line that is
not a credential is reported and skipped: the reader keeps running.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from simulators.uid_readers import Em4100ReaderEmulator, QrScannerEmulator


def present_em4100(reader: Em4100ReaderEmulator, text: str) -> str:
    """Hold ID card ``text`` (the tag's 10 hex digits, as HQ registers it) to the reader."""
    text = text.strip()
    if len(text) != 10 or not all(c in "0123456789abcdefABCDEF" for c in text):
        raise ValueError(f"{text[:40]!r} is not an ID card number (10 hex digits)")
    reader.present_tag(int(text, 16))
    return text.upper()


def present_qr(scanner: QrScannerEmulator, text: str) -> str:
    """Scan a code whose text is ``text`` (one line, not empty)."""
    text = text.strip("\r\n")
    if not text or "\r" in text or "\n" in text:
        raise ValueError("a scanned code is one line of text")
    scanner.scan(text)
    return text


def serve_credentials(present: Callable[[str], str], *, lines: Iterable[str] | None,
                      credential: str | None, every: float | None,
                      say: Callable[[str], None], stop: threading.Event) -> None:
    """Present credentials from ``lines`` and every ``every`` seconds until ``stop``."""

    def one(text: str) -> None:
        try:
            say(f"presented {present(text)}")
        except ValueError as exc:
            say(f"not presented: {exc}")

    def read_lines() -> None:
        for line in lines or ():
            if stop.is_set():
                return
            text = line.rstrip("\r\n")
            if text.strip():
                one(text)
            elif credential:
                one(credential)

    if lines is not None:
        threading.Thread(target=read_lines, name="credentials", daemon=True).start()
    if every is not None and credential:
        while not stop.wait(every):
            one(credential)
    stop.wait()


def run_idcard(*, framing: str, credential: str | None, every: float | None, lines,
               say: Callable[[str], None], stop: threading.Event) -> None:
    with Em4100ReaderEmulator(framing) as reader:
        say(f"ID-card reader on {reader.path} ({framing} framing, settings "
            f"--uid-reader {reader.path}:em4100)")
        say("Type a card number (10 hex digits) and Enter to hold it to the reader. "
            "Ctrl-C to stop.")
        serve_credentials(lambda t: present_em4100(reader, t), lines=lines,
                          credential=credential, every=every, say=say, stop=stop)


def run_qr(*, suffix: bytes, credential: str | None, every: float | None, lines,
           say: Callable[[str], None], stop: threading.Event) -> None:
    with QrScannerEmulator(suffix) as scanner:
        say(f"QR scanner on {scanner.path} (settings --uid-reader {scanner.path}:qr)")
        say("Type a code's text and Enter to scan it. Ctrl-C to stop.")
        serve_credentials(lambda t: present_qr(scanner, t), lines=lines,
                          credential=credential, every=every, say=say, stop=stop)
