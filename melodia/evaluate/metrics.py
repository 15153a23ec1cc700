"""Per-piece metrics: pure functions of a ``symusic.Score``, each a number (or a histogram).

Pitched metrics skip drum tracks, rhythm metrics use every note; beats are quarter notes;
onsets closer than 1/16 beat are one onset (:data:`melodia.music.notes.ONSET_MERGE_BEATS`).
Every metric reads the score's :class:`~melodia.music.notes.TickNotes`; :func:`piece_features`
reads them once for all. The definitions and their sources (MusPy, Yang & Lerch 2020) are in
``docs/evaluation.md``.

Example: ``piece_features(score)["pitch_range"]  # 19.0``
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ..music.meter import bar_starts_of
from ..music.notes import TickNotes, onset_groups

if TYPE_CHECKING:
    import symusic

__all__ = [
    "FEATURES", "GROOVE_RESOLUTION", "NOTE_LENGTHS", "NOTE_LENGTH_NAMES", "SCALAR_FEATURES",
    "empty_beat_rate", "groove_consistency", "mean_ioi", "note_length_histogram", "onsets_per_second",
    "piece_features", "pitch_class_entropy", "pitch_class_transition_matrix", "pitch_range", "polyphony",
    "scale_consistency",
]

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


def pitch_class_entropy(score: "symusic.Score") -> float:
    """Shannon entropy, in bits, of the histogram of pitch classes over notes (not durations).

    ``-sum(p_c * log2 p_c)`` over the 12 pitch classes, ``p_c`` = share of pitched notes with
    pitch class c: 0 for one repeated pitch class, log2(12) = 3.585 for all 12 equally.
    NaN for a score with no pitched note (as MusPy).

    Example: ``pitch_class_entropy(c_major_scale_once)  # log2(7) = 2.807``
    """
    return _pitch_class_entropy(TickNotes.of_score(score))


def _pitch_class_entropy(n: TickNotes) -> float:
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
    return _scale_consistency(TickNotes.of_score(score))


def _scale_consistency(n: TickNotes) -> float:
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
    steps. Bars (:mod:`melodia.music.meter`'s rule) run from the first bar to the one holding
    the last onset (MusPy's definition with a fixed grid). 1.0 when every bar has the same
    rhythm; NaN with fewer than two bars.

    Example: ``groove_consistency(four_identical_bars)  # 1.0``
    """
    return _groove_consistency(TickNotes.of_score(score), resolution)


def _groove_consistency(n: TickNotes, resolution: int = GROOVE_RESOLUTION) -> float:
    if n.time.size == 0:
        return math.nan
    last = int(n.time.max())
    bars = np.asarray(bar_starts_of(n.signatures, n.tpq, last + 1, close=True), np.int64)
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
    return _empty_beat_rate(TickNotes.of_score(score))


def _empty_beat_rate(n: TickNotes) -> float:
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
    return _polyphony(TickNotes.of_score(score))


def _polyphony(n: TickNotes) -> float:
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
    return _pitch_range(TickNotes.of_score(score))


def _pitch_range(n: TickNotes) -> float:
    p = n.p_pitch
    return float(p.max() - p.min()) if p.size else math.nan


def onsets_per_second(score: "symusic.Score") -> float:
    """Distinct onsets (all notes; closer than 1/16 beat = one) per second, first onset to last note end.

    Seconds follow the score's tempo map (120 qpm before the first tempo event); the same
    count as :func:`melodia.music.mood_estimator.extract_features`'s ``onsets_per_second``.
    NaN with no note.

    Example: ``onsets_per_second(eight_quarter_notes_at_120_qpm)  # 2.0``
    """
    return _onsets_per_second(TickNotes.of_score(score))


def _onsets_per_second(n: TickNotes) -> float:
    if n.time.size == 0:
        return math.nan
    firsts, _ = onset_groups(n.time, n.tpq)
    start = int(firsts[0])
    end = max(int(n.end.max()), start + max(n.tpq // 4, 1))  # a lone zero-length note: 1/16
    span = float(np.diff(n.seconds(np.array([start, end])))[0])
    return float(firsts.size / max(span, 1e-3))


def mean_ioi(score: "symusic.Score") -> float:
    """Mean inter-onset interval in seconds: the mean gap between consecutive distinct onsets.

    Onsets of all notes, closer than 1/16 beat merged (the group's first onset counts); seconds
    through the tempo map. NaN with fewer than two onsets (Yang & Lerch's ``avg_IOI``).

    Example: ``mean_ioi(quarter_notes_at_120_qpm)  # 0.5``
    """
    return _mean_ioi(TickNotes.of_score(score))


def _mean_ioi(n: TickNotes) -> float:
    firsts, _ = onset_groups(n.time, n.tpq)
    if firsts.size < 2:
        return math.nan
    return float(np.diff(n.seconds(firsts)).mean())


def note_length_histogram(score: "symusic.Score") -> np.ndarray:
    """Shares of pitched notes by nearest standard length (12 bins, :data:`NOTE_LENGTHS`).

    Each note's duration (in beats) goes to the bin whose length is nearest on a log scale
    (a zero-length note to the shortest, anything past 4 beats to the whole note); the bins
    sum to 1. All NaN for a score with no pitched note. Yang & Lerch's ``note_length_hist``.

    Example: ``note_length_histogram(four_quarters)[NOTE_LENGTHS.index(1.0)]  # 1.0``
    """
    return _note_length_histogram(TickNotes.of_score(score))


def _note_length_histogram(n: TickNotes) -> np.ndarray:
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
    return _pitch_class_transition_matrix(TickNotes.of_score(score))


def _pitch_class_transition_matrix(n: TickNotes) -> np.ndarray:
    time, pc = n.p_time, n.p_pitch % 12
    firsts, group_of_tick = onset_groups(time, n.tpq)
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
#: the same metrics on note arrays already read
_ON_NOTES: dict[str, Callable[[TickNotes], Any]] = {
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
    n = TickNotes.of_score(score)
    return {name: _ON_NOTES[name](n) for name in FEATURES}
