"""``onecard broker``: the production broker's site (CAs, config, certificates), store
brokers, CRL renewal, and running it on one machine."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import click

from onecard.cli.options import PORT, site_option


@click.group("broker",
              short_help="The production broker: CAs, mutual TLS, store bridges.")
def group() -> None:
    """Production broker: device and service CAs, mutual TLS config, store bridges."""


@group.command("init")
@click.argument("root", type=click.Path(path_type=Path))
@click.option("--hostname", "hostnames", multiple=True, required=True,
              help="Name or address terminals use for the broker (repeatable).")
@click.option("--api-hostname", "api_hostnames", multiple=True,
              help="Name or address of HQ's HTTPS API (default: the broker's).")
@click.option("--device-port", type=PORT, default=8883, show_default=True)
@click.option("--service-port", type=PORT, default=8884, show_default=True)
@click.option("--device-bind", default="0.0.0.0", show_default=True)
@click.option("--service-bind", default="127.0.0.1", show_default=True,
              help="Keep the services listener on HQ's internal network.")
def broker_init(root: Path, hostnames: tuple[str, ...], api_hostnames: tuple[str, ...],
                device_port: int, service_port: int, device_bind: str, service_bind: str) -> None:
    """Make the CAs, HQ's broker config and certificates, and HQ's credentials in ROOT."""
    from broker_config.install import SiteConfig, init_site
    from broker_config.pki import PkiError

    try:
        site = init_site(root, SiteConfig(list(hostnames), device_port, service_port,
                                          device_bind, service_bind,
                                          list(api_hostnames) or None))
    except (PkiError, PermissionError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"site ready in {site.root}\n"
               f"  broker:  mosquitto -c {site.broker.conf}\n"
               f"  HQ API:  onecard hq serve-api --site {site.root}\n"
               f"  keep {site.pki} secret and backed up: it holds the CA keys")


@group.command("store-init")
@click.argument("directory", type=click.Path(path_type=Path))
@site_option
@click.option("--store", required=True)
@click.option("--hostname", "hostnames", multiple=True, required=True,
              help="Name or address the store's terminals use for this broker.")
@click.option("--hq-host", required=True, help="Where the store reaches HQ's services listener.")
@click.option("--device-port", type=PORT, default=8883, show_default=True)
def broker_store_init(directory: Path, site_root: Path, store: str, hostnames: tuple[str, ...],
                      hq_host: str, device_port: int) -> None:
    """Make a store broker folder (config, server cert, bridge identity) to copy to a store."""
    from broker_config.install import Site, init_store_broker
    from broker_config.pki import PkiError

    try:
        files = init_store_broker(Site(site_root), directory, store=store,
                                  hostnames=list(hostnames), hq_host=hq_host,
                                  device_port=device_port)
    except (PkiError, PermissionError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"store broker for {store} in {files.directory}: mosquitto -c {files.conf}")


@group.command("renew-crl")
@site_option
def broker_renew_crl(site_root: Path) -> None:
    """Re-sign both CRLs and reload the broker (monthly: an expired CRL locks out all)."""
    from broker_config.install import Site, reload_broker, renew_crls

    site = Site(site_root)
    renew_crls(site)
    reloaded = reload_broker(site.broker.pid_file)
    click.echo("CRLs renewed" + ("; broker reloaded" if reloaded else "; broker not running"))


@group.command("run")
@site_option
def broker_run(site_root: Path) -> None:
    """Run HQ's broker in the foreground with the site's config (single machine)."""
    from broker_config.install import Site
    from broker_config.runner import MtlsBroker

    b = MtlsBroker(Site(site_root).broker).start()
    click.echo(f"broker: devices on {b.port}, services on {b.service_port}", err=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        assert b.proc is not None
        b.proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        b.stop()
