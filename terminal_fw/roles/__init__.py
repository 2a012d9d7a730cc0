"""The roles a terminal can play, one per file; :mod:`terminal_fw.roles.host` is all a
role may ask of the terminal."""

from terminal_fw.roles.base import Role
from terminal_fw.roles.gate import GateRole
from terminal_fw.roles.handheld import HandheldRole
from terminal_fw.roles.host import TerminalHost
from terminal_fw.roles.kiosk import KioskEngine

#: role name (as enrolled at HQ) → the class that plays it
ROLE_CLASSES: dict[str, type[Role]] = {
    "gate": GateRole,
    "handheld": HandheldRole,
    "kiosk": KioskEngine,
}

__all__ = ["ROLE_CLASSES", "GateRole", "HandheldRole", "KioskEngine", "Role", "TerminalHost"]
