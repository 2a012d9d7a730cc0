"""The refusals of the members domain, each one a failure an operator can act on.

:mod:`hq_server.api.problems` turns each into a problem (one line each there); the CLI
prints their message. Out of scope is never one of these: it is
:class:`~hq_server.operators.access.NotVisible`, answered exactly like an unknown member.
"""

from __future__ import annotations

from dataclasses import dataclass

from hq_server.operators.access import NotVisible


@dataclass(frozen=True)
class FieldError:
    """One thing wrong with one field, in words a person can act on."""

    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"


class MemberInvalid(ValueError):
    """The member's data breaks a rule (HTTP 422); ``errors`` says which field and why."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(str(e) for e in errors[:5]))
        self.errors = errors


class MemberNotFound(NotVisible):
    """No such member (HTTP 404). A subclass of NotVisible on purpose: an unknown member
    and one outside the operator's scope get exactly the same answer."""


class MemberStateConflict(ValueError):
    """The member is deleted or merged, so it cannot be edited that way (HTTP 409)."""


class DuplicateMobile(ValueError):
    """The mobile number belongs to another member of the chain (HTTP 409)."""


class MergeRefused(ValueError):
    """Two members that cannot be merged (the same one, one already merged; HTTP 409)."""


class FieldDefinitionInvalid(ValueError):
    """A custom field definition that breaks a rule (HTTP 422)."""


class ImportRefused(ValueError):
    """An import file that was not applied: a row was refused or the file is unreadable
    (HTTP 422). ``report`` is the row-by-row report, when there is one."""

    def __init__(self, message: str, report: object | None = None) -> None:
        super().__init__(message)
        self.report = report
