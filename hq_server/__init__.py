"""HQ: the authoritative ledger, ingest, device registry and (later) business services.

Imports only ``protocol``; never ``terminal_fw``, ``kiosk`` or ``simulators``.
"""
