"""HQ's operators (操作员): signing in on the command line, and managing operators.

``login`` / ``logout`` / ``whoami``; ``operator list|show|create|edit|disable|unlock|
reset-password|staff-card``; ``api-token create|list|revoke``; and ``create-admin``, the
HQ machine's bootstrap: the first operator needs no login (whoever may read the database
file may create it; ``--operator`` names the person at the console for the audit log).
"""

from __future__ import annotations

import json

import click

from onecard.cli.options import actor_option, cli_origin, db_option, operator_name, refusals


def _scope(text: str | None):
    from hq_server.operators.access import Scope

    if text is None:
        return None
    try:
        return Scope.parse(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--scope") from None


@click.command("create-admin")
@db_option
@click.option("--username", default="admin", show_default=True)
@click.password_option(envvar="ONECARD_ADMIN_PASSWORD",
                       help="Asked for when not given (env ONECARD_ADMIN_PASSWORD).")
@click.option("--operator", "human", default=operator_name,
              help="The person at the HQ machine, for the audit log (default cli:$USER).")
def hq_create_admin(db: str, username: str, password: str, human: str) -> None:
    """Create an HQ administrator (总部管理员): the first operator, on the HQ machine.

    Once operators exist, only a signed-in operator who may create administrators can
    create another (``onecard hq login`` first)."""
    from hq_server.db.engine import open_engine
    from hq_server.operators.access import Level, Scope
    from hq_server.operators.accounts import (
        add_operator,
        check_password,
        create_operator,
        has_operators,
    )
    from onecard.cli.options import current_actor

    engine = open_engine(db)
    with refusals():
        check_password(password, username)
        if not has_operators(engine):
            create_operator(engine, username, password, "hq_admin", human=human)
        else:
            add_operator(current_actor(db, engine), engine, username, password, "hq_admin",
                         Scope(Level.CHAIN))
    click.echo(f"operator {username} created (hq_admin, chain)")


@click.command("login")
@db_option
@click.option("--username", prompt=True, help="Your operator name.")
@click.option("--password", prompt=True, hide_input=True, envvar="ONECARD_PASSWORD",
              help="Asked for when not given (env ONECARD_PASSWORD).")
def hq_login(db: str, username: str, password: str) -> None:
    """Sign in as an operator: later commands on this database act as you.

    The session (8 h idle, 24 h at most) is kept in ~/.config/onecard/session.json,
    readable by you only."""
    from hq_server.clock import system_clock
    from hq_server.db.engine import open_engine
    from hq_server.operators.sessions import open_session
    from hq_server.operators.signin import sign_in
    from onecard.cli.session_file import store_token

    engine = open_engine(db)
    now = system_clock()
    origin = cli_origin()
    with refusals():
        actor = sign_in(engine, username, password, origin.split(" ", 1)[1][:64], now, origin)
    session = open_session(engine, actor, "cli", now)
    assert session.token is not None
    path = store_token(db, session.token, actor.operator, session.expires_at_ms)
    click.echo(f"signed in as {actor.operator} ({actor.role}, {actor.scope}); "
               f"session kept in {path}")


@click.command("logout")
@db_option
def hq_logout(db: str) -> None:
    """End the stored session for this database."""
    from hq_server.db.engine import open_engine
    from hq_server.operators.sessions import close_session
    from onecard.cli.session_file import forget_token

    token = forget_token(db)
    if token is not None:
        close_session(open_engine(db), token)
    click.echo("signed out" if token else "not signed in")


@click.command("whoami")
@db_option
@click.option("--json", "as_json", is_flag=True)
def hq_whoami(db: str, as_json: bool) -> None:
    """Who later commands act as: operator, role, scope."""
    from hq_server.operators.access import PERMISSIONS
    from onecard.cli.options import current_actor

    actor = current_actor(db)
    if as_json:
        click.echo(json.dumps({"operator": actor.operator, "role": actor.role,
                               "scope": str(actor.scope),
                               "permissions": [p for p in PERMISSIONS if actor.can(p)]}))
    else:
        click.echo(f"{actor.operator} ({actor.role}, {actor.scope})")


# --- onecard hq operator ... -----------------------------------------------------------

def _show(found) -> str:
    lock = f", locked until {found.locked_until_ms}" if found.locked_until_ms else ""
    return (f"{found.username}  {found.role}  {found.scope}  {found.status}  "
            f"v{found.version}{lock}  {found.display_name}").rstrip()


@click.group("operator")
def hq_operator() -> None:
    """Operators (操作员): roles, scopes, lock-outs, staff cards."""


@hq_operator.command("list")
@db_option
@actor_option
@click.option("--status", type=click.Choice(["active", "disabled"]))
@click.option("--json", "as_json", is_flag=True)
def operator_list(db: str, actor, status: str | None, as_json: bool) -> None:
    """The operators inside your scope."""
    from hq_server.db.engine import open_engine
    from hq_server.operators.accounts import list_operators

    engine, cursor, found = open_engine(db), None, []
    with refusals():
        while True:
            page, cursor = list_operators(actor, engine, cursor=cursor, limit=200,
                                          status=status)
            found.extend(page)
            if cursor is None:
                break
    if as_json:
        click.echo(json.dumps([o.to_json() for o in found], ensure_ascii=False))
        return
    for o in found:
        click.echo(_show(o))
    click.echo(f"{len(found)} operators")


@hq_operator.command("show")
@db_option
@actor_option
@click.argument("username")
def operator_show(db: str, actor, username: str) -> None:
    """One operator inside your scope: role, scope, status, version, lock-out."""
    from hq_server.db.engine import open_engine
    from hq_server.operators.accounts import get_operator

    with refusals():
        click.echo(_show(get_operator(actor, open_engine(db), username)))


ROLE_CHOICE = click.Choice(["cashier", "auditor", "store_manager", "region_manager",
                            "hq_admin"])


@hq_operator.command("create")
@db_option
@actor_option
@click.argument("username")
@click.option("--role", type=ROLE_CHOICE, required=True)
@click.option("--scope", required=True, help="chain, region:<id> or store:<id>")
@click.option("--name", "display_name", default="", help="The name people know them by.")
@click.password_option(envvar="ONECARD_NEW_PASSWORD",
                       help="Their first password (env ONECARD_NEW_PASSWORD).")
def operator_create(db: str, actor, username: str, role: str, scope: str, display_name: str,
                    password: str) -> None:
    """Create an operator below your rank, inside your scope."""
    from hq_server.db.engine import open_engine
    from hq_server.operators.accounts import add_operator

    with refusals():
        made = add_operator(actor, open_engine(db), username, password, role, _scope(scope),
                            display_name=display_name)
    click.echo(f"created {_show(made)}")


@hq_operator.command("edit")
@db_option
@actor_option
@click.argument("username")
@click.option("--version", "expected", type=click.IntRange(1, 2**31 - 1), required=True,
              help="The version you saw (operator show): refused if it changed since.")
@click.option("--role", type=ROLE_CHOICE)
@click.option("--scope")
@click.option("--name", "display_name")
@click.option("--status", type=click.Choice(["active", "disabled"]))
def operator_edit(db: str, actor, username: str, expected: int, role: str | None,
                  scope: str | None, display_name: str | None, status: str | None) -> None:
    """Change an operator's role, scope, name or status."""
    from hq_server.db.engine import open_engine
    from hq_server.operators.accounts import update_operator

    with refusals():
        done = update_operator(actor, open_engine(db), username, expected, role=role,
                               scope=_scope(scope), display_name=display_name, status=status)
    click.echo(f"updated {_show(done)}")


@hq_operator.command("disable")
@db_option
@actor_option
@click.argument("username")
def operator_disable(db: str, actor, username: str) -> None:
    """Disable an operator: no more sign-ins; sessions and API tokens end."""
    from hq_server.db.engine import open_engine
    from hq_server.operators.accounts import disable_operator

    with refusals():
        click.echo(f"disabled {_show(disable_operator(actor, open_engine(db), username))}")


@hq_operator.command("unlock")
@db_option
@actor_option
@click.argument("username")
def operator_unlock(db: str, actor, username: str) -> None:
    """End a lock-out after failed sign-ins (and of the operator's staff cards)."""
    from hq_server.db.engine import open_engine
    from hq_server.operators.accounts import unlock_operator

    with refusals():
        click.echo(f"unlocked {_show(unlock_operator(actor, open_engine(db), username))}")


@hq_operator.command("reset-password")
@db_option
@actor_option
@click.argument("username")
@click.password_option(envvar="ONECARD_NEW_PASSWORD",
                       help="The new password (env ONECARD_NEW_PASSWORD).")
def operator_reset_password(db: str, actor, username: str, password: str) -> None:
    """Set a new password (yours, or of an operator you manage); their sessions end."""
    from hq_server.db.engine import open_engine
    from hq_server.operators.accounts import reset_password

    with refusals():
        reset_password(actor, open_engine(db), username, password)
    click.echo(f"password of {username} reset")


@hq_operator.command("staff-card")
@db_option
@actor_option
@click.argument("username")
@click.argument("card_id")
@click.option("--pin", prompt=True, hide_input=True, confirmation_prompt=True,
              envvar="ONECARD_STAFF_PIN", help="6-12 digits (env ONECARD_STAFF_PIN).")
def operator_staff_card(db: str, actor, username: str, card_id: str, pin: str) -> None:
    """Give an operator a staff card (员工卡) and PIN for handhelds."""
    from hq_server.clock import system_clock
    from hq_server.db.engine import open_engine
    from hq_server.operators.staff_cards import assign_staff_card

    with refusals():
        assign_staff_card(actor, open_engine(db), card_id, username, pin, system_clock())
    click.echo(f"staff card {card_id} assigned to {username}")


# --- onecard hq api-token ... ----------------------------------------------------------

@click.group("api-token")
def hq_api_token() -> None:
    """Your API tokens for integrations (the secret is shown once)."""


@hq_api_token.command("create")
@db_option
@actor_option
@click.argument("name")
@click.option("--scope", help="Narrower than yours (default: yours).")
@click.option("--permission", "permissions", multiple=True,
              help="Only these permissions (repeat; default: all of your role's).")
def api_token_create(db: str, actor, name: str, scope: str | None,
                     permissions: tuple[str, ...]) -> None:
    """A token for an integration, acting as you or narrower (printed once)."""
    from hq_server.clock import system_clock
    from hq_server.db.engine import open_engine
    from hq_server.operators.api_tokens import create_api_token

    with refusals():
        secret, made = create_api_token(actor, open_engine(db), name, system_clock(),
                                        scope=_scope(scope),
                                        permissions=list(permissions) or None)
    click.echo(secret)
    click.echo(f"{made.token_id} {made.name} ({made.scope}): shown once, keep it safe",
               err=True)


@hq_api_token.command("list")
@db_option
@actor_option
def api_token_list(db: str, actor) -> None:
    """Your tokens (never their secrets) and when each was last used."""
    from hq_server.db.engine import open_engine
    from hq_server.operators.api_tokens import list_api_tokens

    for t in list_api_tokens(actor, open_engine(db)):
        state = "revoked" if t.revoked_at_ms else "active"
        click.echo(f"{t.token_id}  {t.name}  {t.scope}  {state}  "
                   f"last used {t.last_used_at_ms or 'never'}")


@hq_api_token.command("revoke")
@db_option
@actor_option
@click.argument("token_id")
def api_token_revoke(db: str, actor, token_id: str) -> None:
    """Revoke one of your tokens: it stops working at once."""
    from hq_server.clock import system_clock
    from hq_server.db.engine import open_engine
    from hq_server.operators.api_tokens import revoke_api_token

    with refusals():
        revoke_api_token(actor, open_engine(db), token_id, system_clock())
    click.echo(f"{token_id} revoked")


COMMANDS = [hq_create_admin, hq_login, hq_logout, hq_whoami, hq_operator, hq_api_token]
