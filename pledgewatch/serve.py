"""Run the HTTP server in a background thread (uvicorn), for the demo and the tests.

Open event streams never end by themselves, so a stop waits at most two seconds for them."""

from __future__ import annotations

import threading
import time

import uvicorn
from fastapi import FastAPI

from pledgewatch.net import free_port, port_open


class HttpServer:
    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        if port == 0 or port_open(port, host if host != "0.0.0.0" else "127.0.0.1"):
            port = free_port()
        self.host, self.port = host, port
        self._server = uvicorn.Server(uvicorn.Config(app, host=host, port=port,
                                                     log_level="warning", access_log=False,
                                                     timeout_graceful_shutdown=2))
        self._thread = threading.Thread(target=self._server.run, name="http", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{'127.0.0.1' if self.host == '0.0.0.0' else self.host}:{self.port}"

    def start(self, timeout: float = 15) -> HttpServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"the HTTP server did not start on {self.host}:{self.port}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)
