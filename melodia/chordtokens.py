"""Chord tokens in a piece's token ids: where a score's chords fall (its chord markers, or the
chords recognised from its notes) and their ``Chord_*`` tokens written in at those places.
Training shards and generation contexts both use it.

Example: ``ids = insert_chords(tok, base_ids, chord_positions(score, tok.remi))``
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from .music.harmony import Chord, NoteArrays, bar_lines, recognise_chords
from .prepare import read_chord_markers

if TYPE_CHECKING:  # pragma: no cover
    import symusic


def chord_positions(score: "symusic.Score", remi, shift: int = 0) -> list[tuple[int, int, "Chord | None"]]:
    """A score's chords as ``(bar index, REMI position in the bar, chord)``: its chord markers
    (as the corpus writes them) or, with none, the chords recognised from its notes
    (:func:`melodia.music.harmony.recognise_chords`), moved by ``shift`` semitones.

    Example: ``chord_positions(symusic.Score("C/pieces/x.mid"), tok.remi)[:2]``
    """
    tpq = score.ticks_per_quarter
    chords = [(t / tpq, c) for t, c in read_chord_markers(score)]
    bars = bar_lines(score)
    if not chords:
        notes = NoteArrays.of_score(score)
        if notes.onset.size == 0:
            return []
        chords = recognise_chords(notes, bars)
    per_beat = int(remi.config.max_num_pos_per_beat)
    dens = sorted((float(ts.time) / tpq, int(ts.denominator)) for ts in score.time_signatures) or [(0.0, 4)]
    out = []
    for beat, ch in chords:
        b = int(np.clip(np.searchsorted(bars, beat + 1e-9, side="right") - 1, 0, len(bars) - 2))
        den = [d for t, d in dens if t <= beat + 1e-9]
        pos = int(round((beat - bars[b]) * per_beat * (den[-1] if den else 4) / 4))
        out.append((b, pos, ch.transposed(shift) if ch is not None and shift else ch))
    return out


class ChordVocabulary(Protocol):
    """What :func:`insert_chords` needs of a tokenizer (a :class:`~melodia.tokenizer.MelodiaTokenizer`
    has it; named here so this module need not import the tokenizer, which imports it).

    Example: ``isinstance(tok.chord_id(None), int)``
    """

    remi: Any

    def chord_id(self, chord: Chord | None) -> int: ...


def insert_chords(tok: ChordVocabulary, ids: "np.ndarray", chords: Sequence[tuple]) -> "np.ndarray":
    """REMI base ids with a chord token at each chord change: after the ``Position`` where the
    chord starts (and after a ``Tempo`` right behind it), before its notes; where no note starts
    at that position a ``Position`` is added for it.

    Example: ``ids = insert_chords(tok, base_ids, chord_positions(score, tok.remi))``
    """
    if not chords:
        return ids
    remi = tok.remi
    names = [remi[int(i)] if int(i) < len(remi.vocab) else "" for i in ids]
    pending: dict[int, list] = {}
    for b, pos, ch in chords:
        pending.setdefault(b, []).append((pos, tok.chord_id(ch)))
    for v in pending.values():
        v.sort()
    out: list[int] = []
    bar = -1
    queue: list = []

    def flush(before: int) -> None:  # chords at positions where no note starts
        while queue and queue[0][0] < before:
            pos, cid = queue.pop(0)
            out.extend([remi.vocab[f"Position_{pos}"], cid] if f"Position_{pos}" in remi.vocab else [])

    n = len(ids)
    k = 0
    while k < n:
        name = names[k]
        if name == "Bar_None":
            flush(1 << 30)
            bar += 1
            queue = list(pending.get(bar, []))
            out.append(int(ids[k]))
            k += 1
            continue
        if name.startswith("Position_"):
            pos = int(name.split("_")[1])
            flush(pos)
            out.append(int(ids[k]))
            k += 1
            if k < n and names[k].startswith("Tempo_"):
                out.append(int(ids[k]))
                k += 1
            if queue and queue[0][0] == pos:
                out.append(queue.pop(0)[1])
            continue
        out.append(int(ids[k]))
        k += 1
    flush(1 << 30)
    return np.asarray(out, dtype=np.int64)
