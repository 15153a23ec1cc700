"""The parts of a piece: which notes are the melody and which the accompaniment.

A POP909-style piece (melody on program 0, counter-melody 1, piano accompaniment 2, as the
corpus writes POP909 and the shipped model plays by default) is read by program; any other by
register (the highest note at each onset is the melody). What a part plays bar by bar
(:func:`bar_figures`) and the bass at a beat (:func:`beat_bass`) are read here too. Used by the
realism features, the copy check (:mod:`.realism`, :mod:`.copycheck`) and
``scripts/piano_rolls.py``'s bar-by-bar reading.

Example: ``notes.pitch[melody_line(NoteArrays.of_score(score))]  # the tune``
"""
from __future__ import annotations

import numpy as np

from ..music.harmony import SIXTEENTH, beats_in_bar
from ..music.notes import NoteArrays

__all__ = ["ONSET_STEPS", "PartRoles", "bar_figures", "beat_bass", "melody_line", "part_roles"]

#: onsets closer than 1/48 beat are one onset here (sixteenths, triplets and 32nds stay apart)
ONSET_STEPS = 48
_POP909_PROGRAMS = frozenset({0, 1, 2})


class PartRoles:
    """Which notes of a :class:`NoteArrays` play which part: ``melody`` and ``accompaniment``
    (boolean masks), and ``by`` (``"program"`` or ``"register"``). Made by :func:`part_roles`.

    Example: ``roles = part_roles(notes); notes.pitch[roles.melody].max()``
    """

    __slots__ = ("accompaniment", "by", "melody")

    def __init__(self, melody: np.ndarray, accompaniment: np.ndarray, by: str) -> None:
        self.melody, self.accompaniment, self.by = melody, accompaniment, by


def _extreme_per_onset(notes: NoteArrays, mask: np.ndarray, highest: bool) -> np.ndarray:
    """Indices (time order) of the highest (lowest) note of ``mask`` at each onset (1/48 beat)."""
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return idx
    slot = np.rint(notes.onset[idx] * ONSET_STEPS).astype(np.int64)
    pitch = notes.pitch[idx]
    order = np.lexsort((-pitch if highest else pitch, slot))
    _, first = np.unique(slot[order], return_index=True)
    return idx[order[first]]


def part_roles(notes: NoteArrays) -> PartRoles:
    """The parts of a piece. A POP909-style piece (programs among 0, 1, 2 with 0 and at least
    one other: melody 0, counter-melody 1, piano accompaniment 2) by program: melody = program 0,
    accompaniment = the highest program present. Any other piece by register: melody = the
    highest note at each onset (a skyline), accompaniment = the other notes. The bass is the
    accompaniment's lowest line (:func:`melodia.evaluate.realism.realism_features` reads it beat by beat).

    Example: ``part_roles(NoteArrays.of_score(score)).by  # "program"``
    """
    n = notes.pitch.size
    progs = set(notes.program.tolist()) if notes.program is not None else set()
    if 0 in progs and len(progs) >= 2 and progs <= _POP909_PROGRAMS:
        melody = notes.program == 0
        accompaniment = notes.program == max(progs)
        by = "program"
    else:
        melody = np.zeros(n, bool)
        melody[_extreme_per_onset(notes, np.ones(n, bool), highest=True)] = True
        accompaniment = ~melody
        by = "register"
    return PartRoles(melody, accompaniment, by)


def melody_line(notes: NoteArrays, roles: PartRoles | None = None) -> np.ndarray:
    """Indices of the melody (:func:`part_roles`) as one line: its highest note at each onset
    (1/48 beat), in time order.

    Example: ``notes.pitch[melody_line(notes)]  # the tune``
    """
    roles = roles if roles is not None else part_roles(notes)
    return _extreme_per_onset(notes, roles.melody, highest=True)


def bar_figures(notes: NoteArrays, mask: np.ndarray, bars: np.ndarray) -> tuple[list[frozenset], list[frozenset]]:
    """Per bar of ``bars`` (bar lines in beats, the closing one last), what the notes of ``mask``
    play: its rhythm, the set of sixteenth slots (from the bar line) where a note starts, and its
    figure, the set of (sixteenth slot, rank of the pitch among the bar's distinct pitches of
    ``mask``), so a broken-chord pattern keeps its figure when the chord changes. Notes outside
    the bars count in none. A bar equal to an earlier bar repeats its rhythm or figure (the
    realism features' ``accompaniment_rhythm_repeat``, ``accompaniment_figure_repeat``).

    Example: ``rhythm, figure = bar_figures(notes, part_roles(notes).accompaniment, bars)``
    """
    n_bars = len(bars) - 1
    rhythm: list[set] = [set() for _ in range(max(n_bars, 0))]
    figure: list[set] = [set() for _ in range(max(n_bars, 0))]
    idx = np.flatnonzero(mask)
    k, pos = beats_in_bar(notes.onset[idx], np.asarray(bars, np.float64))
    slots = np.rint(pos / SIXTEENTH).astype(np.int64)
    pitch = notes.pitch[idx]
    for b in np.unique(k).tolist():
        if not 0 <= b < n_bars:
            continue
        sel = k == b
        rank = np.searchsorted(np.unique(pitch[sel]), pitch[sel])
        rhythm[b] = set(slots[sel].tolist())
        figure[b] = set(zip(slots[sel].tolist(), rank.tolist()))
    return [frozenset(s) for s in rhythm], [frozenset(s) for s in figure]


def beat_bass(notes: NoteArrays, mask: np.ndarray, beats: np.ndarray) -> np.ndarray:
    """The bass at each time of ``beats``: the index of the lowest note of ``mask`` sounding at
    that time or starting within the beat after it, -1 where none (the realism features read the
    accompaniment's bass so, beat by beat).

    Example: ``notes.pitch[beat_bass(notes, roles.accompaniment, bars[:-1])]  # the bass at each bar line``
    """
    idx = np.flatnonzero(mask)
    on, end, pitch = notes.onset[idx], notes.end[idx], notes.pitch[idx]
    out = np.full(np.size(beats), -1, np.int64)
    for j, b in enumerate(np.asarray(beats, np.float64).ravel().tolist()):
        sound = ((on <= b + 1e-9) & (end > b + 1e-9)) | ((on >= b - 1e-9) & (on < b + 1.0 - 1e-9))
        if sound.any():
            out[j] = idx[sound][np.argmin(pitch[sound])]
    return out
