"""HTTP listening sockets, and the HTTP server in a background thread (uvicorn) for the demo and
the tests.

The socket is bound before uvicorn starts, so a port that is taken is known at once, as a
:class:`BindError` with a one-line reason, instead of uvicorn's log line and exit code 3. Open
event streams never end by themselves, so a stop waits at most two seconds for them."""

from __future__ import annotations

import errno
import re
import socket
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI


class BindError(OSError):
    """A port that cannot be listened on; ``str()`` is the reason in one line."""

    def __str__(self) -> str:
        return str(self.strerror)


def bind_problem(exc: OSError, host: str, port: int) -> str:
    """What went wrong binding ``host:port``, in words."""
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host {host!r} to listen on"
    if exc.errno == errno.EADDRINUSE:
        return f"port {port} on {host} is in use"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{host} is not an address of this machine (cannot listen on {host}:{port})"
    if exc.errno == errno.EACCES:
        return f"not allowed to listen on port {port} on {host}"
    return f"cannot listen on {host}:{port}: {exc.strerror or exc}"


# A host name or an IPv4/IPv6 literal; anything else is refused before a name lookup.
HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*")


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (port 0: any free one), ready for uvicorn; BindError
    when that cannot be done."""
    if not HOST.fullmatch(host):
        raise BindError(errno.EINVAL, f"{host!r} is not a host name or address to listen on")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise BindError(exc.errno, bind_problem(exc, host, port)) from None
    family, kind, proto, _name, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise BindError(exc.errno, bind_problem(exc, host, port)) from None
    sock.set_inheritable(True)
    return sock


class HttpServer:
    """uvicorn in a thread. A port that is taken: with ``fallback`` (the demo), any free port
    instead (``moved_from`` says which was asked for); without it, :class:`BindError`."""

    def __init__(self, app: FastAPI, host: str, port: int, *, fallback: bool = True) -> None:
        self.moved_from: int | None = None
        try:
            self._socket = bind_socket(host, port)
        except BindError as exc:
            if not fallback or exc.errno != errno.EADDRINUSE:
                raise
            self._socket = bind_socket(host, 0)
            self.moved_from = port
        self.host, self.port = host, int(self._socket.getsockname()[1])
        # here, not at the top: every command imports BindError and bind_problem from this module
        import uvicorn  # noqa: PLC0415

        self._server = uvicorn.Server(uvicorn.Config(app, host=host, port=self.port,
                                                     log_level="warning", access_log=False,
                                                     timeout_graceful_shutdown=2))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]},
                                        name="http", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{'127.0.0.1' if self.host == '0.0.0.0' else self.host}:{self.port}"

    def start(self, timeout: float = 15) -> HttpServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                self._socket.close()
                raise RuntimeError(f"the HTTP server did not start on {self.host}:{self.port}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)
        self._socket.close()
