"""Finishing a piece after sampling: a form's sections made equal, the bars clipped, the
dynamics shaped, and new notes placed into a prompt's score.

Example: ``score = shape_dynamics(clip_to_bars(score, 8), arousal=-0.5)``
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..errors import BadInputError
from ..music.harmony import bar_lines
from ..music.meter import bar_starts, bar_ticks_at
from ..music.moods import mood_valence_arousal
from ..piece import midi_safe
from .config import DYNAMICS, GenerationConfig

if TYPE_CHECKING:  # pragma: no cover
    import symusic  # heavy: loaded on first use

__all__ = ["shape_dynamics", "clip_to_bars", "unify_sections", "place_notes", "replace_span", "dynamics_level",
           "finish_piece", "finish_continuation", "finish_infill", "prompt_end"]


def shape_dynamics(score: "symusic.Score", arousal: float, start_tick: int = 0, phrase_bars: int = 4,
                   contrast: float = 0.6, end_tick: int | None = None) -> "symusic.Score":
    """Velocities that follow a mood's arousal and shape each phrase, applied after sampling.

    The shipped model did not learn loudness from the mood tokens (docs/evidence.md,
    "Dynamics"), so melodia shapes it: the notes
    from ``start_tick`` on (a continuation's new bars), up to ``end_tick`` (an infilled span's
    end) when given, are centred on ``74 + 32 · arousal``
    (happy/tense, arousal +0.5: 90; sad/calm, -0.5: 58), keep ``contrast`` of the model's own
    spread around its mean (melody over accompaniment, accents), and follow a swell over each
    phrase of ``phrase_bars`` bars: 6 softer at its start, 8 louder at about two thirds of it,
    6 softer at its end; the piece's last bar is 6 softer again. Velocities stay in 24..120.

    Example: ``soft = shape_dynamics(score, arousal=-0.5)``
    """
    out = score.copy()
    tpq = out.ticks_per_quarter
    stop = end_tick if end_tick is not None else float("inf")
    notes = [(tr, k) for tr in out.tracks for k in range(len(tr.notes)) if start_tick <= tr.notes[k].time < stop]
    if not notes:
        return out
    vel = np.array([tr.notes[k].velocity for tr, k in notes], np.float64)
    on = np.array([tr.notes[k].time for tr, k in notes], np.float64) / tpq
    bars = bar_lines(out)
    first_bar = int(np.searchsorted(bars, start_tick / tpq + 1e-9, side="right") - 1)
    bar_of = np.clip(np.searchsorted(bars, on + 1e-9, side="right") - 1, 0, len(bars) - 2)
    rel = bar_of - first_bar
    phrase = rel // phrase_bars
    p0 = bars[np.clip(first_bar + phrase * phrase_bars, 0, len(bars) - 1)]
    p1 = bars[np.clip(first_bar + (phrase + 1) * phrase_bars, 0, len(bars) - 1)]
    x = np.clip((on - p0) / np.maximum(p1 - p0, 1e-9), 0.0, 1.0)
    swell = -6.0 + 14.0 * np.sin(np.pi * x ** 1.5)
    swell -= np.where(bar_of == bar_of.max(), 6.0, 0.0)
    target = 74.0 + 32.0 * float(np.clip(arousal, -1.0, 1.0))
    new = np.clip(np.round(target + contrast * (vel - vel.mean()) + swell), 24, 120).astype(int)
    for (tr, k), v in zip(notes, new):
        tr.notes[k].velocity = int(v)
    return out


def clip_to_bars(score: "symusic.Score", bars: int) -> "symusic.Score":
    """``score`` with every note cut at the end of its ``bars``-th bar (notes that start after it
    dropped). A form's last section may repeat a section whose last notes were held into the
    next one; in the piece's last bar they are cut at its end, so the piece keeps its bars.
    Returns ``score`` itself when nothing reaches past the end.

    Example: ``score = clip_to_bars(score, 16)``
    """
    import symusic  # heavy: loaded on first use

    lines = bar_lines(score)
    if len(lines) <= bars:
        return score
    end = int(round(lines[bars] * score.ticks_per_quarter))
    if all(nt.time + nt.duration <= end for tr in score.tracks for nt in tr.notes):
        return score
    out = score.copy()
    for tr in out.tracks:
        kept = [symusic.Note(nt.time, min(nt.duration, end - nt.time), nt.pitch, nt.velocity)
                for nt in tr.notes if nt.time < end]
        tr.notes.clear()
        for nt in kept:
            tr.notes.append(nt)
    return out


def unify_sections(score: "symusic.Score", sections: Sequence[tuple], vary: bool = False) -> "symusic.Score":
    """Make every return of a form's section hold exactly its first section's notes.

    The sampler copies a returning section's ids, so its notes are the same; but a note held
    into the next section is cut where that section repeats its pitch on its track (a MIDI
    file cannot overlap them, see :class:`melodia.piece.Piece`; make those cuts before this) or
    where the piece ends, and what follows differs from one occurrence to the next. Here each note of a section's copied
    bars (all, or all but the last with ``vary``) gets the shortest length it has in any
    occurrence of its letter, so every occurrence is note for note the same. ``sections`` as
    :meth:`GenerationConfig.sections`. Returns a changed copy (or ``score`` with no form).

    Example: ``score = unify_sections(score, cfg.sections(), cfg.vary)``
    """
    if not any(src is not None for *_, src in sections):
        return score
    out = score.copy()
    bar_len = bar_ticks_at(out, 0)  # a form's piece keeps one meter
    groups: dict[str, list[int]] = {}
    for letter, first, _size, _ in sections:
        groups.setdefault(letter, []).append(first)
    size = sections[0][2]
    copied = size - int(vary)
    for firsts in groups.values():
        if len(firsts) < 2 or copied < 1:
            continue
        found: dict[tuple, list] = {}
        for k, first in enumerate(firsts):
            lo, hi = first * bar_len, (first + copied) * bar_len
            for ti, tr in enumerate(out.tracks):
                for nt in tr.notes:
                    if lo <= nt.time < hi:
                        found.setdefault((ti, nt.time - lo, nt.pitch), [None] * len(firsts))[k] = nt
        for notes in found.values():
            if all(nt is not None for nt in notes):
                shortest = min(nt.duration for nt in notes)
                for nt in notes:
                    nt.duration = shortest
    return out


def place_notes(res: "symusic.Score", dec: "symusic.Score", start: int | None, end: int | None, offset: int,
           chords: list) -> None:
    """Copy the notes of ``dec`` from tick ``start`` on into ``res`` at ``offset`` (rescaled to
    ``res``'s resolution; each note into the track of its program, made if missing), cut at
    ``end`` (a tick of ``res``) when given, and the new chords as markers. A new note that
    would start while a note of ``res`` of the same pitch and track still sounds is left out:
    MIDI cannot hold both, and the note already there is kept whole."""
    import symusic  # heavy: loaded on first use

    if start is None:
        return
    scale = res.ticks_per_quarter / dec.ticks_per_quarter
    held: dict[tuple[bool, int, int], int] = {}  # (drum, program, pitch) → tick its note sounds until
    for t in res.tracks:
        for nt in t.notes:
            if nt.time < offset < nt.time + nt.duration:
                k = (t.is_drum, t.program, nt.pitch)
                held[k] = max(held.get(k, 0), nt.time + nt.duration)
    for tr in dec.tracks:
        notes = [nt for nt in tr.notes if nt.time >= start]
        if not notes:
            continue
        target = next((t for t in res.tracks if t.is_drum == tr.is_drum
                       and (tr.is_drum or t.program == tr.program)), None)
        if target is None:
            res.tracks.append(symusic.Track(tr.name, program=tr.program, is_drum=tr.is_drum))
            target = res.tracks[-1]
        for nt in notes:
            on = offset + round((nt.time - start) * scale)
            off = offset + round((nt.time - start + nt.duration) * scale)
            if end is not None:
                if on >= end:
                    continue
                off = min(off, end)
            if on < held.get((target.is_drum, target.program, nt.pitch), -1):
                continue
            target.notes.append(symusic.Note(on, max(1, off - on), nt.pitch, nt.velocity))
        target.notes.sort(key=lambda x: (x.time, x.pitch))
    for tick, name in chords:
        res.markers.append(symusic.TextMeta(offset + round((tick - start) * scale), name))
    res.markers.sort(key=lambda m: m.time)


def replace_span(orig: "symusic.Score", dec: "symusic.Score", start: int | None, t0: int, t1: int,
                 chords: list) -> "symusic.Score":
    """A copy of ``orig`` whose notes and markers starting in ticks ``[t0, t1)`` are replaced by
    the notes of ``dec`` from tick ``start`` on (see :func:`place_notes`), cut at ``t1``.

    Example: ``res = replace_span(clip, decoded, start, t0=7680, t1=15360, chords=[])``
    """
    res = orig.copy()
    for tr in res.tracks:  # the notes that start in the span go
        kept = [nt for nt in tr.notes if not t0 <= nt.time < t1]
        if len(kept) != len(tr.notes):
            tr.notes.clear()
            for nt in kept:
                tr.notes.append(nt)
    marks = [m for m in res.markers if not t0 <= m.time < t1]
    res.markers.clear()
    for m in marks:
        res.markers.append(m)
    place_notes(res, dec, start, t1, t0, chords)
    return res


# ------------------------------------------------------------------ finishing a request's pieces
def dynamics_level(dynamics: str, mood: str | None, arousal: float | None) -> float | None:
    """The arousal :func:`shape_dynamics` follows for a request, or None to keep the model's
    velocities (``dynamics="flat"``, no mood, or a user mood with no place on the plane).

    Example: ``dynamics_level("mood", "sad", None) == -0.5``
    """
    if dynamics not in DYNAMICS:
        raise BadInputError(f"dynamics {dynamics!r}: use one of {', '.join(DYNAMICS)}")
    if dynamics == "flat":
        return None
    if arousal is not None:
        return float(arousal)
    if mood is None or mood == "any":
        return None
    try:
        return float(mood_valence_arousal(mood)[1])
    except BadInputError:  # a user's own mood has no place on the plane
        return None


def finish_piece(score: "symusic.Score", cfg: GenerationConfig, level: float | None) -> "symusic.Score":
    """A new piece's decoded score finished: with a form, clipped to ``cfg.bars`` and its
    sections made equal; the exact ``cfg.tempo`` (the model saw the nearest tempo token); the
    dynamics shaped by ``level`` over phrases of a section (else 4 bars).

    Example: ``score = finish_piece(tok.decode(ids), cfg, dynamics_level("mood", "calm", None))``
    """
    import symusic  # heavy: loaded on first use

    sections = cfg.sections()
    phrase = sections[0][2] if sections else 4
    if sections:  # a repeated last section may hold notes past the end: cut there
        score = unify_sections(midi_safe(clip_to_bars(score, cfg.bars)), sections, cfg.vary)  # cuts first
    if cfg.tempo is not None:
        score.tempos.clear()
        score.tempos.append(symusic.Tempo(0, qpm=float(cfg.tempo)))
    if level is not None:
        score = shape_dynamics(score, level, phrase_bars=phrase)
    return score


def prompt_end(score: "symusic.Score", tpq: int) -> int:
    """Tick (at ``tpq``) where a continuation's new bars start: the line closing the prompt's
    last bar, as the generator places them. Example: ``prompt_end(clip, 480)``."""
    end = bar_starts(score, close=True)[-1]
    return int(round(end * tpq / score.ticks_per_quarter))


def finish_continuation(scores: list["symusic.Score"], prompt: "symusic.Score", level: float | None,
                        include_prompt: bool) -> list["symusic.Score"]:
    """Continuations with their new bars' dynamics shaped by ``level`` (the prompt keeps its own).

    Example: ``scores = finish_continuation(scores, clip, -0.5, include_prompt=True)``
    """
    if level is None:
        return scores
    new_from = prompt_end(prompt, scores[0].ticks_per_quarter) if include_prompt else 0
    return [shape_dynamics(s, level, start_tick=new_from) for s in scores]


def finish_infill(scores: list["symusic.Score"], first: int, last: int, level: float | None) -> list["symusic.Score"]:
    """Infilled clips with the dynamics of bars ``first``..``last`` (from 1) shaped by ``level``.

    Example: ``scores = finish_infill(scores, 5, 8, 0.5)``
    """
    if level is None:
        return scores
    starts = bar_starts(scores[0])
    t0 = starts[first - 1]
    t1 = starts[last] if last < len(starts) else None
    return [shape_dynamics(s, level, start_tick=t0, end_tick=t1) for s in scores]
