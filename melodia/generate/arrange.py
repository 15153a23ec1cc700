"""Finishing a piece after sampling: a form's sections made equal, the bars clipped, the
dynamics shaped, the model's parts given to the instruments asked for, and new notes placed
into a prompt's score.

Example: ``score = shape_dynamics(clip_to_bars(score, 8), arousal=-0.5)``
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..errors import BadInputError
from ..music.harmony import bar_lines
from ..music.instruments import PartPlan, instrument_name, instrument_range
from ..music.meter import bar_starts, bar_ticks_at, meter_at
from ..music.moods import mood_valence_arousal
from ..piece import midi_safe
from ..prepare import read_chord_markers
from .config import DYNAMICS, GenerationConfig

if TYPE_CHECKING:  # pragma: no cover
    import symusic  # heavy: loaded on first use

__all__ = ["shape_dynamics", "clip_to_bars", "unify_sections", "place_notes", "replace_span", "dynamics_level",
           "arrange_parts", "part_warnings", "bass_line", "fit_range", "top_line", "finish_piece", "finish_continuation",
           "finish_infill", "prompt_end", "new_bars_span"]


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


# ------------------------------------------------------------------ instruments and their parts
_Note = tuple  # (time, duration, pitch, velocity) in ticks


def fit_range(notes: Sequence[_Note], program: int) -> list[_Note]:
    """``notes`` moved into ``program``'s range (:func:`melodia.music.instruments.instrument_range`):
    the whole part by the octave shift that leaves the fewest notes outside (the smallest shift
    on a tie), then each note still outside by octaves onto the nearest edge of the range.

    Example: ``fit_range([(0, 480, 84, 80)], 42) == [(0, 480, 72, 80)]``  # a cello plays it an octave down
    """
    lo, hi = instrument_range(program)
    if not notes:
        return []
    pitches = [n[2] for n in notes]
    shift = min(range(-4, 5), key=lambda k: (sum(not lo <= p + 12 * k <= hi for p in pitches), abs(k)))
    out = []
    for t, d, p, v in notes:
        p += 12 * shift
        while p < lo:
            p += 12
        while p > hi:
            p -= 12
        out.append((t, d, p, v))
    return out


def _beat_ticks(score: "symusic.Score", tick: int) -> int:
    """Ticks of the beat the bass keeps at ``tick``: the meter's note value, a dotted one in a
    compound meter (6/8, 9/8, 12/8)."""
    num, den = meter_at(score, tick)
    beat = score.ticks_per_quarter * 4 // den
    return beat * 3 if den == 8 and num % 3 == 0 and num > 3 else beat


def bass_line(score: "symusic.Score", source: Sequence[_Note], program: int, start: int = 0,
              end: int | None = None) -> list[_Note]:
    """A bass line for ``program`` made from ``source`` (the accompaniment's notes, as
    ``(time, duration, pitch, velocity)`` ticks) between ticks ``start`` and ``end``.

    A bass note starts at every chord change (the score's chord markers) and at every source
    onset on a beat (in a bar with neither, at its first source onset). Its pitch is the root
    (or slash bass) of the chord in force, else the lowest source note sounding there, placed in
    the octave just above the bottom of the instrument's range (an electric bass: A♭1-G2); it
    lasts to the next bass note, no longer than the source notes sounding under it (a bar at
    most where none sound). Velocity: the loudest source note sounding, else the source's median.

    Example: ``bass = bass_line(score, acc_notes, 33)``
    """
    if not source:
        return []
    end = max(t + d for t, d, _, _ in source) if end is None else end
    starts = bar_starts(score, max(end, 1), close=True)
    chords = sorted((t, c) for t, c in read_chord_markers(score) if t < end)
    onsets = {t for t, c in chords if c is not None and t >= start}
    bar_of = {}
    for t, _, _, _ in source:
        b = max(0, int(np.searchsorted(starts, t, side="right")) - 1)
        bar_of.setdefault(b, t)
        bar_of[b] = min(bar_of[b], t)
        if (t - starts[b]) % _beat_ticks(score, t) == 0:
            onsets.add(t)
    for b, first in bar_of.items():
        lo_t, hi_t = starts[b], starts[b + 1] if b + 1 < len(starts) else end
        if not any(lo_t <= t < hi_t for t in onsets):
            onsets.add(first)
    lo = instrument_range(program)[0] + 4
    vels = sorted(v for *_, v in source)
    times = sorted(t for t in onsets if start <= t < end)
    out = []
    for k, t in enumerate(times):
        nxt = times[k + 1] if k + 1 < len(times) else end
        sounding = [n for n in source if n[0] <= t < n[0] + n[1]]
        chord = next((c for ct, c in reversed(chords) if ct <= t), None)
        if chord is not None:
            pc = chord.bass if chord.bass is not None else chord.root
        elif sounding:
            pc = min(n[2] for n in sounding) % 12
        else:
            continue
        stop = min(nxt, max(n[0] + n[1] for n in sounding)) if sounding else min(nxt, t + bar_ticks_at(score, t))
        vel = max(n[3] for n in sounding) if sounding else vels[len(vels) // 2]
        out.append((t, max(1, stop - t), lo + (pc - lo) % 12, vel))
    return out


def _bar_of(tick: int, lines: Sequence[int]) -> int:
    return int(np.searchsorted(lines, tick, side="right")) - 1


def _bars_sounding(notes: Sequence[_Note], lines: Sequence[int]) -> set[int]:
    """Bars (from 0) where one of ``notes`` starts or sounds."""
    return {b for t, d, _, _ in notes for b in range(max(_bar_of(t, lines), 0), len(lines) - 1)
            if t < lines[b + 1] and t + max(d, 1) > lines[b]}


def top_line(notes: Sequence[_Note]) -> list[_Note]:
    """The highest voice of ``notes``: at each onset its highest note, held no longer than to the
    next onset. Example: ``top_line([(0, 960, 60, 80), (0, 960, 67, 80), (480, 480, 64, 80)])
    == [(0, 480, 67, 80), (480, 480, 64, 80)]``
    """
    firsts: dict[int, _Note] = {}
    for n in notes:
        if n[0] not in firsts or n[2] > firsts[n[0]][2]:
            firsts[n[0]] = n
    times = sorted(firsts)
    return [(t, min(firsts[t][1], times[k + 1] - t) if k + 1 < len(times) else firsts[t][1], firsts[t][2],
             firsts[t][3]) for k, t in enumerate(times)]


def arrange_parts(score: "symusic.Score", plan: PartPlan | None, start: int = 0,
                  end: int | None = None) -> "symusic.Score":
    """The notes the model wrote with its own parts (``plan.sampled``: program → role) that start
    in ticks ``[start, end)`` given to the instruments asked for (``plan.parts``; see
    :func:`melodia.music.instruments.plan_parts`): each part gets the notes of the roles it
    plays (a melody with ``lead_fill`` also the counter-melody's in bars where the melody has
    no note, and a melody that does not play the accompaniment its :func:`top_line` in bars
    still empty: an intro the model wrote without a melody), a bass part the :func:`bass_line` of the accompaniment (of all the notes where
    the model has none), and every part is moved into its instrument's range by
    :func:`fit_range`. Each part goes to the track of its program (a new one, named after the
    instrument and role, where the score has none); the model's tracks left empty go; notes
    outside ``[start, end)`` and tracks of other programs stay as they were. A part left with
    no notes (the model wrote no counter-melody this time) gets no track (:func:`silent_parts`
    says so). Returns a changed copy (``score`` itself with no plan).

    Example: ``score = arrange_parts(score, plan_parts(["piano", "strings", "bass"], (0, 1, 2)))``
    """
    import symusic  # heavy: loaded on first use

    if plan is None:
        return score
    out = score.copy()
    lines = bar_starts(score, close=True)  # (of the notes as written: the moves below empty tracks)
    stop = float("inf") if end is None else end
    roles = dict(plan.sampled)
    by_role: dict[str, list[_Note]] = {}
    emptied = []
    for tr in out.tracks:
        prog = -1 if tr.is_drum else tr.program
        if prog not in roles or not len(tr.notes):
            continue
        moved = [(n.time, n.duration, n.pitch, n.velocity) for n in tr.notes if start <= n.time < stop]
        if not moved:
            continue
        by_role.setdefault(roles[prog], []).extend(moved)
        kept = [n for n in tr.notes if not start <= n.time < stop]
        tr.notes.clear()
        for n in kept:
            tr.notes.append(n)
        if not kept:
            emptied.append(tr)
    for tr in emptied:
        out.tracks.remove(tr)
    melody_bars = _bars_sounding(by_role.get("melody", ()), lines)
    counter = by_role.get("counter-melody", [])
    fill = [n for n in counter if _bar_of(n[0], lines) not in melody_bars]
    for part in plan.parts:
        if part.role == "bass":
            source = by_role.get("accompaniment") or [n for r, ns in by_role.items() if r != "drums" for n in ns]
            notes = bass_line(out, sorted(source), part.program, start, end)
        else:
            notes = [n for r in part.plays for n in by_role.get(r, [])]
            if part.lead_fill:
                notes += fill
            elif "counter-melody" in part.plays and any(q.lead_fill for q in plan.parts):
                notes = [n for n in notes if n not in fill]  # the fill went to the melody
            if part.role == "melody" and "accompaniment" not in part.plays:
                played = _bars_sounding(notes, lines)  # bars the melody has: the others get the top line
                floor = min((n[2] for n in notes), default=60)  # ... moved up to the melody's register
                notes += [(t, d, p + 12 * max(0, -((p - floor) // 12)), v) for t, d, p, v in
                          top_line([n for n in by_role.get("accompaniment", ()) if _bar_of(n[0], lines) not in played])]
        if not notes:
            continue
        if part.role != "drums":
            notes = fit_range(notes, part.program)
        drum = part.program == -1
        target = next((t for t in out.tracks if t.is_drum == drum and (drum or t.program == part.program)), None)
        if target is None:
            out.tracks.append(symusic.Track(f"{instrument_name(part.program)} ({part.role})",
                                            program=max(part.program, 0), is_drum=drum))
            target = out.tracks[-1]
        for t, d, p, v in notes:
            target.notes.append(symusic.Note(int(t), int(d), int(p), int(v)))
        target.notes.sort(key=lambda x: (x.time, x.pitch))
    return midi_safe(out)


def part_warnings(score: "symusic.Score", plan: PartPlan | None, start: int = 0,
                  end: int | None = None) -> list[str]:
    """What a piece arranged by ``plan`` could not honour: the plan's warnings, and a line for
    each part with no note starting in ticks ``[start, end)`` (the model wrote no counter-melody
    in this piece, say). Example: ``part_warnings(score, plan)  # [] when every part plays``
    """
    if plan is None:
        return []
    stop = float("inf") if end is None else end
    out = list(plan.warnings)
    for part in plan.parts:
        drum = part.program == -1
        if not any(start <= n.time < stop for t in score.tracks if t.is_drum == drum
                   and (drum or t.program == part.program) for n in t.notes):
            what = "accompaniment to make a bass line from" if part.role == "bass" else part.role
            out.append(f"{instrument_name(part.program)} ({part.role}) has no notes: the model wrote no {what} "
                       + ("in the new bars" if start or end is not None else "in this piece"))
    return out


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


def finish_piece(score: "symusic.Score", cfg: GenerationConfig, level: float | None,
                 plan: PartPlan | None = None) -> "symusic.Score":
    """A new piece's decoded score finished: with a form, clipped to ``cfg.bars``; the model's
    parts given to the instruments asked for (``plan``, see :func:`arrange_parts`); with a form, its sections made equal; the exact ``cfg.tempo`` (the model saw
    the nearest tempo token); the dynamics shaped by ``level`` over phrases of a section (else
    4 bars).

    Example: ``score = finish_piece(tok.decode(ids), cfg, dynamics_level("mood", "calm", None))``
    """
    import symusic  # heavy: loaded on first use

    sections = cfg.sections()
    phrase = sections[0][2] if sections else 4
    if sections:  # a repeated last section may hold notes past the end: cut there
        score = midi_safe(clip_to_bars(score, cfg.bars))  # cuts first
    score = arrange_parts(score, plan)
    if sections and cfg.repeat != "sections":  # (with "sections" the model wrote every return anew)
        score = unify_sections(score, sections, cfg.vary)
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


def new_bars_span(score: "symusic.Score", first: int, last: int | None = None) -> tuple[int, int | None]:
    """Ticks ``[start, end)`` of bars ``first``..``last`` (from 1; ``last`` None: to the end,
    end None) of ``score``: where an infill's (or a continuation's) new notes start.

    Example: ``new_bars_span(score, 5, 8) == (7680, 15360)``  # 4/4 at 480 per quarter
    """
    starts = bar_starts(score)
    t1 = starts[last] if last is not None and last < len(starts) else None
    return starts[first - 1], t1


def finish_continuation(scores: list["symusic.Score"], prompt: "symusic.Score", level: float | None,
                        include_prompt: bool, plan: PartPlan | None = None) -> list["symusic.Score"]:
    """Continuations with their new bars' parts given to the instruments asked for (``plan``,
    see :func:`arrange_parts`) and their dynamics shaped by ``level`` (the prompt keeps its own).

    Example: ``scores = finish_continuation(scores, clip, -0.5, include_prompt=True)``
    """
    if level is None and plan is None:
        return scores
    new_from = prompt_end(prompt, scores[0].ticks_per_quarter) if include_prompt else 0
    scores = [arrange_parts(s, plan, start=new_from) for s in scores]
    if level is None:
        return scores
    return [shape_dynamics(s, level, start_tick=new_from) for s in scores]


def finish_infill(scores: list["symusic.Score"], first: int, last: int, level: float | None,
                  plan: PartPlan | None = None) -> list["symusic.Score"]:
    """Infilled clips with the new notes of bars ``first``..``last`` (from 1) given to the
    instruments asked for (``plan``, see :func:`arrange_parts`) and their dynamics shaped by
    ``level``.

    Example: ``scores = finish_infill(scores, 5, 8, 0.5)``
    """
    if level is None and plan is None:
        return scores
    t0, t1 = new_bars_span(scores[0], first, last)
    scores = [arrange_parts(s, plan, start=t0, end=t1) for s in scores]
    if level is None:
        return scores
    return [shape_dynamics(s, level, start_tick=t0, end_tick=t1) for s in scores]
