"""Operators: the people who run HQ, their roles and scopes, and how they sign in.

* :mod:`.access` — roles, permissions, scopes and ``authorise`` (the shared contract)
* :mod:`.accounts` — operators: create, list, edit, disable, reset password, unlock
* :mod:`.lockout` — back-off and lock-out rules (pure)
* :mod:`.signin` — password and staff-card sign-in, the security log
* :mod:`.sessions` — browser, CLI and handheld sessions (timeouts, rotation, CSRF)
* :mod:`.api_tokens` — tokens for integrations
* :mod:`.staff_cards` — staff cards (员工卡) and their PINs
* :mod:`.places` — authorising on terminals and store ids

See docs/operators.md.
"""
