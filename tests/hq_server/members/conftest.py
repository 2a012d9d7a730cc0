from __future__ import annotations

import pytest

from tests.hq_records import STORES, store_engine
from tests.hq_server.members.helpers import seed_chain


@pytest.fixture(params=STORES)
def engine(request):
    """HQ's database on SQLite and on PostgreSQL, with a small chain in it."""
    e = store_engine(request)
    seed_chain(e)
    return e
