"""Form (sections that return) and infilling (bars rewritten in place), through the API, the
CLI and the server, with the session's tiny trained model.

The clip the infill tests rewrite is made here: 12 bars of 4/4 at 96 qpm, a melody on
program 0 with one note in every beat, a bass on program 1 on every downbeat, and a note held
from bar 4 into bar 5 (it starts before the span, so it must stay).
"""
from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request

import pytest

pytest.importorskip("torch")
pytest.importorskip("symusic")

from melodia.errors import BadInputError

BAR = 4.0


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """Batch-1 sampling is latency-bound: one torch thread (see conftest.one_torch_thread)."""


def _clip_notes():
    scale = [60, 62, 64, 65, 67, 69, 71, 72]
    notes = []
    for bar in range(12):
        for beat in range(4):
            if bar == 3 and beat == 3:
                continue  # the held note below takes this beat
            notes.append({"pitch": scale[(bar + beat) % 8], "start_beat": bar * BAR + beat, "duration_beats": 0.75,
                          "velocity": 80, "program": 0})
        notes.append({"pitch": 36 + (bar * 5) % 12, "start_beat": bar * BAR, "duration_beats": 2.0,
                      "velocity": 70, "program": 1})
    notes.append({"pitch": 74, "start_beat": 15.0, "duration_beats": 3.0, "velocity": 85, "program": 0})  # into bar 5
    return notes


@pytest.fixture(scope="module")
def clip():
    from melodia import Piece

    return Piece.from_notes(_clip_notes(), tempo=96, meter="4/4")


def _key(n):
    return (round(n.start_beat, 4), n.pitch, round(n.duration_beats, 4), n.program)


def _outside(notes, first, last):
    lo, hi = (first - 1) * BAR, last * BAR
    return sorted(_key(n) for n in notes if not lo <= n.start_beat < hi)


def _inside(notes, first, last):
    lo, hi = (first - 1) * BAR, last * BAR
    return sorted(_key(n) for n in notes if lo <= n.start_beat < hi)


# --------------------------------------------------------------------------- form
def _bars_of(piece, first_bar, count):
    """Notes starting in bars first_bar..first_bar+count-1 (1-based), timed from that bar."""
    lo, hi = (first_bar - 1) * BAR, (first_bar - 1 + count) * BAR
    return sorted((round(n.start_beat - lo, 4), n.pitch, round(n.duration_beats, 4), n.program)
                  for n in piece.notes if lo <= n.start_beat < hi)


def test_form_aaba_repeats_a_and_b_differs(composer):
    pieces = composer.generate(mood="happy", bars=16, form="AABA", n=2, seed=4, repeat="exact")
    for p in pieces:
        assert p.bars == 16 and p.length_beats == 64.0
        assert max(n.end_beat for n in p.notes) <= 64.0 + 1e-9  # the last A's held notes are cut at the end
        a = _bars_of(p, 1, 4)
        assert a, "section A is empty"
        for start in (5, 13):  # every A note for note (a note held out of an A ends where it ends in all)
            assert _bars_of(p, start, 4) == a
        assert _bars_of(p, 9, 4) != a
    assert _bars_of(pieces[0], 1, 4) != _bars_of(pieces[1], 1, 4)  # two variations, two tunes


def test_form_with_vary_changes_only_the_last_bar_of_a_return(composer):
    pieces = composer.generate(mood="calm", bars=16, form="AABA", vary=True, n=3, seed=11)
    changed = 0
    for p in pieces:
        for start in (5, 13):  # the returning As
            assert _bars_of(p, start, 3) == _bars_of(p, 1, 3)
            changed += _bars_of(p, start + 3, 1) != _bars_of(p, 4, 1)
        assert _bars_of(p, 9, 4) != _bars_of(p, 1, 4)
    assert changed >= 4, "with --vary the last bars of the returns were written anew"


def test_form_chords_per_section(composer):
    p = composer.generate(mood="happy", bars=8, key="C major", form="AB", seed=2,
                          chords="A: C G Am F; B: Dm Em F G")[0]
    at = {round(c.start_beat, 3): c.name for c in p.chords}
    assert [at.get(b * 4.0) for b in range(8)] == ["C", "G", "Am", "F", "Dm", "Em", "F", "G"]
    # plain chords with a form: every section starts them afresh (so a returning section has its chords)
    p = composer.generate(bars=6, key="C major", form="ABA", chords="C G F", seed=3, repeat="exact")[0]
    at = {round(c.start_beat, 3): c.name for c in p.chords}
    assert [at.get(b * 4.0) for b in (0, 2, 4)] == ["C", "C", "C"]
    assert _bars_of(p, 5, 1) == _bars_of(p, 1, 1)


@pytest.mark.parametrize("kwargs, match", [
    ({"bars": 4, "form": "AABAB"}, "more than the 4 bars"),
    ({"bars": 10, "form": "AABA"}, "do not divide"),
    ({"bars": 18, "form": "ABCDEFGHI"}, "at most 8"),
    ({"bars": 8, "form": "A-B"}, "letters"),
    ({"bars": 8, "form": ""}, "letters"),
    ({"bars": 8, "vary": True}, "form"),
    ({"bars": 8, "form": "AB", "chords": "A: C G"}, "section B .* has no chords"),
    ({"bars": 8, "form": "AB", "chords": "A: C; B: F; C: G"}, "section C is not in the form"),
    ({"bars": 8, "chords": "A: C G; B: F"}, "give a form too"),
    ({"bars": 8, "form": "AB", "chords": "A: C Hm7; B: F"}, "Hm7"),
])
def test_bad_forms_are_clear_errors(composer, kwargs, match):
    with pytest.raises(BadInputError, match=match):
        composer.generate(**kwargs)


# --------------------------------------------------------------------------- infill
@pytest.mark.parametrize("first, last", [(5, 8), (1, 2), (11, 12), (6, 6)])
def test_infill_keeps_every_note_outside_the_span(composer, clip, first, last):
    pieces = composer.infill(clip, bars=(first, last), n=2, seed=first)
    before = clip.notes
    for p in pieces:
        assert _outside(p.notes, first, last) == _outside(before, first, last)
        lo, hi = (first - 1) * BAR, last * BAR
        assert all(n.end_beat <= hi + 1e-9 for n in p.notes if lo <= n.start_beat < hi)  # new notes end in the span
        assert p.bars == 12 and p.tempo == 96 and p.meter == "4/4"
        assert {n.program for n in p.notes} <= {0, 1}  # the clip's instruments
        if (first, last) == (5, 8):
            assert (15.0, 74, 3.0, 0) in _outside(p.notes, first, last)  # held into the span: kept
    assert any(_inside(p.notes, first, last) != _inside(before, first, last) for p in pieces)
    assert any(_inside(p.notes, first, last) for p in pieces), "the span was left empty"


def test_infill_span_as_text_chords_and_file(composer, clip, tmp_path):
    path = clip.save(tmp_path / "clip.mid")
    p = composer.infill(path, bars="5-8", chords="F G", key="C major", seed=1)[0]
    assert _outside(p.notes, 5, 8) == _outside(clip.notes, 5, 8)
    names = {round(c.start_beat, 3): c.name for c in p.chords}
    assert [names.get(b) for b in (16.0, 20.0, 24.0, 28.0)] == ["F", "G", "F", "G"]
    # with chords asked for, the span's notes sit on their tones (the melody may pass between)
    new_bass = [n for n in p.notes if 16 <= n.start_beat < 32 and n.program == 1]
    tones = {0: {5, 9, 0}, 1: {7, 11, 2}}
    assert all(n.pitch % 12 in tones[int(n.start_beat // 4) % 2] for n in new_bass)
    # saved and read back: still 12 bars, same tempo
    from melodia import Piece

    back = Piece.from_midi(p.save(tmp_path / "filled.mid"))
    assert back.bars == 12 and back.tempo == 96
    assert _outside(back.notes, 5, 8) == _outside(clip.notes, 5, 8)


def test_infill_with_a_mood_shapes_only_the_new_notes(composer, clip):
    p = composer.infill(clip, bars=(5, 8), mood="calm", seed=3)[0]
    outside = [(n.start_beat, n.pitch, n.velocity) for n in clip.notes if not 16 <= n.start_beat < 32]
    assert sorted((n.start_beat, n.pitch, n.velocity) for n in p.notes if not 16 <= n.start_beat < 32) == \
        sorted(outside)


@pytest.mark.parametrize("bars, match", [
    ((13, 14), "past the clip's end"),
    ((10, 13), "past the clip's end"),
    ((0, 2), "count from 1"),
    ((8, 5), "count from 1"),
    ("five", "span of bars"),
    ((1, 2, 3), "first and last bar"),
])
def test_infill_bad_spans(composer, clip, bars, match):
    with pytest.raises(BadInputError, match=match):
        composer.infill(clip, bars=bars)


def test_infill_empty_clip_is_an_error(composer, tmp_path):
    import symusic

    s = symusic.Score(480)
    s.tempos.append(symusic.Tempo(0, qpm=100))
    s.tracks.append(symusic.Track("empty", program=0))
    s.dump_midi(str(tmp_path / "empty.mid"))
    with pytest.raises(BadInputError, match="no notes"):
        composer.infill(str(tmp_path / "empty.mid"), bars=(1, 1))
    with pytest.raises(BadInputError, match="no notes"):
        composer.infill([], bars=(1, 1))


# --------------------------------------------------------------------------- continuation chords
def test_continue_with_chords_writes_them_in_the_new_bars(composer, clip, tmp_path):
    p = composer.continue_from(clip, bars=4, chords="F G", key="C major", seed=2)[0]
    assert p.bars == 16
    assert sorted(_key(n) for n in p.notes if n.start_beat < 48) == sorted(_key(n) for n in clip.notes)
    at = {round(c.start_beat, 3): c.name for c in p.chords}
    assert [at.get(b) for b in (48.0, 52.0, 56.0, 60.0)] == ["F", "G", "F", "G"]
    bass = [n for n in p.notes if n.start_beat >= 48 and n.program == 1]
    assert all(n.pitch % 12 in ({5, 9, 0} if int(n.start_beat // 4) % 2 == 0 else {7, 11, 2}) for n in bass)
    with pytest.raises(BadInputError, match="Hq"):
        composer.continue_from(clip, bars=2, chords="Hq")
    from melodia.cli import main

    path = clip.save(tmp_path / "clip.mid")
    assert main(["generate", "--model", str(composer.meta["path"]), "--continue", str(path), "--bars", "2",
                 "--chords", "Am", "--new-only", "--seed", "1", "--out", str(tmp_path / "o")]) == 0
    from melodia import Piece

    new = Piece.from_midi(tmp_path / "o" / "any-1.mid")
    assert new.bars == 2 and [c.name for c in new.chords] == ["Am"]


# --------------------------------------------------------------------------- CLI
def test_cli_form_and_infill(tmp_path, tiny_model_dir, clip, capsys):
    from melodia import Piece
    from melodia.cli import main

    out = tmp_path / "out"
    assert main(["generate", "--model", str(tiny_model_dir), "--mood", "sad", "--bars", "8", "--form", "ABAB",
                 "--repeat", "exact", "--seed", "3", "--out", str(out)]) == 0
    p = Piece.from_midi(out / "sad-3.mid")
    assert p.bars == 8 and _bars_of(p, 5, 1) == _bars_of(p, 1, 1) and _bars_of(p, 3, 2) != _bars_of(p, 1, 2)
    clip_path = clip.save(tmp_path / "clip.mid")
    assert main(["infill", "--model", str(tiny_model_dir), str(clip_path), "--bars", "5-8", "--seed", "1",
                 "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "clip-bars5-8-1: " in err and "12 bars" in err
    filled = Piece.from_midi(out / "clip-bars5-8-1.mid")
    assert _outside(filled.notes, 5, 8) == _outside(clip.notes, 5, 8)


@pytest.mark.parametrize("argv, match", [
    (["generate", "--bars", "10", "--form", "AABA"], "do not divide"),
    (["generate", "--bars", "8", "--vary"], "--vary applies to a form"),
    (["generate", "--bars", "8", "--form", "AB", "--chords", "A: C; B: Qm"], "Qm"),
    (["infill", "CLIP", "--bars", "11-14"], "past the clip's end"),
    (["infill", "CLIP", "--bars", "x"], "span of bars"),
    (["infill", "MISSING", "--bars", "1-2"], "missing.mid"),
    (["infill", "EMPTY", "--bars", "1-1"], "no notes"),
    (["generate", "--bars", "2", "--form", "ABC"], "more than the 2 bars"),
    (["generate", "--bars", "4", "--chords", "C Blah"], "Blah"),
])
def test_cli_bad_input_writes_nothing(tmp_path, tiny_model_dir, clip, capsys, argv, match):
    import symusic

    from melodia.cli import main

    clip_path = clip.save(tmp_path / "clip.mid")
    empty = symusic.Score(480)
    empty.tempos.append(symusic.Tempo(0, qpm=100))
    empty.tracks.append(symusic.Track("empty", program=0))
    empty.dump_midi(str(tmp_path / "empty.mid"))
    named = {"CLIP": str(clip_path), "MISSING": str(tmp_path / "missing.mid"), "EMPTY": str(tmp_path / "empty.mid")}
    argv = [named.get(a, a) for a in argv]
    out = tmp_path / "out"
    assert main(argv[:1] + ["--model", str(tiny_model_dir), "--out", str(out)] + argv[1:]) == 2
    import re

    assert re.search(match, capsys.readouterr().err)
    assert not out.exists() or not any(out.iterdir())


# --------------------------------------------------------------------------- server
@pytest.fixture(scope="module")
def server(composer):
    from conftest import running_server

    with running_server(composer, one_thread=False) as srv:
        yield srv


def _post(server, route, body):
    req = urllib.request.Request(server.url + route, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_server_infill_and_form(server, clip):
    from melodia import Piece

    status, ans = _post(server, "/infill", {"midi_base64": base64.b64encode(clip.to_midi_bytes()).decode(),
                                            "bars": [5, 8], "seed": 1, "chords": "Am F"})
    assert status == 200, ans
    p = Piece.from_midi(base64.b64decode(ans["pieces"][0]["midi_base64"]))
    assert _outside(p.notes, 5, 8) == _outside(clip.notes, 5, 8) and ans["pieces"][0]["bars"] == 12
    assert [c["name"] for c in ans["pieces"][0]["chords"] if 16 <= c["start_beat"] < 32][:2] == ["Am", "F"]
    status, ans = _post(server, "/infill", {"prompt": _clip_notes(), "tempo": 96, "bars": "12", "seed": 2})
    assert status == 200, ans
    assert _outside(Piece.from_notes(ans["pieces"][0]["notes"], tempo=96).notes, 12, 12) == \
        _outside(clip.notes, 12, 12)
    status, ans = _post(server, "/continue", {"prompt": _clip_notes(), "tempo": 96, "bars": 2, "chords": "Dm G",
                                              "seed": 3, "include_prompt": False})
    assert status == 200, ans
    assert [c["name"] for c in ans["pieces"][0]["chords"]] == ["Dm", "G"]
    status, ans = _post(server, "/generate", {"bars": 8, "form": "AABB", "repeat": "exact", "seed": 5,
                                               "include_midi": False})
    assert status == 200, ans
    p = Piece.from_notes(ans["pieces"][0]["notes"], tempo=ans["pieces"][0]["tempo"])
    assert _bars_of(p, 3, 2)[:3] == _bars_of(p, 1, 2)[:3]


@pytest.mark.parametrize("route, body, match", [
    ("/infill", {"bars": [5, 8]}, "needs a prompt"),
    ("/infill", {"prompt": "PROMPT"}, "needs \"bars\""),
    ("/infill", {"prompt": "PROMPT", "bars": [13, 14]}, "past the clip's end"),
    ("/infill", {"prompt": "PROMPT", "bars": [5, 8, 9]}, "first and last bar"),
    ("/infill", {"prompt": "PROMPT", "bars": True}, "first and last bar"),
    ("/infill", {"prompt": "PROMPT", "bars": "1-2", "include_prompt": False}, "include_prompt"),
    ("/infill", {"prompt": "PROMPT", "bars": "1-2", "chords": "Xq"}, "Xq"),
    ("/infill", {"prompt": "PROMPT", "bars": "1-2", "form": "AB"}, "form applies to a new piece"),
    ("/generate", {"bars": 10, "form": "AABA"}, "do not divide"),
    ("/generate", {"bars": 8, "vary": True}, "form"),
    ("/continue", {"prompt": "PROMPT", "form": "AB"}, "form applies to a new piece"),
])
def test_server_refuses_bad_form_and_infill(server, route, body, match):
    body = {k: (_clip_notes() if v == "PROMPT" else v) for k, v in body.items()}
    status, ans = _post(server, route, body)
    assert status == 400 and match in ans["error"], ans
