"""Does a generated piece copy its training pieces? Verbatim 4-bar windows, found by hashing.

A *window* is the notes starting in 4 consecutive bars of a piece (on its own bar lines), as
the set of ``(onset, pitch)`` of every pitched note: onsets in 1/24 beat from the window's first
bar line, pitches relative to the window's lowest note, so a window moved to another key is
the same window (the default model learns every piece moved to C and writes it back in the key
asked for: a copy comes out transposed). Windows with fewer than :data:`MIN_NOTES` notes are
too bare to call a copy and are not counted. Every window of every training piece is hashed
(BLAKE2b, 8 bytes) into a :class:`CopyIndex`; a generated window is *copied* when its hash is
in the index. The same is done for the melody alone (its highest note per onset:
:func:`melodia.evaluate.parts.melody_line`). The longest verbatim run counts the bars of
consecutive copied windows that continue one training passage (same piece, bars one apart).
:meth:`CopyIndex.closest` finds the training piece that shares most of a piece's windows (a
near-duplicate: the same song under two names).

Example: ``copy_check(generated_scores, CopyIndex.of_corpus(Path("C")))["all"]["copied_share"]  # 0.0``
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..corpus import load_manifest
from ..errors import BadMidiError
from ..music.harmony import bar_lines
from ..music.notes import NoteArrays, tick_score
from .parts import melody_line
from .real import load_piece

if TYPE_CHECKING:
    import symusic

__all__ = ["MIN_NOTES", "ONSET_STEPS", "PARTS", "WINDOW_BARS", "CopyIndex", "copy_check", "window_keys"]

WINDOW_BARS = 4
#: onset grid of a window, steps per beat (sixteenths, 32nds and triplets fall on it)
ONSET_STEPS = 24
#: a window with fewer notes is not counted
MIN_NOTES = 8
#: what a window holds: every pitched note, or the melody line alone
PARTS = ("all", "melody")
_KEEP = 8  # training places kept per window hash (a common pattern recurs: enough for the runs)


def window_keys(score: "symusic.Score", part: str = "all", bars: int = WINDOW_BARS) -> list[bytes | None]:
    """The hash of each ``bars``-bar window of a piece, one per starting bar (bar 0 up to the
    last whole window; bars run to the last note's end), None for a window with fewer than
    :data:`MIN_NOTES` notes. ``part`` is ``"all"`` or ``"melody"``.

    Example: ``window_keys(score)[0]  # b'\\x8a...' (8 bytes)``
    """
    score = tick_score(score)
    notes = NoteArrays.of_score(score)
    lines = bar_lines(score)
    if notes.pitch.size == 0 or len(lines) - 1 < bars:
        return []
    if part == "melody":
        line = melody_line(notes)
        on, pitch = notes.onset[line], notes.pitch[line]
    else:
        on, pitch = notes.onset, notes.pitch
    order = np.argsort(on, kind="stable")
    on, pitch = on[order], pitch[order]
    out: list[bytes | None] = []
    for b in range(len(lines) - bars):
        lo, hi = np.searchsorted(on, [lines[b] - 1e-9, lines[b + bars] - 1e-9])
        if hi - lo < MIN_NOTES:
            out.append(None)
            continue
        steps = np.rint((on[lo:hi] - lines[b]) * ONSET_STEPS).astype(np.int64)
        p = pitch[lo:hi]
        pairs = np.unique(np.stack([steps, p - p.min()], axis=1), axis=0)
        out.append(hashlib.blake2b(pairs.astype(np.int64).tobytes(), digest_size=8).digest())
    return out


class CopyIndex:
    """Every window (:func:`window_keys`) of a set of training pieces: hash -> up to 8 places
    ``(piece number, bar)``, per part. ``pieces`` counts the pieces read, ``windows`` the
    counted windows per part, ``names[number]`` is each piece's name (its song in a corpus).

    Example: ``index = CopyIndex.of_corpus(Path("C")); index.windows["all"]``
    """

    def __init__(self) -> None:
        self.places: dict[str, dict[bytes, list[tuple[int, int]]]] = {p: {} for p in PARTS}
        self.windows = dict.fromkeys(PARTS, 0)
        self.pieces = 0
        self.sources: dict[str, int] = {}
        self.names: list[str] = []

    def add(self, score: "symusic.Score", source: str = "", name: str = "") -> None:
        """Index one piece's windows. Example: ``index.add(score, "pop909", "pop909:017")``."""
        number = self.pieces
        self.pieces += 1
        self.names.append(name)
        self.sources[source] = self.sources.get(source, 0) + 1
        for part in PARTS:
            table = self.places[part]
            for bar, key in enumerate(window_keys(score, part)):
                if key is None:
                    continue
                self.windows[part] += 1
                where = table.setdefault(key, [])
                if len(where) < _KEEP:
                    where.append((number, bar))

    @classmethod
    def of_corpus(cls, corpus: Path, split: str = "train", rows: Iterable[Mapping[str, Any]] | None = None) -> "CopyIndex":
        """The index of a corpus's ``split`` pieces (every source: POP909, music21, a folder);
        unreadable pieces are skipped.

        Example: ``CopyIndex.of_corpus(Path("C")).pieces  # 821``
        """
        index = cls()
        for row in rows if rows is not None else load_manifest(corpus):
            if row.get("split") != split:
                continue
            try:
                index.add(load_piece(corpus, row), str(row.get("source", "")), str(row.get("song", row.get("id", ""))))
            except BadMidiError:
                continue
        return index

    def closest(self, score: "symusic.Score", part: str = "all") -> dict[str, Any]:
        """The indexed piece that shares the most of ``score``'s counted windows: ``windows``
        (counted in ``score``), ``shared`` (of them, found in that one piece), ``share``
        (``shared / windows``, None without a counted window), ``piece`` (its number, None
        when nothing is shared) and ``name``. A window common to more than 8 places is
        credited to the first 8 indexed (a stock figure; a near-duplicate's windows are its own).

        Example: ``index.closest(load_piece(Path("C"), row))["share"]  # 0.98 for pop909:018``
        """
        table = self.places[part]
        keys = [k for k in window_keys(score, part) if k is not None]
        per_piece: dict[int, int] = {}
        for key in keys:
            for number in {n for n, _ in table.get(key, ())}:
                per_piece[number] = per_piece.get(number, 0) + 1
        best = max(per_piece, key=lambda n: (per_piece[n], -n), default=None)
        shared = per_piece[best] if best is not None else 0
        return {"windows": len(keys), "shared": shared, "share": shared / len(keys) if keys else None,
                "piece": best, "name": self.names[best] if best is not None else None}


def _runs(hits: list[list[tuple[int, int]] | None]) -> int:
    """Longest chain of consecutive windows whose places continue one another (same piece, the
    next bar), in windows."""
    best = 0
    prev: dict[tuple[int, int], int] = {}
    for where in hits:
        cur: dict[tuple[int, int], int] = {}
        for piece, bar in where or []:
            cur[(piece, bar)] = prev.get((piece, bar - 1), 0) + 1
        best = max(best, max(cur.values(), default=0))
        prev = cur
    return best


def copy_check(scores: Sequence["symusic.Score"], index: CopyIndex) -> dict[str, Any]:
    """Per part (:data:`PARTS`): how many counted windows the pieces have, how many are found in
    the index (and their share), how many pieces have one (and which: their indices), and the
    longest verbatim run in bars
    (``WINDOW_BARS - 1`` + the longest chain of copied windows that continue one training
    passage; 0 when nothing is copied).

    Example: ``copy_check(generated, index)["melody"]["longest_run_bars"]  # 0``
    """
    out: dict[str, Any] = {"pieces": len(scores), "training_pieces": index.pieces,
                           "training_sources": dict(index.sources), "window_bars": WINDOW_BARS,
                           "min_notes": MIN_NOTES, "onset_steps_per_beat": ONSET_STEPS}
    for part in PARTS:
        table = index.places[part]
        windows = copied = pieces_with = longest = 0
        which: list[int] = []
        for i, score in enumerate(scores):
            keys = window_keys(score, part)
            hits = [table.get(k) if k is not None else None for k in keys]
            found = sum(h is not None for h in hits)
            windows += sum(k is not None for k in keys)
            copied += found
            pieces_with += found > 0
            if found:
                which.append(i)
            chain = _runs(hits)
            longest = max(longest, chain + WINDOW_BARS - 1 if chain else 0)
        out[part] = {"windows": windows, "copied": copied,
                     "copied_share": copied / windows if windows else None,
                     "pieces_with_copy": pieces_with, "copied_pieces": which, "longest_run_bars": longest,
                     "training_windows": index.windows[part]}
    return out
