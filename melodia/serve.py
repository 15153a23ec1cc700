"""``melodia serve``: a small local HTTP JSON server around one :class:`~melodia.api.Composer`.

DAWs, editors and scripts in any language ask it for music over HTTP; the model is loaded
once. Routes (JSON in, JSON out):

=================  =========================================================================
``GET /health``    ``{"status": "ok", "version", "model": {...}, "busy", "waiting", "served",
                   "uptime_s", "limits": {...}}``
``GET /moods``     the moods (canonical, the model's own), aliases, valence/arousal centres,
                   meters, instruments and tags a request may use
``POST /generate`` new music: ``{"mood", "bars", "key", "tempo", "meter", "seed", "n", ...}``;
                   with ``"prompt"`` (notes) or ``"midi_base64"`` it continues that instead
``POST /continue`` continue a prompt (``"prompt"`` notes or ``"midi_base64"`` required)
``POST /infill``   rewrite bars of a prompt in place: ``{"midi_base64", "bars": [5, 8], ...}``
``POST /render``   a piece's MIDI as audio or notation: ``{"midi_base64", "format": "wav" |
                   "musicxml", "sample_rate"}`` → ``{"format", "mime", "base64", "bytes"}``
``GET /``          the composing page (one self-contained HTML file that uses only the routes
                   above); ``GET /api`` lists the routes as JSON
=================  =========================================================================

The composing routes answer ``{"pieces": [{"notes": [...], "midi_base64": "...", "bars", "tempo",
"meter", "mood", "key", "seed", "length_beats", "duration_s"}, ...], "elapsed_s", "model"}``;
docs/daw.md lists every field. A bad request gets a 4xx answer ``{"error": "<what is wrong>",
"status": 400}``; the server keeps serving.

Design: the standard library's ``ThreadingHTTPServer`` (one thread per connection), not a web
framework. The API is a handful of JSON routes and one static page; generation is CPU-bound and runs one request at a time
on the one model, so an async framework would buy nothing, and a dependency-free server is one
less thing for a DAW user to install. What a framework would otherwise give is written here
and tested (tests/test_serve.py):

* binds 127.0.0.1 unless told otherwise; when bound to loopback it answers only requests whose
  ``Host`` names loopback (a web page cannot reach it through DNS rebinding), and POSTs must be
  ``Content-Type: application/json`` (a browser cannot send that cross-site without a CORS
  preflight, which this server never grants);
* limits: body at most :data:`MAX_BODY` bytes (checked against ``Content-Length`` before
  reading; 413), bars 1-64, n 1-16, at most :data:`MAX_PROMPT_NOTES` prompt notes, typed and
  range-checked fields (unknown fields are refused, so a typo is not silently ignored);
* time: every socket read and write has a timeout (:data:`SOCKET_TIMEOUT`), and a watchdog
  closes a connection whose request (line, headers and body) is not in within
  :data:`READ_DEADLINE` of connecting, so a slow or stuck client holds only its own thread; at
  most :data:`MAX_CONNECTIONS` connections are served at once (more get an immediate 503); a
  request waits at most ``queue_timeout`` seconds for the model (then 503 + ``Retry-After``),
  and at most ``max_waiting`` requests wait at once;
* generation is serialised by one lock (one model, one KV cache); everything else (parsing,
  validation, JSON, base64) runs in parallel in the connection threads;
* no request value is ever used as a file path: a prompt MIDI arrives as base64 bytes and is
  parsed in memory by :func:`melodia.midifile.load_score`;
* every :class:`~melodia.errors.MelodiaError` becomes a 400 naming the field; anything else is
  logged with its traceback and answered with a 500 that leaks no internals.

It is meant for one user on one machine. Exposing it to a network (``--host 0.0.0.0``) gives
anyone who can reach the port free use of your CPU; put an authenticating reverse proxy in
front if you need that.

Example:
    $ melodia serve --model runs/small/model          # then:
    $ curl -s localhost:8765/generate -H 'Content-Type: application/json' \\
           -d '{"mood": "calm", "bars": 8, "seed": 1}'
"""
from __future__ import annotations

import argparse
import base64
import binascii
import ipaddress
import json
import logging
import socket
import sys
import threading
import time
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import urlsplit

from .errors import BadInputError, MelodiaError

if TYPE_CHECKING:  # pragma: no cover
    from .api import Composer

__all__ = ["make_server", "serve", "add_serve_arguments", "cli_serve", "parse_request", "warm_up",
           "MelodiaServer", "DEFAULT_HOST", "DEFAULT_PORT", "MAX_BODY"]

log = logging.getLogger("melodia.serve")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
MAX_BODY = 1024 * 1024          # bytes of request body (1 MiB)
MAX_BARS = 64
MAX_N = 16
MAX_PROMPT_NOTES = 10_000
MAX_INSTRUMENTS = 16
MAX_TAGS = 16
SOCKET_TIMEOUT = 10.0           # seconds for any one socket read or write
READ_DEADLINE = 30.0            # seconds from connecting until the whole request (headers, body) is in
MAX_CONNECTIONS = 32            # connections served at once; more get 503 at once
QUEUE_TIMEOUT = 120.0           # seconds a request may wait for the model
MAX_WAITING = 8                 # requests waiting for the model at once; more get 503 at once
LOOPBACK_NAMES = {"localhost", "localhost.", "127.0.0.1", "::1"}

# The JSON fields a POST may carry, and what each must be.
_GENERATE_FIELDS = {"mood", "valence", "arousal", "bars", "key", "tempo", "meter", "instruments", "n", "seed",
                    "temperature", "guidance", "top_k", "top_p", "tags", "in_key", "leading_tone",
                    "dynamics", "chords", "form", "vary", "include_midi", "include_notes"}
_PROMPT_FIELDS = {"prompt", "midi_base64", "context_bars", "include_prompt"}
_POST_ROUTES = ("/generate", "/continue", "/infill", "/render")
_GET_ROUTES = ("/", "/api", "/health", "/moods")
MAX_RENDERS = 2                 # audio / MusicXML renders at once (CPU-bound, outside the model lock)
#: what the composing page may load: itself, its own inline script and style, and the media it
#: makes from the server's answers; nothing from anywhere else
PAGE_CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self' blob:; "
            "media-src blob: data:; img-src blob: data:; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'")
_RENDER_FIELDS = {"midi_base64", "format", "sample_rate"}


def page_bytes() -> bytes:
    """The composing page ``GET /`` answers (``melodia/web/index.html``, shipped in the wheel).

    Example: ``len(page_bytes())  # ~25 kB``
    """
    from importlib.resources import files

    return files("melodia").joinpath("web", "index.html").read_bytes()


def parse_render(body: Any) -> tuple[bytes, str, int]:
    """Check a ``POST /render`` body: ``(midi bytes, "wav" | "musicxml", sample rate)``.

    Example: ``parse_render({"midi_base64": b64, "format": "wav"})[1]  # 'wav'``
    """
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object, like {\"midi_base64\": \"...\", \"format\": \"wav\"}")
    unknown = sorted(set(body) - _RENDER_FIELDS)
    if unknown:
        raise _bad(f"unknown field(s) {', '.join(map(repr, unknown))}; known: {', '.join(sorted(_RENDER_FIELDS))}")
    fmt = _str_field(body, "format", "wav", max_len=16)
    if fmt not in ("wav", "musicxml"):
        raise _bad(f"format {fmt!r}: use \"wav\" or \"musicxml\"")
    rate = _int_field(body, "sample_rate", 8000, 48000, 44100)
    data = body.get("midi_base64")
    if not isinstance(data, str) or not data.strip():
        raise _bad("/render needs \"midi_base64\": a MIDI file, base64-encoded (a piece's midi_base64)")
    try:
        raw = base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise _bad("midi_base64 is not valid base64") from None
    return raw, fmt, rate


class RequestError(Exception):
    """A request the server refuses: HTTP status and a message for the client."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


# ============================================================================ validation
def _bad(msg: str) -> RequestError:
    return RequestError(400, msg)


def _int_field(body: dict, name: str, lo: int, hi: int, default: Any) -> Any:
    v = body.get(name, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int):
        raise _bad(f"{name} must be an integer from {lo} to {hi}, got {json.dumps(v)}")
    if not lo <= v <= hi:
        raise _bad(f"{name} {v} is out of range: must be from {lo} to {hi}")
    return v


def _num_field(body: dict, name: str, lo: float, hi: float, default: Any, lo_open: bool = False) -> Any:
    v = body.get(name, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v in (float("inf"), float("-inf")):
        raise _bad(f"{name} must be a number, got {json.dumps(v)}")
    if v < lo or v > hi or (lo_open and v == lo):
        raise _bad(f"{name} {v} is out of range: must be {'above' if lo_open else 'from'} {lo:g} "
                   f"{'and at most' if lo_open else 'to'} {hi:g}")
    return float(v)


def _str_field(body: dict, name: str, default: Any, max_len: int = 64) -> Any:
    v = body.get(name, default)
    if v is None:
        return default
    if not isinstance(v, str):
        raise _bad(f"{name} must be a string, got {json.dumps(v)[:80]}")
    if len(v) > max_len:
        raise _bad(f"{name} is too long ({len(v)} characters; limit {max_len})")
    return v


def _bool_field(body: dict, name: str, default: bool) -> bool:
    v = body.get(name, default)
    if not isinstance(v, bool):
        raise _bad(f"{name} must be true or false, got {json.dumps(v)[:80]}")
    return v


def _list_field(body: dict, name: str, limit: int, item_ok: Callable[[Any], bool], what: str) -> Any:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, (str, int)) and not isinstance(v, bool) and item_ok(v):
        v = [v]
    if not isinstance(v, list) or not all(item_ok(x) for x in v):
        raise _bad(f"{name} must be a list of {what}, got {json.dumps(v)[:80]}")
    if len(v) > limit:
        raise _bad(f"{name}: {len(v)} items is too many (limit {limit})")
    return v


def parse_request(body: Any, composer: "Composer", route: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Check a POST body and turn it into a Composer call.

    Returns ``(method, kwargs, options)``: ``method`` is ``"generate"`` or ``"continue_from"``,
    ``kwargs`` its keyword arguments, ``options`` the response switches (``include_midi``,
    ``include_notes``). Raises :class:`RequestError` (400) naming the first bad field.

    Example:
        >>> parse_request({"mood": "calm", "bars": 8}, composer, "/generate")[0]
        'generate'
    """
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object, like {\"mood\": \"calm\", \"bars\": 8}")
    unknown = sorted(set(body) - _GENERATE_FIELDS - _PROMPT_FIELDS)
    if unknown:
        raise _bad(f"unknown field(s) {', '.join(map(repr, unknown))}; known: "
                   f"{', '.join(sorted(_GENERATE_FIELDS | _PROMPT_FIELDS))}")
    has_prompt = body.get("prompt") is not None or body.get("midi_base64") is not None
    if route in ("/continue", "/infill") and not has_prompt:
        raise _bad(f"{route} needs a prompt: \"prompt\" (a list of notes) or \"midi_base64\" (a MIDI file)")
    if route == "/infill":
        span = body.get("bars")
        if span is None:
            raise _bad("/infill needs \"bars\": the first and last bar to rewrite, like [5, 8] or \"5-8\"")
        if "include_prompt" in body:
            raise _bad("include_prompt does not apply to /infill: the whole clip always comes back")
        if not isinstance(span, (list, str, int)) or isinstance(span, bool) or \
                (isinstance(span, list) and len(span) > 2):
            raise _bad(f"bars {span!r}: give the first and last bar to rewrite, like [5, 8] or \"5-8\"")
        from .api import parse_bar_span

        try:
            span = parse_bar_span(span)
        except BadInputError as e:
            raise _bad(str(e)) from None
        body = {k: v for k, v in body.items() if k != "bars"}
    for name in ("form", "vary"):
        if name in body and (has_prompt or route != "/generate"):
            raise _bad(f"{name} applies to a new piece (POST /generate with no prompt)")
    if not has_prompt:
        extra = sorted(k for k in ("context_bars", "include_prompt") if k in body)
        if extra:
            raise _bad(f"{', '.join(extra)} only apply with a prompt (\"prompt\" or \"midi_base64\")")

    mood = _str_field(body, "mood", None)
    valence = _num_field(body, "valence", -1.0, 1.0, None)
    arousal = _num_field(body, "arousal", -1.0, 1.0, None)
    try:
        composer.resolve_mood(mood, valence, arousal)
    except BadInputError as e:
        raise _bad(str(e)) from None
    kw: dict[str, Any] = {
        "mood": mood, "valence": valence, "arousal": arousal,
        "bars": _int_field(body, "bars", 1, MAX_BARS, 8 if not has_prompt else 4),
        "key": _str_field(body, "key", None),
        "n": _int_field(body, "n", 1, MAX_N, 1),
        "seed": _int_field(body, "seed", -(2 ** 63), 2 ** 64 - 1, None),
        "temperature": _num_field(body, "temperature", 0.0, 10.0, 1.0, lo_open=True),
        "guidance": _num_field(body, "guidance", 0.0, 20.0, 1.0),
        "top_k": _int_field(body, "top_k", 0, 100_000, 0),
        "top_p": _num_field(body, "top_p", 0.0, 1.0, 0.95, lo_open=True),
        "instruments": _list_field(body, "instruments", MAX_INSTRUMENTS,
                                   lambda x: (isinstance(x, str) and len(x) <= 64)
                                   or (isinstance(x, int) and not isinstance(x, bool)),
                                   "instrument names or General MIDI programs"),
        "tags": _list_field(body, "tags", MAX_TAGS, lambda x: isinstance(x, str) and len(x) <= 64, "tags") or (),
        "in_key": _bool_field(body, "in_key", True),
        "leading_tone": _bool_field(body, "leading_tone", False),
        "dynamics": _str_field(body, "dynamics", "mood", max_len=8),
    }
    if kw["dynamics"] not in ("mood", "flat"):
        raise _bad(f"dynamics {kw['dynamics']!r}: use \"mood\" or \"flat\"")
    tempo = _num_field(body, "tempo", 20.0, 400.0, None)
    meter = _str_field(body, "meter", None, max_len=8)
    meter = meter.replace(" ", "") if meter is not None else None
    # the rest of the checks the model would make, done before queueing for it
    from .generate import resolve_instruments
    from .moods import parse_key

    try:
        if kw["key"] is not None:
            parse_key(kw["key"])
        if kw["instruments"] is not None:
            resolve_instruments(kw["instruments"])
    except BadInputError as e:
        raise _bad(str(e)) from None
    if meter is not None and meter not in composer.meters:
        raise _bad(f"meter {meter!r} is not one this model writes; use one of {', '.join(composer.meters)}")
    options = {"include_midi": _bool_field(body, "include_midi", True),
               "include_notes": _bool_field(body, "include_notes", True)}
    chords = _str_field(body, "chords", None, max_len=512)
    if not has_prompt:
        form = _str_field(body, "form", None, max_len=16)
        vary = _bool_field(body, "vary", False)
        from .generate import GenerationConfig

        try:  # the form and chords checked here, not after waiting for the model
            GenerationConfig(bars=kw["bars"], meter=meter or "4/4", chords=chords, form=form, vary=vary).validate()
        except BadInputError as e:
            raise _bad(str(e)) from None
        kw.update(tempo=tempo, meter=meter or "4/4", chords=chords, form=form, vary=vary)
        return "generate", kw, options
    if route == "/infill":
        kw["bars"] = span
    if chords is not None:  # the new bars' chords (a continuation's or the rewritten ones)
        from .generate import GenerationConfig

        try:
            GenerationConfig(bars=min(span[1] - span[0] + 1, MAX_BARS) if route == "/infill" else kw["bars"],
                             chords=chords).validate()
        except BadInputError as e:
            raise _bad(str(e)) from None
    kw["chords"] = chords

    if body.get("prompt") is not None and body.get("midi_base64") is not None:
        raise _bad("give either \"prompt\" (notes) or \"midi_base64\", not both")
    kw["context_bars"] = _int_field(body, "context_bars", 1, MAX_BARS, 4)
    if route != "/infill":
        kw["include_prompt"] = _bool_field(body, "include_prompt", True)
    if body.get("prompt") is not None:
        notes = body["prompt"]
        if not isinstance(notes, list) or not notes:
            raise _bad("prompt must be a non-empty list of notes like "
                       "{\"pitch\": 60, \"start_beat\": 0, \"duration_beats\": 1}")
        if len(notes) > MAX_PROMPT_NOTES:
            raise _bad(f"prompt: {len(notes)} notes is too many (limit {MAX_PROMPT_NOTES})")
        from .api import notes_to_score

        try:  # tempo and meter describe the prompt notes
            kw["prompt"] = notes_to_score(notes, tempo=120.0 if tempo is None else tempo, meter=meter or "4/4")
        except BadInputError as e:
            raise _bad(f"prompt: {e}") from None
    else:
        if tempo is not None or meter is not None:
            raise _bad("tempo and meter describe \"prompt\" notes; a \"midi_base64\" prompt brings its own")
        data = body["midi_base64"]
        if not isinstance(data, str):
            raise _bad("midi_base64 must be a base64 string of a MIDI file")
        try:
            raw = base64.b64decode(data.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise _bad("midi_base64 is not valid base64") from None
        from .midifile import load_score

        try:
            kw["prompt"] = load_score(raw, "midi_base64")  # bytes, never a path
        except MelodiaError as e:
            raise _bad(str(e)) from None
    return ("infill" if route == "/infill" else "continue_from"), kw, options


# ============================================================================ the server
class MelodiaServer(ThreadingHTTPServer):
    """A ``ThreadingHTTPServer`` holding one Composer, its lock and the limits.

    Example:
        >>> server = make_server(composer, port=0); server.server_address[1]   # the free port
    """

    daemon_threads = True
    block_on_close = False      # server_close joins the handler threads itself, with a time limit
    request_queue_size = 64
    close_timeout = 10.0        # seconds server_close waits for requests in progress

    def __init__(self, address: tuple[str, int], composer: "Composer", *, queue_timeout: float = QUEUE_TIMEOUT,
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
        self.loopback_only = _is_loopback(host)
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
        super().__init__(address, MelodiaHandler)

    # ---- a request must arrive within read_deadline of connecting
    def start_reading(self, conn: Any) -> float:
        """Register a new connection with the watchdog; returns its deadline (monotonic s)."""
        deadline = time.monotonic() + self.read_deadline
        with self._count_lock:
            self._reading[conn] = deadline
            if self._watchdog is None:
                self._watchdog = threading.Thread(target=self._watch, name="melodia-watchdog", daemon=True)
                self._watchdog.start()
        return deadline

    def done_reading(self, conn: Any) -> None:
        """The request is in (or the connection is over): the watchdog lets it be."""
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
    def process_request(self, request: Any, client_address: Any) -> None:  # noqa: D102
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

    def process_request_thread(self, request: Any, client_address: Any) -> None:  # noqa: D102
        me = threading.current_thread()
        with self._count_lock:
            self._handlers.add(me)
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._count_lock:
                self._handlers.discard(me)
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:  # noqa: D102
        log.error("error while serving %s:\n%s", client_address, traceback.format_exc())

    # ---- the model, one request at a time
    def run_model(self, method: str, kwargs: dict[str, Any]) -> list:
        """Run one Composer call under the model lock, waiting at most ``queue_timeout``."""
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
        """Whether a generation is running now."""
        return self.model_lock.locked()

    @property
    def url(self) -> str:
        """``http://host:port`` of the listening socket. Example: ``server.url``."""
        host, port = self.server_address[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _declared_length(headers: Any) -> int:
    try:
        return max(0, int(headers.get("Content-Length") or 0))
    except ValueError:
        return 0


def _is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class MelodiaHandler(BaseHTTPRequestHandler):
    """One connection: one request, one JSON answer, then the connection closes."""

    server: MelodiaServer
    protocol_version = "HTTP/1.1"   # so Expect: 100-continue is answered (curl sends it for bodies > 1 KB)

    def version_string(self) -> str:  # noqa: D102
        from . import __version__

        return f"melodia/{__version__}"

    def setup(self) -> None:  # noqa: D102
        self.timeout = self.server.socket_timeout   # StreamRequestHandler applies it to the socket
        self._deadline = self.server.start_reading(self.request)
        self._body_pending = 0                       # bytes the client may still be sending
        super().setup()

    def finish(self) -> None:  # noqa: D102
        self.server.done_reading(self.request)
        try:
            super().finish()
        except OSError:
            pass

    # ---- plumbing
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002, D102
        if not self.server.quiet:
            log.info("%s %s", self.address_string(), format % args)

    def send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        """Answer ``obj`` as JSON and close the connection."""
        data = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        self.close_connection = True
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Connection", "close")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if getattr(self, "command", None) != "HEAD":
                self.wfile.write(data)
            self.wfile.flush()
        except OSError:  # the client went away; nothing to tell it
            pass
        if self._body_pending:
            self._drain()

    def send_page(self) -> None:
        """Answer the composing page (HTML, from memory) and close the connection."""
        data = self.server.page
        self.close_connection = True
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Content-Security-Policy", PAGE_CSP)
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Referrer-Policy", "no-referrer")
            self.send_header("Connection", "close")
            self.end_headers()
            if getattr(self, "command", None) != "HEAD":
                self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            pass

    def _render(self, body: Any) -> None:
        """``POST /render``: a MIDI file (base64) → ``{"format", "mime", "base64", "bytes"}``."""
        from .midifile import load_score
        from .render import musicxml_bytes, wav_bytes

        raw, fmt, rate = parse_render(body)
        try:
            score = load_score(raw, "midi_base64")
        except MelodiaError as e:
            raise _bad(str(e)) from None
        if not self.server.renders.acquire(timeout=self.server.queue_timeout):
            raise RequestError(503, "server busy rendering; try again", {"Retry-After": "2"})
        try:
            t0 = time.perf_counter()
            try:
                data = wav_bytes(score, sample_rate=rate) if fmt == "wav" else musicxml_bytes(score)
            except MelodiaError as e:
                raise _bad(str(e)) from None
            elapsed = time.perf_counter() - t0
        finally:
            self.server.renders.release()
        mime = "audio/wav" if fmt == "wav" else "application/vnd.recordare.musicxml+xml"
        self.send_json(200, {"format": fmt, "mime": mime, "bytes": len(data),
                             "base64": base64.b64encode(data).decode("ascii"), "elapsed_s": round(elapsed, 3)})

    def _drain(self) -> None:
        """After refusing a POST whose body was not read: read and drop up to 4 MiB of it for at
        most 2 s, so a client that sends its whole body before reading (urllib, requests) sees
        the answer instead of a connection reset."""
        left, self._body_pending = min(self._body_pending, 4 * MAX_BODY), 0
        end = time.monotonic() + 2.0
        try:
            self.connection.settimeout(0.5)
            while left > 0 and time.monotonic() < end:
                chunk = self.rfile.read1(min(65536, left))
                if not chunk:
                    break
                left -= len(chunk)
        except OSError:
            pass

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (bad request line, 501, 414 ...) as JSON too."""
        self.send_json(code, {"error": message or HTTPStatus(code).phrase, "status": code})

    def _fail(self, e: RequestError) -> None:
        self.send_json(e.status, {"error": e.message, "status": e.status}, e.headers)

    def handle_expect_100(self) -> bool:  # noqa: D102
        # refuse a bad or oversized body before the client sends it
        if self.command == "POST":
            try:
                self._check_host()
                self._check_post_headers()
            except RequestError as e:
                self._fail(e)
                return False
        return super().handle_expect_100()

    def _check_host(self) -> None:
        if not self.server.loopback_only:
            return
        host = (self.headers.get("Host") or "").strip()
        if not host:
            return  # HTTP/1.0 clients may omit it
        if host.startswith("["):                      # [::1]:8765
            name = host[1:].split("]", 1)[0]
        else:                                          # localhost:8765, 127.0.0.1
            name = host.split(":", 1)[0] if host.count(":") <= 1 else host
        if not _is_loopback(name):
            raise RequestError(403, f"Host {host[:100]!r} is not this machine: the server only answers "
                                    "requests addressed to localhost")

    def _check_post_headers(self) -> int:
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise RequestError(415, "send the body as JSON with the header Content-Type: application/json")
        if self.headers.get("Transfer-Encoding"):
            raise RequestError(411, "chunked bodies are not accepted; send Content-Length")
        length = self.headers.get("Content-Length")
        if length is None:
            raise RequestError(411, "a Content-Length header is required")
        try:
            n = int(length)
            if n < 0:
                raise ValueError
        except ValueError:
            raise RequestError(400, f"bad Content-Length {length!r}") from None
        if n > MAX_BODY:
            raise RequestError(413, f"request body of {n} bytes is too large (limit {MAX_BODY})")
        return n

    def _read_body(self, n: int) -> bytes:
        chunks, got = [], 0
        while got < n:
            if time.monotonic() > self._deadline:
                raise RequestError(408, f"the request took longer than {self.server.read_deadline:g} s to arrive")
            try:
                chunk = self.rfile.read1(min(65536, n - got))
            except (socket.timeout, TimeoutError):
                raise RequestError(408, f"no data for {self.server.socket_timeout:g} s while reading the "
                                        "body") from None
            except OSError:
                chunk = b""
            if not chunk:
                raise RequestError(400, f"the body ended after {got} of {n} bytes")
            chunks.append(chunk)
            got += len(chunk)
        self._body_pending = 0
        self.server.done_reading(self.request)
        return b"".join(chunks)

    def _route(self) -> str:
        return urlsplit(self.path).path.rstrip("/") or "/"

    # ---- GET
    def do_GET(self) -> None:  # noqa: N802, D102
        self.server.done_reading(self.request)
        try:
            self._check_host()
            route = self._route()
            if route == "/health":
                self.send_json(200, self._health())
            elif route == "/moods":
                self.send_json(200, self._moods())
            elif route == "/":
                self.send_page()
            elif route == "/api":
                self.send_json(200, {"service": "melodia", "routes": {
                    "GET /health": "server and model status", "GET /moods": "what a request may ask for",
                    "POST /generate": "new music (or a continuation, given a prompt)",
                    "POST /continue": "continue a prompt",
                    "POST /infill": "rewrite bars of a prompt",
                    "POST /render": "a piece's MIDI as WAV audio or MusicXML",
                    "GET /": "the composing page"}, "docs": "docs/daw.md"})
            elif route in _POST_ROUTES:
                raise RequestError(405, f"{route} takes POST with a JSON body", {"Allow": "POST"})
            else:
                raise RequestError(404, f"no route {route!r}; try GET /, GET /api, GET /health, GET /moods, "
                                        "POST /generate, POST /continue, POST /infill, POST /render")
        except RequestError as e:
            self._fail(e)
        except Exception:  # a bug: log it, tell the client nothing internal
            log.error("GET %s failed:\n%s", self.path, traceback.format_exc())
            self.send_json(500, {"error": "internal error (see the server log)", "status": 500})

    do_HEAD = do_GET

    def _health(self) -> dict[str, Any]:
        from . import __version__

        s = self.server
        info = s.composer.info()
        return {"status": "ok", "version": __version__,
                "model": {k: info.get(k) for k in ("name", "preset", "parameters", "device")},
                "busy": s.busy, "waiting": s.waiting, "served": s.served,
                "uptime_s": round(time.monotonic() - s.started, 1),
                "limits": {"bars": [1, MAX_BARS], "n": [1, MAX_N], "body_bytes": MAX_BODY,
                           "prompt_notes": MAX_PROMPT_NOTES, "tempo": [20, 400]}}

    def _moods(self) -> dict[str, Any]:
        from .generate import INSTRUMENTS
        from .moods import ALIASES, CANONICAL_MOODS, KEY_NAMES, mood_valence_arousal

        c = self.server.composer
        return {"moods": list(CANONICAL_MOODS) + [m for m in c.moods if m not in CANONICAL_MOODS],
                "aliases": dict(sorted(ALIASES.items())),
                "valence_arousal": {m: list(mood_valence_arousal(m)) for m in CANONICAL_MOODS},
                "keys": list(KEY_NAMES), "meters": c.meters, "tags": c.tags,
                "instruments": dict(sorted(INSTRUMENTS.items()))}

    # ---- POST
    def do_POST(self) -> None:  # noqa: N802, D102
        self._body_pending = _declared_length(self.headers)
        try:
            self._check_host()
            route = self._route()
            if route not in _POST_ROUTES:
                if route in _GET_ROUTES:
                    raise RequestError(405, f"{route} takes GET", {"Allow": "GET"})
                raise RequestError(404, f"no route {route!r}; POST goes to /generate, /continue, /infill or /render")
            n = self._check_post_headers()
            raw = self._read_body(n)
            try:
                body = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError, RecursionError) as e:
                raise _bad(f"the body is not valid JSON ({str(e)[:120]})") from None
            if route == "/render":
                return self._render(body)
            method, kwargs, options = parse_request(body, self.server.composer, route)
            t0 = time.perf_counter()
            try:
                pieces = self.server.run_model(method, kwargs)
            except MelodiaError as e:  # unknown key/meter/instrument, unusable prompt ...
                raise _bad(str(e)) from None
            elapsed = time.perf_counter() - t0
            out = []
            for p in pieces:
                d = p.to_dict(include_midi=options["include_midi"])
                if not options["include_notes"]:
                    d.pop("notes")
                out.append(d)
            self.send_json(200, {"pieces": out, "elapsed_s": round(elapsed, 3),
                                 "model": self.server.composer.name})
        except RequestError as e:
            self._fail(e)
        except Exception:
            log.error("POST %s failed:\n%s", self.path, traceback.format_exc())
            self.send_json(500, {"error": "internal error (see the server log)", "status": 500})


# ============================================================================ entry points
def make_server(composer: "Composer", host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                **limits: Any) -> MelodiaServer:
    """A bound, not yet serving, server for ``composer`` (``port=0``: a free port). Call
    ``serve_forever()`` on it (in a thread if you like) and ``shutdown()``/``server_close()``
    to stop; join that thread before the program exits (a daemon thread still holding the
    model while Python shuts down can abort the process). ``limits``: ``queue_timeout``,
    ``max_waiting``, ``max_connections``, ``socket_timeout``, ``read_deadline``, ``quiet``.

    Example:
        >>> server = make_server(Composer.load("m"), port=0, quiet=True)
        >>> threading.Thread(target=server.serve_forever, daemon=True).start(); server.url
        'http://127.0.0.1:40123'
    """
    if not isinstance(host, str) or not host:
        raise BadInputError(f"host {host!r}: give an address such as 127.0.0.1")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise BadInputError(f"port {port!r}: must be from 0 to 65535")
    try:
        return MelodiaServer((host.strip("[]"), port), composer, **limits)
    except OSError as e:
        raise MelodiaError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None


def warm_up(composer: "Composer", bars: int = 8) -> float:
    """Run one throw-away generation so the first request does not pay for first-call setup
    (grammar tables, allocator warm-up); returns the seconds it took.

    Example: ``warm_up(composer)  # 1.2``
    """
    t0 = time.perf_counter()
    composer.generate(bars=bars, seed=0)
    return time.perf_counter() - t0


def serve(model: str | None = None, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, device: str = "auto",
          warm: bool = True, quiet: bool = False, **limits: Any) -> None:
    """Load the model once and serve until Ctrl-C.

    Example:
        >>> serve("runs/small/model", port=8765)
    """
    from .api import Composer

    composer = Composer.load(model, device=device)
    if warm:
        warm_up(composer)
    server = make_server(composer, host, port, quiet=quiet, **limits)
    if not server.loopback_only:
        print(f"melodia serve: warning: listening on {host}, not loopback: anyone who can reach this "
              "machine can use the server (there is no authentication)", file=sys.stderr)
    print(f"melodia serve: {composer.name} on {composer.device}, listening on {server.url} "
          "(Ctrl-C stops)", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("melodia serve: stopped", file=sys.stderr)
    finally:
        server.server_close()


def add_serve_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``melodia serve``'s arguments to ``parser``. Example: ``add_serve_arguments(sub.add_parser("serve"))``."""
    parser.description = ("Serve the model over local HTTP (JSON): GET /health, GET /moods, "
                          "POST /generate, POST /continue. See docs/daw.md.")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help=f"address to listen on (default {DEFAULT_HOST}: this machine only)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 = any free)")
    parser.add_argument("--model", default=None, help="model directory (default: the shipped default model)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: sampling one token at a time is latency-bound, and "
                             "a second thread mostly adds synchronisation; 0 = torch's default)")
    parser.add_argument("--queue-timeout", type=float, default=QUEUE_TIMEOUT,
                        help=f"seconds a request may wait for the model before a 503 (default {QUEUE_TIMEOUT:g})")
    parser.add_argument("--max-waiting", type=int, default=MAX_WAITING,
                        help=f"requests that may wait for the model at once (default {MAX_WAITING})")
    parser.add_argument("--no-warmup", action="store_true", help="skip the warm-up generation at start")
    parser.add_argument("--quiet", action="store_true", help="no access log")
    return parser


def cli_serve(args: argparse.Namespace) -> int:
    """Run ``melodia serve`` from parsed arguments. Example: ``cli_serve(parser.parse_args([...]))``."""
    if args.threads < 0 or args.max_waiting < 0 or not args.queue_timeout > 0:
        raise BadInputError("--threads and --max-waiting must be >= 0 and --queue-timeout above 0")
    if not args.quiet:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    serve(args.model, args.host, args.port, device=args.device, warm=not args.no_warmup, quiet=args.quiet,
          queue_timeout=args.queue_timeout, max_waiting=args.max_waiting)
    return 0
