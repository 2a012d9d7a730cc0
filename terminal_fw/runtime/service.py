"""Running a terminal as a system service (``onecard terminal run``, systemd)."""

from __future__ import annotations

import logging
import logging.handlers
import signal
import threading
from pathlib import Path

from terminal_fw.runtime.settings import RuntimeSettings
from terminal_fw.runtime.terminal import Runtime

log = logging.getLogger(__name__)


def check_in_at_start(settings: RuntimeSettings) -> dict | None:
    """Ask HQ for the time, the card keys and the store's config before serving
    (terminal_fw.join.check_in); None when HQ cannot be reached or the terminal was not
    enrolled through HQ's API. An unreachable HQ does not stop an offline-first terminal:
    it serves on the clock floor and the config it has."""
    from terminal_fw.enrolment import EnrolmentFailed
    from terminal_fw.join import check_in, write_card_keys

    if not (Path(settings.secrets_dir) / "enrolment.json").exists():
        return None
    try:
        answer = check_in(settings.secrets_dir)
    except (EnrolmentFailed, OSError, ValueError) as exc:
        log.warning("check-in with HQ failed (%s): serving on the stored clock floor and "
                    "config", exc)
        return None
    if answer.get("card_keys"):
        write_card_keys(settings.secrets_dir, answer["card_keys"])
    return answer


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
    answer = check_in_at_start(settings)
    runtime = Runtime(settings)
    if answer is not None:
        runtime.apply_check_in(answer)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    runtime.start()
    try:
        done.wait()
    finally:
        runtime.stop(clean=True)
