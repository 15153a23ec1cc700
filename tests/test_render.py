"""Tests for melodia.render: every output is checked for content, not only for existence.

All test MIDI is built here with symusic (no data files, nothing to license).
"""
from __future__ import annotations

import argparse
import os
import struct
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
import symusic

from melodia import render
from melodia.errors import BadInputError, BadMidiError, MelodiaError, OutputExistsError

SCALE = [60, 62, 64, 65, 67, 69, 71, 72]


def make_score(pitches=SCALE, program=0, beats_each=1.0, qpm=120.0, velocity=90,
               time_signatures=((0, 4, 4),)) -> symusic.Score:
    """One track playing ``pitches`` one after another."""
    s = symusic.Score(480)
    s.tempos.append(symusic.Tempo(0, qpm))
    for t, n, d in time_signatures:
        s.time_signatures.append(symusic.TimeSignature(t, n, d))
    track = symusic.Track(program=program, name="")
    step = int(480 * beats_each)
    for i, p in enumerate(pitches):
        track.notes.append(symusic.Note(i * step, step, p, velocity))
    s.tracks.append(track)
    return s


def multitrack_score(seconds: float = 30.0, qpm: float = 120.0) -> symusic.Score:
    """A small band (melody, piano chords, bass, strings, drums) lasting ``seconds``."""
    s = symusic.Score(480)
    s.tempos.append(symusic.Tempo(0, qpm))
    s.time_signatures.append(symusic.TimeSignature(0, 4, 4))
    mel = symusic.Track(program=73, name="melody")
    pno = symusic.Track(program=0, name="piano")
    bass = symusic.Track(program=33, name="bass")
    pad = symusic.Track(program=48, name="strings")
    drums = symusic.Track(program=0, is_drum=True, name="drums")
    rng = np.random.default_rng(0)
    chords = [(48, [60, 64, 67]), (53, [60, 65, 69]), (55, [59, 62, 67]), (48, [60, 64, 67])]
    for bar, b in enumerate(range(0, int(seconds * qpm / 60), 4)):
        root, chord = chords[bar % 4]
        for p in chord:
            pno.notes.append(symusic.Note(b * 480, 1800, p, 80))
            pad.notes.append(symusic.Note(b * 480, 1920, p + 12, 60))
        for k in range(4):
            bass.notes.append(symusic.Note((b + k) * 480, 440, root - 12, 90))
        for k in range(8):
            mel.notes.append(symusic.Note(b * 480 + k * 240, 230, int(rng.choice(SCALE)) + 12, 95))
            drums.notes.append(symusic.Note(b * 480 + k * 240, 100, 42, 70))
        drums.notes.append(symusic.Note(b * 480, 100, 36, 110))
        drums.notes.append(symusic.Note(b * 480 + 960, 100, 38, 100))
    for t in (mel, pno, bass, pad, drums):
        s.tracks.append(t)
    return s


def read_wav(path) -> tuple[np.ndarray, wave._wave_params]:
    with wave.open(str(path)) as w:
        params = w.getparams()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return data.reshape(-1, params.nchannels).astype(np.float64) / 32768.0, params


def fundamental(x: np.ndarray, sr: int, lo: float = 60.0, hi: float = 2000.0) -> float:
    """Strongest spectral peak in [lo, hi] Hz (Hann window, zero-padded, parabolic refine)."""
    x = x - x.mean()
    n = 1 << 20
    mag = np.abs(np.fft.rfft(x * np.hanning(len(x)), n))
    freqs = np.fft.rfftfreq(n, 1 / sr)
    k = int(np.argmax(np.where((freqs > lo) & (freqs < hi), mag, 0)))
    a, b, c = np.log(mag[k - 1:k + 2] + 1e-300)
    return (k + 0.5 * (a - c) / (a - 2 * b + c)) * sr / n


# ----------------------------------------------------------------------------- audio

def test_scale_wav_is_audible_44k_and_never_clips(tmp_path):
    out = render.render_wav(make_score(), tmp_path / "scale.wav")
    assert out == tmp_path / "scale.wav"
    audio, params = read_wav(out)
    assert params.framerate == 44100 and params.sampwidth == 2 and params.nchannels == 2
    rms = float(np.sqrt(np.mean(audio ** 2)))
    peak = float(np.max(np.abs(audio)))
    assert rms > 0.01
    assert 0.85 < peak < 1.0  # normalised to about -1 dBFS, no sample at the rails
    # 8 notes of half a second: 4 s of music plus at most ~1 s of release
    seconds = len(audio) / 44100
    assert 4.0 <= seconds <= 5.1
    # something sounds in every half-second slot (each note is heard)
    slots = audio[: int(4.0 * 44100)].reshape(8, -1, 2)
    assert (np.sqrt((slots ** 2).mean(axis=(1, 2))) > 0.01).all()


@pytest.mark.parametrize("program", [0, 73], ids=["piano", "flute"])
@pytest.mark.parametrize("pitch", [69, 72], ids=["A4", "C5"])
def test_rendered_fundamental_matches_note(program, pitch):
    audio = render.render_audio(make_score([pitch], program=program, beats_each=3.0))
    assert audio.dtype == np.float32 and audio.ndim == 2 and audio.shape[1] == 2
    sustained = audio[int(0.3 * 44100):int(1.3 * 44100)].mean(axis=1)
    f0 = 440.0 * 2 ** ((pitch - 69) / 12)
    assert fundamental(sustained, 44100) == pytest.approx(f0, rel=0.02)


@pytest.mark.parametrize("rate", [22050, 48000])
def test_other_sample_rates_keep_pitch(tmp_path, rate):
    out = render.render_wav(make_score([69], beats_each=3.0), tmp_path / "a.wav", sample_rate=rate)
    audio, params = read_wav(out)
    assert params.framerate == rate
    sustained = audio[int(0.3 * rate):int(1.3 * rate)].mean(axis=1)
    assert fundamental(sustained, rate) == pytest.approx(440.0, rel=0.02)


def test_bad_sample_rate_is_refused():
    with pytest.raises(BadInputError, match="sample_rate"):
        render.render_audio(make_score(), sample_rate=1000)


def test_audio_ends_about_a_second_after_the_last_note_with_a_fade():
    audio = render.render_audio(make_score([69], program=48, beats_each=2.0))  # strings sustain
    seconds = len(audio) / 44100
    assert 1.0 < seconds <= 2.0 + 1.0 + 0.01
    tail = audio[-int(0.005 * 44100):]
    assert np.max(np.abs(tail)) < 0.02  # faded out: no click at the end


def test_loud_dense_score_is_rendered_again_quieter_not_clipped():
    # 8 identical loud tracks sum coherently past the synthesizer's 16-bit rails
    s = symusic.Score(480)
    for _ in range(8):
        t = symusic.Track(program=0)
        for p in (48, 52, 55, 60, 64, 67, 72):
            t.notes.append(symusic.Note(0, 1920, p, 127))
        s.tracks.append(t)
    audio = render.render_audio(s)
    peak = np.max(np.abs(audio))
    assert peak < 1.0
    # a clipped render has long flat tops at the peak; a clean one touches it only briefly
    near_peak = np.mean(np.abs(audio) > 0.98 * peak)
    assert near_peak < 1e-4


def test_render_does_not_change_the_callers_score():
    s = make_score()
    before = (len(s.tracks), len(s.markers), [len(t.controls) for t in s.tracks], s.end())
    render.render_audio(s)
    assert (len(s.tracks), len(s.markers), [len(t.controls) for t in s.tracks], s.end()) == before


def test_resample_is_band_limited_and_seamless_across_blocks():
    sr_in, sr_out, f = 48000, 44100, 1000.0
    n = 200_000  # several internal blocks
    t_in = np.arange(n) / sr_in
    x = np.stack([np.sin(2 * np.pi * f * t_in), 0.5 * np.cos(2 * np.pi * f * t_in)], 1)
    y = render.resample(x.astype(np.float32), sr_in, sr_out)
    assert y.dtype == np.float32 and y.shape == (n * 147 // 160, 2)
    t_out = np.arange(len(y)) / sr_out
    want = np.stack([np.sin(2 * np.pi * f * t_out), 0.5 * np.cos(2 * np.pi * f * t_out)], 1)
    inner = slice(2000, len(y) - 2000)  # the ends see the signal switch on and off
    assert np.max(np.abs(y[inner] - want[inner])) < 2e-3
    # a tone above the new Nyquist frequency is removed, not folded back
    hi = np.sin(2 * np.pi * 23000 * t_in).astype(np.float32)[:, None]
    assert np.max(np.abs(render.resample(hi, sr_in, sr_out)[inner])) < 1e-2


def test_empty_score_has_nothing_to_render(tmp_path):
    s = symusic.Score(480)
    s.tracks.append(symusic.Track(program=0))
    with pytest.raises(BadInputError, match="no notes"):
        render.render_wav(s, tmp_path / "x.wav")
    with pytest.raises(BadInputError, match="no notes"):
        render.render_png(s, tmp_path / "x.png")
    assert not list(tmp_path.iterdir())


def test_missing_or_bad_soundfont_is_a_melodia_error_naming_it(tmp_path):
    missing = tmp_path / "nope.sf2"
    with pytest.raises(MelodiaError, match="nope.sf2") as e:
        render.render_wav(make_score(), tmp_path / "a.wav", soundfont=missing)
    assert not isinstance(e.value, BadMidiError)
    text = tmp_path / "fake.sf2"
    text.write_text("not a soundfont\n" * 10)
    with pytest.raises(MelodiaError, match="fake.sf2"):
        render.render_audio(make_score(), soundfont=text)
    riff = tmp_path / "broken.sf2"
    riff.write_bytes(b"RIFF" + struct.pack("<I", 1000) + b"sfbk" + b"\0" * 40)
    with pytest.raises(MelodiaError, match="broken.sf2"):
        render.render_audio(make_score(), soundfont=riff)
    assert not (tmp_path / "a.wav").exists()


def test_default_soundfont_is_pretty_midis_general_midi_bank():
    sf = render.default_soundfont()
    assert sf.name == "TimGM6mb.sf2" and sf.is_file()
    head = sf.read_bytes()[:12]
    assert head[:4] == b"RIFF" and head[8:] == b"sfbk"


# ----------------------------------------------------------------------------- piano roll

def test_png_piano_roll_has_expected_size_and_content(tmp_path):
    import matplotlib.colors as mcolors
    import matplotlib.image as mpimg

    s = make_score()
    s.tracks.append(symusic.Track(program=33))
    for i in range(4):
        s.tracks[1].notes.append(symusic.Note(i * 960, 960, 36, 90))
    out = render.render_png(s, tmp_path / "roll.png", title="happy · C major · 2 bars")
    img = mpimg.imread(out)
    assert img.shape[:2] == (600, 1600)
    rgb = img[..., :3]
    assert np.mean(np.any(rgb < 0.9, axis=-1)) > 0.02  # not blank
    # both parts' colours (by program: piano 0, bass 33) are drawn
    for name in (render.part_colour(0), render.part_colour(33)):
        want = np.array(mcolors.to_rgb(name))
        assert np.sum(np.all(np.abs(rgb - want) < 0.12, axis=-1)) > 200, name


def test_bar_lines_follow_time_signatures_like_miditok():
    from miditok.utils import get_bars_ticks

    from melodia.music.meter import bar_starts

    s = make_score(SCALE * 3, time_signatures=((0, 4, 4), (480 * 8, 3, 4), (480 * 14, 6, 8)))
    ours = bar_starts(s, s.end(), close=True)  # the bar lines render_png draws
    assert ours[:-1] == get_bars_ticks(s)
    assert ours[:4] == [0, 1920, 3840, 5280]  # two bars of 4/4, then 3/4


# ----------------------------------------------------------------------------- MusicXML

@pytest.mark.parametrize("ext", [".musicxml", ".mxl"])
def test_musicxml_loads_back_with_the_same_pitches(tmp_path, ext):
    import music21

    pitches = SCALE + SCALE[::-1]
    out = render.render_musicxml(make_score(pitches), tmp_path / f"s{ext}", title="calm · C major")
    parsed = music21.converter.parse(str(out), forceSource=True)
    got = [p.midi for n in parsed.recurse().notes for p in n.pitches]
    assert got == pitches
    if ext == ".musicxml":
        assert "calm · C major" in out.read_text(encoding="utf-8")
    else:
        assert out.read_bytes()[:2] == b"PK"  # compressed MusicXML is a zip


def test_musicxml_gives_every_part_the_time_signatures(tmp_path):
    import music21

    s = make_score(SCALE * 2, time_signatures=((0, 4, 4), (480 * 8, 3, 4)))
    bass = symusic.Track(program=33)
    for i in range(0, 16, 2):
        bass.notes.append(symusic.Note(i * 480, 960, 36, 90))
    s.tracks.append(bass)
    out = render.render_musicxml(s, tmp_path / "two.musicxml")
    parsed = music21.converter.parse(str(out), forceSource=True)
    assert len(parsed.parts) == 2
    for part in parsed.parts:
        sigs = [ts.ratioString for ts in part.recurse().getElementsByClass("TimeSignature")]
        assert sigs[:2] == ["4/4", "3/4"]


# ----------------------------------------------------------------------------- save / force

MAGIC = {".mid": b"MThd", ".midi": b"MThd", ".wav": b"RIFF", ".musicxml": b"<?xml",
         ".xml": b"<?xml", ".mxl": b"PK", ".png": b"\x89PNG"}


def test_save_chooses_the_format_by_extension(tmp_path):
    s = make_score()
    for ext, magic in MAGIC.items():
        out = render.save(s, tmp_path / f"piece{ext.upper() if ext == '.mid' else ext}")
        assert out.read_bytes().startswith(magic), ext
    back = render.load_score(tmp_path / "piece.midi")
    assert [n.pitch for n in back.tracks[0].notes] == SCALE
    with pytest.raises(BadInputError, match="mp3"):
        render.save(s, tmp_path / "piece.mp3")
    with pytest.raises(BadInputError):
        render.save(s, tmp_path / "piece")


@pytest.mark.parametrize("ext", sorted(MAGIC))
def test_overwrite_is_refused_without_force_and_old_file_kept(tmp_path, ext):
    target = tmp_path / f"old{ext}"
    target.write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match=f"old{ext}"):
        render.save(make_score(), target, force=False)
    assert target.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]  # no temp files left
    render.save(make_score(), target, force=True)
    assert target.read_bytes().startswith(MAGIC[ext])


# ----------------------------------------------------------------------------- bad input

def _bad_files(tmp_path: Path) -> dict[str, Path]:
    good = make_score().dumps_midi()
    files = {
        "zero-byte": b"",
        "text": b"this is not a MIDI file, just some text\n" * 3,
        "truncated": good[: len(good) // 2],
        "header-only": good[:14],
        "tpq-0": good[:12] + struct.pack(">H", 0) + good[14:],
        "smpte": good[:12] + bytes([0xE7, 40]) + good[14:],
    }
    out = {}
    for name, data in files.items():
        (tmp_path / f"{name}.mid").write_bytes(data)
        out[name] = tmp_path / f"{name}.mid"
    return out


BAD_CASES = ["zero-byte", "text", "truncated", "header-only", "tpq-0", "smpte"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_midi_files_raise_bad_midi_error_naming_the_file(tmp_path, case):
    path = _bad_files(tmp_path)[case]
    with pytest.raises(BadMidiError) as e:
        render.load_score(path)
    assert e.value.path == str(path) and str(path) in str(e.value)
    with pytest.raises(BadMidiError, match=case):
        render.render_wav(path, tmp_path / "out.wav")
    assert not (tmp_path / "out.wav").exists()


def test_missing_file_directory_and_bad_bytes(tmp_path):
    with pytest.raises(BadMidiError, match="no such file"):
        render.load_score(tmp_path / "missing.mid")
    with pytest.raises(BadMidiError, match="directory"):
        render.load_score(tmp_path)
    with pytest.raises(BadMidiError, match="<bytes>"):
        render.load_score(b"MThd\x00\x00")
    with pytest.raises(BadMidiError, match="clip.mid"):
        render.load_score(b"garbage", name="clip.mid")
    with pytest.raises(BadInputError):
        render.load_score(12345)


def test_load_score_accepts_bytes_paths_and_scores_in_any_time_unit(tmp_path):
    s = make_score()
    data = s.dumps_midi()
    (tmp_path / "a.mid").write_bytes(data)
    path = tmp_path / "a.mid"
    sources = (data, path, str(path), s, s.to("second"), s.to("quarter"))
    for src in sources:
        got = render.load_score(src)
        assert isinstance(got, symusic.core.ScoreTick)
        assert [n.pitch for n in got.tracks[0].notes] == SCALE


# ----------------------------------------------------------------------------- CLI

def _parse(argv):
    parser = argparse.ArgumentParser(prog="melodia render")
    render.add_render_arguments(parser)
    return parser.parse_args(argv)


def test_cli_writes_next_to_input_prints_paths_and_refuses_overwrite(tmp_path, capsys):
    src = tmp_path / "tune.mid"
    src.write_bytes(make_score().dumps_midi())
    assert render.cli_render(_parse([str(src), "--wav", "--png"])) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / "tune.wav"), str(tmp_path / "tune.png")]
    wav_before = (tmp_path / "tune.wav").read_bytes()
    (tmp_path / "tune.png").write_bytes(b"keep me")
    with pytest.raises(OutputExistsError, match="--force"):
        render.cli_render(_parse([str(src), "--wav", "--png"]))
    assert (tmp_path / "tune.wav").read_bytes() == wav_before
    assert (tmp_path / "tune.png").read_bytes() == b"keep me"
    assert render.cli_render(_parse([str(src), "--png", "--force"])) == 0
    assert (tmp_path / "tune.png").read_bytes().startswith(b"\x89PNG")


def test_cli_all_formats_into_out_dir(tmp_path, capsys):
    src = tmp_path / "tune.mid"
    src.write_bytes(make_score().dumps_midi())
    out = tmp_path / "renders"
    assert render.cli_render(_parse([str(src), "--out", str(out)])) == 0
    assert sorted(p.name for p in out.iterdir()) == ["tune.musicxml", "tune.png", "tune.wav"]
    assert len(capsys.readouterr().out.split()) == 3


def test_cli_bad_input_is_bad_midi_error(tmp_path):
    src = tmp_path / "notes.mid"
    src.write_text("hello")
    with pytest.raises(BadMidiError, match="notes.mid"):
        render.cli_render(_parse([str(src), "--wav"]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.mid"]


# ----------------------------------------------------------------------------- cost

def test_import_is_cheap():
    code = ("import sys, melodia.render; heavy = {'music21', 'matplotlib', 'midirenderer', "
            "'pretty_midi', 'miditok', 'torch', 'symusic', 'numpy'} & set(sys.modules); "
            "assert not heavy, heavy")
    env = dict(os.environ, PYTHONPATH=str(Path(render.__file__).parents[1]))
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_thirty_second_band_renders_whole(tmp_path):
    s = multitrack_score(30.0)
    out = render.render_wav(s, tmp_path / "band.wav")
    audio, params = read_wav(out)
    seconds = len(audio) / params.framerate
    assert 30.0 <= seconds <= 31.1  # every note plus about one second of release
    assert float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) > 0.01


def test_midi_and_wav_do_not_import_music21(tmp_path):
    """music21 costs about 0.4 s to import; only MusicXML needs it, so writing the README's
    .mid and .wav must not load it (a stray import once slowed `melodia generate --wav` so)."""
    src = tmp_path / "in.mid"
    make_score().dump_midi(str(src))
    code = ("import sys; from melodia import render; "
            f"render.save({str(src)!r}, {str(tmp_path / 'x.wav')!r}); render.save({str(src)!r}, {str(tmp_path / 'x.mid')!r}); "
            "print('music21' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False" and (tmp_path / "x.wav").stat().st_size > 1000


def test_piano_roll_colours_follow_the_instrument_not_the_track_order():
    """Issue 22: colours followed track order, so the same part changed colour between pictures.
    Draw the same two parts in both orders: each part's legend colour is the same both times."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def legend(programs):
        score = symusic.Score(480)
        for prog in programs:
            t = symusic.Track(program=prog, name=f"p{prog}")
            t.notes.append(symusic.Note(0, 480, 60 + prog % 12, 90))
            score.tracks.append(t)
        fig, ax = plt.subplots()
        try:
            handles = render._draw_notes(ax, list(score.tracks), [t.notes.numpy() for t in score.tracks],
                                         np.array([0.0, 1920.0]))
            return {h.get_label(): h.get_facecolor() for h in handles}
        finally:
            plt.close(fig)

    a, b = legend([0, 33, 48]), legend([48, 0, 33])
    assert a == b
    assert len(set(a.values())) == 3
    assert render.part_colour(0, nth=1) != render.part_colour(0)  # POP909's three program-0 tracks differ
