"""What a new user of melodia found (the CLI's early checks are in tests/test_cli_bad_paths.py,
"before the model loads"):

* ``Composer.continue_from(path)`` (and ``infill``) said what reading the clip changed (dense
  tempo changes merged) through Python's ``warnings``, while everything else the API has to say
  about a piece is in ``Piece.warnings``: now there too, and the CLI prints it as the other
  piece notes (``melodia: note: …``), once;
* ``POST /render`` with ``"format": "wav"`` was bounded only by the renderer's 20 minutes of
  audio (about 300 MB of base64 JSON at 48 kHz): the server now refuses a file longer than
  :data:`melodia.server.MAX_WAV_SECONDS` with a 413 naming the limit, before rendering.
"""
from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import pytest

symusic = pytest.importorskip("symusic")

from conftest import make_piece, running_server  # noqa: E402

from melodia.cli import main  # noqa: E402
from melodia.errors import MelodiaWarning  # noqa: E402
from melodia.midifile import load_score  # noqa: E402
from melodia.server import MAX_WAV_SECONDS  # noqa: E402


@pytest.fixture(scope="module")
def dense(tmp_path_factory) -> Path:
    """A real 4-bar two-part clip with a tempo change on each of its first 2,000 ticks."""
    path = make_piece(tmp_path_factory.mktemp("dense") / "dense.mid", bars=4)
    s = symusic.Score(str(path))
    s.tempos.clear()
    for t in range(2000):
        s.tempos.append(symusic.Tempo(t, qpm=100.0 + t % 40))
    s.dump_midi(str(path))
    return path


def _merged_line(path: Path) -> str:
    notes: list[str] = []
    load_score(path, notes=notes)
    assert len(notes) == 1 and "2000 tempo changes merged into" in notes[0], notes
    return notes[0]


@pytest.mark.parametrize("call", ["continue_from", "infill"])
def test_the_api_says_what_reading_the_clip_changed_in_piece_warnings(composer, dense, call):
    line = _merged_line(dense)
    with warnings.catch_warnings():
        warnings.simplefilter("error", MelodiaWarning)  # none may escape as a Python warning
        if call == "continue_from":
            pieces = composer.continue_from(dense, bars=1, seed=1, n=2)
        else:
            pieces = composer.infill(dense, bars=(2, 2), seed=1, n=2)
    for p in pieces:
        assert p.warnings.count(line) == 1, p.warnings
        assert p.to_dict(include_midi=False)["warnings"].count(line) == 1  # what the server answers
    # the prompt's notes are still all there: reading it merged tempos, not notes
    source = load_score(dense, notes=[])
    prompt = sorted((n.pitch, n.time / source.ticks_per_quarter) for tr in source.tracks for n in tr.notes
                    if call == "continue_from" or not 4 <= n.time / source.ticks_per_quarter < 8)
    got = sorted((n.pitch, round(n.start_beat, 6)) for n in pieces[0].notes
                 if n.start_beat < 16 and (call == "continue_from" or not 4 <= n.start_beat < 8))
    assert got == prompt


def test_the_cli_prints_it_once_as_a_note(tiny_model_dir, dense, tmp_path, capsys):
    line = _merged_line(dense)
    assert main(["generate", "--model", str(tiny_model_dir), "--continue", str(dense), "--bars", "1",
                 "--seed", "1", "--out", str(tmp_path), "--name", "more"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err.count(f"melodia: note: {line}") == 1, err
    assert not [e for e in err if e.startswith("melodia: warning:")], err
    assert (tmp_path / "more.mid").is_file()


# --------------------------------------------------------------------------- the server's WAV bound
def _post(url: str, path: str, body: dict) -> tuple[int, dict, float]:
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            status, answer = r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        status, answer = e.code, json.loads(e.read())
    return status, answer, time.perf_counter() - t0


def _lasting(seconds: float) -> str:
    """A MIDI file (base64) of two notes at 120 qpm whose last note ends at ``seconds``."""
    s = symusic.Score(480)
    s.tempos.append(symusic.Tempo(0, qpm=120.0))
    s.time_signatures.append(symusic.TimeSignature(0, 4, 4))
    tr = symusic.Track("piano", program=0)
    tr.notes.append(symusic.Note(0, 480, 60, 80))
    tr.notes.append(symusic.Note(int(seconds * 2 * 480) - 480, 480, 64, 80))  # 2 beats a second
    s.tracks.append(tr)
    return base64.b64encode(bytes(s.dumps_midi())).decode("ascii")


def test_a_wav_past_the_server_limit_is_a_413_naming_it(composer):
    with running_server(composer) as srv:
        status, answer, took = _post(srv.url, "/render", {"midi_base64": _lasting(MAX_WAV_SECONDS + 30),
                                                          "format": "wav", "sample_rate": 8000})
        assert status == 413 and answer["status"] == 413, {k: v for k, v in answer.items() if k != "base64"}
        assert f"{MAX_WAV_SECONDS + 30:.0f} s" in answer["error"] and f"{MAX_WAV_SECONDS} s" in answer["error"]
        assert "melodia render --wav" in answer["error"]
        status, ok, _ = _post(srv.url, "/render", {"midi_base64": _lasting(4), "format": "wav",
                                                    "sample_rate": 8000})
        assert status == 200 and ok["bytes"] > 8000 * 4 * 2 * 2  # 4 s of 16-bit stereo and more
        with urllib.request.urlopen(srv.url + "/health", timeout=30) as r:
            assert json.loads(r.read())["limits"]["wav_seconds"] == MAX_WAV_SECONDS
    print(f"\n/render of {MAX_WAV_SECONDS + 30} s of WAV refused in {took:.2f} s")
