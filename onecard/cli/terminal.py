"""``onecard terminal``: a terminal's identity and enrolment, its outbox, and running it."""

from __future__ import annotations

import json
from pathlib import Path

import click

from onecard.cli.options import PORT, BoundedFloat


@click.group("terminal",
              short_help="A terminal: keys, enrolment, outbox, running it.")
def group() -> None:
    """A terminal (gate, handheld, kiosk): its keys and enrolment, its outbox, running it."""


@group.command("init")
@click.option("--secrets", "secrets_dir", type=click.Path(path_type=Path), required=True,
              help="Folder for the device's keys (made with mode 0700).")
@click.option("--device-id", required=True)
@click.option("--store", required=True)
def terminal_init(secrets_dir: Path, device_id: str, store: str) -> None:
    """Create the device's signing key (first start) and print its public key."""
    from terminal_fw.identity import load_or_create

    ident = load_or_create(secrets_dir, device_id, store)
    click.echo(json.dumps({"device_id": ident.device_id, "store": ident.store,
                           "public_key": ident.public_key_hex}))


@group.command("outbox")
@click.option("--store-db", type=click.Path(path_type=Path, exists=True), required=True)
def terminal_outbox(store_db: Path) -> None:
    """Show what the terminal still holds for HQ."""
    from terminal_fw.outbox import Outbox

    box = Outbox(store_db)
    click.echo(f"made {box.last_seq} records, HQ acknowledged through #{box.acked_through}, "
               f"{box.backlog()} waiting")


@group.command("enrol")
@click.option("--hq", "hq_url", required=True, help="HQ's API, https://...")
@click.option("--token", envvar="ONECARD_ENROL_TOKEN", required=True,
              help="One-time enrolment token from HQ (env ONECARD_ENROL_TOKEN).")
@click.option("--secrets", "secrets_dir", type=click.Path(path_type=Path), required=True,
              help="The device's secrets folder (made with mode 0700).")
@click.option("--ca", "ca_file", type=click.Path(path_type=Path, exists=True), default=None,
              help="CA certificate to trust for HQ (default: the system's).")
def terminal_enrol(hq_url: str, token: str, secrets_dir: Path, ca_file: Path | None) -> None:
    """Enrol this terminal: make its keys, send the public parts and the token to HQ."""
    from terminal_fw.enrolment import EnrolmentFailed, enrol

    try:
        done = enrol(hq_url, token, secrets_dir, ca_file=ca_file)
    except EnrolmentFailed as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps({"device_id": done.device_id, "store": done.store, "role": done.role,
                           "broker": f"{done.broker_host}:{done.broker_port}"}))


group.add_command(terminal_enrol, "enroll")  # the spelling of earlier releases


@group.command("join")
@click.argument("hq_url")
@click.option("--token", envvar="ONECARD_ENROL_TOKEN", required=True,
              help="One-time enrolment token (in the line `hq enrolment-token` printed).")
@click.option("--ca-hash", required=True,
              help="sha256:<hex> of HQ's CA key; the CA fetched from HQ must match it.")
@click.option("--secrets", "secrets_dir", type=click.Path(path_type=Path),
              default="/var/lib/onecard/secrets", show_default=True)
@click.option("--data", "data_dir", type=click.Path(path_type=Path),
              default="/var/lib/onecard/data", show_default=True)
@click.option("--settings", "settings_file", type=click.Path(path_type=Path),
              default="/etc/onecard/terminal.toml", show_default=True)
@click.option("--unit-dir", type=click.Path(path_type=Path), default="/etc/systemd/system",
              show_default=True, help="Where the systemd unit is written.")
@click.option("--start/--no-start", default=True, show_default=True,
              help="Enable and start the service (systemctl).")
@click.option("--pcsc-entry", default=None, help="PC/SC entry reader name or prefix.")
@click.option("--pcsc-exit", default=None, help="PC/SC exit reader name or prefix.")
@click.option("--uid-reader", "uid_readers", multiple=True,
              help="Serial UID reader PORT:KIND (KIND em4100 or qr); repeatable.")
@click.option("--mock-gpio", is_flag=True, help="gpiozero mock pins (no Raspberry Pi).")
def terminal_join(hq_url: str, token: str, ca_hash: str, secrets_dir: Path, data_dir: Path,
                  settings_file: Path, unit_dir: Path, start: bool, pcsc_entry: str | None,
                  pcsc_exit: str | None, uid_readers: tuple[str, ...], mock_gpio: bool) -> None:
    """Join HQ in one step: pin HQ's CA, enrol, install the card keys and the store's
    config HQ hands over, write the settings and the service, start it."""
    from terminal_fw.enrolment import EnrolmentFailed
    from terminal_fw.join import join

    try:
        done = join(hq_url, token, ca_hash, secrets_dir=secrets_dir, data_dir=data_dir,
                    settings_file=settings_file, unit_dir=unit_dir, start=start,
                    pcsc_entry=pcsc_entry, pcsc_exit=pcsc_exit,
                    uid_readers=_uid_readers(uid_readers), mock_gpio=mock_gpio)
    except EnrolmentFailed as exc:
        raise click.ClickException(str(exc)) from None
    e = done.enrolled
    click.echo(f"{e.device_id} ({e.role}, store {e.store}): card keys installed, config "
               f"version {done.config_version or 'none yet'}, settings {done.settings_file}, "
               f"service {done.unit_file}", err=True)
    if not done.config_version:
        click.echo("warning: HQ holds no config for this store yet; the terminal refuses "
                   "taps until `onecard hq push-config --store ...`", err=True)
    if done.started:
        click.echo("ready")
    else:
        click.echo(f"ready: start it with `onecard terminal run --settings {done.settings_file}`")


@group.command("roll-keys")
@click.option("--hq", "hq_url", required=True)
@click.option("--secrets", "secrets_dir", type=click.Path(path_type=Path), required=True)
@click.option("--store-db", type=click.Path(path_type=Path, exists=True), required=True,
              help="The terminal's outbox: it must be empty (HQ acked every record).")
@click.option("--ca", "ca_file", type=click.Path(path_type=Path, exists=True), default=None)
def terminal_roll_keys(hq_url: str, secrets_dir: Path, store_db: Path,
                       ca_file: Path | None) -> None:
    """Replace the signing and MQTT keys; HQ revokes the old ones at once."""
    from terminal_fw.enrolment import EnrolmentFailed, roll_keys
    from terminal_fw.outbox import Outbox

    try:
        done = roll_keys(hq_url, secrets_dir, outbox=Outbox(store_db), ca_file=ca_file)
    except EnrolmentFailed as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{done.device_id}: new keys in place; reconnect the uplink")


def _uid_readers(given: tuple[str, ...]) -> list[dict[str, str]]:
    """``PORT:KIND`` specs (KIND em4100 or qr) as the runtime's settings hold them."""
    specs = [u.rsplit(":", 1) for u in given]
    for spec, text in zip(specs, given, strict=True):
        if len(spec) != 2 or not spec[0] or spec[1] not in ("em4100", "qr"):
            raise click.BadParameter(f"{text[:60]!r} is not PORT:KIND with KIND em4100 "
                                     "or qr", param_hint="--uid-reader")
    return [{"port": p, "kind": k} for p, k in specs]


@group.command("run")
@click.option("--settings", "settings_file", type=click.Path(path_type=Path, exists=True),
              default=None, help="Local settings (TOML), e.g. /etc/onecard/terminal.toml.")
@click.option("--secrets", "secrets_dir", type=click.Path(path_type=Path), default=None,
              help="The enrolled secrets folder (overrides the settings file).")
@click.option("--data", "data_dir", type=click.Path(path_type=Path), default=None,
              help="Outbox and local store folder (overrides the settings file).")
@click.option("--role", type=click.Choice(["gate", "handheld", "kiosk"]), default=None,
              help="Default: the role HQ enrolled the terminal for.")
@click.option("--broker-host", default=None)
@click.option("--broker-port", type=PORT, default=None)
@click.option("--broker-password", envvar="ONECARD_BROKER_PASSWORD", default=None,
              help="Password broker for development (env ONECARD_BROKER_PASSWORD); "
                   "enrolled terminals use mutual TLS.")
@click.option("--pcsc-entry", default=None, help="PC/SC entry reader name or prefix.")
@click.option("--pcsc-exit", default=None, help="PC/SC exit reader name or prefix.")
@click.option("--pn532-entry", default=None,
              help="PN532 entry reader's serial port (e.g. /dev/serial0).")
@click.option("--pn532-exit", default=None, help="PN532 exit reader's serial port.")
@click.option("--uid-reader", "uid_readers", multiple=True,
              help="Serial UID reader PORT:KIND (KIND em4100 or qr); repeatable.")
@click.option("--mock-gpio", is_flag=True, help="gpiozero mock pins (no Raspberry Pi).")
@click.option("--admit-timeout", type=BoundedFloat(0, 3600, low_open=True), default=None,
              help="Seconds the turnstile stays released for one passage.")
@click.option("--events", is_flag=True, help="Print each decision as a JSON line on stdout.")
def terminal_run(settings_file: Path | None, secrets_dir: Path | None, data_dir: Path | None,
                 role: str | None, broker_host: str | None, broker_port: int | None,
                 broker_password: str | None, pcsc_entry: str | None, pcsc_exit: str | None,
                 pn532_entry: str | None, pn532_exit: str | None,
                 uid_readers: tuple[str, ...], mock_gpio: bool, admit_timeout: float | None,
                 events: bool) -> None:
    """Run the terminal (gate, handheld or kiosk) from its enrolled identity."""
    from terminal_fw.runtime import RuntimeSettings, serve

    overrides = {"secrets_dir": secrets_dir, "data_dir": data_dir, "role": role,
                 "broker_host": broker_host, "broker_port": broker_port,
                 "broker_password": broker_password, "pcsc_entry": pcsc_entry,
                 "pcsc_exit": pcsc_exit, "pn532_entry": pn532_entry,
                 "pn532_exit": pn532_exit, "admit_timeout_s": admit_timeout}
    if uid_readers:
        overrides["uid_readers"] = _uid_readers(uid_readers)
    if mock_gpio:
        overrides["gpio"] = {"mock": True}
    if events:
        overrides["events"] = lambda e: print(json.dumps(e, default=str), flush=True)
    if settings_file is not None:
        try:
            settings = RuntimeSettings.from_toml(settings_file, **overrides)
        except (ValueError, TypeError, KeyError, OSError) as exc:
            raise click.ClickException(f"settings file {settings_file}: {exc}") from None
    else:
        if secrets_dir is None or data_dir is None:
            raise click.UsageError("give --settings, or --secrets and --data")
        settings = RuntimeSettings(**{k: v for k, v in overrides.items() if v is not None})
    try:
        serve(settings)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
