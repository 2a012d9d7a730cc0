"""The kinds of things the recycle bin holds, each registered by the domain that owns it.

The bin knows nothing of members, products or operators: it keeps *entries* (what was
deleted, where, by whom, when) and, to restore or purge one, calls the functions its
domain registered. A domain registers its kind once, at import of its module::

    from hq_server.recycle.registry import BinKind, register

    register(BinKind(
        kind="member",                   # the audit log's target_kind too
        title="member (会员)",
        restore=restore_member_from_bin, # (conn, actor, target_id, now_ms) -> None
        purge=purge_member_from_bin,     # (conn, actor, target_id, now_ms) -> None
    ))

and, in its delete service, *inside the delete's transaction*, after marking the thing
deleted (status-based: the row stays, so restoring is a status change)::

    put_in_bin(conn, actor, "member", member_id, place=place, label="M0001 张三",
               snapshot={...}, now_ms=now_ms)

``restore`` brings the thing back (it may refuse with
:class:`~hq_server.recycle.bin.CannotRestore`, e.g. its mobile number now belongs to
another member); ``purge`` removes it for good (deletes or anonymises its row; what the
ledger references stays). Both run inside the bin's transaction, which also writes the
audit row, so a refusal changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.engine import Connection

from hq_server.operators.access import Actor

#: ``(conn, actor, target_id, now_ms)``: restore or purge one thing of a kind.
BinAction = Callable[[Connection, Actor, str, int], None]


@dataclass(frozen=True)
class BinKind:
    kind: str
    title: str
    restore: BinAction
    purge: BinAction


_KINDS: dict[str, BinKind] = {}


class UnknownBinKind(LookupError):
    """No domain registered this kind (a programming error, or its module not loaded)."""


def register(kind: BinKind) -> BinKind:
    """Register (or re-register, e.g. on reload) how the bin restores and purges a kind."""
    if not kind.kind or len(kind.kind) > 32:
        raise ValueError("a bin kind is a name of 1 to 32 characters")
    _KINDS[kind.kind] = kind
    return kind


def unregister(kind: str) -> None:
    _KINDS.pop(kind, None)


#: The domain module that registers each kind HQ ships, imported when the bin first meets
#: a thing of that kind in a process that has not loaded the domain yet (the CLI).
DOMAIN_OF_KIND = {"member": "hq_server.members.service"}


def kind_of(kind: str) -> BinKind:
    if kind not in _KINDS and kind in DOMAIN_OF_KIND:
        import importlib

        importlib.import_module(DOMAIN_OF_KIND[kind])
    try:
        return _KINDS[kind]
    except KeyError:
        raise UnknownBinKind(f"the recycle bin does not know things of kind {kind!r}; "
                             f"known: {', '.join(sorted(_KINDS)) or 'none'}") from None


def kinds() -> list[str]:
    return sorted(_KINDS)
