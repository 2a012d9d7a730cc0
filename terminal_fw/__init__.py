"""The device runtime: card operations, local store, uplink, gate I/O and roles.

Imports only ``protocol``; never ``hq_server``, ``kiosk`` or ``simulators``.
"""
