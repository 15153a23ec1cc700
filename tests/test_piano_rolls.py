"""The bar-by-bar reading of scripts/piano_rolls.py (issue 23's piano rolls): on a made-up piece
with a known melody, a repeating accompaniment figure and a bass on the root (and once not),
and against the realism features' own counts on the same notes (a made-up piece and a real
POP909 song), so the tables say what the realism test measures."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import POP909

from melodia.evaluate.parts import bar_figures, beat_bass, part_roles
from melodia.music.harmony import Chord, chord_at, pitch_name
from melodia.music.notes import NoteArrays

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import piano_rolls as pr

TPQ = 480
BAR = 4 * TPQ


def _piece():
    """4 bars of 4/4, melody on program 0, piano accompaniment on program 2 (POP909's parts):
    each bar a bass note held the whole bar under a triad, the triad struck on beats 2, 3, 4
    (bars 1, 2, 4: the same figure) or as two half notes from the bar line (bar 3). Chords C,
    F, G, C; the bass C3, F2, G2 and, in bar 4, E3 (C/E: not the root). Melody: C5 E5 G5 (half,
    quarter, quarter), F5 held, nothing (a counter-melody's B5 on program 1 instead), four quarters
    of C5."""
    import symusic

    s = symusic.Score(TPQ)
    s.tempos.append(symusic.Tempo(0, qpm=100))
    s.time_signatures.append(symusic.TimeSignature(0, 4, 4))
    mel, acc = symusic.Track("melody", program=0), symusic.Track("piano", program=2)
    counter = symusic.Track("counter-melody", program=1)
    counter.notes.append(symusic.Note(2 * BAR + TPQ, TPQ, 83, 80))
    harmony = [(48, (60, 64, 67)), (41, (60, 65, 69)), (43, (59, 62, 67)), (52, (60, 64, 67))]
    for b, (bass, triad) in enumerate(harmony):
        t0 = b * BAR
        acc.notes.append(symusic.Note(t0, BAR, bass, 70))
        strikes = [(0, 2 * TPQ), (2 * TPQ, 2 * TPQ)] if b == 2 else [(k * TPQ, TPQ) for k in (1, 2, 3)]
        for at, dur in strikes:
            for p in triad:
                acc.notes.append(symusic.Note(t0 + at, dur, p, 70))
    for at, dur, p in [(0, 2 * TPQ, 72), (2 * TPQ, TPQ, 76), (3 * TPQ, TPQ, 79), (BAR, BAR, 77)] + \
            [(3 * BAR + k * TPQ, TPQ, 72) for k in range(4)]:
        mel.notes.append(symusic.Note(at, dur, p, 90))
    s.tracks.extend([mel, counter, acc])
    return s


def test_pitch_name_and_chord_at():
    assert [pitch_name(p) for p in (60, 70, 43, 21)] == ["C4", "Bb4", "G2", "A0"]
    chords = [(0.0, Chord(0, "maj")), (2.0, Chord(7, "maj")), (4.0, None)]
    assert chord_at(chords, np.array([-1.0, 0.0, 1.9, 2.0, 5.0])) == [None, Chord(0, "maj"), Chord(0, "maj"),
                                                                       Chord(7, "maj"), None]


def test_bar_figures_and_beat_bass_on_made_up_piece():
    notes = NoteArrays.of_score(_piece())
    lines = np.arange(5) * 4.0
    rhythm, figure = bar_figures(notes, part_roles(notes).accompaniment, lines)
    assert rhythm[0] == rhythm[1] == rhythm[3] == {0, 4, 8, 12}
    assert rhythm[2] == {0, 8}
    # the bass (rank 0) on the bar line, the triad (ranks 1-3) on beats 2, 3, 4: pitches differ, figure not
    assert figure[0] == figure[1] == figure[3] == {(0, 0)} | {(s, r) for s in (4, 8, 12) for r in (1, 2, 3)}
    assert figure[2] == {(0, r) for r in range(4)} | {(8, r) for r in (1, 2, 3)}
    bass = beat_bass(notes, part_roles(notes).accompaniment, lines[:-1])
    assert [pitch_name(notes.pitch[i]) for i in bass] == ["C3", "F2", "G2", "E3"]
    assert beat_bass(notes, part_roles(notes).accompaniment, np.array([16.0])).tolist() == [-1]


def test_read_bars_made_up_piece():
    rows = pr.read_bars(_piece(), 4)
    assert [(r["bar"], r["melody_notes"], r["melody_low"], r["melody_high"], r["melody_longest"]) for r in rows] == [
        (1, 3, "C5", "G5", 2.0), (2, 1, "F5", "F5", 4.0), (3, 0, None, None, None), (4, 4, "C5", "C5", 1.0)]
    assert [(r["other_notes"], r["other_low"]) for r in rows] == [(0, None), (0, None), (1, "B5"), (0, None)]
    assert [r["acc_onsets"] for r in rows] == [4, 4, 2, 4]
    assert [r["rhythm_as"] for r in rows] == [None, 1, None, 1]
    assert [r["figure_as"] for r in rows] == [None, 1, None, 1]
    assert [r["chords"] for r in rows] == [["C"], ["F"], ["G"], ["C"]]
    assert [(r["bass"], r["bass_root"], r["chord_above"]) for r in rows] == [
        ("C3", True, "C"), ("F2", True, "F"), ("G2", True, "G"), ("E3", False, "C")]
    s = pr.summary(rows)
    assert (s["melody_bars"], s["other_bars"], s["rhythm_repeats"], s["figure_repeats"], s["bass_root"],
            s["chords"]) == (3, 1, (2, 3), (2, 3), (3, 4), ["C", "F", "G"])
    table = pr.bars_markdown(rows).splitlines()
    assert table[2] == "| 1 | 3 · C5–G5 · 2 | — | 4 | — | — | C | C3 | yes |"
    assert table[4] == "| 3 | — | 1 · B5 | 2 | — | — | G | G2 | yes |"
    assert table[5] == "| 4 | 4 · C5 · 1 | — | 4 | 1 | 1 | C | E3 | no (C) |"


def test_role_names_name_the_parts():
    names = [t.name for t in pr.role_names(_piece()).tracks]
    assert names == ["melody (program 0)", "counter-melody (program 1)", "accompaniment (program 2)"]


def _pop909(n: int = 1):
    """A raw POP909 file with its tracks on programs 0, 1, 2 (melody, bridge, piano) in 4/4."""
    import symusic

    s = symusic.Score(str(POP909 / f"{n:03d}" / f"{n:03d}.mid"))
    for k, t in enumerate(s.tracks):
        t.program = k
    s.time_signatures.clear()
    s.time_signatures.append(symusic.TimeSignature(0, 4, 4))
    return s


@pytest.mark.parametrize("which", ["made_up", "pop909"])
def test_read_bars_agrees_with_realism_features(which):
    """The table's counts are the realism features' own: figure and rhythm repeats of the
    accompaniment, bass on the root, bars with melody."""
    from melodia.evaluate.real import excerpt
    from melodia.evaluate.realism import realism_features

    score, bars = (_piece(), 4) if which == "made_up" else (excerpt(_pop909(), 8, 16), 16)
    feats = realism_features(score, bars)
    s = pr.summary(pr.read_bars(score, bars))
    assert s["figure_repeats"][0] / s["figure_repeats"][1] == pytest.approx(feats["accompaniment_figure_repeat"])
    assert s["rhythm_repeats"][0] / s["rhythm_repeats"][1] == pytest.approx(feats["accompaniment_rhythm_repeat"])
    assert s["bass_root"][0] / s["bass_root"][1] == pytest.approx(feats["bass_root"])
    assert s["melody_bars"] / bars == pytest.approx(feats["melody_bar_coverage"])
    if which == "pop909":
        assert s["melody_bars"] >= 12 and s["bass_root"][1] >= 12  # a real song: melody and bass in most bars
