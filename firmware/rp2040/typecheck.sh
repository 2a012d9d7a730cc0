#!/bin/sh
# Type-check the firmware against micropython-rp2-stubs in a virtualenv of its own.
# Usage: firmware/rp2040/typecheck.sh VENV (run from the repository root).
set -eu
venv=$1
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# mypy takes a stub folder only outside site-packages: link the board's modules there.
rm -rf .stubs-firmware && mkdir .stubs-firmware
for stub in "$site"/*.pyi "$site"/rp2 "$site"/_mpy_shed; do
    [ -e "$stub" ] && ln -s "$stub" .stubs-firmware/
done
rm -f .stubs-firmware/typing_extensions.pyi .stubs-firmware/mypy_extensions.pyi
# the stdlib the board has: micropython-stdlib-stubs' typeshed replaces CPython's
exec "$venv/bin/mypy" --config-file firmware/rp2040/mypy.ini --custom-typeshed-dir "$site"
