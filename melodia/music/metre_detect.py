"""The metre a MIDI file's notes are in, against the one it declares.

Many MIDI files declare a time signature their music is not in: 11 of 20 POP909 files copied
into a plain folder say 1/4 and the others 2/4, while every POP909 song is in 4/4 or 3/4.
:func:`detect_metre` reads the bar from the notes on the quarter-note beats of the file's own
tick grid, three ways:

* **accents on the downbeat** — per beat, the notes that start on it (count, velocity, length),
  a new bass note, and a chord change (:func:`melodia.music.harmony.chord_of_weights` per
  beat); each feature over its mean, summed. For a bar of ``B`` beats and each phase, the
  share by which the beats that would open bars stand out from the rest;
* **repetition** — the autocorrelation of the onset pattern (sixteenths) at one and two bars;
* **half bars** — for 4 beats, how much the first beat outweighs the third (what tells 4/4
  from 2/4).

:func:`metre_correction` is the policy: a declared 1/4 or 2/4 (a bar of at most two quarter
notes) is replaced when the notes clearly say 3/4 or 4/4; anything else is left as declared.
:func:`set_metre` writes the detected metre into a copy of the score (the bar rule is
:mod:`melodia.music.meter`'s). Measured on POP909: docs/evidence.md, "Declared metres".

Example:
    >>> est = metre_correction(score)            # None: keep the declared metre
    >>> fixed = set_metre(score, est.numerator, est.denominator, pickup=est.phase) if est else score
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .harmony import best_phase, chord_of_weights, grid_share
from .meter import ticks_per_beat, time_signatures
from .notes import TickNotes, tick_score

if TYPE_CHECKING:
    import symusic

__all__ = ["MetreEstimate", "SHORT_DECLARATIONS", "declared_metre", "detect_metre", "metre_correction",
           "set_metre"]

#: declarations too short to be the music's bar (POP909 writes them): checked and replaced
SHORT_DECLARATIONS = ((1, 4), (2, 4))
#: fewer beats with onsets than this: too little music to tell a metre
MIN_BEATS = 16
#: an onset within this many beats of a quarter-note beat is on it
BEAT_TOLERANCE = 0.125
#: the winning bar's score must beat the other's by this much (accent share + autocorrelation)
CLEAR_MARGIN = 0.15
#: in 4/4 the first beat must outweigh the third by this share of the mean accent
HALF_BAR_MARGIN = 0.15


@dataclass(frozen=True)
class MetreEstimate:
    """What the notes say: ``numerator``/``denominator`` (quarter-note beats: 3/4 or 4/4),
    ``phase`` (beats from tick 0 to the first bar line the music implies, ``0..numerator-1``),
    ``clear`` (3 against 4 beats decided by at least :data:`CLEAR_MARGIN`), ``whole`` (3/4, or
    a 4/4 whose first beat outweighs its third by :data:`HALF_BAR_MARGIN`: not two bars of
    2/4) and the figures it was decided on.

    Example: ``MetreEstimate(4, 4, 0, True, True, {"score_3": 0.21, "score_4": 0.74})``
    """

    numerator: int
    denominator: int
    phase: int
    clear: bool
    whole: bool
    evidence: dict[str, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """``"4/4"``. Example: ``est.name``."""
        return f"{self.numerator}/{self.denominator}"


def declared_metre(score: "symusic.Score") -> tuple[int, int]:
    """The time signature in force at most of the score's note onsets (4/4 with none).

    Example: ``declared_metre(pop909_file)  # (2, 4)``
    """
    sigs = time_signatures(tick_score(score))
    if not sigs:
        return 4, 4
    notes = TickNotes.of_score(score)
    if notes.time.size == 0:
        return sigs[0][1], sigs[0][2]
    ticks = np.array([t for t, _, _ in sigs])
    which = np.clip(np.searchsorted(ticks, notes.time, side="right") - 1, 0, len(sigs) - 1)
    most = Counter(which.tolist()).most_common(1)[0][0]
    return sigs[most][1], sigs[most][2]


def _beat_accents(on: np.ndarray, end: np.ndarray, pitch: np.ndarray, vel: np.ndarray) -> np.ndarray:
    """Accent of every quarter-note beat (onsets, velocity, length, new bass, chord change),
    each feature over its mean, summed; times in beats, velocities 0..1."""
    n_beats = int(np.ceil(end.max())) + 1
    k = np.round(on).astype(np.int64)
    on_beat = np.abs(on - k) <= BEAT_TOLERANCE
    kb, dur = k[on_beat], np.minimum(end - on, 4.0)[on_beat]
    feats = [np.bincount(kb, minlength=n_beats), np.bincount(kb, weights=vel[on_beat], minlength=n_beats),
             np.bincount(kb, weights=dur, minlength=n_beats)]
    bass = np.zeros(n_beats)
    chroma = np.zeros((n_beats, 12))
    for b in range(n_beats):
        sounding = (on < b + 1) & (end > b)
        if not sounding.any():
            continue
        low = np.flatnonzero(sounding)[np.argmin(pitch[sounding])]
        if abs(on[low] - b) <= BEAT_TOLERANCE:
            bass[b] = min(end[low] - on[low], 4.0)
        overlap = np.minimum(end[sounding], b + 1) - np.maximum(on[sounding], b)
        chroma[b] = np.bincount(pitch[sounding] % 12, weights=overlap, minlength=12)
    chords = [chord_of_weights(c) if c.sum() > 0 else None for c in chroma]
    change = np.array([float(b > 0 and chords[b] is not None and chords[b] != chords[b - 1])
                       for b in range(n_beats)])
    feats += [bass, change]
    total = np.zeros(n_beats)
    for f in feats:
        f = np.asarray(f, np.float64)
        if f.mean() > 0:
            total += f / f.mean()
    return total


def _autocorrelation(on: np.ndarray, lag_beats: int) -> float:
    """Correlation of the sixteenth-note onset pattern (onsets in beats) with itself ``lag_beats`` later."""
    x = np.bincount(np.round(on * 4).astype(np.int64)).astype(np.float64)
    lag = 4 * lag_beats
    if x.size <= lag + 16:
        return 0.0
    a, b = x[:-lag] - x.mean(), x[lag:] - x.mean()
    denom = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denom) if denom > 0 else 0.0


def detect_metre(score: "symusic.Score") -> MetreEstimate | None:
    """The bar the notes imply, 3/4 or 4/4 on the file's quarter-note beats, with its phase;
    None when there is too little music (under :data:`MIN_BEATS` beats with onsets) or the
    onsets do not sit on a sixteenth grid, even one shifted by a constant (an unquantised
    performance). A grid shifted by a constant (POP909's files start a little after their
    first beat) is read on its own beats (:func:`melodia.music.harmony.best_phase`); ``phase``
    counts the file's own beats.

    Example: ``detect_metre(score).name  # '4/4'``
    """
    notes = TickNotes.of_score(score)
    if not notes.pitched.any():
        return None
    on = notes.p_time / notes.tpq
    shift = 0.0
    if grid_share(on) < 0.6:
        shift, share = best_phase(on)
        if not share >= 0.6:
            return None
    on = on + shift
    end = notes.p_end / notes.tpq + shift
    beats_used = np.unique(np.round(on[np.abs(on - np.round(on)) <= BEAT_TOLERANCE]).astype(np.int64))
    if beats_used.size < MIN_BEATS:
        return None
    s = _beat_accents(on, end, notes.p_pitch, notes.velocity[notes.pitched] / 127.0)
    mean = s.mean()
    evidence: dict[str, float] = {}
    best: dict[int, tuple[float, int]] = {}
    for bar in (3, 4):
        contrast = [s[phase::bar].mean() / mean - 1.0 for phase in range(bar)]
        phase = int(np.argmax(contrast))
        periodic = 0.5 * (_autocorrelation(on, bar) + _autocorrelation(on, 2 * bar))
        best[bar] = (contrast[phase] + periodic, phase)
        evidence[f"accent_{bar}"] = round(float(contrast[phase]), 4)
        evidence[f"repeat_{bar}"] = round(periodic, 4)
        evidence[f"score_{bar}"] = round(float(best[bar][0]), 4)
    bar = 4 if best[4][0] >= best[3][0] else 3
    phase = best[bar][1]
    clear = abs(best[4][0] - best[3][0]) >= CLEAR_MARGIN
    whole = True
    if bar == 4:
        half = float((s[phase::4].mean() - s[(phase + 2) % 4::4].mean()) / mean)
        evidence["half_bar"] = round(half, 4)
        whole = half >= HALF_BAR_MARGIN
    evidence["grid_shift"] = round(shift, 4)
    return MetreEstimate(bar, 4, int(round(phase - shift)) % bar, bool(clear), bool(whole), evidence)


def metre_correction(score: "symusic.Score") -> MetreEstimate | None:
    """The metre to read ``score`` in instead of the one it declares, or None to keep it: only
    a declared 1/4 or 2/4 (:data:`SHORT_DECLARATIONS`, the bar covering most notes) is
    replaced, and only when :func:`detect_metre` is clear about 3 against 4 beats; a 2/4 also
    needs a whole 4/4 bar (its first beat outweighing its third: else it may be a real 2/4).
    Made-up 3/4 and 4/4 pieces, and any file declaring them, are never changed.

    Example: ``metre_correction(pop909_file).name  # '4/4'``
    """
    declared = declared_metre(score)
    if declared not in SHORT_DECLARATIONS:
        return None
    est = detect_metre(score)
    if est is None or not est.clear or (declared == (2, 4) and not est.whole):
        return None
    return est


def set_metre(score: "symusic.Score", numerator: int, denominator: int, pickup: int = 0) -> "symusic.Score":
    """A copy of a tick-time score whose only time signature is ``numerator/denominator``;
    with ``pickup`` (beats, ``0 < pickup < numerator``) a short first bar of that many beats
    (``pickup/denominator``) comes before it, so the notes stay where they are and the bar lines
    fall where the music puts them.

    Example: ``set_metre(score, 4, 4, pickup=1)  # a 1/4 bar, then 4/4 from beat 1``
    """
    import symusic  # heavy: a native library, loaded on first use

    out = score.copy()
    sigs = [symusic.TimeSignature(0, pickup, denominator)] if 0 < pickup < numerator else []
    sigs.append(symusic.TimeSignature(pickup * ticks_per_beat(denominator, score.ticks_per_quarter) if sigs else 0,
                                      numerator, denominator))
    out.time_signatures = symusic.core.TimeSignatureTickList(sigs)
    return out
