"""pcscd and virtual PC/SC readers for tests (import the fixtures into a test module).

pcscd is one system daemon: we share a running one, or start ``pcscd -f`` ourselves
(there is no systemd here) and stop it at the end. The two vpcd slots (TCP 35963 and
35964) are a machine-wide resource too, so the tests that use them hold a file lock:
two test runs on one machine take turns instead of stealing each other's reader.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.conftest import require

PCSCD_SOCKET = "/run/pcscd/pcscd.comm"
VPCD_DRIVER = "/usr/lib/pcsc/drivers/serial/libifdvpcd.so"
LOCK_PATH = "/tmp/onecard-vpcd.lock"


def have_pcscd() -> bool:
    return (shutil.which("pcscd") is not None or os.path.exists("/usr/sbin/pcscd")) and \
        os.path.exists(VPCD_DRIVER)


def _pcscd_answers() -> bool:
    if not os.path.exists(PCSCD_SOCKET):
        return False
    try:
        from smartcard import scard

        hresult, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
        if hresult != scard.SCARD_S_SUCCESS:
            return False
        hresult, readers = scard.SCardListReaders(ctx, [])
        scard.SCardReleaseContext(ctx)
        return hresult == scard.SCARD_S_SUCCESS and any("Virtual PCD" in r for r in readers)
    except Exception:
        return False


@contextlib.contextmanager
def running_pcscd() -> Iterator[None]:
    """Share the machine's pcscd, or run our own for the duration."""
    if _pcscd_answers():
        yield
        return
    pcscd = shutil.which("pcscd") or "/usr/sbin/pcscd"
    if os.path.exists(PCSCD_SOCKET):
        os.unlink(PCSCD_SOCKET)  # left over from a pcscd that died
    proc = subprocess.Popen([pcscd, "-f"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while not _pcscd_answers():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("pcscd did not come up")
            time.sleep(0.1)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


_held = 0  # how many session fixtures of this process hold the machine-wide lock


@contextlib.contextmanager
def vpcd_lock() -> Iterator[None]:
    """The machine-wide vpcd lock, re-entrant within one process (each test module that
    imports the fixture gets its own session fixture instance)."""
    global _held
    if _held:
        _held += 1
        try:
            yield
        finally:
            _held -= 1
        return
    with open(LOCK_PATH, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _held = 1
        try:
            yield
        finally:
            _held = 0


@pytest.fixture(scope="session")
def pcscd() -> Iterator[None]:
    require(have_pcscd(), "pcscd and vsmartcard-vpcd (apt packages pcscd vsmartcard-vpcd)")
    with vpcd_lock(), running_pcscd():
        yield


@pytest.fixture
def vpcd_pair(pcscd):
    """Two virtual readers (entry 35963, exit 35964), each with an empty card field."""
    from simulators.card_field import CardField
    from simulators.vpcd_reader import VpcdReader

    entry = VpcdReader(CardField("entry"), port=35963).start()
    exit_ = VpcdReader(CardField("exit"), port=35964).start()
    yield entry, exit_
    entry.stop()
    exit_.stop()
    time.sleep(VpcdReader.REMOVAL_HOLD_S)  # let pcscd see both readers empty again
