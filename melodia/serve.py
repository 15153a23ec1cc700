"""``melodia serve``: a small local HTTP JSON server around one :class:`~melodia.api.Composer`.

DAWs, editors and scripts in any language ask it for music over HTTP; the model is loaded
once. Routes (JSON in, JSON out):

=================  =========================================================================
``GET /health``    ``{"status": "ok", "version", "model": {...}, "busy", "waiting", "served",
                   "uptime_s", "limits": {...}}``
``GET /moods``     the moods (canonical, the model's own), aliases, valence/arousal centres,
                   meters, instruments, tags and styles (and the default style) a request may use
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
  reading; 413), bars 1-64, n 1-16, at most :data:`MAX_PROMPT_NOTES` prompt notes (as notes
  or in a MIDI file), typed and range-checked fields (unknown fields are refused, so a typo is
  not silently ignored);
* work bounded by what a file holds: tempo changes less than a 32nd note apart are merged on
  reading (the answer's ``"warnings"`` say so), and a MusicXML render past
  :data:`~melodia.request.MAX_NOTATION_NOTES` notes, :data:`~melodia.request.MAX_NOTATION_MEASURES`
  measures or :data:`~melodia.request.MAX_NOTATION_CHANGES` tempo and metre changes is a 413
  naming the limit, and so is a WAV render of a file that lasts more than
  :data:`~melodia.server.MAX_WAV_SECONDS` (the renderer itself stops at ``render.MAX_RENDER_SECONDS``);
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
import json
import logging
import sys
import time
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

from .api import Composer
from .errors import BadInputError, MelodiaError
from .generate import MAX_BARS, MAX_N
from .music.instruments import INSTRUMENTS
from .music.keys import KEY_NAMES
from .music.moods import ALIASES, CANONICAL_MOODS, mood_valence_arousal
from .render import musicxml_bytes, wav_bytes
from .request import (
    MAX_NOTATION_CHANGES,
    MAX_NOTATION_MEASURES,
    MAX_NOTATION_NOTES,
    MAX_PROMPT_NOTES,
    TEMPO_RANGE,
    RequestError,
    bad,
    check_notation_size,
    parse_render,
    parse_request,
    score_of,
)
from .server import MAX_WAITING, MAX_WAV_SECONDS, QUEUE_TIMEOUT, MelodiaServer, is_loopback
from .version import __version__

__all__ = ["make_server", "serve", "add_serve_arguments", "cli_serve", "parse_request", "warm_up",
           "MelodiaServer", "DEFAULT_HOST", "DEFAULT_PORT", "MAX_BODY"]

log = logging.getLogger("melodia.serve")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
MAX_BODY = 1024 * 1024          # bytes of request body (1 MiB)

_POST_ROUTES = ("/generate", "/continue", "/infill", "/render")
_GET_ROUTES = ("/", "/api", "/health", "/moods")
#: every route and what it answers: ``GET /api`` returns this, ``melodia serve --help`` lists it
ROUTES = {
    "GET /": "the composing page (open it in a browser)",
    "GET /health": "server and model status",
    "GET /moods": "what a request may ask for",
    "GET /api": "this list of routes",
    "POST /generate": "new music (or a continuation, given a prompt)",
    "POST /continue": "continue a prompt",
    "POST /infill": "rewrite bars of a prompt",
    "POST /render": "a piece's MIDI as WAV audio or MusicXML",
}
#: what the composing page may load: itself, its own inline script and style, and the media it
#: makes from the server's answers; nothing from anywhere else
PAGE_CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self' blob:; "
            "media-src blob: data:; img-src blob: data:; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'")


def _declared_length(headers: Any) -> int:
    try:
        return max(0, int(headers.get("Content-Length") or 0))
    except ValueError:
        return 0


def _check_wav_length(score: Any) -> None:
    """Refuse (413, naming the limit) a score whose audio would last past :data:`MAX_WAV_SECONDS`."""
    seconds = score.to("second").end() if score.note_num() else 0.0
    if seconds > MAX_WAV_SECONDS:
        raise RequestError(413, f"midi_base64 is too long for WAV here: it lasts {seconds:.0f} s, the limit is "
                                f"{MAX_WAV_SECONDS} s (melodia render --wav renders longer files)")


class MelodiaHandler(BaseHTTPRequestHandler):
    """One connection: one request, one JSON answer, then the connection closes."""

    server: MelodiaServer
    protocol_version = "HTTP/1.1"   # so Expect: 100-continue is answered (curl sends it for bodies > 1 KB)

    def version_string(self) -> str:
        return f"melodia/{__version__}"

    def setup(self) -> None:
        self.timeout = self.server.socket_timeout   # StreamRequestHandler applies it to the socket
        self._deadline = self.server.start_reading(self.request)
        self._body_pending = 0                       # bytes the client may still be sending
        super().setup()

    def finish(self) -> None:
        self.server.done_reading(self.request)
        try:
            super().finish()
        except OSError:
            pass

    # ---- plumbing
    def log_message(self, format: str, *args: Any) -> None:
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
        """``POST /render``: a MIDI file (base64) → ``{"format", "mime", "base64", "bytes"}`` (and
        ``"warnings"`` when reading the file changed it: dense tempo changes merged)."""
        raw, fmt, rate = parse_render(body)
        warnings: list[str] = []
        score = score_of(raw, warnings)
        if fmt == "musicxml":
            check_notation_size(score)  # music21 would hold a render slot for minutes
        else:
            _check_wav_length(score)  # seconds of synthesis and hundreds of MB of answer
        if not self.server.renders.acquire(timeout=self.server.queue_timeout):
            raise RequestError(503, "server busy rendering; try again", {"Retry-After": "2"})
        try:
            t0 = time.perf_counter()
            try:
                data = wav_bytes(score, sample_rate=rate) if fmt == "wav" else musicxml_bytes(score)
            except MelodiaError as e:
                raise bad(str(e)) from None
            elapsed = time.perf_counter() - t0
        finally:
            self.server.renders.release()
        mime = "audio/wav" if fmt == "wav" else "application/vnd.recordare.musicxml+xml"
        self.send_json(200, {"format": fmt, "mime": mime, "bytes": len(data),
                             "base64": base64.b64encode(data).decode("ascii"), "elapsed_s": round(elapsed, 3),
                             **({"warnings": warnings} if warnings else {})})

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

    def handle_expect_100(self) -> bool:
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
        if not is_loopback(name):
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
            except TimeoutError:
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
    def do_GET(self) -> None:
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
                self.send_json(200, {"service": "melodia", "routes": dict(ROUTES), "docs": "docs/daw.md"})
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
        s = self.server
        info = s.composer.info()
        return {"status": "ok", "version": __version__,
                "model": {k: info.get(k) for k in ("name", "preset", "parameters", "device")},
                "busy": s.busy, "waiting": s.waiting, "served": s.served,
                "uptime_s": round(time.monotonic() - s.started, 1),
                "limits": {"bars": [1, MAX_BARS], "n": [1, MAX_N], "body_bytes": MAX_BODY,
                           "prompt_notes": MAX_PROMPT_NOTES, "tempo": [int(t) for t in TEMPO_RANGE],
                           "musicxml": {"notes": MAX_NOTATION_NOTES, "measures": MAX_NOTATION_MEASURES,
                                        "changes": MAX_NOTATION_CHANGES},
                           "wav_seconds": MAX_WAV_SECONDS}}

    def _moods(self) -> dict[str, Any]:
        c = self.server.composer
        return {"moods": list(CANONICAL_MOODS) + [m for m in c.moods if m not in CANONICAL_MOODS],
                "aliases": dict(sorted(ALIASES.items())),
                "valence_arousal": {m: list(mood_valence_arousal(m)) for m in CANONICAL_MOODS},
                "keys": list(KEY_NAMES), "meters": c.meters, "tags": c.tags,
                "styles": c.styles, "default_style": c.default_style,
                "instruments": dict(sorted(INSTRUMENTS.items()))}

    # ---- POST
    def do_POST(self) -> None:
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
                raise bad(f"the body is not valid JSON ({str(e)[:120]})") from None
            if route == "/render":
                return self._render(body)
            method, kwargs, options = parse_request(body, self.server.composer, route)
            t0 = time.perf_counter()
            try:
                pieces = self.server.run_model(method, kwargs)
            except MelodiaError as e:  # unknown key/meter/instrument, unusable prompt ...
                raise bad(str(e)) from None
            elapsed = time.perf_counter() - t0
            out = []
            for p in pieces:
                d = p.to_dict(include_midi=options["include_midi"])
                if not options["include_notes"]:
                    d.pop("notes")
                if options["warnings"]:  # what reading the prompt changed, before the piece's own
                    d["warnings"] = options["warnings"] + d.get("warnings", [])
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
        return MelodiaServer((host.strip("[]"), port), composer, MelodiaHandler, **limits)
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
          warm: bool = True, quiet: bool = False, threads: int = 1, **limits: Any) -> None:
    """Load the model once and serve until Ctrl-C. ``threads``: torch CPU threads, as in
    :meth:`Composer.load` (default 1; 0 = torch's choice).

    Example:
        >>> serve("runs/small/model", port=8765)
    """
    composer = Composer.load(model, device=device, threads=threads)
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
    parser.description = ("Serve the model over local HTTP: a composing page at GET / and a JSON API "
                          "for DAWs and scripts. See docs/daw.md.")
    parser.formatter_class = argparse.RawDescriptionHelpFormatter  # keep the route list's lines
    width = max(len(r) for r in ROUTES)
    parser.epilog = ("routes:\n" + "\n".join(f"  {r:<{width}}  {what}" for r, what in ROUTES.items())
                     + f"\n\nexample: melodia serve --port {DEFAULT_PORT}, then open http://{DEFAULT_HOST}:{DEFAULT_PORT}/")
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
    serve(args.model, args.host, args.port, device=args.device, warm=not args.no_warmup, quiet=args.quiet,
          threads=args.threads, queue_timeout=args.queue_timeout, max_waiting=args.max_waiting)
    return 0
