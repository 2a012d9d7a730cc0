"""HQ's remote commands to a terminal, as a table: command name → what it does.

Each handler takes the terminal and the command's ``args`` and returns
``(ok, detail, data)``, which goes back to HQ as the command's result. A new command is
a new function and a new row in :data:`COMMANDS`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from protocol.fleet import Command

if TYPE_CHECKING:
    from terminal_fw.runtime.terminal import Runtime

Answer = tuple[bool, str, dict[str, Any]]


def sync_now(rt: Runtime, args: dict[str, Any]) -> Answer:
    rt.uplink.notify()
    rt.hq.request_denylist()
    rt.hq.request_config()
    rt.presence.publish_heartbeat()
    return True, "uploading and re-reading config and denylist", {
        "outbox_depth": rt.outbox.backlog(), "acked_through": rt.outbox.acked_through}


def reload_config(rt: Runtime, args: dict[str, Any]) -> Answer:
    rt.hq.request_config()
    return True, "config re-requested", {"running_version": rt.config.current.version}


def open_gate(rt: Runtime, args: dict[str, Any]) -> Answer:
    open_by_operator = getattr(rt.role, "open_by_operator", None)
    if open_by_operator is None:
        return False, f"a {rt.role_name} has no gate", {}
    open_by_operator(str(args.get("operator", "hq")))
    return True, "gate released for one passage", {}


def maintenance(rt: Runtime, args: dict[str, Any]) -> Answer:
    on = args.get("on")
    if not isinstance(on, bool):
        return False, "args.on must be true or false", {}
    rt.set_maintenance(on)
    return True, "maintenance " + ("on: taps refused" if on else "off"), {"maintenance": on}


def collect_logs(rt: Runtime, args: dict[str, Any]) -> Answer:
    lines = args.get("lines", 100)
    if not isinstance(lines, int) or not 1 <= lines <= 500:
        return False, "args.lines must be 1..500", {}
    return True, "", {"lines": log_tail(rt, lines)}


#: Every command a terminal carries out.
COMMANDS: dict[str, Callable[[Runtime, dict[str, Any]], Answer]] = {
    "sync_now": sync_now,
    "reload_config": reload_config,
    "open_gate": open_gate,
    "maintenance": maintenance,
    "collect_logs": collect_logs,
}


def execute(rt: Runtime, command: Command) -> Answer:
    """Carry out one command from HQ: (ok, detail, data)."""
    handler = COMMANDS.get(command.name)
    if handler is None:
        return False, f"unknown command {command.name!r}", {}
    return handler(rt, command.args)


def log_tail(rt: Runtime, lines: int) -> list[str]:
    """The newest ``lines`` of the terminal's log, within an MQTT packet's size."""
    try:
        with open(rt.settings.log_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64_000))
            tail = f.read().decode("utf-8", errors="replace").splitlines()[-lines:]
    except OSError:
        return []
    out, size = [], 0
    for line in reversed(tail):  # keep the newest lines within the packet limit
        size += len(line) + 4
        if size > 40_000:
            break
        out.append(line[:500])
    return list(reversed(out))
