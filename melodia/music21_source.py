"""music21's corpus and works: the score read from music21's parse, on padded bar lines, cached.

music21 is heavy (seconds to import, minutes to parse its whole corpus), so it is imported
inside the functions that need it, and each exported work is cached as a MIDI file keyed on
the source, music21's version and :data:`M21_CONVERTER`. Why melodia reads music21's notes
itself rather than using music21's MIDI export: docs/corpus.md, "Sources".

Example: ``score = music21_to_score(music21.corpus.parse("bach/bwv66.6"))``
"""
from __future__ import annotations

import bisect
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .fileio import write_bytes, write_json
from .prepare import TPQ

if TYPE_CHECKING:
    import music21
    import symusic

M21_CONVERTER = 4  # bump when music21_to_score changes: the export cache is keyed on it


#: music21 corpus folders that hold folk tunes (ABC collections); ``bach/`` holds the chorales and
#: every other folder (Palestrina, Monteverdi, Josquin's ABC motets, Beethoven …) is "classical"
FOLK_COLLECTIONS = frozenset({"airdsAirs", "essenFolksong", "miscFolk", "nottingham-dataset", "oneills1850",
                              "ryansMammoth"})


def music21_style(rel: str) -> str:
    """The style of a work of music21's corpus, by the folder it lies in (``rel``: its path
    relative to :func:`music21_corpus_dir`): "folk", "chorale" (``bach/``) or "classical".

    Example: ``music21_style("ryansMammoth/ryansMammoth_1.abc")  # 'folk'``
    """
    top = str(rel).replace("\\", "/").split("/", 1)[0]
    if top in FOLK_COLLECTIONS:
        return "folk"
    return "chorale" if top == "bach" else "classical"


def music21_corpus_dir() -> Path:
    """The folder of music21's bundled corpus. Example: ``music21_corpus_dir() / "bach"``."""
    import music21.corpus  # heavy: loaded on first use

    return Path(music21.corpus.__file__).parent


def measure_offset_map(part) -> "Callable[[float], float]":
    """Where each offset of a music21 part moves so that every measure starts on a bar line.

    A score writes a pickup as a short first measure under a full time signature, so a MIDI
    file that keeps the offsets puts every later bar line in the middle of a real bar. melodia
    pads instead: a short *first* measure (an anacrusis) gets a rest before it, any other short
    measure (the half bar before a repeat, a short last bar) a rest after it, so the measure
    after it starts on a bar line of the time signature in force. Returns ``f(offset) -> new
    offset`` (quarter notes); ``f`` is the identity for a score with no short measure.

    Example: ``f = measure_offset_map(music21.corpus.parse("bach/bwv1.6").parts[0]); f(1.0)  # 4.0``
    """
    starts, shifts = [], []
    total = 0.0
    measures = list(part.getElementsByClass("Measure"))
    for i, m in enumerate(measures):
        full = float(m.barDuration.quarterLength)
        nxt = float(measures[i + 1].offset) if i + 1 < len(measures) else None
        length = (nxt - float(m.offset)) if nxt is not None else float(m.duration.quarterLength)
        pad = full - length if 1e-6 < full - length < full else 0.0
        if i == 0:
            total += pad  # the pickup: rest before it
            starts.append(float(m.offset))
            shifts.append(total)
        else:
            starts.append(float(m.offset))
            shifts.append(total)
            total += pad  # a short bar: rest after it
    if not any(shifts) and not total:
        return lambda x: x

    def move(x: float) -> float:
        k = bisect.bisect_right(starts, x + 1e-9) - 1
        return x + (shifts[k] if k >= 0 else shifts[0])

    return move


def music21_to_score(s: "music21.stream.Score") -> "symusic.Score":
    """A parsed music21 score → ``symusic.Score`` at 480 ticks per quarter.

    Reads music21's flat note lists and joins tied notes (faster than music21's own MIDI export,
    with the same notes: docs/corpus.md, "Sources"). Repeats are not expanded (music21's export
    expands them, and fails on the few works whose repeat marks are malformed): a tune is
    learned as notated, once. Every measure starts on a bar line (:func:`measure_offset_map`).
    Velocity is music21's explicit one where a note has it, else 80.

    Example: ``score = music21_to_score(music21.corpus.parse("bach/bwv66.6"))``
    """
    import symusic  # heavy: a native library, loaded on first use
    from music21 import instrument  # heavy: loaded on first use

    sc = symusic.Score(TPQ)
    parts = list(s.parts) if s.hasPartLikeStreams() else [s]
    move = measure_offset_map(parts[0])

    def tick(offset: float) -> int:
        return int(round(move(float(offset)) * TPQ))

    _add_tempos_and_meters(sc, parts, tick)
    for i, part in enumerate(parts):
        insts = [i for i in part.flatten().getElementsByClass(instrument.Instrument) if i.midiProgram is not None]
        program = insts[0].midiProgram if insts else 0
        track = symusic.Track(str(part.partName or f"part {i + 1}"), program=int(program))
        for on, end, vel, p in _tied_notes(part):
            t0 = tick(on)
            # the end moves with the measure the note ends in (a tie over a padded bar line
            # stretches; the rest sits between the bars, not inside the note)
            t1 = int(round((move(end - 1e-6) + 1e-6) * TPQ))
            track.notes.append(symusic.Note(t0, max(1, t1 - t0), int(p), max(1, min(127, vel))))
        if len(track.notes):
            sc.tracks.append(track)
    return sc


def _add_tempos_and_meters(sc: "symusic.Score", parts: list, tick: Callable[[float], int]) -> None:
    """The parts' metronome marks (one per tick) and the first part's time signatures; a meter
    or tempo at offset 0 opens the padded first bar (tick 0)."""
    import symusic  # heavy: a native library, loaded on first use
    from music21 import meter, tempo  # heavy: loaded on first use

    def meta_tick(offset: float) -> int:
        return 0 if float(offset) < 1e-9 else tick(offset)

    seen_tempo = set()
    for part in parts:
        for mm in part.flatten().getElementsByClass(tempo.MetronomeMark):
            q = mm.getQuarterBPM()
            t = meta_tick(mm.offset)
            if q and t not in seen_tempo:
                seen_tempo.add(t)
                sc.tempos.append(symusic.Tempo(t, qpm=float(q)))
    sc.tempos.sort()
    for ts in parts[0].flatten().getElementsByClass(meter.TimeSignature):
        sc.time_signatures.append(symusic.TimeSignature(meta_tick(ts.offset), ts.numerator, ts.denominator))


def _tied_notes(part) -> list[list]:
    """A part's pitched notes as ``[onset, end, velocity, midi pitch]`` (quarter notes), tied
    notes joined into one, grace notes and unpitched percussion left out."""
    open_ties: dict[int, list] = {}  # midi pitch → [onset, end, velocity] of a tied note
    notes: list[list] = []
    for el in part.flatten().notes:
        dur = float(el.quarterLength)
        if dur <= 0:  # grace notes
            continue
        on = float(el.offset)
        members = el.notes if el.isChord else (el,)
        vol = el.volume.velocity if el.hasVolumeInformation() else None
        for n in members:
            if not hasattr(n, "pitch"):
                continue  # unpitched percussion
            p = n.pitch.midi
            tie = (n.tie or el.tie).type if (n.tie or el.tie) is not None else None
            prev = open_ties.get(p)
            if tie in ("continue", "stop") and prev is not None and abs(prev[1] - on) < 1e-6:
                prev[1] = on + dur
                if tie == "stop":
                    del open_ties[p]
                continue
            rec = [on, on + dur, int(vol) if vol else 80, p]
            notes.append(rec)
            if tie == "start":
                open_ties[p] = rec
    return notes


def music21_export(path: str, cache_dir: Path) -> tuple[bytes, bool]:
    """MIDI bytes of a music21 work (cached in ``cache_dir``) and whether it carries a real
    tempo mark.

    Example: ``data, tempo_known = music21_export(".../bach/bwv66.6.mxl", Path("cache"))``
    """
    import music21  # heavy: loaded on first use

    key = hashlib.sha1(f"{path}|{os.path.getsize(path)}|{music21.__version__}|{M21_CONVERTER}".encode()).hexdigest()[:16]
    cached = cache_dir / f"{Path(path).stem}-{key}.mid"
    meta = cached.with_suffix(".json")
    if cached.exists() and meta.exists():
        return cached.read_bytes(), bool(json.loads(meta.read_text())["tempo_known"])
    from music21 import converter, stream

    s = converter.parse(path, forceSource=True, storePickle=False)
    if isinstance(s, stream.Opus):
        s = s.scores[0] if len(s.scores) else s
    score = music21_to_score(s)
    tempo_known = len(score.tempos) > 0
    data = score.dumps_midi()
    write_bytes(cached, data)
    write_json(meta, {"source": path, "tempo_known": tempo_known})
    return data, tempo_known
