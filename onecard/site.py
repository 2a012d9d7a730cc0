"""HQ on a production site: from the folder ``onecard broker init`` made to HQ's settings.

The site folder holds the CAs, the broker's config and HQ's service identity. HQ itself
does not read it (hq_server imports only ``protocol``); this module, part of the
composition root, turns it into what HQ takes: a :class:`BrokerLink` with mutual TLS
for the broker's services listener, :class:`ApiSettings` with the device CA, and the
short-lived fleet client an operator's command uses.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from broker_config.install import Site, SiteDeviceCA, service_tls_context
from hq_server.devices.card_keys import CardKeyring
from hq_server.devices.enrolment import BrokerAddress
from hq_server.fleet.service import FleetService
from hq_server.process.settings import ApiSettings, BrokerLink


class SiteUnusable(ValueError):
    """The folder is not a site, or its broker's services listener does not answer."""


def broker_link(site_root: Path, broker_host: str = "127.0.0.1") -> BrokerLink:
    """HQ's link to the site's broker: the services listener, identity hq@onecard by
    mutual TLS (no password)."""
    site = Site(site_root)
    return BrokerLink(broker_host, site.config.service_port, tls=service_tls_context(site))


def device_authority(site_root: Path, services_host: str = "127.0.0.1") -> SiteDeviceCA:
    """The site's device CA as enrolment and revocation use it; ``services_host`` is
    where HQ reaches the broker's services listener to cut a device off."""
    return SiteDeviceCA(Site(site_root), services_host)


def api_settings(site_root: Path, *, host: str = "127.0.0.1", port: int = 8443,
                 broker_host: str | None = None,
                 services_host: str = "127.0.0.1") -> ApiSettings:
    """The API on the site's certificate; terminals are sent to ``broker_host`` (default:
    the site's first hostname) on its device port."""
    site = Site(site_root)
    config = site.config
    address = BrokerAddress(broker_host or config.hostnames[0], config.device_port)
    return ApiSettings(site.api_cert, site.api_key, address,
                       device_authority(site_root, services_host), host=host, port=port,
                       card_keys=CardKeyring(card_keys_file(site_root)))


def card_keys_file(site_root: Path) -> Path:
    """Where HQ holds the chain's card masters (``onecard hq card-keys init``)."""
    return Site(site_root).hq / "card-keys.json"


def default_hq_url(site_root: Path, port: int = 8443) -> str:
    """HQ's API as terminals reach it: the site's first hostname (its certificate's)."""
    return f"https://{Site(site_root).config.hostnames[0]}:{port}"


def join_line(site_root: Path, token: str, hq_url: str | None = None) -> str:
    """The one line a technician runs on a new terminal: HQ's API, the token, and HQ's
    CA pinned by its key's SHA-256 (kubeadm's ``--discovery-token-ca-cert-hash``)."""
    from protocol.enrolment import ca_pin

    pin = ca_pin(Site(site_root).device_ca_cert.read_bytes())
    return (f"onecard terminal join {hq_url or default_hq_url(site_root)} "
            f"--token {token} --ca-hash {pin}")


def check_broker(site_root: Path, broker_host: str = "127.0.0.1") -> None:
    """Refuse at once, in one sentence, when the folder is not a site or its broker's
    services listener does not answer (instead of a fleet client's timeout later)."""
    try:
        port = Site(site_root).config.service_port
    except (OSError, ValueError, TypeError) as exc:
        raise SiteUnusable(f"{site_root} is not a site folder made by "
                           f"`onecard broker init` ({exc})") from None
    try:
        socket.create_connection((broker_host, port), timeout=5).close()
    except OSError as exc:
        raise SiteUnusable(f"the broker's services listener at {broker_host}:{port} "
                           f"is not reachable ({exc.strerror or exc})") from None


def fleet_client(site_root: Path, broker_host: str = "127.0.0.1") -> FleetService:
    """A connected fleet client for one operator's command (push a config, send a
    command): it sends and collects, and leaves answering terminals to the running
    HQ. The caller stops it."""
    link = broker_link(site_root, broker_host)
    fleet = FleetService(host=link.host, port=link.port, username="", password="",
                         client_id=f"hq-cli-{os.getpid()}", answer=False)
    if link.tls is not None:
        fleet.client.tls_set_context(link.tls)
    return fleet.start()
