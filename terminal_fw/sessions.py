"""Card sessions: a UI keeps hold of a card while the member decides.

At a gate a tap is one operation and the card is gone. At a kiosk or a staff handheld
the card lies on the reader while the member looks at the balance, picks a package,
pays: the UI runs several operations on the same card and must learn at once when the
card is taken away. A :class:`CardSession` is that hold:

* :meth:`CardSession.run` runs one card operation of :data:`protocol.card_ops.OPERATIONS`
  on the held card, crash-safely (the terminal's tap runner);
* :meth:`CardSession.when_gone` registers what to do when the card leaves — seen by the
  reader loop (a PC/SC removal event) or by an operation that found the card gone
  (:class:`~protocol.mifare.CardRemoved`, any reader);
* :meth:`CardSession.close` lets the card go (the UI is done with it).

:class:`CardSessions` is the terminal's register of held cards, by reader: the reader
loop offers each new link, closes it after the role's ``on_card`` unless a role held it,
and ends a held session when its reader reports the card gone.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from protocol.mifare import CardRemoved, MifareClassicLink
from terminal_fw.tap import TapResult

log = logging.getLogger(__name__)

#: runs one card operation on a link: the terminal's ``card`` (what roles call too)
RunOperation = Callable[..., TapResult]


class _HeldLink:
    """The session's view of the link: an operation that finds the card gone ends it."""

    def __init__(self, link: MifareClassicLink, session: CardSession) -> None:
        self._link = link
        self._session = session

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._link, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return attr(*args, **kwargs)
            except CardRemoved:
                self._session.card_left()
                raise

        return call


class CardSession:
    """One card held on one reader for a UI, until it leaves or the UI lets it go."""

    def __init__(self, link: MifareClassicLink, run: RunOperation, *, reader: str = "",
                 owns_link: bool = False,
                 on_end: Callable[[CardSession], None] | None = None) -> None:
        self.reader = reader
        self.uid = bytes(link.uid())
        self.link: MifareClassicLink = _HeldLink(link, self)  # type: ignore[assignment]
        self._raw = link
        self._run = run
        self._owns_link = owns_link
        self._on_end = on_end
        self._gone = threading.Event()
        self._closed = False
        self._ended = False
        self._lock = threading.Lock()
        self._listeners: list[Callable[[CardSession], None]] = []

    @property
    def gone(self) -> bool:
        """The card has left the reader (no operation can reach it any more)."""
        return self._gone.is_set()

    @property
    def active(self) -> bool:
        return not self._closed and not self.gone

    def run(self, operation: Any, *args: Any, **kwargs: Any) -> TapResult:
        """One card operation on the held card (``take_visit``, ``recharge``,
        ``read_balance``, ...); a card that has gone gives a result to retry."""
        if self.gone:
            return TapResult(False, "the card has left the reader", retry=True)
        if self._closed:
            return TapResult(False, "the card session is closed")
        try:
            return self._run(self.link, operation, *args, **kwargs)
        except CardRemoved:  # gone before anything was decided (the link ended the session)
            return TapResult(False, "the card has left the reader", retry=True)

    def when_gone(self, callback: Callable[[CardSession], None]) -> None:
        """Call ``callback(session)`` once, when the card leaves (at once if it has).
        It runs on the thread that noticed: keep it short, hand work to the UI's loop."""
        with self._lock:
            if not self.gone:
                self._listeners.append(callback)
                return
        callback(self)

    def wait_gone(self, timeout: float | None = None) -> bool:
        """Block until the card leaves; False on timeout."""
        return self._gone.wait(timeout)

    def card_left(self) -> None:
        """The card is no longer on the reader: tell the listeners, release the link."""
        with self._lock:
            if self.gone:
                return
            self._gone.set()
            listeners, self._listeners = self._listeners, []
        for callback in listeners:
            try:
                callback(self)
            except Exception:
                log.exception("card session listener failed")
        self._end()

    def close(self) -> None:
        """The UI is done with the card: let it go (the link is closed if the session
        owns it, i.e. it came from the terminal's reader loop)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._end()

    def _end(self) -> None:
        with self._lock:
            if self._ended:
                return
            self._ended = self._closed = True
        if self._on_end is not None:
            self._on_end(self)
        if self._owns_link:
            close = getattr(self._raw, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # the card or the reader is already gone
                    log.debug("closing a held link failed", exc_info=True)


class CardSessions:
    """The cards UIs hold on this terminal's readers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._offered: dict[int, str] = {}  # id(link) → reader, while the role decides
        self._held: dict[str, CardSession] = {}  # reader → session
        self._taken: set[int] = set()

    @contextmanager
    def offered(self, link: MifareClassicLink, reader: str) -> Iterator[None]:
        """The reader loop hands ``link`` to the role inside this block; afterwards the
        link is closed unless the role held the card."""
        key = id(link)
        with self._lock:
            self._offered[key] = reader
        try:
            yield
        finally:
            with self._lock:
                self._offered.pop(key, None)
                taken = key in self._taken
                self._taken.discard(key)
            if not taken:
                link.close()  # type: ignore[attr-defined]

    def hold(self, link: MifareClassicLink, run: RunOperation) -> CardSession:
        """Keep the card on ``link`` for a UI. A link from the reader loop stays open
        until the card leaves or the session is closed; any other link (a test's, a
        bench's) stays its owner's to close."""
        with self._lock:
            reader = self._offered.get(id(link))
            if reader is not None:
                self._taken.add(id(link))
                earlier = self._held.pop(reader, None)
        if reader is not None and earlier is not None:
            earlier.card_left()  # a new card on the same reader: the old one has gone
        session = CardSession(link, run, reader=reader or "", owns_link=reader is not None,
                              on_end=self._forget)
        if reader is not None:
            with self._lock:
                self._held[reader] = session
        return session

    def held(self, reader: str) -> CardSession | None:
        with self._lock:
            return self._held.get(reader)

    def card_left(self, reader: str) -> None:
        """The reader loop saw the card on ``reader`` go."""
        with self._lock:
            session = self._held.pop(reader, None)
        if session is not None:
            session.card_left()

    def close_all(self) -> None:
        with self._lock:
            sessions, self._held = list(self._held.values()), {}
        for session in sessions:
            session.close()

    def _forget(self, session: CardSession) -> None:
        with self._lock:
            if self._held.get(session.reader) is session:
                del self._held[session.reader]
