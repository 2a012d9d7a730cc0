"""HQ's operators: the people who sign in to HQ's API and, later, its dashboard."""

from __future__ import annotations

import click

from onecard.cli.options import db_option


@click.command("create-admin")
@db_option
@click.option("--username", default="admin", show_default=True)
@click.password_option(envvar="ONECARD_ADMIN_PASSWORD",
                       help="Asked for when not given (env ONECARD_ADMIN_PASSWORD).")
def hq_create_admin(db: str, username: str, password: str) -> None:
    """Create an HQ operator with admin rights (the first one, or another)."""
    from hq_server.db.engine import open_engine
    from hq_server.operators.accounts import OperatorError, create_operator

    try:
        create_operator(open_engine(db), username, password, "admin")
    except OperatorError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"operator {username} created")


COMMANDS = [hq_create_admin]
