"""Refusals of signing in and of managing operators, one type per thing a caller can do
about it (mapped to problem details in hq_server/api/problems.py)."""

from __future__ import annotations


class OperatorError(ValueError):
    """An operator, token or staff card that cannot be created or changed (HTTP 422)."""


class AuthenticationFailed(Exception):
    """Wrong name or password, unknown or expired session or token (HTTP 401); never says
    which, so it does not tell which names exist."""


class SignInThrottled(Exception):
    """Too many failed sign-ins from this name, card or address (HTTP 429): try again in
    ``retry_after_s`` seconds, or ask a manager to unlock the operator."""

    def __init__(self, retry_after_ms: int) -> None:
        self.retry_after_s = max(1, -(-retry_after_ms // 1000))
        super().__init__(f"too many failed sign-ins: try again in {self.retry_after_s} s "
                         "(a locked operator may also be unlocked by a manager)")


class CsrfRejected(Exception):
    """A browser request that changes data without the session's CSRF token (HTTP 403)."""
