"""A read score made a corpus piece: normalised, on its sixteenth grid, with its chords as markers.

Every source (MIDI file, ABC tune, music21 work, POP909 song) passes through here after it is
read: :func:`normalise` (480 ticks per quarter, empty tracks dropped, tracks that share a
program moved apart), :func:`grid_check` (MIDI files: the grid's phase, off-grid performances),
:func:`metre_check` (MIDI files: a declared 1/4 or 2/4 the notes contradict),
:func:`add_chord_markers` (the chords, annotated or recognised, as MIDI markers) and
:func:`content_hash` (equal music, equal hash: what deduplicates the corpus).

Example: ``score, chords, source = add_chord_markers(normalise(load_score("a.mid")))``
"""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np

from .errors import MelodiaError
from .music.harmony import (
    GRID_TOLERANCE,
    NoteArrays,
    bar_lines,
    best_phase,
    grid_share,
    parse_chord,
    quantize_times,
    recognise_chords,
)
from .music.metre_detect import declared_metre, metre_correction, set_metre
from .music.notes import onset_ticks

if TYPE_CHECKING:
    import symusic

#: ticks per quarter note of every corpus piece
TPQ = 480


def normalise(score: "symusic.Score", pop909: bool = False) -> "symusic.Score":
    """Resample, drop empty tracks, fix POP909's 1/4 meters, keep tracks on distinct programs.

    Example:
        >>> clean = normalise(load_score("a.mid"))
    """
    import symusic  # heavy: a native library, loaded on first use

    if score.ticks_per_quarter != TPQ:
        score = score.resample(TPQ, min_dur=1)
    out = symusic.Score(TPQ)
    out.tempos = score.tempos
    tsigs = list(score.time_signatures)
    if pop909 or not tsigs:
        # POP909 writes 1/4 where the real meter is unknown; 4/4 is the right default.
        tsigs = [ts for ts in tsigs if not (ts.numerator == 1 and ts.denominator == 4)]
        if not tsigs or tsigs[0].time > 0:
            tsigs.insert(0, symusic.TimeSignature(0, 4, 4))
    out.time_signatures = symusic.core.TimeSignatureTickList(tsigs) if tsigs else out.time_signatures
    if not out.tempos or out.tempos[0].time > 0:
        out.tempos.insert(0, symusic.Tempo(0, qpm=120.0))
    out.key_signatures = score.key_signatures
    used: set[int] = set()
    for tr in score.tracks:
        if len(tr.notes) == 0:
            continue
        tr = tr.copy()
        tr.controls = symusic.core.ControlChangeTickList()
        tr.pitch_bends = symusic.core.PitchBendTickList()
        tr.pedals = symusic.core.PedalTickList()
        if not tr.is_drum:
            tr.program = _free_program(tr.program, used)
            used.add(tr.program)
        out.tracks.append(tr)
    return out


def _free_program(program: int, used: set[int]) -> int:
    """The program itself if free, else the next free one in its GM family of eight."""
    if program not in used:
        return program
    family = program - program % 8
    for p in list(range(program + 1, family + 8)) + list(range(family, program)):
        if p not in used:
            return p
    return program  # family full: share (the tokenizer merges them)


def content_hash(score: "symusic.Score") -> str:
    """Hash of the notes (onset in beats, pitch, duration, program) — equal music, equal hash.

    Example: ``content_hash(score)[:12]``
    """
    h = hashlib.sha256()
    tpq = score.ticks_per_quarter
    parts = []
    for tr in score.tracks:
        a = tr.notes.numpy()
        arr = np.stack([a["time"] * 480 // tpq, a["pitch"], a["duration"] * 480 // tpq,
                        np.full(len(a["time"]), -1 if tr.is_drum else tr.program)], axis=1)
        parts.append(arr.astype(np.int64))
    allnotes = np.concatenate(parts) if parts else np.zeros((0, 4), np.int64)
    order = np.lexsort(allnotes.T[::-1])
    h.update(allnotes[order].tobytes())
    return h.hexdigest()


def shift_score(score: "symusic.Score", ticks: int) -> "symusic.Score":
    """Every note, and every tempo, meter and marker after 0, moved by ``ticks`` (≥ 0 or a
    shift that keeps times ≥ 0); the score itself for a shift of 0.

    Example: ``padded = shift_score(score, 480)  # a beat's rest before the music``
    """
    if not ticks:
        return score
    out = score.copy()
    for tr in out.tracks:
        tr.shift_time(ticks, inplace=True)
    for lst in (out.tempos, out.time_signatures, out.markers):
        for ev in lst:
            if ev.time > 0:  # what stands at 0 opens the (padded) first bar
                ev.time = max(0, ev.time + ticks)
    return out


def grid16(score: "symusic.Score") -> float | None:
    """Share of a score's onsets on a sixteenth of its own bar lines (:func:`grid_share`,
    rounded to 4 places); None for a score without pitched notes.

    Example: ``grid16(score)  # 0.9732``
    """
    n = NoteArrays.of_score(score)
    return None if n.onset.size == 0 else round(grid_share(n.onset, bar_lines(score)), 4)


def add_chord_markers(score: "symusic.Score", chords: list | None = None) -> tuple["symusic.Score", list, str]:
    """The piece's chords written as MIDI markers (lead-sheet names, ``N.C.`` for no chord) at
    each change: ``chords`` as given (``[(beat, Chord|None)]``, e.g. POP909's annotation) or
    recognised from the notes per half bar. Other markers are dropped. Returns the score, the
    chords and their source ("annotated" or "recognised").

    Example: ``score, chords, source = add_chord_markers(score)``
    """
    import symusic  # heavy: a native library, loaded on first use

    source = "annotated" if chords is not None else "recognised"
    if chords is None:
        chords = recognise_chords(NoteArrays.of_score(score), bar_lines(score))
    out = score.copy()
    out.markers = symusic.core.TextMetaTickList()
    for beat, ch in chords:
        out.markers.append(symusic.TextMeta(int(round(beat * score.ticks_per_quarter)), ch.name if ch else "N.C."))
    return out, chords, source


def read_chord_markers(score: "symusic.Score") -> list:
    """Chords written by :func:`add_chord_markers`: ``[(tick, Chord|None)]`` (markers that are
    no chord name are skipped). Example: ``read_chord_markers(symusic.Score("C/pieces/x.mid"))``"""
    out = []
    for m in score.markers:
        try:
            out.append((int(m.time), parse_chord(m.text)))
        except MelodiaError:
            continue
    return out


def grid_check(score: "symusic.Score", quantize: bool = False) -> tuple["symusic.Score", dict]:
    """A MIDI file's onsets against a sixteenth grid of its own tempo: the on-grid share, a
    constant shift of the grid (steps of 1/48 beat) where one lifts that share from under 50%
    to over 80% (applied), and whether the file is still off the grid (an unquantised
    performance: under 80% of its onsets on the sixteenth-or-triplet grid). With ``quantize``
    such a file's onsets and ends are snapped to that grid. Returns the score and
    ``{"grid16", "grid_shift", "off_grid", "quantized"}``.

    Example: ``score, info = grid_check(score)``
    """
    tpq = score.ticks_per_quarter
    onsets = onset_ticks(score) / tpq
    info = {"grid16": None, "grid_shift": 0.0, "off_grid": False, "quantized": False}
    if onsets.size == 0:
        return score, info
    share = grid_share(onsets)
    if share < 0.5:
        shift, best = best_phase(onsets)
        if best > 0.8:
            score = shift_score(score, int(round(shift * tpq)))
            onsets = onsets + round(shift * tpq) / tpq
            share = grid_share(onsets)
            info["grid_shift"] = round(shift, 4)
    loose = float(np.mean(np.abs(quantize_times(onsets) - onsets) <= GRID_TOLERANCE + 1e-9))
    info["off_grid"] = loose < 0.8
    if info["off_grid"] and quantize:
        score = _quantized(score)
        share = grid_share(onset_ticks(score) / tpq)
        info["quantized"] = True
    info["grid16"] = round(float(share), 4)
    return score, info


def metre_check(score: "symusic.Score") -> tuple["symusic.Score", dict]:
    """A MIDI file's declared metre against its notes (:func:`melodia.music.metre_detect.metre_correction`):
    a 1/4 or 2/4 that the notes clearly contradict is read as the detected 3/4 or 4/4, the
    music before its first bar line a pickup padded with a rest to a full bar (as ABC tunes
    and POP909 songs are). Returns the score and ``{"declared_metre": "2/4" or None,
    "pickup": beats}`` (None: the declaration was kept).

    Example: ``score, info = metre_check(score)  # info["declared_metre"] == "1/4"``
    """
    est = metre_correction(score)
    if est is None:
        return score, {"declared_metre": None}
    num, den = declared_metre(score)
    pad = (est.numerator - est.phase) % est.numerator
    score = set_metre(shift_score(score, pad * score.ticks_per_quarter), est.numerator, est.denominator)
    return score, {"declared_metre": f"{num}/{den}", "pickup": float(est.phase)}


def _quantized(score: "symusic.Score") -> "symusic.Score":
    """A copy with every onset and end snapped to the sixteenth-or-triplet grid (a note at
    least a sixteenth long)."""
    tpq = score.ticks_per_quarter
    score = score.copy()
    for tr in score.tracks:
        for note in tr.notes:
            on = float(quantize_times(np.array([note.time / tpq]))[0])
            end = float(quantize_times(np.array([(note.time + note.duration) / tpq]))[0])
            note.time = int(round(on * tpq))
            note.duration = max(int(round((end - on) * tpq)), tpq // 4)
    return score
