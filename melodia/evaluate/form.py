"""Returning sections: how much of a section's melody comes back when its letter returns.

A phrase letter that returns (POP909's ``A4 B8 A4``, a generated ``--form AABA``) is meant to
bring back "the same or similar music". :func:`section_match` measures it on the melody: the
share of the first section's melody notes, each as (onset in sixteenths from the section's
first bar line, pitch), that the returning section plays too, at the same place in its own
bars. :func:`section_matches` does it for every returning section of a piece, given its bar
lines and its sections; :func:`marker_sections` reads the sections of a corpus piece (its
``Section_`` markers). The melody is :func:`melodia.evaluate.parts.melody_line` (program 0 of a
POP909-style piece, else the highest note at each onset). docs/evaluation.md, "Returning
sections", gives the figures.

Example: ``section_matches(notes, bar_lines(score), [("A", 0, 4), ("A", 4, 4)])[0].match  # 1.0``
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..errors import BadInputError
from ..music.notes import NoteArrays
from ..sections import SECTION_LETTERS, read_section_markers
from .parts import melody_line

if TYPE_CHECKING:
    import symusic

__all__ = ["MATCH_BY", "RETURNING_LETTERS", "SectionMatch", "marker_sections", "match_summary",
           "section_match", "section_melody", "section_matches"]

#: how :func:`section_match` compares: "notes" (onset and pitch: the headline figure) or
#: "rhythm" (onsets only)
MATCH_BY = ("notes", "rhythm")
#: letters whose return is meant as the same music: the melodic phrases (``X`` matches
#: nothing by definition; lower case has no melody; ``i``/``o`` are intro and outro)
RETURNING_LETTERS = tuple(s for s in SECTION_LETTERS if s.isupper() and s != "X")
STEPS_PER_BEAT = 4  # the grid: sixteenths of a quarter note


@dataclass(frozen=True)
class SectionMatch:
    """One returning section against the first section of its letter (:func:`section_matches`):
    ``letter``; ``first`` and ``start`` the first bar (from 0) of the first and of the returning
    section; ``bars`` the bars compared (the shorter of the two); ``notes`` the first section's
    melody notes in those bars; ``match`` the share found again (None when ``notes`` is 0).

    Example: ``SectionMatch("A", 0, 8, 4, 16, 0.75).match  # 0.75``
    """

    letter: str
    first: int
    start: int
    bars: int
    notes: int
    match: float | None


def section_melody(notes: NoteArrays, melody: np.ndarray, lines: np.ndarray, start: int,
                   bars: int) -> np.ndarray:
    """The melody notes (indices ``melody`` of ``notes``) that start in bars ``start`` ..
    ``start + bars - 1`` (bar lines ``lines`` in beats, the closing line last) as an
    ``(n, 2)`` int array of (onset in sixteenths from bar ``start``'s line, pitch), unique rows
    in order. Bars past the last line are empty.

    Example: ``section_melody(notes, melody_line(notes), bar_lines(score), 4, 4)[:2]  # [[0, 67], [2, 69]]``
    """
    lines = np.asarray(lines, np.float64)
    if start < 0 or bars < 1 or start >= len(lines) - 1:
        return np.zeros((0, 2), np.int64)
    lo, hi = lines[start], lines[min(start + bars, len(lines) - 1)]
    on = notes.onset[melody]
    keep = (on >= lo - 1e-9) & (on < hi - 1e-9)
    steps = np.rint((on[keep] - lo) * STEPS_PER_BEAT).astype(np.int64)
    pairs = np.stack([steps, notes.pitch[melody][keep].astype(np.int64)], axis=1)
    return np.unique(pairs, axis=0) if len(pairs) else pairs.reshape(0, 2)


def section_match(first: Sequence, again: Sequence, by: str = "notes") -> float | None:
    """The share of ``first``'s notes found in ``again`` (each a sequence of (onset on the
    section's sixteenth grid, pitch), as :func:`section_melody` gives them); None when
    ``first`` is empty. ``by`` is one of :data:`MATCH_BY`: "notes" compares onset and pitch
    (the headline), "rhythm" onsets only.

    Example: ``section_match([(0, 60), (4, 62), (8, 64), (12, 65)], [(0, 60), (4, 62), (8, 64), (12, 67)])  # 0.75``
    """
    if by not in MATCH_BY:
        raise BadInputError(f"section_match: by={by!r}; use one of {', '.join(MATCH_BY)}")
    a = np.asarray(first, np.int64).reshape(-1, 2)
    b = np.asarray(again, np.int64).reshape(-1, 2)
    if not len(a):
        return None
    if by == "rhythm":
        return float(np.isin(np.unique(a[:, 0]), b[:, 0]).mean())
    a = np.unique(a, axis=0)
    return float(np.isin(a[:, 0] * 256 + a[:, 1], b[:, 0] * 256 + b[:, 1]).mean())


def section_matches(notes: NoteArrays, lines: np.ndarray, sections: Sequence[tuple[str, int, int]],
                    by: str = "notes", letters: Sequence[str] = RETURNING_LETTERS) -> list[SectionMatch]:
    """Every returning section of a piece against the first section of its letter, on the
    melody (:func:`melodia.evaluate.parts.melody_line`). ``lines``: the piece's bar lines in
    beats, the closing line last (:func:`melodia.music.harmony.bar_lines`); ``sections``:
    ``(letter, first bar from 0, bars)`` in order; only ``letters`` are compared (default
    :data:`RETURNING_LETTERS`). Two sections of unequal length compare their first bars, as
    many as the shorter has; bars past ``lines`` hold no notes.

    Example: ``[m.match for m in section_matches(notes, lines, [("A", 0, 4), ("B", 4, 4), ("A", 8, 4)])]  # [0.75]``
    """
    melody = melody_line(notes)
    first: dict[str, tuple[int, int]] = {}
    out = []
    for letter, start, bars in sections:
        if letter not in letters:
            continue
        if letter not in first:
            first[letter] = (start, bars)
            continue
        f_start, f_bars = first[letter]
        n = min(bars, f_bars)
        a = section_melody(notes, melody, lines, f_start, n)
        b = section_melody(notes, melody, lines, start, n)
        out.append(SectionMatch(letter, f_start, start, n, len(a), section_match(a, b, by)))
    return out


def marker_sections(score: "symusic.Score", bars: int) -> list[tuple[str, int, int]]:
    """A corpus piece's sections from its ``Section_`` markers
    (:func:`melodia.sections.read_section_markers`) as ``(letter, first bar, bars)``: each runs
    to the next marker, the last to bar ``bars`` (the piece's bar count). [] without markers.

    Example: ``marker_sections(symusic.Score("C/pieces/x.mid"), 73)[:2]  # [('i', 1, 4), ('A', 5, 4)]``
    """
    marks = sorted(read_section_markers(score))
    ends = [b for b, _ in marks[1:]] + [bars]
    return [(s, b, e - b) for (b, s), e in zip(marks, ends) if e > b]


def match_summary(values: Sequence[float | None]) -> dict:
    """``{"n", "mean", "median", "share_ge_0_9"}`` of the matches that are not None (None
    figures when there are none).

    Example: ``match_summary([1.0, 0.5, None])  # {'n': 2, 'mean': 0.75, 'median': 0.75, 'share_ge_0_9': 0.5}``
    """
    v = np.asarray([x for x in values if x is not None], np.float64)
    if not v.size:
        return {"n": 0, "mean": None, "median": None, "share_ge_0_9": None}
    return {"n": int(v.size), "mean": float(v.mean()), "median": float(np.median(v)),
            "share_ge_0_9": float((v >= 0.9 - 1e-9).mean())}
