"""The HTTP server under ``melodia serve``: one :class:`~melodia.api.Composer`, its lock, and the
limits that keep one slow or greedy client from holding the others (connections served at
once, a deadline for each request to arrive, a bounded queue for the model).

The routes and what they answer are :mod:`melodia.serve`'s handler; this module is the house
they run in. Example: ``MelodiaServer(("127.0.0.1", 0), composer, MelodiaHandler, quiet=True)``
"""
from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.resources import files
from typing import TYPE_CHECKING, Any

from .request import RequestError

if TYPE_CHECKING:  # pragma: no cover
    from .api import Composer

log = logging.getLogger("melodia.serve")

SOCKET_TIMEOUT = 10.0           # seconds for any one socket read or write
READ_DEADLINE = 30.0            # seconds from connecting until the whole request (headers, body) is in
MAX_CONNECTIONS = 32            # connections served at once; more get 503 at once
QUEUE_TIMEOUT = 120.0           # seconds a request may wait for the model
MAX_WAITING = 8                 # requests waiting for the model at once; more get 503 at once
MAX_RENDERS = 2                 # audio / MusicXML renders at once (CPU-bound, outside the model lock)
#: longest audio ``POST /render`` makes (seconds; longer is a 413 before rendering): any 64-bar
#: 4/4 piece down to 26 qpm, and at most ~115 MB of WAV (~154 MB of base64) at 48 kHz, where the
#: renderer's own bound (``render.MAX_RENDER_SECONDS``, 20 minutes) is twice that
MAX_WAV_SECONDS = 600
LOOPBACK_NAMES = {"localhost", "localhost.", "127.0.0.1", "::1"}


def page_bytes() -> bytes:
    """The composing page ``GET /`` answers (``melodia/web/index.html``, shipped in the wheel).

    Example: ``len(page_bytes())  # ~25 kB``
    """
    return files("melodia").joinpath("web", "index.html").read_bytes()


class MelodiaServer(ThreadingHTTPServer):
    """A ``ThreadingHTTPServer`` holding one Composer, its lock and the limits.

    Example:
        >>> server = make_server(composer, port=0); server.server_address[1]   # the free port
    """

    daemon_threads = True
    block_on_close = False      # server_close joins the handler threads itself, with a time limit
    request_queue_size = 64
    close_timeout = 10.0        # seconds server_close waits for requests in progress

    def __init__(self, address: tuple[str, int], composer: "Composer", handler: type[BaseHTTPRequestHandler], *,
                 queue_timeout: float = QUEUE_TIMEOUT,
                 max_waiting: int = MAX_WAITING, max_connections: int = MAX_CONNECTIONS,
                 socket_timeout: float = SOCKET_TIMEOUT, read_deadline: float = READ_DEADLINE,
                 quiet: bool = False):
        host = address[0]
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.composer = composer
        self.queue_timeout = float(queue_timeout)
        self.max_waiting = int(max_waiting)
        self.socket_timeout = float(socket_timeout)
        self.read_deadline = float(read_deadline)
        self.quiet = quiet
        self.loopback_only = is_loopback(host)
        self.model_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_connections)
        self.waiting = 0
        self.served = 0
        self.started = time.monotonic()
        self._reading: dict[Any, float] = {}   # connection -> when its request must be in
        self._handlers: set[threading.Thread] = set()
        self._watchdog: threading.Thread | None = None
        self._closed = threading.Event()
        self.renders = threading.BoundedSemaphore(MAX_RENDERS)
        self.page = page_bytes()  # read once: GET / answers from memory
        super().__init__(address, handler)

    # ---- a request must arrive within read_deadline of connecting
    def start_reading(self, conn: Any) -> float:
        """Register a new connection with the watchdog; returns its deadline (monotonic s). Example: ``deadline = server.start_reading(conn)``"""
        deadline = time.monotonic() + self.read_deadline
        with self._count_lock:
            self._reading[conn] = deadline
            if self._watchdog is None:
                self._watchdog = threading.Thread(target=self._watch, name="melodia-watchdog", daemon=True)
                self._watchdog.start()
        return deadline

    def done_reading(self, conn: Any) -> None:
        """The request is in (or the connection is over): the watchdog lets it be. Example: ``server.done_reading(conn)``"""
        with self._count_lock:
            self._reading.pop(conn, None)

    def _watch(self) -> None:
        while not self._closed.wait(0.25):
            now = time.monotonic()
            with self._count_lock:
                late = [c for c, d in self._reading.items() if d < now]
                for c in late:
                    del self._reading[c]
            for c in late:  # the handler's blocked read returns EOF and the thread ends
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def server_close(self) -> None:
        """Stop listening, cut connections whose request is not in yet, and wait (at most
        ``close_timeout`` s) for requests in progress; later waiters for the model get 503.

        The threads hold references to the server and so to the model: they are let go before
        the caller exits, since a daemon thread freeing torch tensors while Python shuts down
        aborts the process.

        Example: ``server.shutdown(); server.server_close()``
        """
        self._closed.set()
        super().server_close()
        with self._count_lock:
            reading = list(self._reading)
            self._reading.clear()
            threads = [t for t in (self._watchdog, *self._handlers) if t is not None]
        for c in reading:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        end = time.monotonic() + self.close_timeout
        for t in threads:
            if t is not threading.current_thread():
                t.join(max(0.0, end - time.monotonic()))

    # ---- at most max_connections handler threads; the rest are refused at once
    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            try:
                request.settimeout(1.0)
                body = b'{"error": "server busy: too many connections", "status": 503}'
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                                b"Retry-After: 1\r\nConnection: close\r\nContent-Length: "
                                + str(len(body)).encode() + b"\r\n\r\n" + body)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        me = threading.current_thread()
        with self._count_lock:
            self._handlers.add(me)
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._count_lock:
                self._handlers.discard(me)
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.error("error while serving %s:\n%s", client_address, traceback.format_exc())

    # ---- the model, one request at a time
    def run_model(self, method: str, kwargs: dict[str, Any]) -> list:
        """Run one Composer call under the model lock, waiting at most ``queue_timeout``. Example: ``pieces = server.run_model("generate", {"mood": "calm", "bars": 8})``"""
        with self._count_lock:
            if self.waiting >= self.max_waiting:
                raise RequestError(503, f"server busy: {self.waiting} requests are already waiting; try again",
                                   {"Retry-After": "2"})
            self.waiting += 1
        try:
            got = self.model_lock.acquire(timeout=self.queue_timeout)
        finally:
            with self._count_lock:
                self.waiting -= 1
        if not got:
            raise RequestError(503, f"server busy: waited {self.queue_timeout:g} s for the model; try again",
                               {"Retry-After": "5"})
        try:
            if self._closed.is_set():
                raise RequestError(503, "the server is shutting down")
            pieces = getattr(self.composer, method)(**kwargs)
        finally:
            self.model_lock.release()
        with self._count_lock:
            self.served += 1
        return pieces

    @property
    def busy(self) -> bool:
        """Whether a generation is running now. Example: ``server.busy  # False when idle``"""
        return self.model_lock.locked()

    @property
    def url(self) -> str:
        """``http://host:port`` of the listening socket. Example: ``server.url``."""
        host, port = self.server_address[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"



def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine (a loopback name or address). Example: ``is_loopback("::1")``."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
