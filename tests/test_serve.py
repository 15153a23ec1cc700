"""melodia serve: a real server on a free port, real HTTP requests, good and bad ones.

The server runs in a thread of the test process with the session's tiny model. Checked: the
routes and their JSON, every validation answer (400/403/404/405/411/413/415/501/503), a slow
client and a flood of connections not blocking others, concurrent requests giving exactly the
answers they give one at a time, and the server still serving after all of it.
"""
from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("symusic")

from melodia.errors import BadInputError, MelodiaError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """Batch-1 sampling is latency-bound: one torch thread (see conftest.one_torch_thread)."""


def _start(composer, **limits):
    from melodia.serve import make_server

    server = make_server(composer, port=0, quiet=True, **limits)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return server, thread


def _stop(server, thread):
    server.shutdown()
    server.server_close()
    thread.join(10)


@pytest.fixture(scope="module")
def server(composer):
    srv, th = _start(composer)
    yield srv
    _stop(srv, th)


def call(url: str, path: str, body=None, method: str | None = None, headers: dict | None = None,
         timeout: float = 120):
    """(status, decoded JSON) of one request; ``body`` bytes go as they are, else as JSON."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    hdrs = {"Content-Type": "application/json"} if data is not None else {}
    hdrs.update(headers or {})
    req = urllib.request.Request(url + path, data=data, headers=hdrs, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, (json.loads(raw) if raw else None)


def raw_request(server, data: bytes, timeout: float = 10) -> bytes:
    """Send raw bytes, return everything the server answers until it closes."""
    with socket.create_connection(server.server_address[:2], timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk


# --------------------------------------------------------------------------- good requests
def test_binds_loopback_by_default(server):
    assert server.server_address[0] == "127.0.0.1" and server.loopback_only
    assert server.url.startswith("http://127.0.0.1:")


def test_health_and_moods(server):
    st, h = call(server.url, "/health")
    assert st == 200 and h["status"] == "ok" and h["model"]["preset"] == "tiny"
    assert h["limits"]["bars"] == [1, 64] and h["limits"]["n"] == [1, 16] and h["limits"]["body_bytes"] <= 1 << 20
    st, m = call(server.url, "/moods")
    assert st == 200
    assert m["moods"] == ["happy", "tense", "sad", "calm"]
    assert m["aliases"]["melancholic"] == "sad" and m["valence_arousal"]["tense"] == [-0.5, 0.5]
    assert "4/4" in m["meters"] and "F major" in m["keys"] and m["instruments"]["piano"] == 0
    st, idx = call(server.url, "/api")
    assert st == 200 and "POST /generate" in idx["routes"] and "GET /" in idx["routes"]


def test_the_page_is_one_offline_file(server):
    """GET / is the composing page: HTML, small, served from memory, loading nothing from
    elsewhere (its CSP forbids it too), and using only the server's own routes."""
    import re

    with urllib.request.urlopen(server.url + "/", timeout=10) as r:
        page = r.read()
        assert r.status == 200 and r.headers["Content-Type"] == "text/html; charset=utf-8"
        csp = r.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    assert len(page) <= 200_000
    text = page.decode("utf-8")
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", text), "the page loads something from elsewhere"
    assert not re.search(r"https?://", text)
    assert "@import" not in text and "<link" not in text
    routes = set(re.findall(r"api\(\s*[\"'](/[a-z]+)", text)) | set(re.findall(r"run\(\s*[\"'](/[a-z]+)", text))
    assert routes == {"/moods", "/health", "/generate", "/continue", "/infill", "/render"}, routes


def test_render_route(server, composer):

    piece = composer.generate(mood="calm", bars=2, seed=1)[0]
    b64 = base64.b64encode(piece.to_midi_bytes()).decode()
    st, r = call(server.url, "/render", {"midi_base64": b64, "format": "wav", "sample_rate": 22050})
    assert st == 200 and r["format"] == "wav" and r["mime"] == "audio/wav"
    import io
    import wave as wavmod

    with wavmod.open(io.BytesIO(base64.b64decode(r["base64"]))) as w:
        assert w.getframerate() == 22050 and w.getnchannels() == 2
        seconds = w.getnframes() / w.getframerate()
    assert piece.duration_s * 0.9 <= seconds <= piece.duration_s + 3.0
    st, r = call(server.url, "/render", {"midi_base64": b64, "format": "musicxml"})
    assert st == 200 and r["mime"].startswith("application/vnd.recordare.musicxml")
    xml = base64.b64decode(r["base64"]).decode("utf-8")
    assert "<score-partwise" in xml and xml.count("<note") >= len({(n.start_beat, n.pitch) for n in piece.notes}) // 2
    for body, match in [({"format": "wav"}, "needs \"midi_base64\""),
                        ({"midi_base64": b64, "format": "mp3"}, "format 'mp3'"),
                        ({"midi_base64": "%%%", "format": "wav"}, "not valid base64"),
                        ({"midi_base64": base64.b64encode(b"not midi").decode()}, "midi_base64"),
                        ({"midi_base64": b64, "sample_rate": 100}, "sample_rate"),
                        ({"midi_base64": b64, "path": "/etc/passwd"}, "unknown field")]:
        st, r = call(server.url, "/render", body)
        assert st == 400 and match in r["error"], (body, r)


def test_generate_round_trip(server, composer):
    from melodia import Piece

    st, r = call(server.url, "/generate", {"mood": "calm", "bars": 4, "key": "F major", "tempo": 72, "seed": 1,
                                           "n": 2})
    assert st == 200, r
    assert len(r["pieces"]) == 2 and r["model"] and r["elapsed_s"] > 0
    for p in r["pieces"]:
        assert (p["bars"], p["tempo"], p["meter"], p["mood"], p["key"], p["seed"]) == (4, 72.0, "4/4", "calm",
                                                                                         "F major", 1)
        assert p["length_beats"] == 16.0 and p["notes"]
        # the base64 MIDI holds exactly the JSON notes
        back = Piece.from_midi(base64.b64decode(p["midi_base64"]))
        exact = ("pitch", "start_beat", "duration_beats", "velocity", "program")
        assert [[n.to_dict()[k] for k in exact] for n in back.notes] == [[d[k] for k in exact] for d in p["notes"]]
        assert [n.start_s for n in back.notes] == pytest.approx([d["start_s"] for d in p["notes"]], abs=1e-4)
    # the same request through the Python API gives the same music
    direct = composer.generate(mood="calm", bars=4, key="F major", tempo=72, seed=1, n=2)
    assert [n.to_dict() for n in direct[1].notes] == r["pieces"][1]["notes"]
    # switches: no MIDI, no notes
    st, r = call(server.url, "/generate", {"bars": 1, "seed": 2, "include_midi": False, "include_notes": False})
    assert st == 200 and set(r["pieces"][0]) >= {"bars", "tempo"}
    assert "midi_base64" not in r["pieces"][0] and "notes" not in r["pieces"][0]


def test_continue_with_midi_or_notes(server):
    st, r = call(server.url, "/generate", {"mood": "happy", "bars": 2, "seed": 4})
    assert st == 200
    prompt = r["pieces"][0]
    st, c = call(server.url, "/continue", {"midi_base64": prompt["midi_base64"], "bars": 2, "seed": 5,
                                           "mood": "tense"})
    assert st == 200, c
    piece = c["pieces"][0]
    assert piece["bars"] == 4 and piece["mood"] == "tense"
    assert [n for n in piece["notes"] if n["start_beat"] < 8] == prompt["notes"]  # the prompt, unchanged
    st, c = call(server.url, "/continue", {"midi_base64": prompt["midi_base64"], "bars": 3, "seed": 5,
                                           "include_prompt": False})
    assert st == 200 and c["pieces"][0]["bars"] == 3
    # /generate with prompt notes continues them (tempo/meter describe the notes)
    notes = [{"pitch": 60 + i, "start_beat": i, "duration_beats": 1, "velocity": 80} for i in range(4)]
    st, c = call(server.url, "/generate", {"prompt": notes, "tempo": 100, "meter": "4/4", "bars": 1, "seed": 1})
    assert st == 200, c
    assert c["pieces"][0]["tempo"] == 100.0 and c["pieces"][0]["bars"] == 2
    assert [(n["pitch"], n["start_beat"]) for n in c["pieces"][0]["notes"][:4]] == [(60, 0), (61, 1), (62, 2),
                                                                                     (63, 3)]


# --------------------------------------------------------------------------- bad requests
BAD_BODIES = [
    ({"mood": "grumpy"}, "unknown mood"),
    ({"mood": 3}, "mood must be a string"),
    ({"bars": 0}, "bars 0 is out of range"),
    ({"bars": 65}, "bars 65 is out of range"),
    ({"bars": "8"}, "bars must be an integer"),
    ({"bars": 8.5}, "bars must be an integer"),
    ({"bars": True}, "bars must be an integer"),
    ({"n": 17}, "n 17 is out of range"),
    ({"n": 0}, "n 0 is out of range"),
    ({"tempo": 5}, "tempo 5 is out of range"),
    ({"tempo": "fast"}, "tempo must be a number"),
    ({"key": "H major"}, "unknown key"),
    ({"meter": "7/4"}, "meter '7/4' is not one this model writes"),
    ({"meter": "x" * 100}, "meter is too long"),
    ({"temperature": 0}, "temperature"),
    ({"guidance": 50}, "guidance"),
    ({"valence": 0.5}, "both valence and arousal"),
    ({"mood": "sad", "valence": 0.5, "arousal": 0.5}, "either mood"),
    ({"seed": "abc"}, "seed must be an integer"),
    ({"leading_tone": "yes"}, "leading_tone must be true or false"),
    ({"in_key": 1}, "in_key must be true or false"),
    ({"dynamics": "loud"}, "dynamics 'loud'"),
    ({"dynamics": 3}, "dynamics must be a string"),
    ({"chords": "C Hx7"}, "chord 'Hx7'"),
    ({"chords": 5}, "chords must be a string"),
    ({"instruments": ["kazoo"]}, "unknown instrument"),
    ({"instruments": [{"a": 1}]}, "instruments must be a list"),
    ({"moood": "calm"}, "unknown field(s) 'moood'"),
    ({"context_bars": 2}, "only apply with a prompt"),
    ({"midi_base64": "!!!"}, "not valid base64"),
    ({"midi_base64": base64.b64encode(b"not a midi file").decode()}, "not a MIDI file"),
    ({"midi_base64": base64.b64encode(b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x01\xe0").decode()}, "truncated"),
    ({"midi_base64": "AAAA", "tempo": 100}, "brings its own"),
    ({"prompt": []}, "non-empty list"),
    ({"prompt": [{"pitch": 300, "start_beat": 0, "duration_beats": 1}]}, r"notes[0].pitch 300"),
    ({"prompt": [{"pitch": 60}]}, "missing 'start_beat'"),
    ({"prompt": [{"pitch": 60, "start_beat": 0, "duration_beats": 1}] * 10_001}, "too many"),
    ({"prompt": [{"pitch": 60, "start_beat": 0, "duration_beats": 1}], "midi_base64": "AAAA"}, "not both"),
    ([1, 2, 3], "must be a JSON object"),
    ("calm", "must be a JSON object"),
]


@pytest.mark.parametrize("body, message", BAD_BODIES, ids=[str(i) for i in range(len(BAD_BODIES))])
def test_bad_bodies_get_400_naming_the_problem(server, body, message):
    st, r = call(server.url, "/generate", body)
    assert st == 400, r
    assert r["status"] == 400 and message in r["error"], r["error"]


def test_scale_switches_reach_the_generator(server):
    natural = {9, 11, 0, 2, 4, 5, 7}  # A natural minor
    for body, allowed in (({}, natural), ({"leading_tone": True}, natural | {8})):
        st, r = call(server.url, "/generate", {"key": "A minor", "bars": 2, "n": 2, "seed": 3, **body})
        assert st == 200, r
        assert {n["pitch"] % 12 for p in r["pieces"] for n in p["notes"] if n["program"] >= 0} <= allowed


def test_continue_needs_a_prompt(server):
    st, r = call(server.url, "/continue", {"bars": 2})
    assert st == 400 and "needs a prompt" in r["error"]


@pytest.mark.parametrize("raw, message", [
    (b"{not json", "not valid JSON"),
    (b"\xff\xfe{}", "not valid JSON"),
    (b"[" * 100_000, "not valid JSON"),            # nesting too deep for the parser
    (b'{"seed": ' + b"9" * 5000 + b"}", "not valid JSON"),  # an integer too long to convert
])
def test_unparseable_bodies(server, raw, message):
    st, r = call(server.url, "/generate", raw)
    assert st == 400 and message in r["error"]


def test_routes_methods_content_type_and_host(server):
    url = server.url
    assert call(url, "/nope")[0] == 404
    assert call(url, "/nope", {"a": 1})[0] == 404
    st, r = call(url, "/generate")
    assert st == 405 and "POST" in r["error"]
    assert call(url, "/health", {"a": 1})[0] == 405
    st, r = call(url, "/generate", b'{"bars": 2}', headers={"Content-Type": "text/plain"})
    assert st == 415 and "application/json" in r["error"]
    st, r = call(url, "/generate", method="PUT", body=b"{}")
    assert st == 501
    st, r = call(url, "/health", headers={"Host": "attacker.example:8765"})
    assert st == 403 and "localhost" in r["error"]
    for host in ("localhost:1", "127.0.0.1", "[::1]:8765"):
        assert call(url, "/health", headers={"Host": host})[0] == 200
    # no Content-Length, chunked, negative length
    out = raw_request(server, b"POST /generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 411")
    out = raw_request(server, b"POST /generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                              b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 411")
    out = raw_request(server, b"POST /generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                              b"Content-Length: -5\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400")
    assert b"Bad request syntax" in raw_request(server, b"GARBAGE\r\n\r\n")  # (an HTTP/0.9-style answer)


def test_huge_bodies_get_413_and_the_server_goes_on(server):
    head = (b"POST /generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 2000000\r\n")
    # refused from the header alone, before any of the body is read
    out = raw_request(server, head + b"\r\n")
    assert out.startswith(b"HTTP/1.1 413") and b"too large" in out
    # with Expect: 100-continue (what curl sends) the refusal comes instead of the 100
    out = raw_request(server, head + b"Expect: 100-continue\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 413")
    # a client that sends the whole 2 MB before reading (urllib) still gets the answer
    st, r = call(server.url, "/generate", b"{" + b" " * 2_000_000 + b"}")
    assert st == 413 and "too large" in r["error"]
    assert call(server.url, "/health")[0] == 200


# --------------------------------------------------------------------------- concurrency and time
def test_concurrent_requests_and_a_stuck_client(server):
    """Six generations at once, while a client holds a connection without sending anything:
    every answer is the one the same request gets alone, health answers meanwhile."""
    body = lambda s: {"mood": "happy", "bars": 2, "seed": s, "include_midi": False}
    alone = {s: call(server.url, "/generate", body(s))[1]["pieces"][0]["notes"] for s in (21, 22)}
    served_before = server.served
    stuck = socket.create_connection(server.server_address[:2])
    stuck.sendall(b"POST /generate HTTP/1.1\r\n")  # ... and nothing more
    results: dict[int, tuple] = {}

    def worker(i: int) -> None:
        results[i] = call(server.url, "/generate", body(21 + i % 2))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    t0 = time.monotonic()
    st, h = call(server.url, "/health", timeout=10)
    health_s = time.monotonic() - t0
    for t in threads:
        t.join(300)
    stuck.close()
    assert st == 200 and health_s < 5, health_s
    assert sorted(results) == list(range(6))
    for i, (status, r) in results.items():
        assert status == 200, r
        assert r["pieces"][0]["notes"] == alone[21 + i % 2]
    assert server.served == served_before + 6
    assert call(server.url, "/health")[1]["busy"] is False


def test_slow_clients_are_cut_off(composer):
    srv, th = _start(composer, socket_timeout=0.5, read_deadline=1.5)
    try:
        # silent: the socket timeout ends it
        with socket.create_connection(srv.server_address[:2], timeout=10) as s:
            t0 = time.monotonic()
            assert s.recv(100) == b""
            assert time.monotonic() - t0 < 5
        # trickling a header byte every 0.3 s: the watchdog ends it at the deadline
        with socket.create_connection(srv.server_address[:2], timeout=10) as s:
            t0 = time.monotonic()
            s.sendall(b"GET /health HTTP/1.1\r\n")
            closed = False
            for _ in range(40):
                try:
                    s.sendall(b"X")
                except OSError:
                    closed = True
                    break
                time.sleep(0.3)
                s.setblocking(False)
                try:
                    if s.recv(100) == b"":
                        closed = True
                        break
                except BlockingIOError:
                    pass
                finally:
                    s.setblocking(True)
            assert closed and time.monotonic() - t0 < 6
        # a body that stops halfway
        with socket.create_connection(srv.server_address[:2], timeout=10) as s:
            s.sendall(b"POST /generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 50\r\n\r\n{\"bars\":")
            answer = s.recv(1000)
            assert answer == b"" or answer.startswith(b"HTTP/1.1 408")
        assert call(srv.url, "/health")[0] == 200
    finally:
        _stop(srv, th)


def test_queue_limits_answer_503(composer):
    srv, th = _start(composer, queue_timeout=0.3, max_waiting=1)
    try:
        srv.model_lock.acquire()  # as if a long generation were running
        try:
            assert call(srv.url, "/health")[1]["busy"] is True
            st, r = call(srv.url, "/generate", {"bars": 1, "seed": 1})
            assert st == 503 and "waited" in r["error"]
            # one request waiting fills the queue: the next is refused at once
            waiting = threading.Thread(target=call, args=(srv.url, "/generate", {"bars": 1}))
            waiting.start()
            deadline = time.monotonic() + 5
            while srv.waiting == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            st, r = call(srv.url, "/generate", {"bars": 1})
            assert st == 503 and "already waiting" in r["error"]
            waiting.join(10)
        finally:
            srv.model_lock.release()
        assert call(srv.url, "/generate", {"bars": 1, "seed": 1})[0] == 200
    finally:
        _stop(srv, th)


def test_connection_flood_gets_503_not_a_hang(composer):
    srv, th = _start(composer, max_connections=2, socket_timeout=5)
    try:
        idle = [socket.create_connection(srv.server_address[:2]) for _ in range(2)]
        time.sleep(0.2)
        out = raw_request(srv, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 503") and b"too many connections" in out
        for s in idle:
            s.close()
        deadline, st = time.monotonic() + 5, None
        while st != 200 and time.monotonic() < deadline:  # the idle handlers see EOF and free their slots
            time.sleep(0.05)
            st = call(srv.url, "/health")[0]
        assert st == 200
    finally:
        _stop(srv, th)


# --------------------------------------------------------------------------- setup and CLI
def test_make_server_arguments(composer):
    from melodia.serve import make_server

    with pytest.raises(BadInputError, match="port"):
        make_server(composer, port=70000)
    with pytest.raises(BadInputError, match="host"):
        make_server(composer, host="")
    srv = make_server(composer, port=0)
    try:
        with pytest.raises(MelodiaError, match="cannot listen"):
            make_server(composer, port=srv.server_address[1])
    finally:
        srv.server_close()


def test_cli_arguments_and_defaults():
    import argparse

    from melodia.serve import DEFAULT_HOST, DEFAULT_PORT, add_serve_arguments

    p = add_serve_arguments(argparse.ArgumentParser())
    a = p.parse_args([])
    assert (a.host, a.port, a.model) == (DEFAULT_HOST, DEFAULT_PORT, None) == ("127.0.0.1", 8765, None)
    a = p.parse_args(["--host", "0.0.0.0", "--port", "9000", "--model", "m"])
    assert (a.host, a.port, a.model) == ("0.0.0.0", 9000, "m")


@pytest.mark.skipif(os.name != "posix", reason="SIGINT delivery")
def test_cli_serve_runs_and_stops_on_ctrl_c(tiny_model_dir):
    code = ("import argparse, sys; from melodia.serve import add_serve_arguments, cli_serve; "
            "sys.exit(cli_serve(add_serve_arguments(argparse.ArgumentParser()).parse_args(sys.argv[1:])))")
    proc = subprocess.Popen([sys.executable, "-c", code, "--model", str(tiny_model_dir), "--port", "0",
                             "--no-warmup", "--quiet", "--threads", "1", "--device", "cpu"],
                            cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        url = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and url is None:
            line = proc.stderr.readline()
            if not line:
                break
            if "listening on " in line:
                url = line.split("listening on ")[1].split()[0]
        assert url and url.startswith("http://127.0.0.1:"), "server did not start"
        st, h = call(url, "/health")
        assert st == 200 and h["status"] == "ok"
        st, r = call(url, "/generate", {"bars": 1, "seed": 1})
        assert st == 200 and r["pieces"][0]["bars"] == 1
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        assert "stopped" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
