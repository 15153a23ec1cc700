"""Phrase sections: where a piece's phrases start and which return (POP909's structure labels),
as MIDI markers in a corpus piece and as ``SECTION_*`` tokens in its token ids.

A phrase label is a letter: upper case for a melodic phrase (the same letter = the same or
similar music returns), lower case for a phrase without melody, ``i`` the intro, ``o`` the
outro, ``X``/``x`` a phrase that matches nothing else (Dai, Zhang and Dannenberg 2020; data:
``data/pop909-structure``). The vocabulary keeps :data:`SECTION_LETTERS`; rarer letters are
mapped (:func:`section_letter`: ``E``… → ``D``, other lower case → ``b``). A piece carries a
marker ``Section_<letter>`` on the bar line where each phrase starts; the token stream
carries ``SECTION_<letter>`` right after that bar's ``Bar`` token, before its time signature,
position and chord (docs/ARCHITECTURE.md, "One training sequence").

Example: ``score = add_section_markers(score, [(0, "i"), (4, "A")])``
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .errors import BadInputError
from .music.meter import bar_starts

if TYPE_CHECKING:  # pragma: no cover
    import symusic

#: the section letters of the vocabulary, in token order: melodic phrases A-D, X (matches no
#: other phrase), phrases without melody b and x, intro i, outro o
SECTION_LETTERS = ("A", "B", "C", "D", "X", "b", "x", "i", "o")
SECTION_TOKEN = "SECTION_"   # token name prefix: SECTION_A
SECTION_MARKER = "Section_"  # MIDI marker text prefix: Section_A
_PHRASE = re.compile(r"([A-Za-z])(\d+)")


def section_letter(label: str) -> str:
    """The vocabulary letter of a phrase label: itself when in :data:`SECTION_LETTERS`, else an
    upper-case letter is ``D`` (a later melodic section: POP909 has 22 ``E`` and no later
    letter in the first annotation) and a lower-case one ``b`` (a phrase without melody).

    Example: ``section_letter("E")  # 'D'``
    """
    if label in SECTION_LETTERS:
        return label
    if len(label) != 1 or not label.isalpha():
        raise BadInputError(f"{label!r} is no phrase label (one letter)")
    return "D" if label.isupper() else "b"


def section_token_names() -> list[str]:
    """The section control tokens in id order. Example: ``section_token_names()[0]  # 'SECTION_A'``"""
    return [SECTION_TOKEN + s for s in SECTION_LETTERS]


def parse_phrases(text: str, name: str = "phrase labels") -> list[tuple[str, int]]:
    """A phrase string (``i4A4B8``: a letter and a length in bars per phrase) as
    ``[(letter, bars)]``, letters as written; BadInputError naming ``name`` when malformed.

    Example: ``parse_phrases("i4A4B8")  # [('i', 4), ('A', 4), ('B', 8)]``
    """
    s = "".join(text.split())
    if not s or _PHRASE.sub("", s):
        raise BadInputError(f"{name}: not a phrase string like 'i4A8B8' ({s[:40]!r})")
    out = [(m.group(1), int(m.group(2))) for m in _PHRASE.finditer(s)]
    if any(n <= 0 for _, n in out):
        raise BadInputError(f"{name}: a phrase of 0 bars")
    return out


def phrase_starts(phrases: Sequence[tuple[str, int]], first_bar: int, bars: int) -> list[tuple[int, str]]:
    """Where each phrase starts, as ``[(bar index, vocabulary letter)]``, when the first phrase
    starts at bar ``first_bar`` of a piece of ``bars`` bars: a phrase starting before bar 0
    that runs into it starts at 0; phrases starting at or after ``bars`` are dropped.

    Example: ``phrase_starts([("i", 4), ("A", 8)], 1, 20)  # [(1, 'i'), (5, 'A')]``
    """
    out: list[tuple[int, str]] = []
    bar = first_bar
    for label, n in phrases:
        start, bar = bar, bar + n
        if bar <= 0 or start >= bars:
            continue
        out.append((max(start, 0), section_letter(label)))
    return out


def add_section_markers(score: "symusic.Score", sections: Sequence[tuple[int, str]]) -> "symusic.Score":
    """A copy of ``score`` with a marker ``Section_<letter>`` on the bar line of each
    ``(bar index, letter)`` (bar 0 = the first bar; bars past the piece's end are dropped); the
    score itself when ``sections`` is empty. Other markers (chords) stay.

    Example: ``score = add_section_markers(score, [(0, "i"), (4, "A")])``
    """
    import symusic  # heavy: a native library, loaded on first use

    if not sections:
        return score
    starts = bar_starts(score)
    out = score.copy()
    for bar, letter in sections:
        if 0 <= bar < len(starts):
            out.markers.append(symusic.TextMeta(int(starts[bar]), SECTION_MARKER + section_letter(letter)))
    out.markers.sort(key=lambda m: m.time)
    return out


def read_section_markers(score: "symusic.Score") -> list[tuple[int, str]]:
    """The sections written by :func:`add_section_markers`: ``[(bar index, letter)]`` (the bar
    whose line the marker stands on or falls in; other markers are skipped).

    Example: ``read_section_markers(symusic.Score("C/pieces/x.mid"))  # [(0, 'i'), (4, 'A')]``
    """
    marks = [(int(m.time), m.text[len(SECTION_MARKER):]) for m in score.markers
             if m.text.startswith(SECTION_MARKER) and m.text[len(SECTION_MARKER):] in SECTION_LETTERS]
    if not marks:
        return []
    starts = np.asarray(bar_starts(score, end=max(int(score.end()), max(t for t, _ in marks) + 1)))
    return [(int(np.searchsorted(starts, t, side="right") - 1), s) for t, s in marks]


def insert_sections(ids: "np.ndarray", sections: Sequence[tuple[int, int]], bar_id: int) -> "np.ndarray":
    """REMI base ids (chord tokens allowed) with a section token id right after the ``Bar``
    token of each ``(bar index, token id)``; bars the ids do not reach are dropped.

    Example: ``ids = insert_sections(ids, [(0, tok.section_id("i"))], tok.remi.vocab["Bar_None"])``
    """
    ids = np.asarray(ids, dtype=np.int64)
    if not len(sections):
        return ids
    bars = np.flatnonzero(ids == bar_id)
    at = {int(bars[b]) + 1: sid for b, sid in sections if 0 <= b < len(bars)}
    if not at:
        return ids
    where = sorted(at)
    return np.insert(ids, where, [at[w] for w in where])
