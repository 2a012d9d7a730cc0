"""docs/audit-and-backup.md names only commands and options that exist."""

from __future__ import annotations

import re
from pathlib import Path

import click

from onecard.cli.hq import group

DOC = Path(__file__).parents[3] / "docs" / "audit-and-backup.md"


def _command(words: list[str]) -> click.Command:
    command: click.Command = group
    for word in words:
        if not isinstance(command, click.Group) or word not in command.commands:
            break
        command = command.commands[word]
    return command


def test_every_command_and_option_in_the_guide_exists():
    text = DOC.read_text()
    uses = re.findall(r"onecard hq ([a-z][a-z-]*(?: [a-z][a-z-]*)?)((?: [^\n`|]*)?)", text)
    assert len(uses) > 10
    for name, rest in uses:
        command = _command(name.split())
        assert command is not group, f"no command onecard hq {name}"
        known = {opt for p in command.params for opt in getattr(p, "opts", [])}
        for option in re.findall(r"(--[a-z][a-z-]*)", rest):
            assert option in known, f"onecard hq {name} has no {option}"
    for term in ("操作日志", "数据回收站", "备份", "恢复"):
        assert term in text
