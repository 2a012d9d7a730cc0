"""The command line walks a cursor-paginated list page by page, up to a limit."""

from __future__ import annotations

from types import SimpleNamespace

from onecard.cli.options import each_page

ITEMS = list(range(450))


def fetch_log():
    asked: list[tuple[str | None, int]] = []

    def fetch(cursor: str | None, n: int) -> SimpleNamespace:
        asked.append((cursor, n))
        start = int(cursor or 0)
        page = ITEMS[start:start + n]
        more = start + n < len(ITEMS)
        return SimpleNamespace(items=page, next_cursor=str(start + n) if more else None)

    return fetch, asked


def test_every_item_in_pages_of_200_until_the_last():
    fetch, asked = fetch_log()
    assert list(each_page(fetch)) == ITEMS
    assert asked == [(None, 200), ("200", 200), ("400", 200)]


def test_a_limit_asks_only_for_what_is_left():
    fetch, asked = fetch_log()
    assert list(each_page(fetch, 250)) == ITEMS[:250]
    assert asked == [(None, 200), ("200", 50)]
