"""``onecard sim``: simulated hardware behind the real stacks, for development and demos."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import click

from onecard.cli.options import PORT, BoundedFloat
from protocol.money import MAX_FEN


@click.group("sim",
              short_help="Simulated readers, I/O board and card images for benches.")
def group() -> None:
    """Simulated hardware behind the real stacks (PC/SC via vpcd, PN532 on a pty)."""


def _run_until_interrupted(runner, **kwargs) -> None:
    import threading

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):  # Ctrl-C stops cleanly (and saves)
        signal.signal(sig, lambda *_: stop.set())
    runner(say=lambda m: click.echo(m, err=True), stop=stop, **kwargs)


def _card_dump(ctx, param, dump: Path) -> Path:
    """The dump file, checked to hold a 1K card; a usage error saying why if it does not."""
    from simulators.mifare_classic import CardDumpError, load_dump

    try:
        load_dump(dump)
        return dump
    except CardDumpError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


card_dump = click.option("--card", "dump", required=True, callback=_card_dump,
                         type=click.Path(path_type=Path, exists=True, dir_okay=False),
                         help="A 1024-byte MIFARE Classic 1K dump (.mfd).")
save_option = click.option("--save", is_flag=True, help="Write the card back to the dump at exit.")


@group.command("pcsc")
@card_dump
@save_option
@click.option("--port", type=PORT, default=35963, show_default=True,
              help="vpcd port (35963 = Virtual PCD 00 00, 35964 = 00 01).")
@click.option("--model", type=click.Choice(["acr1252u", "acr122u"]), default="acr1252u",
              show_default=True,
              help="Reader model: acr1252u reads/writes up to 3 blocks per APDU (ACS "
                   "Multiple Blocks Mode); acr122u one block per APDU.")
def sim_pcsc(dump: Path, save: bool, port: int, model: str) -> None:
    """A virtual PC/SC reader (through pcscd + vpcd) with the card from DUMP on it."""
    from simulators.sim_runner import run_pcsc

    _run_until_interrupted(run_pcsc, dump=dump, port=port, save=save,
                           multi_block=model == "acr1252u")


@group.command("pn532")
@card_dump
@save_option
def sim_pn532(dump: Path, save: bool) -> None:
    """An emulated PN532 on a pty with the card from DUMP in its field."""
    from simulators.sim_runner import run_pn532

    _run_until_interrupted(run_pn532, dump=dump, save=save)


def _stdin_lines():
    """Stdin's lines, unless stdin is the terminal of a job in the background (reading
    it would stop the simulator with SIGTTIN): then only ``--every`` presents."""
    import os
    import sys

    try:
        if sys.stdin.isatty() and os.tcgetpgrp(sys.stdin.fileno()) != os.getpgrp():
            return None
    except (OSError, ValueError):
        return None
    return sys.stdin


def _every(ctx, param, every: float | None) -> float | None:
    if every is not None and not ctx.params.get("credential"):
        raise click.BadParameter("needs the credential to present (--tag / --text)", ctx, param)
    return every


every_option = click.option("--every", type=BoundedFloat(0.05, 24 * 3600), default=None,
                            callback=_every,
                            help="Also present the credential every SECONDS (soak tests).")


@group.command("idcard")
@click.option("--tag", "credential", default=None, is_eager=True,
              help="Default ID card (10 hex digits): an empty line or --every presents it.")
@click.option("--framing", type=click.Choice(["line", "rdm6300", "decimal"]), default="line",
              show_default=True, help="What the reader sends: 10 hex + CR LF, RDM6300 "
                                      "STX/ETX frames, or 10 decimal digits.")
@every_option
def sim_idcard(credential: str | None, framing: str, every: float | None) -> None:
    """A serial 125 kHz ID-card reader (EM4100) on a pty: each line on stdin is a card
    held to it."""
    from simulators.uid_sim import run_idcard

    _run_until_interrupted(run_idcard, framing=framing, credential=credential,
                           every=every, lines=_stdin_lines())


@group.command("qr")
@click.option("--text", "credential", default=None, is_eager=True,
              help="Default code: an empty line or --every scans it.")
@click.option("--suffix", type=click.Choice(["cr", "lf", "crlf"]), default="cr",
              show_default=True, help="What the scanner sends after the code.")
@every_option
def sim_qr(credential: str | None, suffix: str, every: float | None) -> None:
    """A QR/barcode scanner in serial mode on a pty: each line on stdin is a code
    scanned."""
    from simulators.uid_sim import run_qr

    _run_until_interrupted(run_qr, suffix={"cr": b"\r", "lf": b"\n", "crlf": b"\r\n"}[suffix],
                           credential=credential, every=every, lines=_stdin_lines())


@group.command("ioboard")
@click.option("--safe-state", type=click.Choice(["locked", "free"]), default="locked",
              show_default=True, help="What the door does when the terminal stops talking.")
@click.option("--no-walk", is_flag=True, help="Nobody walks through (every passage times out).")
def sim_ioboard(safe_state: str, no_walk: bool) -> None:
    """The gate I/O board's firmware in MicroPython on a pty, with a turnstile."""
    from simulators.ioboard import run_ioboard

    _run_until_interrupted(run_ioboard, safe_state=int(safe_state == "free"),
                           walk_after_s=None if no_walk else 0.5)


def _visits(ctx, param, given: tuple[str, ...]) -> tuple[tuple[str, int], ...]:
    """``PRODUCT[:PACKAGES]`` specs (packages default 1)."""
    out = []
    for text in given:
        product, _, packages = text.partition(":")
        if not product or (packages and not packages.isdigit()) or packages == "0":
            raise click.BadParameter(f"{text[:60]!r} is not PRODUCT[:PACKAGES]", ctx, param)
        out.append((product, int(packages or 1)))
    return tuple(out)


@group.command("card")
@click.option("--issue", "issue_flag", is_flag=True,
              help="Issue a blank card (发卡) the way a service desk does.")
@click.option("--card-id", required=True, help="Card number, e.g. M00001.")
@click.option("--product", "card_product", required=True,
              help="Card product of the config's catalogue, e.g. gold.")
@click.option("--keys", "keys_file", required=True,
              type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="The chain's card keys: site/hq/card-keys.json (`hq card-keys init`) "
                   "or a terminal's chain_keys.json.")
@click.option("--config", "config_file", required=True,
              type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="The store's config document (as `hq push-config` takes it).")
@click.option("--uid", default="11223344", show_default=True, help="4-byte card UID, hex.")
@click.option("--opening-fen", type=click.IntRange(0, MAX_FEN), default=None,
              help="Open the purse (开户) with this amount in fen.")
@click.option("--visits", multiple=True, callback=_visits,
              help="Sell visits PRODUCT[:PACKAGES] (充次); repeatable.")
@click.option("--out", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="Where to write the 1024-byte dump (.mfd).")
def sim_card(issue_flag: bool, card_id: str, card_product: str, keys_file: Path,
             config_file: Path, uid: str, opening_fen: int | None,
             visits: tuple[tuple[str, int], ...], out: Path) -> None:
    """Make the image of an issued member card for bench tests (load it with
    `sim pcsc --card` or `sim pn532 --card`)."""
    from onecard.card_image import CardImageError, issue_card, load_card_keys, load_store_config

    if not issue_flag:
        raise click.UsageError("say --issue: the card is made by issuing a blank one")
    try:
        card_uid = bytes.fromhex(uid)
    except ValueError:
        raise click.BadParameter(f"{uid[:40]!r} is not hex", param_hint="--uid") from None
    try:
        done = issue_card(load_card_keys(keys_file), load_store_config(config_file),
                     card_id=card_id, card_product=card_product, uid=card_uid,
                     opening_fen=opening_fen, visits=visits)
    except CardImageError as exc:
        raise click.ClickException(str(exc)) from None
    out.write_bytes(done.card.to_mfd())
    click.echo(json.dumps({"card_id": done.card_id, "card_product": done.card_product,
                           "uid": card_uid.hex().upper(), "purse_fen": done.purse_fen,
                           "visits": done.visits, "out": str(out)}))
