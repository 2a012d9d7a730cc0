"""Build the subscription-ACL plugin that every OneCard broker loads.

Mosquitto 2.0.11 grants every SUBSCRIBE whatever its ``acl_file`` says and applies the
file only when it delivers a message (see ``plugin/onecard_acl.c``). A terminal could
then join HQ ingest's shared subscription and take every second record. The plugin
reads the same ACL file and refuses a subscription that the file's read rules do not
cover, with a failure reason code in the SUBACK.

The plugin is C, built here with the system compiler against the headers of the
``mosquitto-dev`` and ``libmosquitto-dev`` packages (``scripts/apt-packages.txt``). The
build is cached under ``$XDG_CACHE_HOME/onecard`` (never a world-writable folder: the
broker loads this file as code) keyed by the source's hash, and each broker folder gets
its own copy, owned like the rest of the folder by the ``mosquitto`` user.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

SOURCE = Path(__file__).parent / "plugin" / "onecard_acl.c"

#: The file name of the plugin inside a broker folder.
PLUGIN_NAME = "onecard_acl.so"


class PluginBuildError(RuntimeError):
    """The plugin could not be compiled: a compiler or the mosquitto headers are missing."""


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "onecard"


def build_plugin() -> Path:
    """Compile the plugin once per source version; the path of the shared object."""
    source = SOURCE.read_bytes()
    digest = hashlib.sha256(source).hexdigest()[:16]
    target = _cache_dir() / f"onecard_acl-{digest}.so"
    if target.exists():
        return target
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise PluginBuildError("no C compiler (cc): install gcc to build the broker's ACL plugin")
    for header in ("mosquitto_broker.h", "mosquitto.h"):
        if not Path("/usr/include", header).exists():
            raise PluginBuildError(
                f"/usr/include/{header} is missing: install the mosquitto-dev and "
                "libmosquitto-dev packages (make setup does)")
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.tmp")
    result = subprocess.run(
        [compiler, "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-o", str(partial),
         str(SOURCE)], capture_output=True, text=True)
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise PluginBuildError(f"building {SOURCE.name} failed:\n{result.stderr}")
    os.replace(partial, target)
    return target


def install_plugin(directory: Path) -> Path:
    """Put the plugin into a broker folder (mode 0644); its path there."""
    target = Path(directory) / PLUGIN_NAME
    partial = target.with_suffix(".tmp")
    shutil.copyfile(build_plugin(), partial)
    os.chmod(partial, 0o644)
    os.replace(partial, target)
    return target
