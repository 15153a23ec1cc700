"""melodia.Composer / Piece / Note: generate -> notes -> every file format -> load back.

Uses the session's tiny trained model (conftest ``tiny_model_dir``); pieces are short so the
whole file runs in seconds on two cores.
"""
from __future__ import annotations

import subprocess
import sys
import threading
import wave
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("symusic")

from melodia.errors import BadInputError, BadMidiError, BadModelError

ROOT = Path(__file__).resolve().parent.parent


def _musical(notes):
    """What survives a MIDI round trip exactly: pitch, beats, velocity, program."""
    return [(n.pitch, n.start_beat, n.duration_beats, n.velocity, n.program) for n in notes]


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """Batch-1 sampling is latency-bound: one torch thread (see conftest.one_torch_thread)."""


@pytest.fixture(scope="module")
def calm_pieces(composer):
    return composer.generate(mood="calm", bars=4, key="F major", tempo=72, n=2, seed=1)


# --------------------------------------------------------------------------- import cost
def test_import_melodia_is_light():
    # numpy and symusic (tens of milliseconds) are imported at the top of the modules that use them
    code = ("import sys, melodia; from melodia import Composer, Piece, Note; "
            "heavy = [m for m in ('torch', 'music21', 'miditok', 'transformers') "
            "if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "", f"import melodia pulled in {out.stdout.strip()}"
    # -X importtime: cumulative microseconds of the melodia package itself
    res = subprocess.run([sys.executable, "-X", "importtime", "-c", "import melodia"], capture_output=True,
                         text=True, cwd=ROOT, check=True)
    line = [ln for ln in res.stderr.splitlines() if ln.rstrip().endswith("| melodia")][-1]
    cumulative_us = int(line.split("|")[1])
    assert cumulative_us < 500_000, line


def test_lazy_exports():
    import melodia

    assert {"Composer", "Piece", "Note"} <= set(dir(melodia))
    assert melodia.Composer.__module__ == "melodia.api"
    with pytest.raises(AttributeError):
        melodia.NoSuchThing  # noqa: B018


def test_default_model_missing_is_a_clear_error(monkeypatch, tmp_path):
    from melodia import Composer, api

    monkeypatch.setattr(api, "DEFAULT_MODEL_DIR", tmp_path / "weights" / "default")
    with pytest.raises(BadModelError, match="default model is not built yet"):
        Composer.load()
    with pytest.raises(BadModelError, match="not found"):
        Composer.load(tmp_path / "nowhere")
    with pytest.raises(BadInputError, match="device"):
        Composer.load(tmp_path, device="tpu")


def test_load_sets_one_torch_thread_by_default(tiny_model_dir):
    # issue 22: the API left torch's default (2 threads), 10-90x slower on a busy machine
    import torch

    from melodia import Composer

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        Composer.load(tiny_model_dir, device="cpu")           # the default: 1 thread
        assert torch.get_num_threads() == 1
        torch.set_num_threads(2)
        Composer.load(tiny_model_dir, device="cpu", threads=1)
        assert torch.get_num_threads() == 1
        Composer.load(tiny_model_dir, device="cpu", threads=0)  # 0: torch's choice, left alone
        assert torch.get_num_threads() == 1
        torch.set_num_threads(2)
        Composer.load(tiny_model_dir, device="cpu", threads=0)
        assert torch.get_num_threads() == 2
        for bad in (-1, 1.5, "2", True, None):
            with pytest.raises(BadInputError, match="threads"):
                Composer.load(tiny_model_dir, device="cpu", threads=bad)
        assert torch.get_num_threads() == 2                   # a bad value changes nothing
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------- generate
def test_generate_gives_pieces_with_notes(composer, calm_pieces):
    from melodia import Note, Piece

    assert len(calm_pieces) == 2
    for p in calm_pieces:
        assert isinstance(p, Piece)
        assert (p.bars, p.tempo, p.meter, p.mood, p.key, p.seed) == (4, 72.0, "4/4", "calm", "F major", 1)
        assert p.length_beats == 16.0
        notes = p.notes
        assert notes and all(isinstance(n, Note) for n in notes)
        assert notes == sorted(notes, key=lambda n: (n.start_beat, n.pitch, n.program))
        for n in notes:
            assert 0 <= n.pitch <= 127 and 1 <= n.velocity <= 127 and -1 <= n.program <= 127
            assert 0 <= n.start_beat < 16 and 0 < n.duration_beats and n.end_beat <= 16 + 1e-9
            # 72 quarter notes a minute: a beat is 60/72 s
            assert n.start_s == pytest.approx(n.start_beat * 60 / 72, abs=1e-4)
            assert n.duration_s == pytest.approx(n.duration_beats * 60 / 72, abs=1e-4)
        assert p.duration_s == pytest.approx(p.end_beat * 60 / 72, abs=1e-3)
        assert len(p) == len(notes)
        assert "4 bars" in repr(p)
    assert _musical(calm_pieces[0].notes) != _musical(calm_pieces[1].notes)  # two variations


def test_a_model_directory_may_name_its_default_instruments(tiny_model_dir, tmp_path):
    """melodia.json "default_programs" decides what plays when a request names no instruments."""
    import json
    import shutil

    from melodia import Composer

    d = tmp_path / "model"
    shutil.copytree(tiny_model_dir, d)
    meta = json.loads((d / "melodia.json").read_text())
    meta["default_programs"] = [0]
    (d / "melodia.json").write_text(json.dumps(meta))
    pieces = Composer.load(d, device="cpu").generate(mood="happy", bars=4, n=3, seed=2)
    assert {n.program for p in pieces for n in p.notes} == {0}


def test_a_model_directory_may_name_its_tempo_unknown_token(tiny_model_dir, tmp_path):
    """melodia.json "tempo_unknown": an explicit tempo in that bin conditions the model on the
    nearest other bin, and the piece still plays at the tempo asked for. The shipped model
    names the bin of 120 qpm, where its corpus's tempo-less files sit."""
    import json
    import shutil

    from melodia import Composer, api
    from melodia.generate import GenerationConfig

    shipped = json.loads((api.DEFAULT_MODEL_DIR / "melodia.json").read_text())
    assert shipped["tempo_unknown"] == "Tempo_122.99"
    d = tmp_path / "model"
    shutil.copytree(tiny_model_dir, d)
    meta = json.loads((d / "melodia.json").read_text())
    plain = Composer.load(d, device="cpu")
    meta["tempo_unknown"] = unknown = plain._gen.vocab.tempo_token(120)
    (d / "melodia.json").write_text(json.dumps(meta))
    c = Composer.load(d, device="cpu")
    seen = c._gen.prepare(GenerationConfig(bars=2, tempo=120))[3][0].forced[3]
    assert seen == frozenset([c._gen.tempo_for_model(120)]) and unknown not in seen
    assert plain._gen.prepare(GenerationConfig(bars=2, tempo=120))[3][0].forced[3] == frozenset([unknown])
    piece = c.generate(mood="tense", bars=2, tempo=120, seed=1)[0]
    assert piece.tempo == pytest.approx(120.0) and piece.notes


def test_same_seed_same_notes_and_moods_by_name_alias_or_plane(composer):
    a = composer.generate(mood="sad", bars=2, seed=5, dynamics="flat")[0]
    b = composer.generate(mood="melancholic", bars=2, seed=5, dynamics="flat")[0]
    c = composer.generate(valence=-0.4, arousal=-0.8, bars=2, seed=5, dynamics="flat")[0]
    assert a.mood == b.mood == c.mood == "sad"
    from melodia.music.keys import KEY_NAMES

    assert a.key == b.key and (a.key is None or a.key in KEY_NAMES)  # the key the music was conditioned on
    assert _musical(a.notes) == _musical(b.notes) == _musical(c.notes)
    assert composer.generate(mood="joyful", bars=1, seed=1)[0].mood == "happy"
    assert composer.generate(bars=1, seed=1)[0].mood == "any"
    assert composer.moods == ["happy", "tense", "sad", "calm"]
    assert "4/4" in composer.meters and "3/4" in composer.meters


def _mean_velocity(pieces) -> float:
    vel = [n.velocity for p in pieces for n in p.notes]
    return sum(vel) / len(vel)


def test_dynamics_follow_the_mood_and_shape_the_phrase(composer):
    calm = composer.generate(mood="calm", bars=4, n=4, seed=3)
    happy = composer.generate(mood="happy", bars=4, n=4, seed=3)
    assert _mean_velocity(calm) <= _mean_velocity(happy) - 10
    # the same samples with the model's own velocities: only the velocities differ
    flat = composer.generate(mood="calm", bars=4, n=4, seed=3, dynamics="flat")
    assert [(n.pitch, n.start_beat) for n in flat[0].notes] == [(n.pitch, n.start_beat) for n in calm[0].notes]
    assert [n.velocity for n in flat[0].notes] != [n.velocity for n in calm[0].notes]
    # an explicit arousal is followed: lower arousal, softer
    soft = composer.generate(valence=-0.4, arousal=-0.9, bars=4, n=4, seed=3)
    assert _mean_velocity(soft) < _mean_velocity(composer.generate(mood="sad", bars=4, n=4, seed=3))
    with pytest.raises(BadInputError, match="dynamics"):
        composer.generate(mood="calm", dynamics="loud")


def test_shape_dynamics_swells_over_a_phrase():
    import symusic

    from melodia.generate import shape_dynamics

    s = symusic.Score(480)
    tr = symusic.Track("p", program=0)
    for k in range(32):  # eight bars of quarter notes, all at velocity 80
        tr.notes.append(symusic.Note(k * 480, 480, 60, 80))
    s.tracks.append(tr)
    v = [n.velocity for n in shape_dynamics(s, 0.5).tracks[0].notes]
    first = v[:16]  # the first four-bar phrase
    assert max(first) == max(first[8:12]) and first[0] < max(first) and first[15] < max(first)
    assert v[-1] < v[16]  # the piece's last bar is softer still
    assert shape_dynamics(s, -0.5).tracks[0].notes[9].velocity < shape_dynamics(s, 0.5).tracks[0].notes[9].velocity - 20
    # a continuation's new bars only
    kept = shape_dynamics(s, -0.5, start_tick=16 * 480)
    assert [n.velocity for n in kept.tracks[0].notes[:16]] == [80] * 16


@pytest.mark.parametrize("kwargs, match", [
    ({"mood": "grumpy"}, "unknown mood"),
    ({"mood": "sad", "valence": 0.1, "arousal": 0.1}, "either mood"),
    ({"valence": 2.0, "arousal": 0.0}, "outside"),
    ({"bars": 0}, "bars"),
    ({"bars": 65}, "bars"),
    ({"n": 17}, "n 17"),
    ({"tempo": 5}, "tempo"),
    ({"key": "H major"}, "key"),
    ({"meter": "4-4"}, "meter"),
    ({"temperature": 0}, "temperature"),
    ({"instruments": ["kazoo"]}, "instrument"),
])
def test_bad_generate_arguments_name_the_value(composer, kwargs, match):
    with pytest.raises(BadInputError, match=match):
        composer.generate(**kwargs)


def test_threads_share_one_composer_safely(composer):
    seeds = [11, 12, 13]
    expected = {s: _musical(composer.generate(mood="happy", bars=1, seed=s)[0].notes) for s in seeds}
    got: dict[int, list] = {}
    errors: list[BaseException] = []

    def work(s: int) -> None:
        try:
            got[s] = _musical(composer.generate(mood="happy", bars=1, seed=s)[0].notes)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(s,)) for s in seeds]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and got == expected


# --------------------------------------------------------------------------- files and objects
@pytest.mark.filterwarnings("ignore:Cannot put in an element with a missing voice tag")
def test_save_every_format_and_load_back(calm_pieces, tmp_path):
    import music21
    from matplotlib.image import imread

    from melodia import Piece

    p = calm_pieces[0]
    # .mid: the notes come back exactly
    mid = p.save(tmp_path / "calm.mid")
    back = Piece.from_midi(mid)
    assert _musical(back.notes) == _musical(p.notes)
    assert [n.start_s for n in back.notes] == pytest.approx([n.start_s for n in p.notes], abs=1e-4)
    assert (back.tempo, back.meter, back.bars) == (72.0, "4/4", 4)
    assert _musical(Piece.from_midi(mid.read_bytes()).notes) == _musical(p.notes)
    # .wav: 16-bit stereo audio as long as the music plus the release tail
    wav = p.save(tmp_path / "calm.wav")
    with wave.open(str(wav)) as w:
        assert (w.getnchannels(), w.getsampwidth()) == (2, 2)
        seconds = w.getnframes() / w.getframerate()
    assert p.end_beat * 60 / 72 - 0.5 < seconds < p.duration_s + 2.0
    # .musicxml: music21 reads it back, every pitch class of the piece is there
    xml = p.save(tmp_path / "calm.musicxml")
    parsed = music21.converter.parse(str(xml))
    xml_pitches = {pt.midi for el in parsed.recurse().notes for pt in el.pitches}
    assert xml_pitches and xml_pitches <= {n.pitch for n in p.notes}
    assert len(xml_pitches) >= len({n.pitch for n in p.notes}) * 0.8  # quantizing may merge a few
    # .png: a piano roll image
    png = p.save(tmp_path / "calm.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert imread(str(png)).shape[:2] == (600, 1600)
    # unknown extension, and refusing to overwrite
    with pytest.raises(BadInputError, match="unknown output format"):
        p.save(tmp_path / "calm.mp3")
    from melodia.errors import OutputExistsError

    with pytest.raises(OutputExistsError):
        p.save(mid, force=False)


def test_conversions(calm_pieces):
    import music21
    import pretty_midi
    import symusic

    p = calm_pieces[0]
    pm = p.to_pretty_midi()
    assert isinstance(pm, pretty_midi.PrettyMIDI)
    pm_notes = sorted((n.pitch, round(n.start, 4)) for inst in pm.instruments for n in inst.notes)
    assert pm_notes == sorted((n.pitch, round(n.start_s, 4)) for n in p.notes)
    m21 = p.to_music21()
    assert isinstance(m21, music21.stream.Score) and len(m21.parts) >= 1
    s = p.to_score()
    assert isinstance(s, symusic.core.ScoreTick) and s.note_num() == len(p)
    s.tracks.clear()  # a copy: the piece keeps its notes
    assert len(p) == len(p.notes) > 0
    d = p.to_dict()
    assert d["bars"] == 4 and len(d["notes"]) == len(p) and d["midi_base64"]
    assert set(d["notes"][0]) == {"pitch", "start_beat", "duration_beats", "start_s", "duration_s",
                                  "velocity", "program"}


def test_piece_from_notes_and_its_checks():
    from melodia import Note, Piece

    p = Piece.from_notes([{"pitch": 60, "start_beat": 0, "duration_beats": 1.5},
                          {"pitch": 36, "start_beat": 1, "duration_beats": 0.25, "program": -1, "velocity": 110},
                          Note(64, 2.0, 2.0, 0.0, 0.0, 70, 40)], tempo=90, meter="3/4")
    assert (p.tempo, p.meter, p.bars, p.length_beats) == (90.0, "3/4", 2, 6.0)
    assert [(n.pitch, n.start_beat, n.duration_beats, n.program) for n in p.notes] == [
        (60, 0.0, 1.5, 0), (36, 1.0, 0.25, -1), (64, 2.0, 2.0, 40)]
    assert p.notes[1].is_drum and p.notes[1].start_s == pytest.approx(60 / 90)
    for bad, match in [([{"pitch": 128, "start_beat": 0, "duration_beats": 1}], r"notes\[0\]\.pitch"),
                       ([{"pitch": 60, "start_beat": -1, "duration_beats": 1}], "start_beat"),
                       ([{"pitch": 60, "start_beat": 0, "duration_beats": 0}], "duration_beats"),
                       ([{"pitch": 60, "duration_beats": 1}], "missing 'start_beat'"),
                       ([{"pitch": 60, "start_beat": 0, "duration_beats": 1, "program": 200}], "program"),
                       (["C4"], "a note is an object"),
                       ({"pitch": 60}, "list of notes")]:
        with pytest.raises(BadInputError, match=match):
            Piece.from_notes(bad)
    with pytest.raises(BadInputError, match="meter"):
        Piece.from_notes([{"pitch": 60, "start_beat": 0, "duration_beats": 1}], meter="four")


# --------------------------------------------------------------------------- continue_from
def test_continue_from_file_piece_and_notes(composer, calm_pieces, tmp_path):
    from melodia import Piece

    prompt = calm_pieces[0]
    path = prompt.save(tmp_path / "prompt.mid")
    more = composer.continue_from(path, bars=2, mood="tense", n=2, seed=3)
    assert len(more) == 2
    from melodia.music.keys import KEY_NAMES, estimate_key

    key = estimate_key(prompt.to_score()).name  # no key given: the prompt's own
    tonic, minor = KEY_NAMES.index(key) % 12, key.endswith("minor")
    scale = {(tonic + s) % 12 for s in ((0, 2, 3, 5, 7, 8, 10, 11) if minor else (0, 2, 4, 5, 7, 9, 11))}
    for m in more:
        assert m.bars == prompt.bars + 2 and m.mood == "tense" and m.key == key
        new = [n.pitch % 12 for n in m.notes if n.start_beat >= prompt.length_beats and n.program >= 0]
        assert new and set(new) <= scale  # written on C by the key-normalised model, moved back into the key
        assert _musical(prompt.notes) == _musical([n for n in m.notes if n.start_beat < prompt.length_beats])
        assert any(n.start_beat >= prompt.length_beats for n in m.notes)
    # a Piece prompt, new bars only: they start at beat 0
    only_new = composer.continue_from(prompt, bars=2, seed=3, include_prompt=False)[0]
    assert only_new.bars == 2 and only_new.tempo == prompt.tempo
    assert min(n.start_beat for n in only_new.notes) < 8 and max(n.end_beat for n in only_new.notes) <= 8
    # same seed, same continuation, whether the prompt came from the file or the Piece
    again = composer.continue_from(path.read_bytes(), bars=2, seed=3, include_prompt=False)[0]
    assert _musical(again.notes) == _musical(only_new.notes)
    # notes as the prompt, with their tempo and meter
    notes = [{"pitch": 60 + i % 5, "start_beat": i * 0.5, "duration_beats": 0.5} for i in range(12)]
    cont = composer.continue_from(notes, bars=2, tempo=96, meter="3/4", seed=2)[0]
    assert (cont.tempo, cont.meter, cont.bars) == (96.0, "3/4", 2 + 2)  # 6 beats of 3/4 + 2 new bars
    assert isinstance(cont, Piece)


def test_continue_from_bad_prompts(composer, calm_pieces, tmp_path):
    with pytest.raises(BadMidiError, match="missing.mid"):
        composer.continue_from(tmp_path / "missing.mid", bars=2)
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"RIFF0000")
    with pytest.raises(BadMidiError, match="bad.mid"):
        composer.continue_from(str(bad), bars=2)
    with pytest.raises(BadInputError, match="no notes"):
        composer.continue_from([], bars=2)
    with pytest.raises(BadInputError, match="tempo and meter"):
        composer.continue_from(calm_pieces[0], bars=2, tempo=100)
    with pytest.raises(BadInputError, match="bars"):
        composer.continue_from(calm_pieces[0], bars=0)
    with pytest.raises(BadInputError, match="include_prompt"):
        composer.continue_from(calm_pieces[0], bars=2, include_prompt="yes")
    with pytest.raises(BadInputError):
        composer.continue_from(12345, bars=2)
