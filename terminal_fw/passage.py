"""One passage through a gate: what the door reports, and what a passage not taken costs.

Both gate I/O back-ends — the Pi's own GPIO (:class:`terminal_fw.gate_io.GateIO`) and the
RP2040 I/O board over UART (:class:`terminal_fw.ioboard.IoBoard`) — satisfy
:class:`GateDoor`; the gate role (:mod:`terminal_fw.roles.gate`) talks only to that.

The rule for a passage not taken (a member tapped, the visit was taken, and they turned
back) is :func:`entry_spent`, a pure function of the outcome and HQ's gate setting
``gate.not_taken`` (:class:`protocol.terminal_config.GateSettings`):

* ``"spent"`` (the default, 未通行作废): the visit is used like a torn ticket; the
  intent is closed. This is what a gate did before the rule was configurable.
* ``"keep"`` (未通行保留), when the tariff says so: the entry stays owed to the member. Nothing is
  written back to the card and no second record is made: the tap's one ``TAKE_VISIT``
  record stands, and its intent goes back to *committed* (not served) in the terminal's
  intent journal, so the same card's next tap at this terminal within
  :data:`terminal_fw.tap.SERVE_GRACE_S` is let through free — the settling rule that
  already serves a paid entry a power cut kept from opening. After the grace the intent
  is closed and the visit counts as used. Money and visits are conserved: one visit
  taken, one record, at most one passage for it.

The intent is marked served as the door opens, so a second tap of the card during the
passage is not another free entry; the outcome may then give the entry back. A door that
never opened (board unreachable, busy, sensor stuck) always leaves the entry owed. A late
report (the board answered after a cable fault or the terminal's restart) settles the
entry by the same rule, so a passage the board saw is never served a second time.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

NOT_TAKEN_RULES = ("keep", "spent")


class Passage(enum.Enum):
    """How one opening ended, as the door reports it."""

    COMPLETED = "completed"  # one person went through; the door locked behind them
    NOT_TAKEN = "not_taken"  # nobody went through before the timeout
    NOT_OPENED = "not_opened"  # the door never opened (board unreachable, busy, sensor fault)
    INTERRUPTED = "interrupted"  # the board reset while the door was open
    UNKNOWN = "unknown"  # no report yet (the cable is out); the board reports it later


@dataclass(frozen=True)
class PassageReport:
    """One opening's outcome: ``ref`` names the opening (the tap's intent id, when it
    came from a tap); ``reason`` says why it was not completed; ``late`` marks a report
    that arrived after :meth:`GateDoor.pass_one` had returned (or after a restart)."""

    ref: str
    outcome: Passage
    reason: str = ""
    late: bool = False

    @property
    def completed(self) -> bool:
        return self.outcome is Passage.COMPLETED


def entry_spent(outcome: Passage, not_taken: str) -> bool | None:
    """Whether the paid entry behind an opening is used up (close the tap's intent):
    True — used; False — still owed to the member (leave the intent open); None — not
    known yet (a report will follow: decide then, until then it stays owed)."""
    if not_taken not in NOT_TAKEN_RULES:
        raise ValueError(f"gate.not_taken must be one of {NOT_TAKEN_RULES}, not {not_taken!r}")
    if outcome is Passage.COMPLETED:
        return True
    if outcome is Passage.UNKNOWN:
        return None
    if outcome is Passage.NOT_OPENED:
        return False  # the door never opened: nothing was given for the visit
    return not_taken == "spent"


class GateDoor(Protocol):
    """What the gate role needs of a door: open it for one person, signal a refusal."""

    def pass_one(self, ref: str, timeout: float | None = None) -> PassageReport:
        """Open for one passage and block until it is over (passed, timed out, failed);
        the door is locked again when this returns, or will be by the board's timeout."""

    def refuse(self) -> None:
        """Red light and beeps; the door stays locked."""

    def close(self) -> None:
        """Release the hardware (the door locks)."""
