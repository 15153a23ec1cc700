"""The parts of a piece: which notes are the melody and which the accompaniment.

A POP909-style piece (melody on program 0, counter-melody 1, piano accompaniment 2, as the
corpus writes POP909 and the shipped model plays by default) is read by program; any other by
register (the highest note at each onset is the melody). Used by the realism features and the
copy check (:mod:`.realism`, :mod:`.copycheck`).

Example: ``notes.pitch[melody_line(NoteArrays.of_score(score))]  # the tune``
"""
from __future__ import annotations

import numpy as np

from ..music.notes import NoteArrays

__all__ = ["ONSET_STEPS", "PartRoles", "melody_line", "part_roles"]

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
