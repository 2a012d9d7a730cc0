"""HQ as a running process: what it runs (:mod:`.settings`, one :class:`HqSettings`), how
its parts are composed (:mod:`.hq_process`, :class:`HqProcess`: ingest, fleet service,
API) and how their threads are kept alive and reported (:mod:`.supervision`).

Import from the modules: this package re-exports nothing, because ingest and the fleet
service import :mod:`.supervision` and :mod:`.hq_process` imports them.
"""
