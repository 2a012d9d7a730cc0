"""Reports from the command line: income by store (门店营收)."""

from __future__ import annotations

import datetime as dt

import click

from onecard.cli.options import actor_option, db_option


def _date(text: str | None, param: str) -> dt.date | None:
    if text is None:
        return None
    try:
        if len(text) != 10:
            raise ValueError
        return dt.date.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text[:20]!r} is not a date (YYYY-MM-DD)",
                                 param_hint=param) from None


@click.group("report")
def hq_report() -> None:
    """Reports operators read: income by store."""


@hq_report.command("income")
@db_option
@actor_option
@click.option("--day", default=None, help="The day, e.g. 2026-12-02 (local time).")
@click.option("--from", "first", default=None, help="First day of a period.")
@click.option("--to", "last", default=None, help="Last day of a period (included).")
@click.option("--store", default=None, help="Only this store.")
@click.option("--utc-offset-minutes", type=click.IntRange(-720, 840), default=480,
              show_default=True, help="The chain's local time (480: China).")
def hq_report_income(db: str, actor, day: str | None, first: str | None,
                     last: str | None, store: str | None, utc_offset_minutes: int) -> None:
    """Income per store for a day or a period: cash taken, recharges, revenue by product."""
    from hq_server.db.engine import open_engine
    from hq_server.operators.access import Forbidden
    from hq_server.reports.income import (
        ReportError,
        day_bounds,
        income_by_store,
        income_totals,
        period_bounds,
    )
    from protocol.money import format_fen

    the_day, a, b = _date(day, "--day"), _date(first, "--from"), _date(last, "--to")
    if (the_day is None) == (a is None and b is None) or (the_day is None and None in (a, b)):
        raise click.UsageError("give --day, or --from and --to")
    try:
        start, end = (day_bounds(the_day, utc_offset_minutes) if the_day is not None
                      else period_bounds(a, b, utc_offset_minutes))  # type: ignore[arg-type]
        incomes = income_by_store(open_engine(db), actor, start, end,
                                  store=store)
    except (ReportError, Forbidden) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{'store':<16} {'cash taken':>14} {'recharges':>14} {'bonus given':>12} "
               f"{'revenue':>14}")
    for i in incomes:
        click.echo(f"{i.store:<16} {format_fen(i.cash_taken_fen):>14} "
                   f"{format_fen(i.recharges_fen):>14} {format_fen(i.bonus_given_fen):>12} "
                   f"{format_fen(i.revenue_fen):>14}")
        for product, fen in i.revenue_by_product.items():
            click.echo(f"  {product:<30} {format_fen(fen):>14}")
    t = income_totals(incomes)
    click.echo(f"{'total':<16} {format_fen(t['cash_taken_fen']):>14} "
               f"{format_fen(t['recharges_fen']):>14} {format_fen(t['bonus_given_fen']):>12} "
               f"{format_fen(t['revenue_fen']):>14}")


COMMANDS = [hq_report]
