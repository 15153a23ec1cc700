"""Returning sections (melodia/evaluate/form.py): how much of a first A's melody a returning A
plays again, on made-up bars, on a real POP909 song with its phrase labels (corpus markers),
and in generated AABA pieces (scripts/measure_controls.py's form_match and mood_notes)."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA, POP909

from melodia.errors import BadInputError
from melodia.evaluate.form import marker_sections, match_summary, section_match, section_matches
from melodia.music.harmony import bar_lines
from melodia.music.notes import NoteArrays

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import measure_controls as mc

TPQ = 480
BAR = 4 * TPQ
A = [[60, 62, 64, 65], [67, 65, 64, 62], [60, 64, 67, 72], [71, 67, 62, 60]]  # 4 bars of 4 quarters
B = [[69, 69, 72, 72], [74, 72, 69, 65], [65, 69, 72, 77], [76, 72, 67, 64]]


def _score(bars: list[list[int]], qpm: float = 120.0, length: int = TPQ):
    """A melody (program 0) of quarter-note onsets, ``length`` ticks each, one list of pitches a
    bar, over a held chord a bar (program 1, below it)."""
    import symusic

    s = symusic.Score(TPQ)
    s.tempos.append(symusic.Tempo(0, qpm=qpm))
    s.time_signatures.append(symusic.TimeSignature(0, 4, 4))
    mel, acc = symusic.Track("melody", program=0), symusic.Track("chords", program=1)
    for b, pitches in enumerate(bars):
        acc.notes.append(symusic.Note(b * BAR, BAR, 48, 70))
        for k, p in enumerate(pitches):
            mel.notes.append(symusic.Note(b * BAR + k * TPQ, length, p, 90))
    s.tracks.extend([mel, acc])
    return s


def test_a_return_with_one_bar_changed_matches_three_quarters():
    changed = [A[0], A[1], [p + 2 for p in A[2]], A[3]]  # bar 3 a step higher: 12 of 16 notes stay
    score = _score(A + changed + B + A)
    notes, lines = NoteArrays.of_score(score), bar_lines(score)
    assert lines.tolist() == [0.0, 4.0, 8.0, 12.0, 16.0, 20.0, 24.0, 28.0, 32.0, 36.0, 40.0, 44.0, 48.0,
                              52.0, 56.0, 60.0, 64.0]
    got = section_matches(notes, lines, [("A", 0, 4), ("A", 4, 4), ("B", 8, 4), ("A", 12, 4)])
    assert [(m.letter, m.first, m.start, m.bars, m.notes, m.match) for m in got] == [
        ("A", 0, 4, 4, 16, 0.75), ("A", 0, 12, 4, 16, 1.0)]
    # rhythm only: the changed bar keeps its onsets
    assert [m.match for m in section_matches(notes, lines, [("A", 0, 4), ("A", 4, 4)], by="rhythm")] == [1.0]
    # the melody is program 0, not the chord below: a chord change alone changes nothing
    assert section_match([(0, 60), (4, 62), (8, 64), (12, 65)], [(0, 60), (4, 62), (8, 64), (12, 67)]) == 0.75


def test_unequal_lengths_compare_the_shorter_and_other_letters_are_skipped():
    score = _score(A + B + A[:2] + B[:2] + A)
    notes, lines = NoteArrays.of_score(score), bar_lines(score)
    # i/X/b/o never return as "the same music"; a 2-bar A compares the first A's first 2 bars
    got = section_matches(notes, lines, [("i", 0, 4), ("X", 4, 4), ("A", 8, 2), ("b", 10, 2), ("A", 12, 4),
                                         ("o", 0, 4)])
    assert [(m.start, m.bars, m.notes, m.match) for m in got] == [(12, 2, 8, 1.0)]
    # a section past the bar lines holds no notes; an empty first section gives no figure
    assert section_matches(notes, lines, [("A", 0, 4), ("A", 40, 4)])[0].match == 0.0
    empty = _score([[], [], [], []] + A)
    assert section_matches(NoteArrays.of_score(empty), bar_lines(empty), [("A", 0, 4), ("A", 4, 4)])[0].match is None
    assert match_summary([1.0, 0.5, None, 0.9]) == {"n": 3, "mean": pytest.approx(0.8), "median": 0.9,
                                                   "share_ge_0_9": pytest.approx(2 / 3)}
    with pytest.raises(BadInputError, match="by='pitch'"):
        section_match([(0, 60)], [(0, 60)], by="pitch")


@pytest.fixture(scope="module")
def labelled_corpus(tmp_path_factory) -> Path:
    """A corpus of POP909 song 001 with its phrase labels (Section_ markers)."""
    from melodia.corpus import build_corpus

    root = tmp_path_factory.mktemp("form")
    shutil.copytree(POP909 / "001", root / "pop909" / "001")
    shutil.copytree(DATA / "pop909-structure" / "001", root / "pop909-structure" / "001")
    build_corpus([str(root / "pop909")], root / "C", workers=1, progress=False)
    return root / "C"


def test_real_song_returning_sections_from_its_markers(labelled_corpus):
    import symusic

    from melodia.corpus import load_manifest

    row = load_manifest(labelled_corpus)[0]
    score = symusic.Score(str(labelled_corpus / row["file"]))
    lines = bar_lines(score)
    sections = marker_sections(score, len(lines) - 1)
    # human_label1.txt "i4A4B8A4A4b4B8A4A4b4b4A4A4b4A4o3", from bar 1 (bar 0 is the padded pickup)
    assert sections == [("i", 1, 4), ("A", 5, 4), ("B", 9, 8), ("A", 17, 4), ("A", 21, 4), ("b", 25, 4),
                        ("B", 29, 8), ("A", 37, 4), ("A", 41, 4), ("b", 45, 4), ("b", 49, 4), ("A", 53, 4),
                        ("A", 57, 4), ("b", 61, 4), ("A", 65, 4), ("o", 69, 4)]
    got = section_matches(NoteArrays.of_score(score), lines, sections)
    assert [(m.letter, m.start) for m in got] == [("A", 17), ("A", 21), ("B", 29), ("A", 37), ("A", 41),
                                                  ("A", 53), ("A", 57), ("A", 65)]
    # the melody (program 0, the MELODY track) of each returning A: 19 notes, one of which the
    # A right after the first B changes; the second B is the first note for note
    assert [(m.notes, m.match) for m in got] == [(19, 18 / 19), (19, 1.0), (44, 1.0), (19, 18 / 19), (19, 1.0),
                                                 (19, 18 / 19), (19, 1.0), (19, 1.0)]
    fig = mc.real_form_figure(labelled_corpus)
    assert (fig["songs"], fig["melody_by_program"]) == (1, 1)
    assert fig["any"]["notes"]["n"] == 8 and fig["A"]["notes"]["n"] == 7
    assert fig["A"]["notes"]["mean"] == pytest.approx(np.mean([m.match for m in got if m.letter == "A"]))
    assert fig["A"]["rhythm"]["mean"] >= fig["A"]["notes"]["mean"]
    md = mc.form_match_md({"form_real": fig})
    assert "returning A" in md and f"{fig['A']['notes']['mean']:.2f}" in md


def test_real_figure_needs_a_corpus_with_sections(tmp_path):
    (tmp_path / "manifest.jsonl").write_text('{"id": "x", "file": "pieces/x.mid", "sections": 0}\n')
    with pytest.raises(BadInputError, match="no corpus piece has phrase sections"):
        mc.real_form_figure(tmp_path)


def test_generated_exact_repeats_match_fully_on_the_requested_layout(composer, one_torch_thread):
    fig = mc.form_figure(composer, 2, seed=4, vary=False, repeat="exact")
    assert fig["repeat"] == "exact"
    ra = fig["returning_A"]
    assert ra["notes"]["n"] == 4 and ra["notes"]["mean"] == 1.0 and ra["rhythm"]["mean"] == 1.0
    other = mc.form_other_figure(composer, 1, seed=4)  # the tiny model has section tokens: "exact"
    assert other["repeat"] == ("exact" if composer.tokenizer.has_sections else "sections")


def test_note_timing_in_seconds_on_the_melody_line():
    # 120 qpm: a quarter is 0.5 s; melody notes of an eighth (0.25 s) on every quarter
    t = mc.note_timing(_score(A, qpm=120.0, length=TPQ // 2))
    assert (t["notes"], t["gaps"]) == (20, 15)  # 16 melody notes + 4 chords; 15 melody gaps
    assert t["gap_s"] / t["gaps"] == pytest.approx(0.25)
    assert t["length_s"] / t["notes"] == pytest.approx((16 * 0.25 + 4 * 2.0) / 20)
    assert t["pitch"] / t["notes"] == pytest.approx((sum(map(sum, A)) + 4 * 48) / 20)
    legato = mc.note_timing(_score(A, qpm=60.0, length=2 * TPQ))  # overlapping notes: gap 0
    assert legato["gap_s"] == 0.0 and legato["length_s"] / legato["notes"] == pytest.approx((16 * 2 + 4 * 4) / 20)


def test_mood_notes_figure_and_its_table(composer, one_torch_thread):
    m = mc.mood_notes_figure(composer, 1, seed=2, bars=2)
    for mood in ("happy", "tense", "sad", "calm"):
        r = m[mood]
        assert 20 < r["pitch"] < 110 and r["length_s"] > 0 and r["gap_s"] >= 0
        assert r["agreement_mood_dynamics"] in (0.0, 1.0) and r["agreement_flat"] in (0.0, 1.0)
    md = mc.mood_notes_md(m)
    assert "| mean pitch (MIDI) |" in md and "estimator agreement, `--dynamics mood`" in md
    assert md.count("\n|") == 7  # header, rule, five rows
