"""Evaluate a model: likelihood, real-vs-generated statistics, mood control and validity.

``melodia evaluate --model DIR --corpus DIR [--n 64] [--seed 0] --out REPORT_DIR`` writes
``report.md``, ``report.json`` and pictures. What it measures:

1. **Likelihood.** Mean cross-entropy of the model on the corpus's *test* split (the *valid*
   split if the test split is empty), in nats per predicted token, and in bits per note
   (total nats / ln 2 / notes). Each piece is encoded with the model's own tokenizer
   (``BOS MOOD KEY [TAG…] music EOS``) and cut, at bar lines where it can, into windows of at
   most the model's training length, each opening with the piece's control prefix, as training
   chunks do; every music token and the EOS is predicted once, control tokens never.
2. **Real vs generated.** ``n`` unconditional generations (``MOOD_any``) of ``bars`` bars
   against ``n`` held-out real excerpts of the same bar count (random bar-aligned windows of
   test pieces, so length-dependent features such as pitch range compare like with like).
   Per piece: the metrics below. Per feature, the real and generated means and the analysis of
   Yang & Lerch (2020), "On the evaluation of generative models in music", *Neural Computing
   and Applications* 32: pairwise Euclidean distances within the real set (intra-set), within
   the generated set, and between the sets (inter-set); a Gaussian KDE of each distance
   distribution; the overlapped area (OA) and the KL divergence of the real intra-set and the
   inter-set distributions. OA near 1 means a generated piece is as close to the real pieces
   as they are to each other. ``value_overlap`` (scalar features) is the OA of the two
   feature distributions themselves.
3. **Mood control.** ``n`` generations per canonical mood, labelled by
   :class:`melodia.moods.MoodEstimator`: quadrant, valence-sign and arousal-sign accuracy, a
   confusion matrix (requested x estimated) and the cues that drive the estimator per
   requested mood (major share, onsets per second, mean pitch, tempo).
4. **Metre and harmony.** Real excerpts and every generation, each on its own bar lines
   (:func:`metre_harmony`, figures from :mod:`melodia.harmony`): onsets on a sixteenth and on
   a beat (within 0.025 beat), rhythm repetition between consecutive bars (Jaccard similarity
   of their onset sets on a sixteenth grid), bass on the downbeat (of the lowest notes starting
   on each beat, the share by duration on beat 1), beats whose sounding notes hold a triad or
   seventh chord, and the share of note time on the tones of the chord in force: all notes,
   melody (lowest program) and accompaniment (highest of three or more programs). Real
   excerpts use the corpus's chords (annotated or recognised); generations their own chord
   tokens.
5. **Validity.** Share of generated sequences that decode with no token-type errors
   (MidiTok's ``tokens_errors`` == 0) and share with exactly ``bars`` Bar tokens.

The metrics (pure functions of a ``symusic.Score``; pitched metrics skip drum tracks, rhythm
metrics use every note; beats are quarter notes; onsets closer than 1/16 beat are one onset,
as in :mod:`melodia.moods`):

=============================  ===============================================================
pitch_class_entropy            Shannon entropy (bits) of the pitch-class histogram of notes
scale_consistency              largest share of notes inside one major (= natural minor) scale
groove_consistency             1 - mean Hamming distance of consecutive bars' onset grids (12 per
                               beat) / bar length in grid steps
empty_beat_rate                share of beats, 0 .. end of the last note, where no note sounds
polyphony                      mean number of sounding notes, over the time some note sounds
pitch_range                    highest minus lowest pitch, semitones
onsets_per_second              distinct onsets / seconds from the first onset to the last note end
mean_ioi                       mean seconds between consecutive distinct onsets
note_length_histogram          12-bin share of notes by nearest (log scale) standard length
pitch_class_transition_matrix  12x12 shares of pitch-class moves between consecutive onsets
=============================  ===============================================================

(MusPy 0.5's ``empty_beat_rate`` returns the share of beats *with* an onset; melodia's counts
the beats without sound, as the name says.)

Example:
    >>> result = evaluate("melodia/weights/default", "C", n=64, seed=0, out_dir="eval")
    >>> result["likelihood"]["nats_per_token"], result["mood_control"]["quadrant_accuracy"]
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from .errors import BadInputError, BadMidiError, MelodiaError

if TYPE_CHECKING:  # pragma: no cover - typing only
    import symusic

    from .moods import MoodEstimate
    from .tokenizer import MelodiaTokenizer

__all__ = [
    "pitch_class_entropy", "scale_consistency", "groove_consistency", "empty_beat_rate",
    "polyphony", "pitch_range", "onsets_per_second", "mean_ioi", "note_length_histogram",
    "pitch_class_transition_matrix", "piece_features", "FEATURES", "SCALAR_FEATURES",
    "NOTE_LENGTHS", "bar_starts", "excerpt",
    "kde_bandwidth", "gaussian_kde", "overlap_area", "kl_divergence", "pairwise_distances",
    "compare_feature", "compare_sets",
    "mood_control_summary", "bar_count", "check_sequence", "validity_summary", "likelihood",
    "write_report", "evaluate", "add_evaluate_arguments", "cli_evaluate",
    "METRE_FIGURES", "metre_harmony", "metre_summary",
]

#: Onsets closer than this many beats count as one (a chord, a spread attack); as in moods.py.
ONSET_MERGE_BEATS = 1.0 / 16.0
#: Onset grid of :func:`groove_consistency`, positions per beat: 16ths and 8th triplets.
GROOVE_RESOLUTION = 12
#: Standard note lengths in beats (quarter notes) for :func:`note_length_histogram`, longest
#: first: whole, dotted half, half, dotted quarter, half triplet, quarter, dotted 8th,
#: quarter triplet, 8th, dotted 16th, 8th triplet, 16th (Yang & Lerch's 12 classes).
NOTE_LENGTHS: tuple[float, ...] = (4.0, 3.0, 2.0, 1.5, 4 / 3, 1.0, 0.75, 2 / 3, 0.5, 0.375,
                                   1 / 3, 0.25)
NOTE_LENGTH_NAMES: tuple[str, ...] = ("1", "1/2.", "1/2", "1/4.", "1/2t", "1/4", "1/8.", "1/4t",
                                      "1/8", "1/16.", "1/8t", "1/16")
_MAJOR_SCALE = np.array([0, 2, 4, 5, 7, 9, 11])
_PC_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
_DEFAULT_MSPQ = 500_000  # MIDI's 120 qpm before the first tempo event


# ============================================================================================
# Notes of a score as arrays
# ============================================================================================

@dataclass(frozen=True)
class _Notes:
    """The note arrays every metric reads (ticks, int64), taken from a score once."""

    tpq: int
    time: np.ndarray        # every note, drums included
    end: np.ndarray         # time + duration
    pitched: np.ndarray     # bool mask: not a drum track
    pitch: np.ndarray
    tempo_time: np.ndarray  # sorted tempo events
    tempo_mspq: np.ndarray
    signatures: tuple[tuple[int, int, int], ...]  # (time, numerator, denominator)

    @property
    def p_time(self) -> np.ndarray:
        return self.time[self.pitched]

    @property
    def p_end(self) -> np.ndarray:
        return self.end[self.pitched]

    @property
    def p_pitch(self) -> np.ndarray:
        return self.pitch[self.pitched]


def _notes(score: "symusic.Score") -> _Notes:
    if "Tick" not in str(score.ttype):
        score = score.to("tick")
    times, durs, pitches, mask = [], [], [], []
    for track in score.tracks:
        a = track.notes.numpy()
        times.append(np.asarray(a["time"], np.int64))
        durs.append(np.maximum(np.asarray(a["duration"], np.int64), 0))
        pitches.append(np.asarray(a["pitch"], np.int64))
        mask.append(np.full(len(a["time"]), not track.is_drum))
    cat = (lambda parts, dtype: np.concatenate(parts) if parts else np.zeros(0, dtype))
    time_ = cat(times, np.int64)
    tempos = score.tempos.numpy()
    order = np.argsort(np.asarray(tempos["time"]), kind="stable")
    sigs = tuple(sorted((int(ts.time), int(ts.numerator), int(ts.denominator))
                        for ts in score.time_signatures if ts.numerator > 0 and ts.denominator > 0))
    return _Notes(
        tpq=max(int(score.ticks_per_quarter), 1), time=time_, end=time_ + cat(durs, np.int64),
        pitched=cat(mask, bool), pitch=cat(pitches, np.int64),
        tempo_time=np.asarray(tempos["time"], np.int64)[order],
        tempo_mspq=np.asarray(tempos["mspq"], np.float64)[order], signatures=sigs)


def _onset_groups(times: np.ndarray, tpq: int) -> tuple[np.ndarray, np.ndarray]:
    """(first tick of each onset group, group index of each distinct tick) for onset ticks.

    Distinct ticks closer than :data:`ONSET_MERGE_BEATS` to the previous one join its group.
    """
    ticks = np.unique(times)
    if ticks.size == 0:
        return ticks, ticks
    merge = max(int(tpq * ONSET_MERGE_BEATS), 1)
    new_group = np.concatenate([[True], np.diff(ticks) >= merge])
    return ticks[new_group], np.cumsum(new_group) - 1


def _seconds(n: _Notes, ticks: np.ndarray) -> np.ndarray:
    """Ticks to seconds through the tempo map (120 qpm before the first tempo event)."""
    ticks = np.asarray(ticks, np.float64)
    t = np.concatenate([[0], n.tempo_time[n.tempo_time > 0]]).astype(np.float64)
    at_zero = n.tempo_mspq[n.tempo_time <= 0]
    mspq = np.concatenate([[at_zero[-1] if at_zero.size else _DEFAULT_MSPQ],
                           n.tempo_mspq[n.tempo_time > 0]])
    sec_per_tick = mspq / 1e6 / n.tpq
    cum = np.concatenate([[0.0], np.cumsum(np.diff(t) * sec_per_tick[:-1])])
    i = np.clip(np.searchsorted(t, ticks, side="right") - 1, 0, None)
    return cum[i] + (ticks - t[i]) * sec_per_tick[i]


def bar_starts(score: "symusic.Score", end: int | None = None) -> np.ndarray:
    """Bar start ticks up to ``end`` (default: the score's end), plus the tick closing the last bar.

    4/4 until the first time signature; each time signature starts a new bar where it stands
    (of several on one tick the last wins), as MidiTok and :mod:`melodia.render` count bars.

    Example: ``bar_starts(two_bars_of_4_4_at_480_tpq)  # array([0, 1920, 3840])``
    """
    if "Tick" not in str(score.ttype):
        score = score.to("tick")
    n = _notes(score)
    if end is None:
        end = int(n.end.max()) if n.end.size else 0
    return _bar_starts(n, end)


def _bar_starts(n: _Notes, end: int) -> np.ndarray:
    sigs: dict[int, tuple[int, int]] = {0: (4, 4)}
    for t, num, den in n.signatures:
        sigs[max(t, 0)] = (num, den)
    times = sorted(sigs)
    starts: list[np.ndarray] = []
    bar = 4 * n.tpq
    for i, t in enumerate(times):
        num, den = sigs[t]
        bar = max(1, round(n.tpq * 4 * num / den))
        stop = times[i + 1] if i + 1 < len(times) else max(end, 1)
        starts.append(np.arange(t, stop, bar, dtype=np.int64))
    flat = np.concatenate(starts)
    return np.append(flat, flat[-1] + bar)


# ============================================================================================
# Metrics
# ============================================================================================

def pitch_class_entropy(score: "symusic.Score") -> float:
    """Shannon entropy, in bits, of the histogram of pitch classes over notes (not durations).

    ``-sum(p_c * log2 p_c)`` over the 12 pitch classes, ``p_c`` = share of pitched notes with
    pitch class c: 0 for one repeated pitch class, log2(12) = 3.585 for all 12 equally.
    NaN for a score with no pitched note (as MusPy).

    Example: ``pitch_class_entropy(c_major_scale_once)  # log2(7) = 2.807``
    """
    return _pitch_class_entropy(_notes(score))


def _pitch_class_entropy(n: _Notes) -> float:
    counts = np.bincount(n.p_pitch % 12, minlength=12).astype(np.float64)
    if counts.sum() == 0:
        return math.nan
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum()) + 0.0


def scale_consistency(score: "symusic.Score") -> float:
    """Largest share of pitched notes whose pitch class lies in one diatonic scale.

    The maximum over the 12 major scales (the natural minor scales have the same pitch sets,
    so MusPy's 24 major and minor scales give the same value). 1.0 for diatonic music.
    NaN for a score with no pitched note.

    Example: ``scale_consistency(c_major_scale_with_one_f_sharp_in_eight_notes)  # 0.875``
    """
    return _scale_consistency(_notes(score))


def _scale_consistency(n: _Notes) -> float:
    counts = np.bincount(n.p_pitch % 12, minlength=12).astype(np.float64)
    total = counts.sum()
    if total == 0:
        return math.nan
    members = (_MAJOR_SCALE[None, :] + np.arange(12)[:, None]) % 12  # (12 roots, 7 degrees)
    return float(counts[members].sum(axis=1).max() / total)


def groove_consistency(score: "symusic.Score", resolution: int = GROOVE_RESOLUTION) -> float:
    """1 - mean normalised Hamming distance between consecutive bars' onset patterns.

    Every onset (drums included) is rounded to a grid of ``resolution`` steps per beat; a bar
    becomes a binary vector over its grid steps. For bars b and b+1, the distance is the number
    of steps where exactly one of them has an onset, divided by the longer bar's number of
    steps. Bars run from the first bar to the one holding the last onset (MusPy's definition
    with a fixed grid). 1.0 when every bar has the same rhythm; NaN with fewer than two bars.

    Example: ``groove_consistency(four_identical_bars)  # 1.0``
    """
    return _groove_consistency(_notes(score), resolution)


def _groove_consistency(n: _Notes, resolution: int = GROOVE_RESOLUTION) -> float:
    if n.time.size == 0:
        return math.nan
    last = int(n.time.max())
    bars = _bar_starts(n, last + 1)
    steps = np.rint(bars * resolution / n.tpq).astype(np.int64)
    grid = np.unique(np.rint(n.time * resolution / n.tpq).astype(np.int64))
    bar_of = np.searchsorted(steps, grid, side="right") - 1
    n_bars = int(bar_of.max()) + 1
    if n_bars < 2:
        return math.nan
    # the last bar has no next bar start: it lasts as long as the one before it
    last_len = steps[-1] - steps[-2] if len(steps) > 1 else 4 * resolution
    lengths = np.diff(np.append(steps, steps[-1] + last_len))[:n_bars]
    pattern = np.zeros((n_bars, int(lengths.max()) + 1), dtype=bool)
    pattern[bar_of, np.minimum(grid - steps[bar_of], pattern.shape[1] - 1)] = True
    distance = (pattern[1:] ^ pattern[:-1]).sum(axis=1) / np.maximum(lengths[1:], lengths[:-1])
    return float(1.0 - distance.mean())


def empty_beat_rate(score: "symusic.Score") -> float:
    """Share of beats (quarter notes from tick 0 to the end of the last note) where no note sounds.

    Beat k covers ``[k, k+1)`` quarter notes; it is non-empty when some note (drums included)
    overlaps it (a zero-length note sounds in the beat of its onset). Counts *empty* beats,
    unlike MusPy 0.5, whose ``empty_beat_rate`` returns the share of beats with an onset.
    NaN for a score with no note.

    Example: ``empty_beat_rate(eight_beats_with_beat_six_silent)  # 0.125``
    """
    return _empty_beat_rate(_notes(score))


def _empty_beat_rate(n: _Notes) -> float:
    if n.time.size == 0:
        return math.nan
    tpq = n.tpq
    end = np.maximum(n.end, n.time + 1)
    n_beats = int(-(-int(end.max()) // tpq))
    cover = np.zeros(n_beats + 1, dtype=np.int64)
    np.add.at(cover, n.time // tpq, 1)
    np.add.at(cover, (end - 1) // tpq + 1, -1)
    return float(np.count_nonzero(np.cumsum(cover)[:n_beats] == 0) / n_beats)


def polyphony(score: "symusic.Score") -> float:
    """Mean number of pitched notes sounding at once, over the time when at least one sounds.

    Time-weighted: ``integral(active(t) dt) / (time with active(t) > 0)``. A block triad is
    3.0, a melody 1.0 (MusPy's definition, measured exactly instead of on a piano roll).
    NaN when no pitched note has a duration.

    Example: ``polyphony(c_major_triad_held_one_bar)  # 3.0``
    """
    return _polyphony(_notes(score))


def _polyphony(n: _Notes) -> float:
    start, end = n.p_time, n.p_end
    keep = end > start
    if not keep.any():
        return math.nan
    times = np.concatenate([start[keep], end[keep]])
    delta = np.concatenate([np.ones(keep.sum(), np.int64), -np.ones(keep.sum(), np.int64)])
    order = np.argsort(times, kind="stable")
    active = np.cumsum(delta[order])[:-1]
    length = np.diff(times[order]).astype(np.float64)
    sounding = active > 0
    return float((active * length)[sounding].sum() / length[sounding].sum())


def pitch_range(score: "symusic.Score") -> float:
    """Highest minus lowest pitched note, in semitones (0 for one pitch; NaN for none).

    Example: ``pitch_range(c4_to_c5_scale)  # 12.0``
    """
    return _pitch_range(_notes(score))


def _pitch_range(n: _Notes) -> float:
    p = n.p_pitch
    return float(p.max() - p.min()) if p.size else math.nan


def onsets_per_second(score: "symusic.Score") -> float:
    """Distinct onsets (all notes; closer than 1/16 beat = one) per second, first onset to last note end.

    Seconds follow the score's tempo map (120 qpm before the first tempo event); the same
    count as :func:`melodia.moods.extract_features`'s ``onsets_per_second``. NaN with no note.

    Example: ``onsets_per_second(eight_quarter_notes_at_120_qpm)  # 2.0``
    """
    return _onsets_per_second(_notes(score))


def _onsets_per_second(n: _Notes) -> float:
    if n.time.size == 0:
        return math.nan
    firsts, _ = _onset_groups(n.time, n.tpq)
    start = int(firsts[0])
    end = max(int(n.end.max()), start + max(n.tpq // 4, 1))  # a lone zero-length note: 1/16
    span = float(np.diff(_seconds(n, np.array([start, end])))[0])
    return float(firsts.size / max(span, 1e-3))


def mean_ioi(score: "symusic.Score") -> float:
    """Mean inter-onset interval in seconds: the mean gap between consecutive distinct onsets.

    Onsets of all notes, closer than 1/16 beat merged (the group's first onset counts); seconds
    through the tempo map. NaN with fewer than two onsets (Yang & Lerch's ``avg_IOI``).

    Example: ``mean_ioi(quarter_notes_at_120_qpm)  # 0.5``
    """
    return _mean_ioi(_notes(score))


def _mean_ioi(n: _Notes) -> float:
    firsts, _ = _onset_groups(n.time, n.tpq)
    if firsts.size < 2:
        return math.nan
    return float(np.diff(_seconds(n, firsts)).mean())


def note_length_histogram(score: "symusic.Score") -> np.ndarray:
    """Shares of pitched notes by nearest standard length (12 bins, :data:`NOTE_LENGTHS`).

    Each note's duration (in beats) goes to the bin whose length is nearest on a log scale
    (a zero-length note to the shortest, anything past 4 beats to the whole note); the bins
    sum to 1. All NaN for a score with no pitched note. Yang & Lerch's ``note_length_hist``.

    Example: ``note_length_histogram(four_quarters)[NOTE_LENGTHS.index(1.0)]  # 1.0``
    """
    return _note_length_histogram(_notes(score))


def _note_length_histogram(n: _Notes) -> np.ndarray:
    beats = (n.p_end - n.p_time) / n.tpq
    if beats.size == 0:
        return np.full(len(NOTE_LENGTHS), np.nan)
    log_len = np.log2(np.maximum(beats, 1e-3))
    nearest = np.abs(log_len[:, None] - np.log2(np.array(NOTE_LENGTHS))[None, :]).argmin(axis=1)
    return np.bincount(nearest, minlength=len(NOTE_LENGTHS)) / beats.size


def pitch_class_transition_matrix(score: "symusic.Score") -> np.ndarray:
    """12x12 shares of pitch-class moves from one onset to the next (rows: from, cols: to).

    Pitched notes are grouped by onset (closer than 1/16 beat = one onset). From each onset
    group A to the next group B, every pair (a, b) adds ``1 / (|A| |B|)``, so each move between
    onsets weighs 1 however many notes sound; the matrix is then divided by the number of moves
    (it sums to 1). For a melody this is Yang & Lerch's normalised ``pctm``. All NaN with fewer
    than two onsets.

    Example: ``pitch_class_transition_matrix(c_d_e)[0, 2]  # 0.5 (C->D is half the moves)``
    """
    return _pitch_class_transition_matrix(_notes(score))


def _pitch_class_transition_matrix(n: _Notes) -> np.ndarray:
    time, pc = n.p_time, n.p_pitch % 12
    firsts, group_of_tick = _onset_groups(time, n.tpq)
    if firsts.size < 2:
        return np.full((12, 12), np.nan)
    ticks = np.unique(time)
    group = group_of_tick[np.searchsorted(ticks, time)]
    hist = np.zeros((firsts.size, 12))
    np.add.at(hist, (group, pc), 1.0)
    share = hist / hist.sum(axis=1, keepdims=True)
    return share[:-1].T @ share[1:] / (firsts.size - 1)


#: name -> (metric function of a score, label for tables and plots, unit)
FEATURES: dict[str, tuple[Callable[["symusic.Score"], Any], str, str]] = {
    "pitch_class_entropy": (pitch_class_entropy, "pitch-class entropy", "bits"),
    "scale_consistency": (scale_consistency, "scale consistency", "share"),
    "groove_consistency": (groove_consistency, "groove consistency", "share"),
    "empty_beat_rate": (empty_beat_rate, "empty-beat rate", "share"),
    "polyphony": (polyphony, "polyphony", "notes"),
    "pitch_range": (pitch_range, "pitch range", "semitones"),
    "onsets_per_second": (onsets_per_second, "onsets per second", "1/s"),
    "mean_ioi": (mean_ioi, "mean inter-onset interval", "s"),
    "note_length_histogram": (note_length_histogram, "note-length histogram", "shares"),
    "pitch_class_transition_matrix": (pitch_class_transition_matrix,
                                      "pitch-class transition matrix", "shares"),
}
#: The features with one number per piece (the others are a histogram and a matrix).
SCALAR_FEATURES: tuple[str, ...] = tuple(FEATURES)[:8]
_ON_NOTES: dict[str, Callable[[_Notes], Any]] = {
    "pitch_class_entropy": _pitch_class_entropy, "scale_consistency": _scale_consistency,
    "groove_consistency": _groove_consistency, "empty_beat_rate": _empty_beat_rate,
    "polyphony": _polyphony, "pitch_range": _pitch_range, "onsets_per_second": _onsets_per_second,
    "mean_ioi": _mean_ioi, "note_length_histogram": _note_length_histogram,
    "pitch_class_transition_matrix": _pitch_class_transition_matrix,
}


def piece_features(score: "symusic.Score") -> dict[str, Any]:
    """Every metric of :data:`FEATURES` for one score (floats, and arrays for the two last).

    The note arrays are read once for all metrics.

    Example: ``piece_features(score)["polyphony"]  # 2.7``
    """
    n = _notes(score)
    return {name: _ON_NOTES[name](n) for name in FEATURES}


#: the metre and harmony figures (melodia.harmony), each on a piece's own bar lines
METRE_FIGURES = ("grid16", "on_beat", "rhythm_repetition", "bass_downbeat", "chord_beats",
                 "chord_tones", "chord_tones_melody", "chord_tones_accompaniment")


def metre_harmony(score: "symusic.Score", chords: Sequence[tuple[float, Any]] | None = None) -> dict[str, float]:
    """The metre and harmony figures of one piece, on its own bar lines (see
    :func:`melodia.harmony.metre_figures`), plus the share of note time on the tones of the
    chord in force: all notes, the melody (program 0, the lowest program of a multi-part
    piece: POP909's MELODY) and the accompaniment (the highest program of three or more
    parts: POP909's PIANO). ``chords`` are ``(beat, Chord|None)``; None reads the score's chord
    markers (as the corpus writes them), else recognises them from the notes.

    Example: ``metre_harmony(score)["grid16"]``
    """
    from .corpus import read_chord_markers
    from .harmony import NoteArrays, bar_lines, chord_tone_share, metre_figures, recognise_chords

    if "Tick" not in str(score.ttype):
        score = score.to("tick")
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


def excerpt(score: "symusic.Score", start_bar: int, bars: int) -> "symusic.Score":
    """Bars ``start_bar .. start_bar + bars - 1`` of a score, moved to start at tick 0.

    Notes starting in the window are kept and cut at its end; the tempo and time signature in
    force at the window's start are kept (symusic's ``clip``).

    Example: ``excerpt(song, 16, 8).note_num()  # the notes of bars 17-24``
    """
    if "Tick" not in str(score.ttype):
        score = score.to("tick")
    n = _notes(score)
    bounds = _bar_starts(n, int(n.end.max()) if n.end.size else 0)
    if not 0 <= start_bar < len(bounds) - 1 or bars < 1:
        raise BadInputError(f"excerpt: bars {start_bar}..{start_bar + bars - 1} are outside the "
                            f"score's {len(bounds) - 1} bars")
    start = int(bounds[start_bar])
    stop = int(bounds[min(start_bar + bars, len(bounds) - 1)])
    return score.clip(start, stop, clip_end=True).shift_time(-start)


# ============================================================================================
# Yang & Lerch (2020): distances, Gaussian KDE, overlapped area
# ============================================================================================

def kde_bandwidth(samples: Sequence[float] | np.ndarray, rule: str | float = "scott") -> float:
    """Bandwidth of a 1-D Gaussian KDE: Scott's or Silverman's rule, or a number passed through.

    Scott: ``s * n**(-1/5)``; Silverman: ``s * (3n/4)**(-1/5)``, with ``s`` the sample
    standard deviation (ddof=1), as ``scipy.stats.gaussian_kde``. 0.0 for fewer than 2 samples
    or no spread (callers put a floor under it).

    Example: ``kde_bandwidth([0.0, 2.0])  # sqrt(2) * 2**-0.2 = 1.231``
    """
    if not isinstance(rule, str):
        h = float(rule)
        if not h > 0:
            raise BadInputError(f"KDE bandwidth must be positive, got {rule!r}")
        return h
    x = np.asarray(samples, np.float64).ravel()
    if x.size < 2:
        return 0.0
    sd = float(x.std(ddof=1))
    if rule == "scott":
        return sd * x.size ** (-0.2)
    if rule == "silverman":
        return sd * (x.size * 0.75) ** (-0.2)
    raise BadInputError(f"unknown KDE bandwidth rule {rule!r}; use 'scott', 'silverman' or a number")


def gaussian_kde(samples: Sequence[float] | np.ndarray, grid: Sequence[float] | np.ndarray,
                 bandwidth: str | float = "scott") -> np.ndarray:
    """Gaussian kernel density estimate of 1-D ``samples`` evaluated at ``grid``.

    ``f(x) = mean_i N(x; x_i, h^2)`` with ``h`` from :func:`kde_bandwidth`.

    Example: ``gaussian_kde([0.0], [0.0], bandwidth=1.0)  # array([0.3989]) = 1/sqrt(2 pi)``
    """
    x = np.asarray(samples, np.float64).ravel()
    g = np.asarray(grid, np.float64).ravel()
    if x.size == 0:
        raise BadInputError("gaussian_kde: no samples")
    h = kde_bandwidth(x, bandwidth)
    if not h > 0:
        raise BadInputError("gaussian_kde: the samples have no spread; give a bandwidth")
    out = np.empty(g.size)
    step = max(1, 2_000_000 // x.size)  # blocks of the grid keep memory small
    for i in range(0, g.size, step):
        z = (g[i:i + step, None] - x[None, :]) / h
        out[i:i + step] = np.exp(-0.5 * z * z).sum(axis=1)
    return out / (x.size * h * math.sqrt(2 * math.pi))


def _two_kdes(a: np.ndarray, b: np.ndarray, bandwidth: str | float,
              grid_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Common grid and the two densities; None when both sets are one and the same value.

    A bandwidth is floored at 1/200 of the pooled span, so that a set without spread is a
    narrow bump rather than a spike the grid cannot resolve.
    """
    lo, hi = min(a.min(), b.min()), max(a.max(), b.max())
    span = float(hi - lo)
    if span == 0.0:
        return None
    ha = max(kde_bandwidth(a, bandwidth), span / 200)
    hb = max(kde_bandwidth(b, bandwidth), span / 200)
    pad = 6 * max(ha, hb)
    grid = np.linspace(lo - pad, hi + pad, grid_size)
    return grid, gaussian_kde(a, grid, ha), gaussian_kde(b, grid, hb)


def _clean(x: Sequence[float] | np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64).ravel()
    return x[np.isfinite(x)]


def _overlap_kl(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray,
                bandwidth: str | float, grid_size: int) -> tuple[float, float]:
    """(overlapped area, KL divergence) of the KDEs of two samples, from one pair of KDEs."""
    a, b = _clean(a), _clean(b)
    if a.size == 0 or b.size == 0:
        return math.nan, math.nan
    kdes = _two_kdes(a, b, bandwidth, grid_size)
    if kdes is None:
        return 1.0, 0.0
    grid, fa, fb = kdes
    oa = float(min(1.0, np.trapezoid(np.minimum(fa, fb), grid)))
    p, q = fa / fa.sum(), np.maximum(fb / fb.sum(), 1e-12)
    nz = p > 0
    return oa, float(max(0.0, (p[nz] * np.log(p[nz] / q[nz])).sum()))


def overlap_area(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray,
                 bandwidth: str | float = "scott", grid_size: int = 2048) -> float:
    """Overlapped area of the Gaussian KDEs of two 1-D samples: ``integral min(f_a, f_b)``.

    Trapezoidal rule on ``grid_size`` points spanning both samples plus 6 bandwidths. 1.0 for
    identical samples, near 0 for samples far apart; NaN if either has no finite value.

    Example: ``overlap_area([0, 1, 2, 3], [100, 101, 102, 103])  # 0.0``
    """
    return _overlap_kl(a, b, bandwidth, grid_size)[0]


def kl_divergence(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray,
                  bandwidth: str | float = "scott", grid_size: int = 2048) -> float:
    """KL divergence D(f_a || f_b), in nats, of the Gaussian KDEs of two 1-D samples.

    Both densities are evaluated on one grid and normalised to sum 1 there (as Yang & Lerch's
    mgeval does with ``scipy.stats.entropy``); ``f_b`` is floored at 1e-12. 0 for identical
    samples; NaN if either has no finite value.

    Example: ``kl_divergence([0, 1, 2], [0, 1, 2])  # 0.0``
    """
    return _overlap_kl(a, b, bandwidth, grid_size)[1]


def pairwise_distances(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """Euclidean distances between feature vectors (rows; scalars are 1-vectors).

    With only ``a``: the ``n(n-1)/2`` distances of its distinct pairs (intra-set). With ``b``:
    all ``len(a) * len(b)`` distances between the sets (inter-set).

    Example: ``pairwise_distances(np.array([0.0, 1.0, 3.0]))  # array([1., 3., 2.])``
    """
    a = np.asarray(a, np.float64)
    a = a.reshape(len(a), -1)
    if b is None:
        d = np.sqrt(((a[:, None, :] - a[None, :, :]) ** 2).sum(-1))
        return d[np.triu_indices(len(a), k=1)]
    b = np.asarray(b, np.float64)
    b = b.reshape(len(b), -1)
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)).ravel()


def _stack(values: Iterable[Any]) -> np.ndarray:
    """Per-piece values as a 2-D array (pieces x dims), dropping pieces with a NaN."""
    rows = [np.asarray(v, np.float64).ravel() for v in values]
    if not rows:
        return np.zeros((0, 1))
    arr = np.stack(rows)
    return arr[np.isfinite(arr).all(axis=1)]


def _mean_std(x: np.ndarray) -> tuple[float | None, float | None]:
    if x.size == 0:
        return None, None
    return float(x.mean()), float(x.std())


def compare_feature(real: Iterable[Any], generated: Iterable[Any],
                    bandwidth: str | float = "scott") -> dict[str, Any]:
    """Yang & Lerch's comparison of one feature between a real and a generated set.

    Returns ``real_mean``/``generated_mean`` (floats, or lists for vector features),
    ``real_std``/``generated_std`` (scalars only), the mean and std of the intra-set distances of
    each set and of the inter-set distances, ``overlap`` (OA of the real intra-set and the
    inter-set distance KDEs), ``kl`` (KL divergence of those, real intra-set first), and for
    scalar features ``value_overlap`` (OA of the two sets' value KDEs). Pieces where the
    feature is undefined (NaN) are left out; ``n_real``/``n_generated`` count the rest.

    Example: ``compare_feature([1, 2, 3, 4], [1, 2, 3, 4])["value_overlap"]  # 1.0``
    """
    r, g = _stack(real), _stack(generated)
    scalar = r.shape[1] == 1 and g.shape[1] == 1
    out: dict[str, Any] = {"n_real": int(len(r)), "n_generated": int(len(g))}

    def mean_of(x: np.ndarray) -> Any:
        if len(x) == 0:
            return None
        return float(x[:, 0].mean()) if scalar else x.mean(axis=0).round(6).tolist()

    out["real_mean"], out["generated_mean"] = mean_of(r), mean_of(g)
    if scalar:
        out["real_std"] = float(r[:, 0].std()) if len(r) else None
        out["generated_std"] = float(g[:, 0].std()) if len(g) else None
    if len(r) >= 2 and len(g) >= 1:
        intra_r, inter = pairwise_distances(r), pairwise_distances(r, g)
        intra_g = pairwise_distances(g) if len(g) >= 2 else np.zeros(0)
        for name, d in (("intra_real", intra_r), ("intra_generated", intra_g), ("inter", inter)):
            out[f"{name}_mean"], out[f"{name}_std"] = _mean_std(d)
        out["overlap"], out["kl"] = _overlap_kl(intra_r, inter, bandwidth, 2048)
    else:
        for name in ("intra_real", "intra_generated", "inter"):
            out[f"{name}_mean"] = out[f"{name}_std"] = None
        out["overlap"] = out["kl"] = None
    if scalar:
        out["value_overlap"] = overlap_area(r, g, bandwidth) if len(r) and len(g) else None
    return out


def compare_sets(real: Sequence[Mapping[str, Any]], generated: Sequence[Mapping[str, Any]],
                 bandwidth: str | float = "scott") -> dict[str, dict[str, Any]]:
    """:func:`compare_feature` for every feature of :func:`piece_features` dicts.

    Example: ``compare_sets(real_feats, gen_feats)["pitch_range"]["overlap"]  # 0.83``
    """
    return {name: compare_feature([f[name] for f in real], [f[name] for f in generated], bandwidth)
            for name in FEATURES}


# ============================================================================================
# Mood control and validity
# ============================================================================================

def mood_control_summary(requested: Sequence[str],
                         estimates: Sequence["MoodEstimate | None"]) -> dict[str, Any]:
    """Accuracy, confusion matrix and cue shifts of the estimated mood per requested mood.

    ``requested[i]`` is a canonical mood; ``estimates[i]`` the :class:`MoodEstimate` of the
    piece generated for it, or None when it had no pitched note (counted as "none", a miss).
    Valence accuracy: estimated valence has the requested sign (0 counts as positive), arousal
    likewise; quadrant accuracy: the estimated mood is the requested one. ``per_mood`` holds,
    per requested mood, the accuracy, ``major_share`` (share of pieces whose estimated key is
    major), mean ``onsets_per_second`` (pieces with a known tempo), mean ``pitch_mean``
    (register), mean ``tempo_qpm`` and mean ``velocity_mean``.

    Example: ``mood_control_summary(["sad"], [MoodEstimator().estimate(s)])["quadrant_accuracy"]``
    """
    from .moods import CANONICAL_MOODS, mood_valence_arousal

    if len(requested) != len(estimates):
        raise BadInputError("mood_control_summary: one estimate per requested mood")
    labels = list(CANONICAL_MOODS)
    cols = labels + ["none"]
    confusion = np.zeros((len(labels), len(cols)), dtype=np.int64)
    hits = {"quadrant": [], "valence": [], "arousal": []}
    per: dict[str, dict[str, list]] = {m: {"hit": [], "major": [], "ops": [], "pitch": [],
                                           "tempo": [], "velocity": []} for m in labels}
    for want, est in zip(requested, estimates):
        if want not in labels:
            raise BadInputError(f"mood_control_summary: {want!r} is not one of {labels}")
        v_want, a_want = mood_valence_arousal(want)
        got = est.mood if est is not None else "none"
        confusion[labels.index(want), cols.index(got if got in cols else "none")] += 1
        hit = got == want
        hits["quadrant"].append(hit)
        hits["valence"].append(est is not None and (est.valence >= 0) == (v_want > 0))
        hits["arousal"].append(est is not None and (est.arousal >= 0) == (a_want > 0))
        p = per[want]
        p["hit"].append(hit)
        if est is not None:
            f = est.features
            p["major"].append(f.key.mode == "major")
            p["pitch"].append(f.pitch_mean)
            p["velocity"].append(f.velocity_mean)
            if f.onsets_per_second is not None:
                p["ops"].append(f.onsets_per_second)
            if f.tempo_qpm is not None:
                p["tempo"].append(f.tempo_qpm)

    def mean(x: list) -> float | None:
        return float(np.mean(x)) if x else None

    return {
        "n": len(requested),
        "quadrant_accuracy": mean(hits["quadrant"]),
        "valence_accuracy": mean(hits["valence"]),
        "arousal_accuracy": mean(hits["arousal"]),
        "labels": labels, "columns": cols, "confusion": confusion.tolist(),
        "per_mood": {m: {"n": len(p["hit"]), "accuracy": mean(p["hit"]),
                         "major_share": mean(p["major"]), "onsets_per_second": mean(p["ops"]),
                         "pitch_mean": mean(p["pitch"]), "tempo_qpm": mean(p["tempo"]),
                         "velocity_mean": mean(p["velocity"])}
                     for m, p in per.items() if p["hit"]},
    }


def _cue_summary(estimates: Sequence["MoodEstimate | None"]) -> dict[str, Any]:
    """The same cue means as ``per_mood`` for a set with no requested mood (real, unconditional)."""
    ok = [e for e in estimates if e is not None]

    def mean(x: list) -> float | None:
        return float(np.mean(x)) if x else None

    moods: dict[str, int] = {}
    for e in ok:
        moods[e.mood] = moods.get(e.mood, 0) + 1
    return {"n": len(estimates), "estimated_moods": moods,
            "major_share": mean([e.features.key.mode == "major" for e in ok]),
            "onsets_per_second": mean([e.features.onsets_per_second for e in ok
                                       if e.features.onsets_per_second is not None]),
            "pitch_mean": mean([e.features.pitch_mean for e in ok]),
            "tempo_qpm": mean([e.features.tempo_qpm for e in ok if e.features.tempo_qpm is not None]),
            "velocity_mean": mean([e.features.velocity_mean for e in ok])}


def bar_count(tok: "MelodiaTokenizer", ids: Sequence[int], _cache: dict | None = None) -> int:
    """Number of ``Bar_None`` tokens in a sequence (inside BPE ids too); control ids skipped.

    Example: ``bar_count(tok, tok.encode_piece(two_bar_score))  # 2``
    """
    cache = {} if _cache is None else _cache
    count = 0
    for i in tok.strip_controls(ids):
        if i not in cache:
            cache[i] = sum(t == "Bar_None" for t in tok.base_tokens(i))
        count += cache[i]
    return count


def check_sequence(tok: "MelodiaTokenizer", ids: Sequence[int], bars: int | None,
                   _cache: dict | None = None) -> tuple[dict[str, Any], "symusic.Score | None"]:
    """Validity of one generated sequence and its decoded score (None if it does not decode).

    The record: ``decoded`` (MidiTok decodes it), ``errors`` (MidiTok's token-type error
    rate, None if it could not be measured), ``valid`` (decoded and no errors), ``bars``
    (Bar tokens), ``exact_bars`` (equal to ``bars`` asked for), ``notes``, ``tokens``.

    Example: ``check_sequence(tok, ids, bars=8)[0]["valid"]  # True``
    """
    rec: dict[str, Any] = {"tokens": len(ids), "decoded": False, "errors": None, "notes": 0}
    try:
        rec["errors"] = float(tok.count_errors(ids))
    except Exception:  # MidiTok raises many kinds on a garbled sequence
        pass
    score = None
    try:
        score = tok.decode(ids)
        rec["decoded"] = True
        rec["notes"] = int(score.note_num())
    except Exception:
        score = None
    rec["valid"] = bool(rec["decoded"] and rec["errors"] == 0.0)
    try:
        rec["bars"] = bar_count(tok, ids, _cache)
    except Exception:
        rec["bars"] = None
    rec["exact_bars"] = bool(bars is not None and rec["bars"] == bars)
    return rec, score


def validity_summary(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Shares of sequences that decode without token errors and that have the exact bar count.

    Example: ``validity_summary([{"valid": True, "exact_bars": False}])  # valid_share 1.0, exact_bars_share 0.0``
    """
    n = len(records)
    if n == 0:
        return {"n": 0, "valid_share": None, "exact_bars_share": None, "decoded_share": None,
                "mean_error_rate": None}
    errors = [r["errors"] for r in records if r.get("errors") is not None]
    return {"n": n,
            "valid_share": sum(bool(r.get("valid")) for r in records) / n,
            "exact_bars_share": sum(bool(r.get("exact_bars")) for r in records) / n,
            "decoded_share": sum(bool(r.get("decoded", r.get("valid"))) for r in records) / n,
            "mean_error_rate": float(np.mean(errors)) if errors else None}


# ============================================================================================
# Likelihood
# ============================================================================================

def _prefix_for(tok: "MelodiaTokenizer", row: Mapping[str, Any]) -> list[int]:
    """The control prefix of a corpus row, with moods/tags the tokenizer lacks left out."""
    try:
        mood_id = tok.mood_id(str(row.get("mood") or "any"))
    except MelodiaError:
        mood_id = tok.mood_id("any")
    try:
        key_id = tok.key_id(tok.key_for_model(row.get("key")))
    except MelodiaError:
        key_id = tok.key_id(None)
    tags = []
    for t in row.get("tags") or []:
        try:
            tags.append(tok.tag_id(t))
        except MelodiaError:
            pass
    from .tokenizer import BOS_ID

    return [BOS_ID, mood_id, key_id] + tags


def _model_shift(tok: "MelodiaTokenizer", row: Mapping[str, Any]) -> int:
    """``tok.model_shift`` of a corpus row's key; 0 for a key the tokenizer cannot read."""
    try:
        return tok.model_shift(row.get("key"))
    except MelodiaError:
        return 0


def _windows(tok: "MelodiaTokenizer", prefix: list[int], music: list[int], width: int,
             bar_starts_cache: dict) -> list[tuple[list[int], int]]:
    """Cut ``prefix + music + EOS`` into inputs of at most ``width`` tokens.

    Returns (window, first scored position): the first window scores every target after the
    prefix; every later window repeats the prefix and scores only its music and EOS. Cuts
    fall at tokens that open a bar where one fits, so windows look like training chunks.
    """
    from .tokenizer import EOS_ID

    body = list(music) + [EOS_ID]
    budget = width - len(prefix)
    if budget < 2:
        raise BadInputError(f"the model's length {width} leaves no room after the control tokens")
    out: list[tuple[list[int], int]] = []
    i = 0
    while i < len(body):
        j = min(i + budget, len(body))
        if j < len(body):
            for k in range(j, i + budget // 4, -1):  # the last bar start in the window's tail
                tid = body[k]
                if tid not in bar_starts_cache:
                    try:
                        first = tok.base_tokens(tid)[0] if tid < tok.base_size else ""
                    except Exception:
                        first = ""
                    bar_starts_cache[tid] = first == "Bar_None"
                if bar_starts_cache[tid]:
                    j = k
                    break
        out.append((prefix + body[i:j], len(prefix)))
        i = j
    return out


def likelihood(model: Any, tok: "MelodiaTokenizer", pieces: Iterable[tuple[Mapping[str, Any], "symusic.Score"]],
               max_len: int | None = None, max_tokens: int | None = None,
               batch_size: int = 8) -> dict[str, Any]:
    """Mean cross-entropy of ``model`` on whole pieces: nats per token and bits per note.

    ``pieces`` yields (corpus row with mood/key/tags, score). Each piece becomes what the model
    reads in training (for a key-normalised tokenizer: moved to C; a mood, key or tag the tokenizer lacks
    becomes ``any`` / is left out), cut into windows of at most ``max_len`` tokens (default:
    the model's ``max_position_embeddings``), see :func:`_windows`; unlike a training chunk, a
    later window does not re-state the tempo. Predicted are the music tokens and EOS, once
    each; control tokens are inputs only, as in training. Pieces are taken in order until
    ``max_tokens`` predicted tokens are reached (whole pieces only, so bits per note stays
    exact). ``bits_per_note = total nats / ln 2 / notes`` of the scored pieces' scores.

    Example: ``likelihood(model, tok, [(row, score)])["nats_per_token"]  # 1.83``
    """
    import torch
    import torch.nn.functional as F

    width = int(max_len or getattr(model.config, "max_position_embeddings", 1024))
    device = next(model.parameters()).device
    total_nats, total_tokens, total_notes, n_pieces, skipped = 0.0, 0, 0, 0, 0
    bar_cache: dict = {}
    t0 = time.perf_counter()

    def run(batch: list[tuple[list[int], int]]) -> float:
        longest = max(len(w) for w, _ in batch)
        x = torch.zeros((len(batch), longest), dtype=torch.long)
        y = torch.full((len(batch), longest), -100, dtype=torch.long)
        for b, (w, first) in enumerate(batch):
            x[b, :len(w)] = torch.tensor(w)
            # logits at position t predict token t+1: targets from the first scored position on
            y[b, first - 1:len(w) - 1] = torch.tensor(w[first:])
        with torch.inference_mode():
            logits = model(input_ids=x.to(device), use_cache=False).logits
            return float(F.cross_entropy(logits.float().flatten(0, 1), y.to(device).flatten(),
                                         ignore_index=-100, reduction="sum"))

    pending: list[tuple[list[int], int]] = []
    for row, score in pieces:
        if max_tokens is not None and total_tokens >= max_tokens:
            break
        try:
            music = tok.encode_score(score, _model_shift(tok, row))
        except Exception:  # a piece MidiTok cannot encode is reported, not fatal
            skipped += 1
            continue
        if not music:
            skipped += 1
            continue
        for w in _windows(tok, _prefix_for(tok, row), music, width, bar_cache):
            pending.append(w)
            total_tokens += len(w[0]) - w[1]
            if len(pending) == batch_size:
                total_nats += run(pending)
                pending = []
        total_notes += int(score.note_num())
        n_pieces += 1
    if pending:
        total_nats += run(pending)
    if total_tokens == 0:
        return {"pieces": 0, "tokens": 0, "notes": 0, "skipped": skipped, "nats_per_token": None,
                "bits_per_token": None, "bits_per_note": None, "perplexity": None,
                "seconds": round(time.perf_counter() - t0, 2)}
    nats = total_nats / total_tokens
    return {"pieces": n_pieces, "tokens": total_tokens, "notes": total_notes, "skipped": skipped,
            "window": width, "nats_per_token": nats, "bits_per_token": nats / math.log(2),
            "perplexity": math.exp(nats),
            "bits_per_note": total_nats / math.log(2) / total_notes if total_notes else None,
            "seconds": round(time.perf_counter() - t0, 2)}


# ============================================================================================
# Report
# ============================================================================================

def _figure(width: float, height: float, layout: str | None = "constrained"):
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # no pyplot: no global state
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def _save_png(fig: Any, path: Path) -> str:
    import io

    from .fileio import write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    write_bytes(path, buf.getvalue())
    return path.name


def _plot_scalar_features(real: Sequence[Mapping[str, Any]], gen: Sequence[Mapping[str, Any]],
                          comparison: Mapping[str, Any], path: Path) -> str:
    fig = _figure(16, 7.5, layout=None)  # a fixed grid: constrained layout costs seconds here
    axes = fig.subplots(2, 4, gridspec_kw={"left": 0.04, "right": 0.99, "bottom": 0.08,
                                           "top": 0.9, "wspace": 0.25, "hspace": 0.4})
    for ax, name in zip(axes.ravel(), SCALAR_FEATURES):
        r = _clean([f[name] for f in real])
        g = _clean([f[name] for f in gen])
        both = np.concatenate([r, g])
        if both.size == 0:
            ax.set_title(f"{FEATURES[name][1]}: no values")
            continue
        lo, hi = float(both.min()), float(both.max())
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        bins = np.linspace(lo, hi, 21)
        ax.hist(r, bins=bins, density=True, alpha=0.5, color="tab:blue", label=f"real (n={r.size})")
        ax.hist(g, bins=bins, density=True, alpha=0.5, color="tab:orange",
                label=f"generated (n={g.size})")
        c = comparison.get(name, {})
        oa = c.get("value_overlap")
        ax.set_title(f"{FEATURES[name][1]}" + (f"  (value OA {oa:.2f})" if oa is not None else ""),
                     fontsize=10)
        ax.set_xlabel(FEATURES[name][2], fontsize=8)
        ax.legend(fontsize=7)
    fig.suptitle("Per-piece features: held-out real excerpts vs unconditional generations")
    return _save_png(fig, path)


def _plot_note_lengths(comparison: Mapping[str, Any], path: Path) -> str:
    c = comparison["note_length_histogram"]
    fig = _figure(10, 4)
    ax = fig.add_subplot()
    x = np.arange(len(NOTE_LENGTHS))
    for off, key, colour, label in ((-0.2, "real_mean", "tab:blue", "real"),
                                    (0.2, "generated_mean", "tab:orange", "generated")):
        if c.get(key) is not None:
            ax.bar(x + off, c[key], width=0.4, color=colour, label=label)
    ax.set_xticks(x, NOTE_LENGTH_NAMES)
    ax.set_xlabel("nearest standard length (t = triplet, . = dotted)")
    ax.set_ylabel("mean share of notes")
    ax.set_title("Note-length histogram, mean over pieces")
    ax.legend()
    return _save_png(fig, path)


def _plot_transitions(comparison: Mapping[str, Any], path: Path) -> str:
    c = comparison["pitch_class_transition_matrix"]
    fig = _figure(12, 5.5)
    axes = fig.subplots(1, 2)
    mats = [np.asarray(c[k]).reshape(12, 12) if c.get(k) is not None else np.zeros((12, 12))
            for k in ("real_mean", "generated_mean")]
    vmax = max(float(m.max()) for m in mats) or 1.0
    for ax, m, title in zip(axes, mats, ("real", "generated")):
        im = ax.imshow(m, cmap="viridis", vmin=0, vmax=vmax)
        ax.set_xticks(range(12), _PC_NAMES, fontsize=8)
        ax.set_yticks(range(12), _PC_NAMES, fontsize=8)
        ax.set_xlabel("to")
        ax.set_ylabel("from")
        ax.set_title(f"pitch-class transitions, {title} (mean)")
    fig.colorbar(im, ax=list(axes), shrink=0.8, label="share of moves")
    return _save_png(fig, path)


def _plot_confusion(mood: Mapping[str, Any], path: Path) -> str:
    m = np.asarray(mood["confusion"], dtype=np.float64)
    rows = m.sum(axis=1, keepdims=True)
    share = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    fig = _figure(7, 5.5)
    ax = fig.add_subplot()
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, f"{int(m[i, j])}\n{share[i, j]:.0%}", ha="center", va="center",
                    color="white" if share[i, j] > 0.6 else "black", fontsize=9)
    ax.set_xticks(range(m.shape[1]), mood["columns"])
    ax.set_yticks(range(m.shape[0]), mood["labels"])
    ax.set_xlabel("estimated mood (MoodEstimator)")
    ax.set_ylabel("requested mood")
    acc = mood.get("quadrant_accuracy")
    ax.set_title("Mood control" + (f": quadrant accuracy {acc:.0%}" if acc is not None else ""))
    fig.colorbar(im, ax=ax, shrink=0.8, label="share of the row")
    return _save_png(fig, path)


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _plural(k: int, word: str) -> str:
    return f"{k} {word}{'' if k == 1 else 's'}"


def _pct(x: Any) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _markdown(result: Mapping[str, Any]) -> str:
    s = result["settings"]
    lines = [f"# melodia evaluation: `{s['model']}`", "",
             f"Corpus `{s['corpus']}` · n = {s['n']} · {s['bars']} bars · seed {s['seed']} · "
             f"guidance {s.get('guidance') or 'default'} · melodia {s['version']} · "
             f"{result.get('seconds', 0):.0f} s"
             + (" (" + ", ".join(f"{k} {v:.0f} s" for k, v in result["timings"].items()) + ")"
                if result.get("timings") else ""), ""]
    lk = result.get("likelihood") or {}
    lines += ["## Likelihood", ""]
    if lk.get("nats_per_token") is not None:
        lines += [f"On the **{lk['split']}** split ({_plural(lk['pieces'], 'piece')}, {lk['tokens']:,} predicted "
                  f"tokens, {lk['notes']:,} notes, windows of {lk['window']} tokens):", "",
                  "| nats/token | bits/token | perplexity | bits/note |", "|---|---|---|---|",
                  f"| {_fmt(lk['nats_per_token'])} | {_fmt(lk['bits_per_token'])} | "
                  f"{_fmt(lk['perplexity'], 2)} | {_fmt(lk['bits_per_note'], 2)} |", ""]
    else:
        lines += [f"Not measured: {lk.get('reason', 'no held-out tokens')}.", ""]

    v = result["validity"]
    lines += ["## Validity", "",
              f"{v['n']} generated sequences: **{_pct(v['valid_share'])}** decode without token "
              f"errors, **{_pct(v['exact_bars_share'])}** have exactly {s['bars']} bars "
              f"(decoded at all: {_pct(v['decoded_share'])}; mean token-error rate "
              f"{_fmt(v['mean_error_rate'], 4)}).", ""]
    by = result.get("validity_by_mood") or {}
    if by:
        lines += ["| requested | n | valid | exact bars |", "|---|---|---|---|"]
        lines += [f"| {m} | {x['n']} | {_pct(x['valid_share'])} | {_pct(x['exact_bars_share'])} |"
                  for m, x in by.items()]
        lines.append("")

    rg = result["real_vs_generated"]
    lines += ["## Real vs generated", "",
              f"{rg['n_real']} held-out real excerpts ({_plural(rg['real_pieces'], 'piece')} of the "
              f"{rg['real_split']} split, random {s['bars']}-bar windows) against "
              f"{rg['n_generated']} unconditional generations. Intra/inter: mean pairwise "
              "Euclidean distance within and between the sets; OA: overlapped area of the real "
              "intra-set and the inter-set distance distributions (Gaussian KDE), 1 = the "
              "generations sit among the real pieces as closely as those do among themselves; "
              "KL: their KL divergence; value OA: overlap of the feature values themselves.", "",
              "| feature | real mean ± sd | generated mean ± sd | intra real | intra gen | inter "
              "| OA | KL | value OA |", "|---|---|---|---|---|---|---|---|---|"]
    for name, c in rg["features"].items():
        label = FEATURES[name][1]
        if name in SCALAR_FEATURES:
            rv = f"{_fmt(c['real_mean'])} ± {_fmt(c.get('real_std'))}"
            gv = f"{_fmt(c['generated_mean'])} ± {_fmt(c.get('generated_std'))}"
        else:
            rv = gv = "(see figure)"
        lines.append(f"| {label} | {rv} | {gv} | {_fmt(c['intra_real_mean'])} | "
                     f"{_fmt(c['intra_generated_mean'])} | {_fmt(c['inter_mean'])} | "
                     f"{_fmt(c['overlap'])} | {_fmt(c['kl'])} | {_fmt(c.get('value_overlap'))} |")
    figs = result["figures"]
    lines += ["", f"![feature histograms]({figs['features']})", "",
              f"![note lengths]({figs['note_lengths']})", "",
              f"![pitch-class transitions]({figs['pc_transitions']})", ""]

    me = result.get("metre")
    if me:
        names = {"grid16": "onsets on a sixteenth", "on_beat": "onsets on a beat",
                 "rhythm_repetition": "rhythm repetition, consecutive bars (Jaccard)",
                 "bass_downbeat": "bass on the downbeat (lowest note per beat, by duration)",
                 "chord_beats": "beats holding a triad or seventh", "chord_tones": "note time on chord tones",
                 "chord_tones_melody": "… melody (lowest program)",
                 "chord_tones_accompaniment": "… accompaniment (highest of 3+ programs)"}
        moods_ = list(me["by_mood"])
        lines += ["## Metre and harmony", "",
                  "Each piece on its own bar lines (real excerpts are cut at bar lines). An onset is "
                  "on a sixteenth within 0.025 beat (a tenth of a sixteenth). Chord tones: the real "
                  "excerpts' chords are the corpus's (POP909's annotation, else recognised per half "
                  f"bar); the generations' are {me['chords_from']}.", "",
                  "| figure | real | generated (all) | " + " | ".join(moods_) + " |",
                  "|---|---|---|" + "---|" * len(moods_)]
        for k, label in names.items():
            cells = [me["real"][k]["mean"], me["generated"][k]["mean"]] + [me["by_mood"][m][k]["mean"] for m in moods_]
            lines.append(f"| {label} | " + " | ".join(_fmt(c) for c in cells) + " |")
        lines.append("")

    mc = result["mood_control"]
    lines += ["## Mood control", "",
              f"{mc['n']} generations ({s['n']} per mood), labelled by `MoodEstimator`: "
              f"quadrant accuracy **{_pct(mc['quadrant_accuracy'])}**, valence "
              f"{_pct(mc['valence_accuracy'])}, arousal {_pct(mc['arousal_accuracy'])} "
              "(chance: 25%, 50%, 50%).", "",
              "| requested \\ estimated | " + " | ".join(mc["columns"]) + " |",
              "|---|" + "---|" * len(mc["columns"])]
    for label, row in zip(mc["labels"], mc["confusion"]):
        lines.append(f"| **{label}** | " + " | ".join(str(x) for x in row) + " |")
    lines += ["", "Cues per requested mood (means of the estimator's measurements):", "",
              "| set | n | accuracy | major share | onsets/s | mean pitch | tempo qpm | velocity |",
              "|---|---|---|---|---|---|---|---|"]
    rows = [(m, x) for m, x in mc["per_mood"].items()]
    rows += [(name, x) for name, x in (mc.get("reference") or {}).items()]
    for m, x in rows:
        lines.append(f"| {m} | {x['n']} | {_pct(x.get('accuracy'))} | {_pct(x['major_share'])} | "
                     f"{_fmt(x['onsets_per_second'], 2)} | {_fmt(x['pitch_mean'], 1)} | "
                     f"{_fmt(x['tempo_qpm'], 0)} | {_fmt(x['velocity_mean'], 0)} |")
    lines += ["", f"![mood confusion matrix]({figs['confusion']})", ""]

    samples = figs.get("samples") or {}
    if samples:
        lines += ["## Samples", ""]
        for mood, items in samples.items():
            lines += [f"### {mood}", ""]
            for it in items:
                lines += [f"![{mood}]({it['png']}) ([MIDI]({it['mid']}), estimated "
                          f"{it['estimated']})", ""]
    return "\n".join(lines) + "\n"


def write_report(result: dict[str, Any], out_dir: str | os.PathLike,
                 real_features: Sequence[Mapping[str, Any]],
                 generated_features: Sequence[Mapping[str, Any]],
                 samples: Mapping[str, Sequence[tuple["symusic.Score", str]]] | None = None) -> Path:
    """Write ``report.md``, ``report.json`` and the PNGs into ``out_dir``; returns report.md's path.

    ``result`` is :func:`evaluate`'s dict without ``figures`` (added here); ``samples`` maps a
    mood to (score, estimated mood) pairs drawn as piano rolls (``samples/<mood>-<i>.png``,
    with the MIDI beside them). Every file is written atomically.

    Example: ``write_report(result, "eval", real_feats, gen_feats, {"calm": [(score, "calm")]})``
    """
    from .render import render_png, write_midi

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    comparison = result["real_vs_generated"]["features"]
    figures: dict[str, Any] = {
        "features": _plot_scalar_features(real_features, generated_features, comparison,
                                          out / "features.png"),
        "note_lengths": _plot_note_lengths(comparison, out / "note_lengths.png"),
        "pc_transitions": _plot_transitions(comparison, out / "pc_transitions.png"),
        "confusion": _plot_confusion(result["mood_control"], out / "mood_confusion.png"),
        "samples": {},
    }
    for mood, items in (samples or {}).items():
        for i, (score, estimated) in enumerate(items):
            stem = f"samples/{mood}-{i + 1}"
            render_png(score, out / f"{stem}.png",
                       title=f"requested {mood} · estimated {estimated} · sample {i + 1}")
            write_midi(score, out / f"{stem}.mid")
            figures["samples"].setdefault(mood, []).append(
                {"png": f"{stem}.png", "mid": f"{stem}.mid", "estimated": estimated})
    result["figures"] = figures
    return _write_texts(result, out)


def _write_texts(result: dict[str, Any], out: Path) -> Path:
    """report.json and report.md from a result that already names its figures."""
    from .fileio import write_json, write_text

    write_json(out / "report.json", _jsonable(result))
    write_text(out / "report.md", _markdown(result))
    return out / "report.md"


def _jsonable(x: Any) -> Any:
    """NaN/inf -> None and numpy values -> Python, so report.json is strict JSON."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


# ============================================================================================
# The whole evaluation
# ============================================================================================

GenerateFn = Callable[[str, int, int, int], Sequence[Sequence[int]]]


def default_model_dir() -> Path:
    """The shipped default model's folder (``melodia/weights/default``)."""
    return Path(__file__).parent / "weights" / "default"


def _shown_path(path: Path) -> str:
    """How a report names a folder: the shipped model as ``default``, a folder under the
    working directory relative to it (a report copied elsewhere names no build machine's
    paths), anything else as given."""
    try:
        if path.resolve() == default_model_dir().resolve():
            return "default"
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (OSError, ValueError):
        return str(path)


def _corpus_from_meta(model_dir: Path, meta: Mapping[str, Any]) -> Path:
    """The corpus the model was trained on: melodia.json's shards folder -> its index.json."""
    import json

    data = (meta.get("corpus") or {}).get("data") if isinstance(meta.get("corpus"), dict) else None
    if data:
        index = Path(data) / "index.json"
        if not index.is_absolute():
            index = Path.cwd() / index
        try:
            corpus = json.loads(index.read_text(encoding="utf-8")).get("corpus")
        except (OSError, ValueError):
            corpus = None
        if corpus and (Path(corpus) / "manifest.jsonl").is_file():
            return Path(corpus)
    raise BadInputError(f"{model_dir}: cannot tell which corpus it was trained on; give --corpus DIR")


def _generator(model: Any, tok: "MelodiaTokenizer", guidance: float | None = None,
               default_programs: Sequence[int] | None = None, tempo_unknown: str | None = None) -> GenerateFn:
    """``fn(mood, n, seed, bars) -> token id lists`` on top of :mod:`melodia.generate`.

    Batches of at most the generator's ``MAX_N`` rows, seeded ``seed, seed + 1, ...``;
    ``guidance`` None keeps :class:`GenerationConfig`'s default.
    """
    try:
        from . import generate as g
    except ImportError as e:
        raise MelodiaError(f"melodia.generate is not available ({e}); cannot generate pieces "
                           "to evaluate") from None
    gen = g.Generator(model, tok, default_programs=default_programs, tempo_unknown=tempo_unknown)
    batch = int(getattr(g, "MAX_N", 16))
    extra = {} if guidance is None else {"guidance": float(guidance)}

    def generate(mood: str, n: int, seed: int, bars: int) -> list[list[int]]:
        out: list[list[int]] = []
        for k, start in enumerate(range(0, n, batch)):
            cfg = g.GenerationConfig(bars=bars, mood=mood, n=min(batch, n - start), seed=seed + k,
                                     **extra)
            out.extend(list(map(int, s)) for s in gen.generate(cfg))
        return out
    return generate


def _load_piece(corpus: Path, row: Mapping[str, Any]) -> "symusic.Score":
    from .midifile import load_score

    return load_score(corpus / str(row.get("file", "")))


def _held_out(rows: list[dict]) -> tuple[str, list[dict]]:
    for split in ("test", "valid"):
        held = [r for r in rows if r.get("split") == split]
        if held:
            return split, held
    raise BadInputError("the corpus has no test or valid pieces to evaluate on")


def _real_excerpts(corpus: Path, held: list[dict], n: int, bars: int,
                   rng: np.random.Generator) -> tuple[list["symusic.Score"], int]:
    """``n`` random ``bars``-bar windows of held-out pieces (pieces cycle if there are fewer)."""
    order = rng.permutation(len(held))
    cache: dict[int, "symusic.Score | None"] = {}
    out: list["symusic.Score"] = []
    used: set[int] = set()
    for k in range(4 * n + len(held)):
        if len(out) >= n:
            break
        i = int(order[k % len(held)])
        if i not in cache:
            try:
                cache[i] = _load_piece(corpus, held[i])
            except BadMidiError:
                cache[i] = None
        score = cache[i]
        if score is None:
            continue
        n_bars = len(bar_starts(score)) - 1
        start = int(rng.integers(0, max(n_bars - bars, 0) + 1))
        piece = excerpt(score, start, bars)
        if not any(not t.is_drum and len(t.notes) for t in piece.tracks):
            continue
        out.append(piece)
        used.add(i)
    return out, len(used)


def _estimate(score: "symusic.Score | None") -> "MoodEstimate | None":
    from .moods import MoodEstimator

    if score is None:
        return None
    try:
        return MoodEstimator().estimate(score, tempo_known=True)
    except MelodiaError:  # no pitched note
        return None


def _say(progress: bool, text: str) -> None:
    if progress:
        print(f"melodia evaluate: {text}", file=sys.stderr, flush=True)


def evaluate(model_dir: str | os.PathLike | None = None, corpus_dir: str | os.PathLike | None = None,
             n: int = 64, seed: int = 0, out_dir: str | os.PathLike = "eval", bars: int = 8,
             max_tokens: int | None = 50_000, samples_per_mood: int = 4,
             guidance: float | None = None, generate_fn: GenerateFn | None = None,
             progress: bool = False) -> dict[str, Any]:
    """Run the whole evaluation and write the report; returns what report.json holds.

    ``model_dir`` defaults to the shipped model, ``corpus_dir`` to the corpus the model's
    shards came from (melodia.json -> index.json). ``n`` pieces each: real excerpts,
    unconditional generations and generations per canonical mood (``5 n`` generations in all).
    ``max_tokens`` caps the predicted tokens of the likelihood pass (None: the whole split).
    ``guidance`` is the classifier-free guidance scale (None: the generator's default).
    ``generate_fn(mood, n, seed, bars) -> token id lists`` replaces melodia.generate (tests).

    Example: ``evaluate("runs/small/model", "C", n=64, out_dir="eval")["validity"]["valid_share"]``
    """
    from . import __version__
    from .corpus import load_manifest
    from .model import load_model_dir
    from .moods import CANONICAL_MOODS
    from .tokenizer import MelodiaTokenizer

    t0 = time.perf_counter()
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise BadInputError(f"n must be an integer of at least 2 (pieces per set), got {n!r}")
    if isinstance(bars, bool) or not isinstance(bars, int) or not 1 <= bars <= 256:
        raise BadInputError(f"bars must be an integer in 1..256, got {bars!r}")
    if max_tokens is not None and max_tokens < 1:
        raise BadInputError(f"max_tokens must be positive (or None for all), got {max_tokens!r}")
    model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
    out = Path(out_dir)
    try:  # fail now, not after minutes of work
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BadInputError(f"{out}: cannot make the report folder ({e.strerror or e})") from None

    model, meta = load_model_dir(model_dir, dtype="float32")  # exact losses; fast on CPU
    tok = MelodiaTokenizer.load(model_dir / "tokenizer.json")
    corpus = Path(corpus_dir) if corpus_dir is not None else _corpus_from_meta(model_dir, meta)
    rows = load_manifest(corpus)
    split, held = _held_out(rows)
    timings: dict[str, float] = {}

    # 1. likelihood on whole held-out pieces, in a seeded order, up to max_tokens
    t = time.perf_counter()
    _say(progress, f"likelihood on the {split} split ({len(held)} pieces)")
    order = np.random.default_rng(seed).permutation(len(held))

    def whole_pieces() -> Iterable[tuple[dict, "symusic.Score"]]:
        for i in order:
            try:
                yield held[int(i)], _load_piece(corpus, held[int(i)])
            except BadMidiError:
                continue

    width = int(meta.get("max_len") or model.config.max_position_embeddings)
    width = min(width, int(model.config.max_position_embeddings))
    lk = likelihood(model, tok, whole_pieces(), max_len=width, max_tokens=max_tokens)
    lk["split"] = split
    if lk["nats_per_token"] is None:
        lk["reason"] = f"no piece of the {split} split could be encoded"
    timings["likelihood"] = time.perf_counter() - t

    # 2. real excerpts and generations
    t = time.perf_counter()
    rng = np.random.default_rng(seed + 1)
    real_scores, real_pieces = _real_excerpts(corpus, held, n, bars, rng)
    if len(real_scores) < 2:
        raise BadInputError(f"{corpus}: fewer than 2 held-out pieces with notes in the {split} split")
    timings["real_excerpts"] = time.perf_counter() - t

    gen = generate_fn or _generator(model, tok, guidance, meta.get("default_programs"), meta.get("tempo_unknown"))
    t = time.perf_counter()
    sets: dict[str, list[list[int]]] = {}
    for k, mood in enumerate(("any",) + tuple(CANONICAL_MOODS)):
        _say(progress, f"generating {n} x {bars} bars, mood {mood}")
        seqs = [list(map(int, s)) for s in gen(mood, n, seed + 1000 * (k + 1), bars)]
        if len(seqs) != n:
            raise MelodiaError(f"the generator returned {len(seqs)} sequences for mood {mood}, "
                               f"expected {n}")
        sets[mood] = seqs
    timings["generation"] = time.perf_counter() - t

    # 3. decode, validity, features, moods
    t = time.perf_counter()
    cache: dict = {}
    records: dict[str, list[dict]] = {}
    scores: dict[str, list["symusic.Score | None"]] = {}
    for mood, seqs in sets.items():
        records[mood], scores[mood] = [], []
        for ids in seqs:
            rec, score = check_sequence(tok, ids, bars, cache)
            records[mood].append(rec)
            scores[mood].append(score if score is not None and score.note_num() else None)
    validity = validity_summary([r for rs in records.values() for r in rs])
    validity_by = {m: validity_summary(rs) for m, rs in records.items()}

    real_feats = [piece_features(s) for s in real_scores]
    gen_feats = [piece_features(s) for s in scores["any"] if s is not None]
    comparison = compare_sets(real_feats, gen_feats)

    requested = [m for m in CANONICAL_MOODS for _ in scores[m]]
    estimates = [_estimate(s) for m in CANONICAL_MOODS for s in scores[m]]
    mood = mood_control_summary(requested, estimates)
    real_est = [_estimate(s) for s in real_scores]
    any_est = [_estimate(s) for s in scores["any"]]
    mood["reference"] = {"real": _cue_summary(real_est), "unconditional": _cue_summary(any_est)}
    # metre and harmony: real excerpts (cut at bar lines) against every generation, each on its
    # own bar lines; generations are judged against the chord tokens they wrote
    real_metre = [metre_harmony(s) for s in real_scores]
    gen_metre = {m: [metre_harmony(sc, tok.chords(ids) if tok.has_chords else None)
                     for ids, sc in zip(sets[m], scores[m]) if sc is not None] for m in sets}
    metre = {"real": metre_summary(real_metre),
             "generated": metre_summary([f for fs in gen_metre.values() for f in fs]),
             "by_mood": {m: metre_summary(fs) for m, fs in gen_metre.items()},
             "chords_from": "chord tokens" if tok.has_chords else "recognised from the notes"}
    timings["analysis"] = time.perf_counter() - t

    samples: dict[str, list[tuple["symusic.Score", str]]] = {}
    for m in CANONICAL_MOODS:
        picked = [(s, e.mood if e is not None else "none")
                  for s, e in zip(scores[m], estimates[requested.index(m):]) if s is not None]
        samples[m] = picked[:samples_per_mood]

    result: dict[str, Any] = {
        "format": 1,
        "settings": {"model": _shown_path(model_dir), "corpus": _shown_path(corpus), "n": n, "seed": seed,
                     "bars": bars, "max_tokens": max_tokens, "guidance": guidance,
                     "version": __version__,
                     "preset": meta.get("preset"), "threads": _threads()},
        "likelihood": lk,
        "validity": validity,
        "validity_by_mood": validity_by,
        "real_vs_generated": {"n_real": len(real_scores), "real_pieces": real_pieces,
                              "real_split": split, "n_generated": len(gen_feats),
                              "features": comparison,
                              "per_piece": {name: {"real": [f[name] for f in real_feats],
                                                   "generated": [f[name] for f in gen_feats]}
                                            for name in SCALAR_FEATURES}},
        "mood_control": mood,
        "metre": metre,
    }
    t = time.perf_counter()
    _say(progress, f"writing the report to {out}")
    write_report(result, out, real_feats, gen_feats, samples)
    timings["report"] = time.perf_counter() - t
    result["timings"] = {k: round(v, 2) for k, v in timings.items()}
    result["seconds"] = round(time.perf_counter() - t0, 2)
    _write_texts(result, out)  # again, now with the whole run's time
    return _jsonable(result)


def _threads() -> int | None:
    try:
        import torch

        return int(torch.get_num_threads())
    except Exception:  # pragma: no cover
        return None


# ============================================================================================
# CLI
# ============================================================================================

def add_evaluate_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``melodia evaluate``. Example: ``add_evaluate_arguments(sub.add_parser("evaluate"))``."""
    parser.add_argument("--model", default=None,
                        help="model directory (default: the shipped default model)")
    parser.add_argument("--corpus", default=None,
                        help="corpus folder whose test split is held out (default: the corpus "
                             "the model's shards were made from)")
    parser.add_argument("--n", type=int, default=64,
                        help="pieces per set: real excerpts, unconditional and per-mood "
                             "generations (default 64)")
    parser.add_argument("--bars", type=int, default=8, help="bars per piece (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--max-tokens", type=int, default=50_000,
                        help="predicted tokens for the likelihood, 0 = the whole split "
                             "(default 50000)")
    parser.add_argument("--guidance", type=float, default=None,
                        help="classifier-free guidance scale for the generations "
                             "(default: the generator's)")
    parser.add_argument("--out", required=True, help="report folder to write")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser


def cli_evaluate(args: argparse.Namespace) -> int:
    """Run ``melodia evaluate`` from parsed arguments. Example: ``cli_evaluate(parser.parse_args([...]))``."""
    r = evaluate(args.model, args.corpus, n=args.n, seed=args.seed, out_dir=args.out,
                 bars=args.bars, max_tokens=args.max_tokens or None, guidance=args.guidance,
                 progress=not args.quiet)
    lk, v, m = r["likelihood"], r["validity"], r["mood_control"]
    nats = lk.get("nats_per_token")
    print(f"{args.out}/report.md: "
          + (f"{nats:.3f} nats/token, {lk['bits_per_note']:.2f} bits/note; " if nats is not None else "")
          + f"valid {_pct(v['valid_share'])}, exact bars {_pct(v['exact_bars_share'])}; "
          f"mood accuracy {_pct(m['quadrant_accuracy'])} ({r['seconds']:.0f} s)")
    return 0
