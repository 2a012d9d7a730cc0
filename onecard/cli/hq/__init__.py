"""``onecard hq``: HQ's commands, one module per part of HQ they work on.

* :mod:`.process` — running HQ (``run``, ``ingest``, ``serve-api``), ``status``, ``migrate``
* :mod:`.ledger` — ``verify-ledger``, ``reverse``, ``settlement``, ``reconcile``, ``anomalies``
* :mod:`.cards` — ``card`` (the registry), ``denylist`` (挂失), ``uid-credential``
* :mod:`.devices` — the device registry and the fleet: ``add-device``, ``list-devices``,
  ``enrolment-token``, ``revoke-device``, ``fleet``, ``push-config``, ``command``
* :mod:`.catalogue` — ``catalogue``, and ``rules`` (records that broke them)
* :mod:`.operators` — ``create-admin``
* :mod:`.chain` — ``region`` (大区) and ``store`` (单店)
* :mod:`.reports` — ``report income`` (门店营收)
* :mod:`.audit` — ``verify-audit``, ``audit``, ``recycle-bin``, ``backup``, ``restore``,
  ``replay-archive``
* :mod:`.operators` — ``login``, ``logout``, ``whoami``, ``operator``, ``api-token``,
  ``create-admin`` (the HQ machine's bootstrap)
* :mod:`.members` — ``member`` (会员资料), ``member-field`` (custom fields)
"""

from __future__ import annotations

import click

from onecard.cli.hq import (
    audit,
    cards,
    catalogue,
    chain,
    devices,
    ledger,
    members,
    operators,
    process,
    reports,
)


@click.group("hq",
              short_help="HQ: run it; ledger, cards, devices, catalogue, operators.")
def group() -> None:
    """HQ: run ingest, the fleet service and the API; the ledger, cards, devices,
    catalogue and operators."""


for _module in (process, ledger, cards, devices, catalogue, operators, chain, reports, audit,
                members):
    for _command in _module.COMMANDS:
        group.add_command(_command)
