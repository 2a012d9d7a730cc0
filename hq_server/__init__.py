"""HQ: one package per business domain, each owning its tables' code and its pure rules.

``db`` (tables, engine, migrations, bulk writes), ``ledger`` (chart of accounts,
postings, the one writer, the full check), ``ingest`` (batches from the broker to the
ledger), ``reconciliation``, ``settlement``, ``devices`` (registry, enrolment, presence,
UID credentials, denylist), ``fleet`` (the fleet service), ``catalogue``, ``operators``,
``reports``, ``api``; :mod:`hq_server.clock` is the one clock. Imports only
``protocol``; never ``terminal_fw``, ``kiosk`` or ``simulators``.
"""
