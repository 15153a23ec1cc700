"""The notes of a score as numpy arrays: the one place a symusic score is read into arrays.

Two views of the same notes:

- :class:`NoteArrays`: pitched notes in beats (quarter notes) — onset, end, pitch, program;
  drum tracks left out. The harmony and metre figures read it.
  Example: ``NoteArrays.of_score(score).onset[:3]  # array([0. , 0.5, 1. ])``
- :class:`TickNotes`: every note in ticks (int64) — time, duration, end, pitch, velocity and a
  mask of the pitched (non-drum) ones — with the tempo map and the time signatures;
  :meth:`TickNotes.seconds` turns ticks into seconds through the tempo map. The evaluation
  metrics and the mood features read it.
  Example: ``TickNotes.of_score(score).seconds(np.array([0, 480]))  # array([0. , 0.5])``

Notes keep the score's track order, then each track's note order; ``n.pitch[n.pitched]``
is the pitched notes in the order :class:`NoteArrays` has them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .meter import time_signatures

if TYPE_CHECKING:
    import symusic

#: MIDI's 120 qpm before the first tempo event, in microseconds per quarter note
DEFAULT_MSPQ = 500_000


def tick_score(score: "symusic.Score") -> "symusic.Score":
    """The score in tick time (itself when it is already). Example: ``tick_score(s.to("second"))``."""
    return score if "Tick" in str(score.ttype) else score.to("tick")


def _concat(parts: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype)


@dataclass(frozen=True)
class NoteArrays:
    """Pitched notes of a piece in beats: onset, end, pitch, program (drums left out).

    Example: ``NoteArrays.of_score(score)``
    """

    onset: np.ndarray
    end: np.ndarray
    pitch: np.ndarray
    program: np.ndarray | None = None

    @classmethod
    def of_score(cls, score: "symusic.Score") -> "NoteArrays":
        """Read a symusic score: tick times are divided by its TPQ, quarter-note times taken as
        they are, second times converted to ticks first; a negative duration counts as zero.

        Example: ``NoteArrays.of_score(symusic.Score("song.mid")).pitch.size``
        """
        if "Tick" not in str(score.ttype) and "Quarter" not in str(score.ttype):
            score = score.to("tick")
        tpq = float(score.ticks_per_quarter) if "Tick" in str(score.ttype) else 1.0
        on, dur, pitch, prog = [], [], [], []
        for tr in score.tracks:
            if tr.is_drum:
                continue
            a = tr.notes.numpy()
            on.append(np.asarray(a["time"], np.float64) / tpq)
            dur.append(np.asarray(a["duration"], np.float64) / tpq)
            pitch.append(np.asarray(a["pitch"], np.int64))
            prog.append(np.full(len(a["time"]), int(tr.program), np.int64))
        o = _concat(on, np.float64)
        return cls(o, o + np.maximum(_concat(dur, np.float64), 0), _concat(pitch, np.int64),
                   _concat(prog, np.int64))


@dataclass(frozen=True)
class TickNotes:
    """Every note of a score in ticks (int64), with its tempo map and time signatures.

    ``duration`` is as stored; ``end`` is ``time + max(duration, 0)``; ``pitched`` masks the
    notes of non-drum tracks (``p_time``, ``p_end``, ``p_pitch`` select them). ``tpq`` is at
    least 1. ``tempo_time``/``tempo_mspq`` are the tempo events sorted by time (stable);
    ``signatures`` the valid time signatures as ``(tick, numerator, denominator)`` in the
    score's order (:func:`melodia.music.meter.time_signatures`).

    Example: ``n = TickNotes.of_score(score); n.p_pitch.max()``
    """

    tpq: int
    time: np.ndarray
    duration: np.ndarray
    end: np.ndarray
    pitched: np.ndarray
    pitch: np.ndarray
    velocity: np.ndarray
    tempo_time: np.ndarray
    tempo_mspq: np.ndarray
    signatures: tuple[tuple[int, int, int], ...]

    @classmethod
    def of_score(cls, score: "symusic.Score") -> "TickNotes":
        """Read a symusic score (converted to tick time first when it is not).

        Example: ``TickNotes.of_score(symusic.Score("song.mid")).time.size``
        """
        score = tick_score(score)
        times, durs, pitches, vels, mask = [], [], [], [], []
        for track in score.tracks:
            a = track.notes.numpy()
            times.append(np.asarray(a["time"], np.int64))
            durs.append(np.asarray(a["duration"], np.int64))
            pitches.append(np.asarray(a["pitch"], np.int64))
            vels.append(np.asarray(a["velocity"], np.int64))
            mask.append(np.full(len(a["time"]), not track.is_drum))
        time = _concat(times, np.int64)
        duration = _concat(durs, np.int64)
        tempos = score.tempos.numpy()
        order = np.argsort(np.asarray(tempos["time"]), kind="stable")
        return cls(
            tpq=max(int(score.ticks_per_quarter), 1), time=time, duration=duration,
            end=time + np.maximum(duration, 0), pitched=_concat(mask, bool),
            pitch=_concat(pitches, np.int64), velocity=_concat(vels, np.int64),
            tempo_time=np.asarray(tempos["time"], np.int64)[order],
            tempo_mspq=np.asarray(tempos["mspq"], np.float64)[order],
            signatures=tuple(time_signatures(score)))

    @property
    def p_time(self) -> np.ndarray:
        """Onset ticks of the pitched notes. Example: ``n.p_time.min()``."""
        return self.time[self.pitched]

    @property
    def p_end(self) -> np.ndarray:
        """End ticks of the pitched notes. Example: ``n.p_end.max()``."""
        return self.end[self.pitched]

    @property
    def p_pitch(self) -> np.ndarray:
        """Pitches of the pitched notes. Example: ``n.p_pitch.mean()``."""
        return self.pitch[self.pitched]

    def seconds(self, ticks: np.ndarray) -> np.ndarray:
        """Ticks to seconds through the tempo map (120 qpm before the first tempo event; of
        several events at tick 0 the last rules).

        Example: ``n.seconds(np.array([0, 480]))  # array([0. , 0.5]) at 120 qpm``
        """
        ticks = np.asarray(ticks, np.float64)
        t = np.concatenate([[0], self.tempo_time[self.tempo_time > 0]]).astype(np.float64)
        at_zero = self.tempo_mspq[self.tempo_time <= 0]
        mspq = np.concatenate([[at_zero[-1] if at_zero.size else DEFAULT_MSPQ],
                               self.tempo_mspq[self.tempo_time > 0]])
        sec_per_tick = mspq / 1e6 / self.tpq
        cum = np.concatenate([[0.0], np.cumsum(np.diff(t) * sec_per_tick[:-1])])
        i = np.clip(np.searchsorted(t, ticks, side="right") - 1, 0, None)
        return cum[i] + (ticks - t[i]) * sec_per_tick[i]


def onset_ticks(score: "symusic.Score") -> np.ndarray:
    """Onset ticks of every note (drums too) of a tick-time score, track by track, in the
    dtype symusic stores them; an empty int64 array when there is none.

    Example: ``onset_ticks(score) / score.ticks_per_quarter  # onsets in beats``
    """
    parts = [t.notes.numpy()["time"] for t in score.tracks if len(t.notes)]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def span_seconds(score: "symusic.Score") -> tuple[float, float]:
    """(first onset, last note end) in seconds, through symusic's conversion at the score's
    tempo map (120 qpm if none); ``(0.0, 0.0)`` for a score without notes.

    Example: ``span_seconds(score)  # (0.0, 31.5)``
    """
    seconds = score.to("second")
    firsts, lasts = [], []
    for track in seconds.tracks:
        arrays = track.notes.numpy()
        if arrays["time"].size:
            firsts.append(float(arrays["time"].min()))
            lasts.append(float((arrays["time"] + arrays["duration"]).max()))
    return (min(firsts), max(lasts)) if firsts else (0.0, 0.0)


#: Onsets closer than this many beats count as one (a chord, a slightly spread attack).
ONSET_MERGE_BEATS = 1.0 / 16.0


def onset_groups(times: np.ndarray, tpq: int) -> tuple[np.ndarray, np.ndarray]:
    """(first tick of each onset group, group index of each distinct tick) for onset ticks.

    Distinct ticks closer than :data:`ONSET_MERGE_BEATS` to the previous one join its group.

    Example: ``onset_groups(np.array([0, 10, 480]), 480)[0]  # array([  0, 480])``
    """
    ticks = np.unique(times)
    if ticks.size == 0:
        return ticks, ticks
    merge = max(int(tpq * ONSET_MERGE_BEATS), 1)
    new_group = np.concatenate([[True], np.diff(ticks) >= merge])
    return ticks[new_group], np.cumsum(new_group) - 1
