"""Run the API on uvicorn with TLS, in the foreground or on a thread (tests, demo)."""

from __future__ import annotations

import ssl
import threading
import time
from pathlib import Path

import uvicorn
from fastapi import FastAPI


def _config(app: FastAPI, host: str, port: int, certfile: Path, keyfile: Path) -> uvicorn.Config:
    return uvicorn.Config(app, host=host, port=port, ssl_certfile=str(certfile),
                          ssl_keyfile=str(keyfile), ssl_version=ssl.PROTOCOL_TLS_SERVER,
                          log_level="warning", access_log=False, server_header=False)


def serve(app: FastAPI, host: str, port: int, certfile: Path, keyfile: Path) -> None:
    """Serve until interrupted. TLS is not optional: tokens and keys cross this link."""
    uvicorn.Server(_config(app, host, port, certfile, keyfile)).run()


class ApiServer:
    """uvicorn on a background thread (it leaves signals alone there); :meth:`start` returns once it listens."""

    def __init__(self, app: FastAPI, host: str, port: int, certfile: Path, keyfile: Path) -> None:
        self.server = uvicorn.Server(_config(app, host, port, certfile, keyfile))
        self.thread = threading.Thread(target=self.server.run, name="hq-api", daemon=True)
        self.url = f"https://{host}:{port}"

    def start(self, timeout: float = 20.0) -> ApiServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("HQ API did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
