"""Running a terminal as a system service (``onecard terminal run``, systemd)."""

from __future__ import annotations

import logging
import logging.handlers
import signal
import threading
from pathlib import Path

from terminal_fw.runtime.settings import RuntimeSettings
from terminal_fw.runtime.terminal import Runtime


def serve(settings: RuntimeSettings) -> None:
    """Run the terminal until SIGTERM/SIGINT.

    Logs go to stderr (the journal under systemd) and to ``terminal.log`` in the data
    folder, rotated, which is what HQ's ``collect_logs`` command reads back.
    """
    data = Path(settings.data_dir)
    data.mkdir(parents=True, exist_ok=True)
    log_file = settings.log_path
    handler = logging.handlers.RotatingFileHandler(log_file, maxBytes=1_000_000, backupCount=3)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(min(logging.getLogger().level or logging.INFO, logging.INFO))
    settings.log_file = log_file
    runtime = Runtime(settings)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    runtime.start()
    try:
        done.wait()
    finally:
        runtime.stop(clean=True)
