"""Metre and harmony figures of a piece, on its own bar lines, and their means over a set.

The figures come from :mod:`melodia.music.harmony` (onsets on a sixteenth and on a beat,
rhythm repetition, bass on the downbeat, beats holding a chord) plus the share of note time
on the tones of the chord in force (all notes, melody, accompaniment).

Example: ``metre_summary([metre_harmony(s) for s in scores])["grid16"]["mean"]  # 0.97``
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..music.harmony import bar_lines, chord_tone_share, metre_figures, recognise_chords
from ..music.notes import NoteArrays, tick_score
from ..prepare import read_chord_markers

if TYPE_CHECKING:
    import symusic

__all__ = ["METRE_FIGURES", "metre_harmony", "metre_summary"]

#: the metre and harmony figures (melodia.music.harmony), each on a piece's own bar lines
METRE_FIGURES = ("grid16", "on_beat", "rhythm_repetition", "bass_downbeat", "chord_beats",
                 "chord_tones", "chord_tones_melody", "chord_tones_accompaniment")


def metre_harmony(score: "symusic.Score", chords: Sequence[tuple[float, Any]] | None = None) -> dict[str, float]:
    """The metre and harmony figures of one piece, on its own bar lines (see
    :func:`melodia.music.harmony.metre_figures`), plus the share of note time on the tones of the
    chord in force: all notes, the melody (program 0, the lowest program of a multi-part
    piece: POP909's MELODY) and the accompaniment (the highest program of three or more
    parts: POP909's PIANO). ``chords`` are ``(beat, Chord|None)``; None reads the score's chord
    markers (as the corpus writes them), else recognises them from the notes.

    Example: ``metre_harmony(score)["grid16"]``
    """
    score = tick_score(score)
    notes = NoteArrays.of_score(score)
    bars = bar_lines(score)
    out = metre_figures(notes, bars)
    if chords is None:
        tpq = score.ticks_per_quarter
        chords = [(t / tpq, c) for t, c in read_chord_markers(score)] or recognise_chords(notes, bars)
    end = float(bars[-1])
    out["chord_tones"] = chord_tone_share(notes, list(chords), end)
    progs = sorted(set(notes.program.tolist())) if notes.program is not None else []
    nan = float("nan")
    out["chord_tones_melody"] = chord_tone_share(notes, list(chords), end, notes.program == progs[0]) \
        if len(progs) >= 2 else nan
    out["chord_tones_accompaniment"] = chord_tone_share(notes, list(chords), end, notes.program == progs[-1]) \
        if len(progs) >= 3 else nan
    return out


def metre_summary(figures: Sequence[Mapping[str, float]]) -> dict[str, Any]:
    """Mean (over pieces that have it) of each metre figure, and how many pieces had it.

    Example: ``metre_summary([metre_harmony(s) for s in scores])["grid16"]["mean"]``
    """
    out: dict[str, Any] = {}
    for name in METRE_FIGURES:
        vals = np.array([f.get(name, np.nan) for f in figures], np.float64)
        vals = vals[np.isfinite(vals)]
        out[name] = {"mean": round(float(vals.mean()), 4) if vals.size else None, "pieces": int(vals.size)}
    return out
