"""The top-level ``onecard`` group, and the one place that turns failures into one line.

A command lets a failure of the system around it (a database, broker or file that is
not usable) propagate; :class:`CommandLine` reports it as one line and exit 1. Bad
arguments are click's usage errors (exit 2). Only with ``--verbose`` does a traceback
show.
"""

from __future__ import annotations

import logging

import click


class CommandLine(click.Group):
    """The top-level group: turns known failures of the system around a command (a
    database, broker or file that is not usable) into one line and exit 1. Only with
    ``--verbose`` does the traceback show; bad arguments are click's usage errors (2)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - the one place that reports, not hides
            if ctx.params.get("verbose"):
                raise
            raise click.ClickException(explain(exc)) from None


def explain(exc: BaseException) -> str:
    """One line saying what went wrong, for an operator; no internals beyond the cause."""
    import sqlalchemy.exc as sa

    def first_line(text: object) -> str:
        return (str(text).strip().splitlines() or [""])[0]

    if isinstance(exc, sa.ArgumentError | sa.NoSuchModuleError):
        return f"not a usable database URL (sqlite:///path.db or postgresql+psycopg://...): {first_line(exc)}"
    if isinstance(exc, sa.OperationalError):
        return f"cannot use the database: {first_line(exc.orig or exc)}"
    if isinstance(exc, sa.SQLAlchemyError):
        return f"database error: {first_line(exc.orig if isinstance(exc, sa.DBAPIError) else exc)}"
    if isinstance(exc, RecursionError):
        return "input nested too deeply"
    if isinstance(exc, OverflowError):
        return f"a number is too large: {first_line(exc)}"
    if isinstance(exc, TimeoutError | ConnectionError):
        return f"could not connect: {first_line(exc) or type(exc).__name__}"
    if isinstance(exc, OSError):
        return first_line(exc) or type(exc).__name__
    detail = first_line(exc)
    if isinstance(exc, ValueError | RuntimeError | LookupError) and detail:
        return detail
    return (f"unexpected {type(exc).__name__}: {detail} (run with --verbose for details)"
            if detail else f"unexpected {type(exc).__name__} (run with --verbose for details)")


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        logging.getLogger("alembic").setLevel(logging.WARNING)


@click.group(cls=CommandLine, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True,
              help="Log debug detail, and show the traceback of an unexpected failure.")
def main(verbose: bool) -> None:
    """OneCard: membership and stored-value cards for venue chains (会员一卡通).

    \b
    Quick start:
      onecard demo                     broker, HQ and a simulated fleet, live
      onecard demo --headless --duration 30 --report report.json
      onecard hq add-device ...        register a terminal's public key at HQ
      onecard hq run ...               run HQ ingest against a broker
    """
    setup_logging(verbose)
