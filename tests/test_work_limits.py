"""Issue 22 item 9: work is bounded by what a file holds, not only by its size.

A valid 140 kB MIDI file with a tempo change on every tick (20,000 of them) held ``POST /render``
for over a minute. Tempo changes closer than a 32nd note are now merged where MIDI is read
(``midifile.merge_dense_tempos``), said in a warning (CLI stderr, the server's ``"warnings"``),
and what would still take too long is refused with a 4xx naming the limit.
Timings are printed (``-s``), never asserted: the test machine is shared.
"""
from __future__ import annotations

import base64
import io
import json
import time
import urllib.error
import urllib.request
import warnings
import wave
from pathlib import Path

import numpy as np
import pytest

symusic = pytest.importorskip("symusic")

from conftest import make_piece, running_server  # noqa: E402

from melodia.cli import main  # noqa: E402
from melodia.errors import MelodiaWarning  # noqa: E402
from melodia.midifile import TEMPO_MIN_GAP, load_score, merge_dense_tempos  # noqa: E402
from melodia.request import (  # noqa: E402
    MAX_NOTATION_CHANGES,
    MAX_NOTATION_MEASURES,
    MAX_NOTATION_NOTES,
    MAX_PROMPT_NOTES,
)

TICKS = 20_000


def _qpm_at(t: int) -> float:
    return 100.0 + (t % 40)


def dense_tempo_file(path: Path, bars: int = 12) -> Path:
    """The reported file: a real two-part piece (480 ticks a beat), a tempo change on every tick."""
    make_piece(path, bars=bars)
    s = symusic.Score(str(path))
    s.tempos.clear()
    for t in range(TICKS):
        s.tempos.append(symusic.Tempo(t, qpm=_qpm_at(t)))
    s.dump_midi(str(path))
    return path


@pytest.fixture(scope="module")
def dense(tmp_path_factory) -> Path:
    return dense_tempo_file(tmp_path_factory.mktemp("dense") / "dense.mid")


def _tempos(score) -> list[tuple[int, float]]:
    return [(t.time, round(t.qpm, 2)) for t in score.tempos]


# --------------------------------------------------------------------------- reading
def test_dense_tempos_are_merged_where_midi_is_read(dense):
    raw = symusic.Score(str(dense))
    assert len(raw.tempos) == TICKS and 130_000 < dense.stat().st_size < 150_000  # the file of the report
    with pytest.warns(MelodiaWarning, match=r"dense\.mid: 20000 tempo changes merged into 334"):
        score = load_score(dense)
    gap = score.ticks_per_quarter * TEMPO_MIN_GAP
    times = [t.time for t in score.tempos]
    assert len(times) == 334 and times[0] == 0
    assert all(b - a >= gap for a, b in zip(times, times[1:]))  # kept changes a 32nd or more apart
    assert _tempos(score)[-1][1] == round(_qpm_at(TICKS - 1), 2)  # the tempo in force afterwards
    # the notes are the file's, in ticks and (every one here starts on a kept change) in seconds
    assert [(n.time, n.duration, n.pitch) for tr in score.tracks for n in tr.notes] == \
           [(n.time, n.duration, n.pitch) for tr in raw.tracks for n in tr.notes]
    ticks = sorted(n.time for tr in raw.tracks for n in tr.notes)
    moved = np.abs(_exact_seconds(score, ticks) - _exact_seconds(raw, ticks))
    last_run = times[-1]
    assert moved[np.asarray(ticks) <= last_run].max() < 1e-4 and moved.max() < 0.005  # µs: mspq is whole
    # a caller that collects notes (the server) gets the line instead of a warning
    notes: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = load_score(dense.read_bytes(), "midi_base64", notes)
    assert _tempos(again) == _tempos(score) and len(notes) == 1 and "20000 tempo changes" in notes[0]


def _seconds(score) -> list[float]:
    return sorted(n.time for tr in score.to("second").tracks for n in tr.notes)


def _exact_seconds(score, ticks: list[int]) -> "np.ndarray":
    """Seconds at ``ticks`` from the tempo map, in float64 (symusic's float32 drifts over 20,000 changes)."""
    a = score.tempos.numpy()
    t, q = a["time"].astype(np.int64), a["mspq"].astype(np.float64)
    out = []
    for x in ticks:
        k = int(np.searchsorted(t, x, side="right"))
        out.append(float(((np.append(t[1:k], x) - t[:k]) * q[:k]).sum()) / score.ticks_per_quarter / 1e6)
    return np.asarray(out)


def test_tempo_changes_a_32nd_apart_and_same_tick_ones():
    s = symusic.Score(480)
    for t, qpm in ((0, 60), (60, 70), (120, 80), (120, 90), (500, 100), (530, 50), (700, 120), (900, 80),
                   (950, 130)):
        s.tempos.append(symusic.Tempo(t, qpm=qpm))
    track = symusic.Track("t", program=0)
    for t in (0, 60, 120, 500, 520, 700, 900, 950, 1200):
        track.notes.append(symusic.Note(t, 10, 60, 80))
    s.tracks.append(track)
    before = _tempos(s)
    notes: list[str] = []
    merged = merge_dense_tempos(s, "x.mid", notes)
    # 0 and 60 are a 32nd apart and stay; at 120 the later one wins; 530 folds into 500 at the
    # average tempo of 500-700 (30 ticks at 100, 170 at 50 qpm); 950 into 900, the last run, at
    # the tempo in force at the end
    average = round(60e6 / ((30 * 600_000 + 170 * 1_200_000) / 200), 2)  # 54.05 qpm
    assert _tempos(merged) == [(0, 60.0), (60, 70.0), (120, 90.0), (500, average), (700, 120.0), (900, 130.0)]
    assert _tempos(s) == before and len(notes) == 1 and "9 tempo changes merged into 6" in notes[0]
    # every note on a kept change before the last run sounds at the second it did
    on_kept = [0, 1, 2, 3, 5, 6]  # the notes at ticks 0, 60, 120, 500, 700 and 900
    assert [_seconds(merged)[i] for i in on_kept] == pytest.approx([_seconds(s)[i] for i in on_kept], abs=1e-6)
    # the one inside a run (520) moves by less than its tempos differ over a 32nd (60 ticks at 100 or 50 qpm)
    assert 0 < abs(_seconds(merged)[4] - _seconds(s)[4]) < 60 / 480 * (1.2 - 0.6)
    spaced = symusic.Score(480)
    for t in range(0, 4800, 60):
        spaced.tempos.append(symusic.Tempo(t, qpm=_qpm_at(t)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing merged: no warning, the very same score back
        assert merge_dense_tempos(spaced, "y.mid") is spaced and load_score(spaced) is spaced


def test_cli_render_says_what_it_merged(dense, tmp_path, capsys):
    out = tmp_path / "out"
    t0 = time.perf_counter()
    assert main(["render", str(dense), "--png", "--out", str(out)]) == 0
    took = time.perf_counter() - t0
    err = capsys.readouterr().err.splitlines()
    assert err == [f"melodia: warning: {dense}: 20000 tempo changes merged into 334 (those less than a "
                   "32nd note apart folded into one, the music's timing kept)"]
    assert (out / "dense.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"\nmelodia render --png of the 20,000-tempo file: {took:.2f} s")


# --------------------------------------------------------------------------- the server
def _post(url: str, path: str, body: dict, timeout: float = 120) -> tuple[int, dict, float]:
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, answer = r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        status, answer = e.code, json.loads(e.read())
    return status, answer, time.perf_counter() - t0


def _b64(path_or_score) -> str:
    data = path_or_score.read_bytes() if isinstance(path_or_score, Path) else bytes(path_or_score.dumps_midi())
    return base64.b64encode(data).decode("ascii")


def _merged(warnings_: list[str]) -> bool:
    return any("midi_base64: 20000 tempo changes merged into 334" in w for w in warnings_)


def test_every_route_answers_the_dense_file_with_a_note(composer, dense):
    source = load_score(dense.read_bytes(), "x", [])
    b64 = _b64(dense)
    timings = {}
    with running_server(composer) as srv:
        status, xml, timings["/render musicxml"] = _post(srv.url, "/render", {"midi_base64": b64,
                                                                               "format": "musicxml"})
        assert status == 200 and _merged(xml["warnings"]), xml
        text = base64.b64decode(xml["base64"]).decode("utf-8")
        assert text.count("<pitch>") == source.note_num()  # every note is in the notation
        assert text.count("<per-minute>") <= len(source.tempos)  # and no more tempo marks than kept changes

        status, wav, timings["/render wav"] = _post(srv.url, "/render", {"midi_base64": b64, "format": "wav",
                                                                          "sample_rate": 8000})
        assert status == 200 and _merged(wav["warnings"]), wav
        with wave.open(io.BytesIO(base64.b64decode(wav["base64"]))) as w:
            seconds = w.getnframes() / w.getframerate()
        assert abs(seconds - (source.to("second").end() + 1.0)) < 0.5  # the music, then a second's release

        status, cont, timings["/continue"] = _post(srv.url, "/continue", {"midi_base64": b64, "bars": 2,
                                                                          "seed": 1})
        assert status == 200, cont
        piece = cont["pieces"][0]
        assert _merged(piece["warnings"]) and piece["bars"] == 12 + 2
        prompt_notes = sorted((n["pitch"], n["start_beat"]) for n in piece["notes"] if n["start_beat"] < 48)
        assert prompt_notes == sorted((n.pitch, n.time / 480) for tr in source.tracks for n in tr.notes)

        status, fill, timings["/infill"] = _post(srv.url, "/infill", {"midi_base64": b64, "bars": [5, 6],
                                                                      "seed": 1})
        assert status == 200, fill
        piece = fill["pieces"][0]
        assert _merged(piece["warnings"]) and piece["bars"] == 12
        kept = sorted((n["pitch"], n["start_beat"]) for n in piece["notes"]
                      if not 16 <= n["start_beat"] < 24)
        assert kept == sorted((n.pitch, n.time / 480) for tr in source.tracks for n in tr.notes
                              if not 16 <= n.time / 480 < 24)
    print("\nthe 20,000-tempo file through the server (tiny model): "
          + ", ".join(f"{route} {s:.2f} s" for route, s in timings.items()))


def _spread(n_notes: int = 0, bars: int = 1, tempo_changes: int = 1, parts: int = 1) -> "symusic.Score":
    """A score with exactly so many notes, bars (4/4), tempo changes (a beat apart) and parts."""
    s = symusic.Score(480)
    s.time_signatures.append(symusic.TimeSignature(0, 4, 4))
    for i in range(tempo_changes):
        s.tempos.append(symusic.Tempo(i * 480, qpm=90 + i % 30))
    for p in range(parts):
        tr = symusic.Track(f"p{p}", program=p)
        tr.notes.append(symusic.Note((bars - 1) * 1920, 480, 60 + p, 80))  # the last bar
        s.tracks.append(tr)
    step = max(1, (bars * 1920 - 480) // max(n_notes, 1))
    for i in range(max(0, n_notes - parts)):
        s.tracks[0].notes.append(symusic.Note(min(i * step, (bars - 1) * 1920), 120, 48 + i % 24, 80))
    return s


@pytest.mark.parametrize("score, words", [
    (lambda: _spread(n_notes=MAX_NOTATION_NOTES + 1, bars=200),
     [f"{MAX_NOTATION_NOTES + 1} notes", str(MAX_NOTATION_NOTES)]),
    (lambda: _spread(bars=MAX_NOTATION_MEASURES // 2 + 1, parts=2),
     [f"measures ({MAX_NOTATION_MEASURES // 2 + 1} bars × 2 parts)", str(MAX_NOTATION_MEASURES)]),
    (lambda: _spread(bars=MAX_NOTATION_CHANGES // 4 + 2, tempo_changes=MAX_NOTATION_CHANGES),
     [f"{MAX_NOTATION_CHANGES + 1} tempo and time-signature changes", str(MAX_NOTATION_CHANGES)]),
], ids=["notes", "measures", "changes"])
def test_musicxml_past_a_limit_is_a_413_naming_it(composer, score, words):
    with running_server(composer) as srv:
        status, answer, took = _post(srv.url, "/render", {"midi_base64": _b64(score()), "format": "musicxml"})
        assert status == 413 and answer["status"] == 413, answer
        for w in words:
            assert w in answer["error"], (w, answer)
        assert "melodia render --musicxml" in answer["error"]
        status, small, _ = _post(srv.url, "/render", {"midi_base64": _b64(_spread(n_notes=4, bars=2)),
                                                       "format": "musicxml"})
        assert status == 200 and "warnings" not in small  # a small file renders, with nothing to say
    print(f"\n413 answered in {took:.2f} s")


def test_a_midi_prompt_past_the_prompt_note_limit_is_refused(composer):
    big = _spread(n_notes=MAX_PROMPT_NOTES + 1, bars=64)
    with running_server(composer) as srv:
        for route, extra in (("/continue", {}), ("/infill", {"bars": [2, 3]})):
            status, answer, _ = _post(srv.url, route, {"midi_base64": _b64(big), **extra})
            assert status == 400 and f"{MAX_PROMPT_NOTES + 1} notes" in answer["error"] \
                and str(MAX_PROMPT_NOTES) in answer["error"], answer


def test_health_lists_the_notation_limits(composer):
    with running_server(composer) as srv, urllib.request.urlopen(srv.url + "/health", timeout=30) as r:
        limits = json.loads(r.read())["limits"]
    assert limits["musicxml"] == {"notes": MAX_NOTATION_NOTES, "measures": MAX_NOTATION_MEASURES,
                                  "changes": MAX_NOTATION_CHANGES}
    assert limits["prompt_notes"] == MAX_PROMPT_NOTES


def test_corpus_build_reports_merged_tempos_once_not_per_file(tmp_path, capsys):
    """A folder of files with dense tempo changes: the build says how many in one line and
    lists them in report.json, instead of a warning per file over its progress bar."""
    src = tmp_path / "midi"
    src.mkdir()
    for i in range(3):
        dense_tempo_file(src / f"dense{i}.mid", bars=4 + i)
    make_piece(src / "plain.mid")
    with warnings.catch_warnings():
        warnings.simplefilter("error", MelodiaWarning)  # none may escape the build
        rc = main(["corpus", "build", str(src), "--out", str(tmp_path / "C"), "--workers", "1", "--quiet"])
    assert rc == 0
    out = capsys.readouterr()
    assert "tempo: 3 files had tempo changes under a 32nd note apart, merged on reading" in out.out
    assert "warning" not in out.err
    report = json.loads((tmp_path / "C" / "report.json").read_text())
    assert sorted(report["read_notes"]) == [f"midi/dense{i}.mid" for i in range(3)]
    assert all("tempo changes merged" in n[0] for n in report["read_notes"].values())
