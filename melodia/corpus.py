"""Stage 1: music sources → a clean, labelled, split corpus.

``melodia corpus build SOURCE… --out C`` reads

* folders of ``.mid`` / ``.midi`` files (recursively; a ``labels.csv`` at the folder's root and
  sub-folder names label moods and tags, see :mod:`melodia.moods`),
* ``music21:`` — music21's bundled corpus: its ABC collections are split tune by tune and
  parsed by symusic directly (fast); the other works (Humdrum, MusicXML, RomanText) are
  exported to MIDI by music21 once and cached in ``~/.cache/melodia`` (music21 needs about half
  an hour of two cores for all of them; later builds take seconds),
* a POP909 folder (``NNN/NNN.mid`` + ``beat_midi.txt``, ``key_audio.txt``,
  ``chord_midi.txt``), recognised by its layout and read on its annotated beats
  (:func:`read_pop909`): bar 1 at the first downbeat, tempo from the beat spacing, the
  annotated key and chords.

Every piece keeps the bar lines of its score (a pickup is padded to a full bar:
:func:`measure_offset_map`, :func:`fix_abc_pickup`), a MIDI file gets a grid check
(:func:`grid_check`), and every piece carries its chords as MIDI markers
(:func:`add_chord_markers`: annotated, or recognised per half bar). Every piece is normalised
(480 ticks per quarter; empty tracks dropped; tracks that share a
program moved to a free program of the same General MIDI family so melody and accompaniment
stay apart), labelled (mood, key, tags), deduplicated by note content, and given a split
(train/valid/test) by a hash of its *song*, so no song is on both sides. It writes

* ``C/pieces/<id>.mid`` — the normalised piece (the tokenizer reads these),
* ``C/manifest.jsonl`` — one JSON object per piece (see :data:`MANIFEST_FIELDS`),
* ``C/report.json`` — counts and every skipped file with its reason.

A re-run processes only new or changed source files (size and modification time are
remembered in ``C/state.json``). Broken files never stop a build: they are reported.

Example:
    >>> summary = build_corpus(["music21:", "data/pop909"], "C")
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from .errors import BadInputError, BadMidiError, MelodiaError
from .midifile import check_score, load_score

TPQ = 480
READER = 2  # bump when how a source is read changes: a re-run then reprocesses every file
SPLIT_SHARES = (("train", 90), ("valid", 5), ("test", 5))
MIDI_SUFFIXES = (".mid", ".midi", ".smf", ".kar")
MUSIC21_OTHER = (".krn", ".mxl", ".xml", ".musicxml", ".rntxt")
MANIFEST_FIELDS = (
    "id", "path", "file", "sha256", "source", "song", "split", "duration_s", "notes", "bars",
    "key", "key_source", "tempo", "tempo_known", "time_signature", "programs", "mood",
    "mood_source", "valence", "arousal", "tags", "chords", "chord_source", "progressions", "grid16",
    "grid_shift", "off_grid", "quantized", "pickup",
)
MIN_NOTES = 8  # fewer is no piece to learn from


# --------------------------------------------------------------------------- units of work
@dataclass
class Unit:
    """One source file to process (a MIDI file, an ABC book, a music21 work, a POP909 song)."""

    kind: str          # "midi" | "abc" | "music21" | "pop909"
    path: str          # absolute path of the file
    display: str       # what the manifest and report call it (relative, readable)
    root: str = ""     # folder the labels are relative to (kind "midi")
    rel: str = ""      # path relative to root
    cost: float = 1.0  # rough relative processing time, slow units first


@dataclass
class UnitResult:
    """What processing a unit gave: manifest rows and skipped entries."""

    unit: Unit
    rows: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)


def _music21_corpus_dir() -> Path:
    import music21.corpus

    return Path(music21.corpus.__file__).parent


def discover(sources: Iterable[str]) -> list[Unit]:
    """Expand source arguments into units of work.

    Example:
        >>> units = discover(["music21:", "my_midi/"])
    """
    units: list[Unit] = []
    for src in sources:
        if src.strip().lower() in ("music21:", "music21"):
            root = _music21_corpus_dir()
            from music21 import corpus as m21corpus

            for p in sorted(str(x) for x in m21corpus.getCorePaths()):
                rel = os.path.relpath(p, root)
                if p.endswith(".abc"):
                    units.append(Unit("abc", p, f"music21:{rel}", cost=1.0))
                elif p.endswith(MUSIC21_OTHER):
                    units.append(Unit("music21", p, f"music21:{rel}", cost=20.0))
            continue
        root = Path(src).expanduser()
        if not root.exists():
            raise BadInputError(f"{src}: no such file or folder")
        if root.is_file():
            units.append(Unit("midi", str(root.resolve()), str(root), str(root.parent.resolve()), root.name))
            continue
        if _is_pop909(root):
            for song in sorted(p for p in root.iterdir() if p.is_dir() and re.fullmatch(r"\d{3}", p.name)):
                mid = song / f"{song.name}.mid"
                if mid.exists():
                    units.append(Unit("pop909", str(mid.resolve()), f"pop909/{song.name}/{mid.name}", cost=3.0))
            continue
        for p in sorted(root.rglob("*")):
            if p.is_file() and p.suffix.lower() in MIDI_SUFFIXES:
                rel = p.relative_to(root).as_posix()
                units.append(Unit("midi", str(p.resolve()), f"{root.name}/{rel}", str(root.resolve()), rel))
    return units


def _is_pop909(root: Path) -> bool:
    return (root / "001" / "001.mid").exists() and (root / "001" / "key_audio.txt").exists()


# --------------------------------------------------------------------------- reading
@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence C-level stdout and stderr (abc2midi inside symusic prints warnings for most tunes)."""
    fds = []
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
            fds.append(stream.fileno())
        except (OSError, ValueError, AttributeError):
            pass
    saved = [os.dup(fd) for fd in fds]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in fds:
            os.dup2(null, fd)
        yield
    finally:
        for fd, keep in zip(fds, saved):
            os.dup2(keep, fd)
            os.close(keep)
        os.close(null)


def split_abc(text: str) -> list[tuple[str, str]]:
    """Split an ABC book into ``(reference number, tune text)`` pairs, file header prepended.

    Example:
        >>> split_abc("X:1\\nT:A\\nK:C\\nCDE|\\n\\nX:2\\nT:B\\nK:G\\nGAB|\\n")[1][0]
        '2'
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    header: list[str] = []
    tunes: list[tuple[str, list[str]]] = []
    for line in lines:
        if line.startswith("X:"):
            tunes.append((line[2:].strip(), [line]))
        elif tunes:
            tunes[-1][1].append(line)
        elif line.startswith("%%") or (len(line) > 1 and line[1] == ":" and line[0] in "LMQ"):
            header.append(line)  # file-wide directives and defaults
    return [(ref, "\n".join([body[0], *header, *body[1:]]) + "\n") for ref, body in tunes]


def _abc_field(tune: str, name: str) -> str | None:
    m = re.search(rf"^{name}:(.*)$", tune, re.M)
    return m.group(1).strip() if m else None


# --------------------------------------------------------------------------- normalising
def normalise(score: "symusic.Score", pop909: bool = False) -> "symusic.Score":
    """Resample, drop empty tracks, fix POP909's 1/4 meters, keep tracks on distinct programs.

    Example:
        >>> clean = normalise(load_score("a.mid"))
    """
    import symusic

    if score.ticks_per_quarter != TPQ:
        score = score.resample(TPQ, min_dur=1)
    out = symusic.Score(TPQ)
    out.tempos = score.tempos
    tsigs = [ts for ts in score.time_signatures]
    if pop909 or not tsigs:
        # POP909 writes 1/4 where the real meter is unknown; 4/4 is the right default.
        tsigs = [ts for ts in tsigs if not (ts.numerator == 1 and ts.denominator == 4)]
        if not tsigs or tsigs[0].time > 0:
            tsigs.insert(0, symusic.TimeSignature(0, 4, 4))
    out.time_signatures = symusic.core.TimeSignatureTickList(tsigs) if tsigs else out.time_signatures
    if not out.tempos or out.tempos[0].time > 0:
        out.tempos.insert(0, symusic.Tempo(0, qpm=120.0))
    out.key_signatures = score.key_signatures
    used: set[int] = set()
    for tr in score.tracks:
        if len(tr.notes) == 0:
            continue
        tr = tr.copy()
        tr.controls = symusic.core.ControlChangeTickList()
        tr.pitch_bends = symusic.core.PitchBendTickList()
        tr.pedals = symusic.core.PedalTickList()
        if not tr.is_drum:
            tr.program = _free_program(tr.program, used)
            used.add(tr.program)
        out.tracks.append(tr)
    return out


def _free_program(program: int, used: set[int]) -> int:
    """The program itself if free, else the next free one in its GM family of eight."""
    if program not in used:
        return program
    family = program - program % 8
    for p in list(range(program + 1, family + 8)) + list(range(family, program)):
        if p not in used:
            return p
    return program  # family full: share (the tokenizer merges them)


def content_hash(score: "symusic.Score") -> str:
    """Hash of the notes (onset in beats, pitch, duration, program) — equal music, equal hash.

    Example: ``content_hash(score)[:12]``
    """
    import numpy as np

    h = hashlib.sha256()
    tpq = score.ticks_per_quarter
    parts = []
    for tr in score.tracks:
        a = tr.notes.numpy()
        arr = np.stack([a["time"] * 480 // tpq, a["pitch"], a["duration"] * 480 // tpq,
                        np.full(len(a["time"]), -1 if tr.is_drum else tr.program)], axis=1)
        parts.append(arr.astype(np.int64))
    allnotes = np.concatenate(parts) if parts else np.zeros((0, 4), np.int64)
    order = np.lexsort(allnotes.T[::-1])
    h.update(allnotes[order].tobytes())
    return h.hexdigest()


def song_key(unit: Unit, tune_title: str | None = None) -> str:
    """What counts as 'the same song' for the split (title, or path without version marks).

    Example: ``song_key(Unit("midi", "/a/b_v2.mid", "x/b_v2.mid"))`` → ``'midi:x/b'``
    """
    if tune_title:
        t = re.sub(r"[^a-z0-9]+", " ", tune_title.lower()).strip()
        t = re.sub(r"^(the|a|an) ", "", t)
        return f"title:{t}"
    if unit.kind == "pop909":
        return "pop909:" + Path(unit.path).parent.name
    stem = re.sub(r"([ _-]?(v|version|take|alt)\s*\d+|\s*\(\d+\))$", "", Path(unit.display).with_suffix("").as_posix(), flags=re.I)
    return f"{unit.kind}:{stem}"


def split_of(song: str) -> str:
    """Deterministic split from a song key (sha1 bucket out of 100).

    Example: ``split_of("title:drowsy maggie")`` → ``'train'``
    """
    bucket = int(hashlib.sha1(song.encode("utf-8")).hexdigest()[:8], 16) % 100
    acc = 0
    for name, share in SPLIT_SHARES:
        acc += share
        if bucket < acc:
            return name
    return "train"


# --------------------------------------------------------------------------- one unit
M21_CONVERTER = 4  # bump when music21_to_score changes: the export cache is keyed on it


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
    import bisect

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
            starts.append(float(m.offset)); shifts.append(total)
        else:
            starts.append(float(m.offset)); shifts.append(total)
            total += pad  # a short bar: rest after it
    if not any(shifts) and not total:
        return lambda x: x

    def move(x: float) -> float:
        k = bisect.bisect_right(starts, x + 1e-9) - 1
        return x + (shifts[k] if k >= 0 else shifts[0])

    return move


def music21_to_score(s) -> "symusic.Score":
    """A parsed music21 score → ``symusic.Score`` at 480 ticks per quarter.

    music21's own MIDI export spends most of its time in ``stripTies`` (15 s of 20 on a
    Beethoven quartet movement) and writes 10,080 ticks per quarter; reading the flat note
    lists and joining tied notes here gives the same notes 10-100x faster. Repeats are not
    expanded (music21's export expands them, and fails on the few works whose repeat marks are
    malformed): a tune is learned as notated, once.
    Velocity is music21's explicit one where a note has it, else 80.

    Example: ``score = music21_to_score(music21.corpus.parse("bach/bwv66.6"))``
    """
    import symusic
    from music21 import instrument, meter, tempo

    sc = symusic.Score(TPQ)
    parts = list(s.parts) if s.hasPartLikeStreams() else [s]
    move = measure_offset_map(parts[0])

    def tick(offset: float) -> int:
        return int(round(move(float(offset)) * TPQ))

    def meta_tick(offset: float) -> int:  # a meter or tempo at 0 opens the padded first bar
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
    for i, part in enumerate(parts):
        insts = [i for i in part.flatten().getElementsByClass(instrument.Instrument) if i.midiProgram is not None]
        program = insts[0].midiProgram if insts else 0
        track = symusic.Track(str(part.partName or f"part {i + 1}"), program=int(program))
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
        for on, end, vel, p in notes:
            t0 = tick(on)
            # the end moves with the measure the note ends in (a tie over a padded bar line
            # stretches; the rest sits between the bars, not inside the note)
            t1 = int(round((move(end - 1e-6) + 1e-6) * TPQ))
            track.notes.append(symusic.Note(t0, max(1, t1 - t0), int(p), max(1, min(127, vel))))
        if len(track.notes):
            sc.tracks.append(track)
    return sc


def _music21_export(path: str, cache_dir: Path) -> tuple[bytes, bool]:
    """MIDI bytes of a music21 work (cached) and whether it carries a real tempo mark."""
    import music21

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
    from .fileio import write_bytes, write_json

    write_bytes(cached, data)
    write_json(meta, {"source": path, "tempo_known": tempo_known})
    return data, tempo_known


POP909_SNAP = 0.05  # POP909 onsets/ends this close (beats) to a sixteenth are put on it


def _beats_of(times: "np.ndarray", beat_times: "np.ndarray") -> "np.ndarray":
    """Seconds → beat index through annotated beat times, extrapolated at both ends."""
    import numpy as np

    k = np.arange(len(beat_times), dtype=np.float64)
    q = np.interp(times, beat_times, k)
    first = (beat_times[1] - beat_times[0]) or 0.5
    last = (beat_times[-1] - beat_times[-2]) or 0.5
    q = np.where(times < beat_times[0], (times - beat_times[0]) / first, q)
    return np.where(times > beat_times[-1], k[-1] + (times - beat_times[-1]) / last, q)


def read_pop909(mid_path: str, display: str | None = None) -> tuple["symusic.Score", str | None, list]:
    """A POP909 song on its annotated beats: ``(score, key, chords)``.

    Beat k of ``beat_midi.txt`` becomes quarter note k counted from the first downbeat (column
    3, or column 2 for the triple-metre songs, whose column 2 marks every third beat), which
    starts a bar of 4/4 (3/4). Notes before it form a pickup, padded with a rest to a full bar.
    The tempo follows the beat spacing (a tempo change at a bar where it moves by more than
    2%). Onsets and ends within :data:`POP909_SNAP` beats of a sixteenth are put on it (the
    files are played, not quantised). Key: the first segment of ``key_audio.txt``; chords:
    ``chord_midi.txt``, each change at the nearest half beat, ``[(beat, Chord|None)]``.

    Example: ``score, key, chords = read_pop909("data/pop909/001/001.mid")``
    """
    import numpy as np
    import symusic

    from .harmony import quantize_times

    folder = Path(mid_path).parent
    name = display or str(mid_path)
    try:
        rows = [ln.split() for ln in (folder / "beat_midi.txt").read_text(encoding="utf-8").splitlines() if ln.strip()]
        beats = np.array([[float(x) for x in r[:3]] for r in rows])
    except (OSError, ValueError, IndexError) as e:
        raise BadMidiError(name, f"unreadable beat_midi.txt ({e})") from None
    if len(beats) < 8 or np.any(np.diff(beats[:, 0]) <= 0):
        raise BadMidiError(name, "beat_midi.txt has too few beats or times that do not increase")
    twos = np.flatnonzero(beats[:, 1] == 1)
    triple = len(twos) > 2 and np.median(np.diff(twos)) == 3
    bar_len = 3 if triple else 4
    downs = twos if triple else np.flatnonzero(beats[:, 2] == 1)
    first_down = int(downs[0]) if len(downs) else 0
    src = load_score(Path(mid_path).read_bytes(), name).to("second")
    times = beats[:, 0]
    chord_rows = _pop909_chord_rows(folder)
    first_down += _pop909_phase(src, times, first_down, bar_len, chord_rows)
    onsets = [np.asarray(t.notes.numpy()["time"], np.float64) for t in src.tracks]
    earliest = min((float(o.min()) for o in onsets if len(o)), default=float(times[first_down]))
    lead = first_down - float(_beats_of(np.array([earliest]), times)[0])  # beats before bar 1
    pad_bars = int(np.ceil(max(lead - POP909_SNAP, 0.0) / bar_len))
    origin = first_down - pad_bars * bar_len  # beat index that becomes quarter 0

    def quarters(t: "np.ndarray") -> "np.ndarray":
        q = _beats_of(np.asarray(t, np.float64), times) - origin
        snapped = quantize_times(q)
        q = np.where(np.abs(snapped - q) <= POP909_SNAP, snapped, q)
        return np.maximum(q, 0.0)

    out = symusic.Score(TPQ)
    out.time_signatures.append(symusic.TimeSignature(0, bar_len, 4))
    # tempo per bar from the beat spacing
    last_qpm = None
    for b in range(-pad_bars, (len(times) - first_down) // bar_len + 1):
        k0 = first_down + b * bar_len
        a, z = max(k0, 0), min(k0 + bar_len, len(times) - 1)
        if z - a < 1:
            continue
        qpm = 60.0 * (z - a) / (times[z] - times[a])
        if last_qpm is None or abs(qpm / last_qpm - 1) > 0.02:
            out.tempos.append(symusic.Tempo(max(0, (k0 - origin) * TPQ) if last_qpm is not None else 0, qpm=float(qpm)))
            last_qpm = qpm
    for tr in src.tracks:
        a = tr.notes.numpy()
        if len(a["time"]) == 0:
            continue
        on = np.round(quarters(a["time"]) * TPQ).astype(np.int64)
        end = np.round(quarters(np.asarray(a["time"]) + np.asarray(a["duration"])) * TPQ).astype(np.int64)
        new = symusic.Track(tr.name, program=tr.program, is_drum=tr.is_drum)
        for t0, t1, p, v in zip(on, np.maximum(end, on + TPQ // 24), a["pitch"], a["velocity"]):
            new.notes.append(symusic.Note(int(t0), int(t1 - t0), int(p), int(v)))
        out.tracks.append(new)
    chords: list = []
    for start, chord in chord_rows:
        beat = float(np.round(quarters(np.array([start]))[0] * 2) / 2)
        if chords and abs(chords[-1][0] - beat) < 1e-9:
            chords[-1] = (beat, chord)
        elif not chords or chords[-1][1] != chord:
            chords.append((beat, chord))
    return out, _pop909_key(mid_path), chords


def _pop909_chord_rows(folder: Path) -> list:
    """``chord_midi.txt`` as ``[(start seconds, Chord|None)]`` ([] when missing)."""
    from .harmony import parse_chord

    rows = []
    try:
        lines = (folder / "chord_midi.txt").read_text(encoding="utf-8").splitlines()
    except OSError:
        return rows
    for ln in lines:
        parts = ln.split("\t")
        if len(parts) < 3:
            continue
        try:
            rows.append((float(parts[0]), parse_chord(parts[2].strip())))
        except (ValueError, MelodiaError):
            continue
    return rows


def _pop909_phase(src, times, first_down: int, bar_len: int, chord_rows: list) -> int:
    """Beats to move an annotated first downbeat that the music contradicts.

    In about a fifth of POP909's songs (measured on every ninth song) the downbeat flags sit
    one beat off the music: most chord changes fall on beats 2 and 4 of the annotated bars, and
    the lowest notes are no more often on the annotated beat 1 than on any other. When under
    half of the chord changes fall on the annotated beat 1 (or, in 4/4, beat 3), the phase
    moves to the beat with the most changes (of beats 2 and 4, the one where the bass lands
    longest). Returns 0 to keep the annotation.
    """
    import numpy as np

    from .harmony import NoteArrays, bass_on_downbeat

    changes = [c for c in chord_rows if c[1] is not None]
    if len(changes) < 8:
        return 0
    pos = np.round(_beats_of(np.array([t for t, _ in changes]), times) - first_down).astype(np.int64) % bar_len
    counts = np.bincount(pos, minlength=bar_len)
    strong = counts[0] + (counts[2] if bar_len == 4 else 0)
    if strong >= 0.5 * counts.sum():
        return 0
    if bar_len != 4:
        return int(np.argmax(counts))
    on, end, pitch = [], [], []
    for tr in src.tracks:
        a = tr.notes.numpy()
        on.append(_beats_of(np.asarray(a["time"], np.float64), times))
        end.append(_beats_of(np.asarray(a["time"], np.float64) + np.asarray(a["duration"], np.float64), times))
        pitch.append(np.asarray(a["pitch"], np.int64))
    notes = NoteArrays(np.concatenate(on) - first_down, np.concatenate(end) - first_down, np.concatenate(pitch))
    lo = float(notes.onset.min()) if notes.onset.size else 0.0
    hi = float(notes.end.max()) if notes.end.size else 4.0

    def bass(phi: int) -> float:
        bars = np.arange(np.floor((lo - phi) / 4) * 4 + phi, hi + 4, 4.0)
        v = bass_on_downbeat(notes, bars)
        return -1.0 if np.isnan(v) else v

    return max((1, 3), key=lambda phi: (counts[phi] + counts[(phi + 2) % 4], bass(phi)))


def _grid16(score: "symusic.Score") -> float | None:
    """Share of a score's onsets on a sixteenth of its own bar lines (harmony.grid_share)."""
    from .harmony import NoteArrays, bar_lines, grid_share

    n = NoteArrays.of_score(score)
    return None if n.onset.size == 0 else round(grid_share(n.onset, bar_lines(score)), 4)


def abc_pickup_onsets(tune: str) -> int:
    """How many notes (a chord counts once) an ABC tune plays before its first bar line: 0 for
    a tune that starts on a bar line. Reads the body after the ``K:`` line, skipping fields,
    comments, quoted chord names, decorations and grace notes.

    Example: ``abc_pickup_onsets("X:1\\nM:4/4\\nK:F\\nC2 | F2FF A2GF |")  # 1``
    """
    lines = tune.replace("\r", "").split("\n")
    body, in_body = [], False
    for ln in lines:
        if not in_body:
            in_body = ln.startswith("K:")
            continue
        if re.match(r"^[A-Za-z]:", ln) or ln.startswith("%"):
            continue
        body.append(ln.split("%", 1)[0])
    text = re.sub(r'"[^"]*"|![^!]*!|\+[^+\s]*\+|\{[^}]*\}|\[[A-Za-z]:[^\]]*\]', "", " ".join(body))
    count, i, n = 0, 0, len(text)
    while i < n:
        c = text[i]
        if c == "|" or (c == ":" and i + 1 < n and text[i + 1] == ":"):
            return count
        if c == "[":  # a chord: one onset
            j = text.find("]", i)
            inner = text[i + 1: j if j > 0 else n]
            if re.search(r"[A-Ga-g]", inner):
                count += 1
            i = (j if j > 0 else n) + 1
            continue
        if c in "ABCDEFGabcdefg":
            count += 1
        i += 1
    return 0


def _shift_score(score: "symusic.Score", ticks: int) -> "symusic.Score":
    """Every note, and every tempo, meter and marker after 0, moved by ``ticks`` (≥ 0 or a
    shift that keeps times ≥ 0)."""
    if not ticks:
        return score
    out = score.copy()
    for tr in out.tracks:
        tr.shift_time(ticks, inplace=True)
    for lst in (out.tempos, out.time_signatures, out.markers):
        for ev in lst:
            if ev.time > 0:  # what stands at 0 opens the (padded) first bar
                ev.time = max(0, ev.time + ticks)
    return out


def fix_abc_pickup(score: "symusic.Score", tune: str) -> tuple["symusic.Score", float]:
    """An ABC tune whose first bar is short (an anacrusis) padded with a rest before it, so the
    note after the first bar line starts bar 2; also drops abc2midi's one-tick lead-in.
    Returns the score and the pickup length in beats (0 when none).

    Example: ``score, pickup = fix_abc_pickup(symusic.Score.from_abc(tune), tune)``
    """
    import numpy as np

    tpq = score.ticks_per_quarter
    onsets = np.unique(np.concatenate([t.notes.numpy()["time"] for t in score.tracks if len(t.notes)] or [np.zeros(0, np.int64)]))
    if onsets.size == 0:
        return score, 0.0
    lead = int(onsets[0]) if 0 < onsets[0] < tpq // 24 else 0
    if lead:
        score = _shift_score(score, -lead)
        onsets = onsets - lead
    k = abc_pickup_onsets(tune)
    ts = score.time_signatures[0] if len(score.time_signatures) else None
    bar = (4 * ts.numerator / ts.denominator if ts else 4.0) * tpq
    if k == 0 or k >= onsets.size:
        return score, 0.0
    first_bar = int(onsets[k])
    if first_bar <= 0 or first_bar >= bar - tpq // 24:
        return score, 0.0
    pad = int(round(bar - first_bar))
    return _shift_score(score, pad), first_bar / tpq


def add_chord_markers(score: "symusic.Score", chords: list | None = None) -> tuple["symusic.Score", list, str]:
    """The piece's chords written as MIDI markers (lead-sheet names, ``N.C.`` for no chord) at
    each change: ``chords`` as given (``[(beat, Chord|None)]``, e.g. POP909's annotation) or
    recognised from the notes per half bar. Other markers are dropped. Returns the score, the
    chords and their source ("annotated" or "recognised").

    Example: ``score, chords, source = add_chord_markers(score)``
    """
    import symusic

    from .harmony import NoteArrays, bar_lines, recognise_chords

    source = "annotated" if chords is not None else "recognised"
    if chords is None:
        chords = recognise_chords(NoteArrays.of_score(score), bar_lines(score))
    out = score.copy()
    out.markers = symusic.core.TextMetaTickList()
    for beat, ch in chords:
        out.markers.append(symusic.TextMeta(int(round(beat * score.ticks_per_quarter)), ch.name if ch else "N.C."))
    return out, chords, source


def read_chord_markers(score: "symusic.Score") -> list:
    """Chords written by :func:`add_chord_markers`: ``[(tick, Chord|None)]`` (markers that are
    no chord name are skipped). Example: ``read_chord_markers(symusic.Score("C/pieces/x.mid"))``"""
    from .harmony import parse_chord

    out = []
    for m in score.markers:
        try:
            out.append((int(m.time), parse_chord(m.text)))
        except MelodiaError:
            continue
    return out


def grid_check(score: "symusic.Score", quantize: bool = False) -> tuple["symusic.Score", dict]:
    """A MIDI file's onsets against a sixteenth grid of its own tempo: the on-grid share, a
    constant shift of the grid (steps of 1/48 beat) where one lifts that share from under 50%
    to over 80% (applied), and whether the file is still off the grid (an unquantised
    performance: under 80% of its onsets on the sixteenth-or-triplet grid). With ``quantize``
    such a file's onsets and ends are snapped to that grid. Returns the score and
    ``{"grid16", "grid_shift", "off_grid", "quantized"}``.

    Example: ``score, info = grid_check(score)``
    """
    import numpy as np

    from .harmony import GRID_TOLERANCE, best_phase, grid_share, quantize_times

    tpq = score.ticks_per_quarter
    onsets = np.concatenate([t.notes.numpy()["time"] for t in score.tracks if len(t.notes)] or [np.zeros(0)]) / tpq
    info = {"grid16": None, "grid_shift": 0.0, "off_grid": False, "quantized": False}
    if onsets.size == 0:
        return score, info
    share = grid_share(onsets)
    if share < 0.5:
        shift, best = best_phase(onsets)
        if best > 0.8:
            score = _shift_score(score, int(round(shift * tpq)))
            onsets = onsets + round(shift * tpq) / tpq
            share = grid_share(onsets)
            info["grid_shift"] = round(shift, 4)
    loose = float(np.mean(np.abs(quantize_times(onsets) - onsets) <= GRID_TOLERANCE + 1e-9))
    info["off_grid"] = loose < 0.8
    if info["off_grid"] and quantize:
        score = score.copy()
        for tr in score.tracks:
            for note in tr.notes:
                on = float(quantize_times(np.array([note.time / tpq]))[0])
                end = float(quantize_times(np.array([(note.time + note.duration) / tpq]))[0])
                note.time = int(round(on * tpq))
                note.duration = max(int(round((end - on) * tpq)), tpq // 4)
        onsets = np.concatenate([t.notes.numpy()["time"] for t in score.tracks if len(t.notes)]) / tpq
        share = grid_share(onsets)
        info["quantized"] = True
    info["grid16"] = round(float(share), 4)
    return score, info


def _pop909_key(mid_path: str) -> str | None:
    p = Path(mid_path).parent / "key_audio.txt"
    try:
        first = p.read_text(encoding="utf-8").split("\n", 1)[0].split("\t")
        from .moods import parse_key

        return parse_key(first[2].strip())
    except (OSError, IndexError, MelodiaError):
        return None


def _row(score, unit: Unit, display: str, source_bytes: bytes, source: str, song: str,
         tempo_known: bool, key: str | None, label, pieces_dir: Path, chords: list | None = None,
         extra: dict | None = None) -> dict:
    """Normalised piece → written file (with its chords as markers) + manifest row."""
    from .fileio import write_bytes
    from .harmony import progression_string
    from .moods import MoodEstimator, estimate_key, tonic_shift

    import miditok.utils

    score, chords, chord_source = add_chord_markers(score, chords)
    chash = content_hash(score)
    pid = chash[:16]
    target = pieces_dir / f"{pid}.mid"
    if not target.exists():
        write_bytes(target, score.dumps_midi())
    key_source = source if key else "estimated"
    if key is None:
        key = estimate_key(score).name
    degrees = progression_string(chords, tonic_shift(key) % 12)
    fours = Counter("-".join(degrees[i:i + 4]) for i in range(0, max(len(degrees) - 3, 0)))
    est = MoodEstimator().estimate(score, tempo_known=tempo_known)
    mood, mood_source = (label.mood, label.source) if label and label.mood else (est.mood, "estimated")
    ts = score.time_signatures[0] if len(score.time_signatures) else None
    tempo = float(score.tempos[0].qpm) if len(score.tempos) else 120.0
    return {
        "id": pid, "path": display, "file": f"pieces/{pid}.mid",
        "sha256": hashlib.sha256(source_bytes).hexdigest(), "content": chash,
        "source": source, "song": song, "split": split_of(song),
        "duration_s": round(float(score.to("second").end()), 3), "notes": int(score.note_num()),
        "bars": len(miditok.utils.get_bars_ticks(score)),
        "key": key, "key_source": key_source,
        "tempo": round(tempo, 2), "tempo_known": tempo_known,
        "time_signature": f"{ts.numerator}/{ts.denominator}" if ts else "4/4",
        "programs": sorted({-1 if t.is_drum else int(t.program) for t in score.tracks}),
        "mood": mood, "mood_source": mood_source,
        "valence": round(est.valence, 3), "arousal": round(est.arousal, 3),
        "tags": list(label.tags) if label else [],
        "chords": sum(1 for _, c in chords if c is not None), "chord_source": chord_source,
        "progressions": [p for p, _ in fours.most_common(3)],
        **{"grid16": None, "grid_shift": 0.0, "off_grid": False, "quantized": False, "pickup": 0.0, **(extra or {})},
    }


def process_unit(unit: Unit, pieces_dir: str, cache_dir: str, labels: dict | None = None,
                 quantize: bool = False) -> UnitResult:
    """Read, normalise and label every piece of one unit; never raises for bad input.
    ``quantize``: snap the onsets of MIDI files that are off the sixteenth grid (see
    :func:`grid_check`).

    Example: ``res = process_unit(Unit("midi", "/a/x.mid", "a/x.mid", "/a", "x.mid"), "C/pieces", "cache")``
    """
    res = UnitResult(unit)
    pieces = Path(pieces_dir)
    try:
        if unit.kind == "abc":
            _process_abc(unit, pieces, res)
            return res
        data = Path(unit.path).read_bytes()
        label = None
        key = None
        tempo_known = True
        source = unit.kind
        chords = None
        extra: dict = {}
        if unit.kind == "pop909":
            score, key, chords = read_pop909(unit.path, unit.display)
        elif unit.kind == "music21":
            try:
                with _quiet_stderr():
                    midi_bytes, tempo_known = _music21_export(unit.path, Path(cache_dir))
            except Exception as e:
                raise BadMidiError(unit.display, f"music21 cannot export it ({e.__class__.__name__}: {e})") from None
            score = load_score(midi_bytes, unit.display)
        else:
            score = load_score(data, unit.display)
        if unit.kind == "midi":
            from .moods import label_from_path

            label = label_from_path(unit.rel, labels)
        score = normalise(score)
        if score.note_num() < MIN_NOTES:
            raise BadMidiError(unit.display, f"too few notes ({score.note_num()} < {MIN_NOTES})")
        if unit.kind == "midi":
            score, extra = grid_check(score, quantize=quantize)
        else:
            extra = {"grid16": _grid16(score)}
        res.rows.append(_row(score, unit, unit.display, data, source, song_key(unit), tempo_known, key, label,
                             pieces, chords, extra))
    except MelodiaError as e:
        res.skipped.append({"path": unit.display, "reason": getattr(e, "problem", str(e))})
    except Exception as e:  # a bug or an unforeseen parser failure: report, keep building
        res.skipped.append({"path": unit.display, "reason": f"unexpected {e.__class__.__name__}: {e}"})
    return res


def _process_abc(unit: Unit, pieces: Path, res: UnitResult) -> None:
    import symusic

    text = Path(unit.path).read_bytes().decode("latin-1")
    for ref, tune in split_abc(text):
        name = f"{unit.display}#X:{ref}"
        try:
            with _quiet_stderr():
                score = symusic.Score.from_abc(tune)
            check_score(score, name, need_notes=True)
            score = normalise(score)
            if score.note_num() < MIN_NOTES:
                raise BadMidiError(name, f"too few notes ({score.note_num()} < {MIN_NOTES})")
            score, pickup = fix_abc_pickup(score, tune)
            title = _abc_field(tune, "T") or f"{unit.display}#{ref}"
            tempo_known = _abc_field(tune, "Q") is not None
            res.rows.append(_row(score, unit, name, tune.encode("utf-8"), "music21", song_key(unit, title),
                                 tempo_known, None, None, pieces,
                                 extra={"pickup": round(pickup, 4), "grid16": _grid16(score)}))
        except MelodiaError as e:
            res.skipped.append({"path": name, "reason": getattr(e, "problem", str(e))})
        except Exception as e:
            res.skipped.append({"path": name, "reason": f"unparsable ABC tune ({e.__class__.__name__}: {e})"})


def _worker(args: tuple) -> UnitResult:
    return process_unit(*args)


def _worker_init() -> None:
    # abc2midi and music21 print warnings for many tunes; the main process does the reporting.
    with contextlib.suppress(OSError):
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)


# --------------------------------------------------------------------------- the build
@dataclass
class BuildSummary:
    """What a build did. ``pieces`` kept, ``skipped`` reported, ``duplicates`` dropped."""

    out: Path
    pieces: int
    skipped: int
    duplicates: int
    processed_units: int
    reused_units: int


def default_cache_dir() -> Path:
    """``$MELODIA_CACHE`` or ``~/.cache/melodia`` (music21 exports live here)."""
    base = os.environ.get("MELODIA_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "melodia")
    return Path(base)


def build_corpus(sources: Iterable[str], out: str | os.PathLike, workers: int | None = None,
                 progress: bool = True, cache_dir: str | os.PathLike | None = None,
                 quantize: bool = False) -> BuildSummary:
    """Build (or update) a corpus folder from sources. See the module docstring. ``quantize``
    snaps the onsets of MIDI files found off the sixteenth grid (:func:`grid_check`).

    Example:
        >>> s = build_corpus(["my_midi/"], "C"); s.pieces
    """
    from .fileio import write_json, write_jsonl

    out = Path(out)
    sources = list(sources)
    if not sources:
        raise BadInputError("no sources given")
    units = discover(sources)
    pieces_dir = out / "pieces"
    pieces_dir.mkdir(parents=True, exist_ok=True)
    cache = Path(cache_dir) if cache_dir else default_cache_dir() / "music21-export"
    cache.mkdir(parents=True, exist_ok=True)
    labels_by_root = _labels_for(units)

    state_path = out / "state.json"
    state = {}
    if state_path.exists():
        try:
            state = json.loads(state_path.read_text(encoding="utf-8")).get("units", {})
        except (OSError, ValueError):
            state = {}
    new_state: dict[str, dict] = {}
    todo: list[Unit] = []
    results: list[UnitResult] = []
    for u in units:
        try:
            st = os.stat(u.path)
        except OSError as e:
            results.append(UnitResult(u, skipped=[{"path": u.display, "reason": f"cannot read ({e.strerror})"}]))
            continue
        sig = f"{st.st_size}:{st.st_mtime_ns}:{_labels_sig(labels_by_root.get(u.root))}:q{int(quantize)}:r{READER}"
        prev = state.get(u.path)
        if prev and prev.get("sig") == sig and all((out / r["file"]).exists() for r in prev["rows"]):
            results.append(UnitResult(u, prev["rows"], prev["skipped"]))
            new_state[u.path] = prev
        else:
            todo.append(u)
            new_state[u.path] = {"sig": sig}
    reused = len(results)
    todo.sort(key=lambda u: -u.cost)  # slow music21 exports first keep both cores busy
    args = [(u, str(pieces_dir), str(cache), labels_by_root.get(u.root), quantize) for u in todo]
    workers = workers or min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1, 8)
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), desc="corpus", unit="file", disable=not progress or not todo)
    done_since_save = 0
    try:
        for r in _run_units(args, workers):
            results.append(r)
            new_state[r.unit.path].update(rows=r.rows, skipped=r.skipped)
            bar.update(1)
            done_since_save += 1
            if done_since_save >= 200:  # a kill loses at most this much work
                write_json(state_path, {"format": 1, "units": {k: v for k, v in new_state.items() if "rows" in v}}, indent=None)
                done_since_save = 0
    finally:
        bar.close()
    write_json(state_path, {"format": 1, "units": {k: v for k, v in new_state.items() if "rows" in v}}, indent=None)

    rows, skipped, dups = _finish(results)
    write_jsonl(out / "manifest.jsonl", rows)
    report = {
        "sources": sources,
        "pieces": len(rows),
        "skipped_count": len(skipped),
        "duplicates": dups,
        "splits": dict(Counter(r["split"] for r in rows)),
        "moods": dict(Counter(r["mood"] for r in rows)),
        # MIDI files still off the sixteenth grid after the phase check (played, unquantised):
        # `--quantize` snaps them
        "off_grid": [r["path"] for r in rows if r.get("off_grid") and not r.get("quantized")],
        "quantized": [r["path"] for r in rows if r.get("quantized")],
        "skipped": skipped,
    }
    write_json(out / "report.json", report)
    _remove_orphans(pieces_dir, rows)
    return BuildSummary(out, len(rows), len(skipped), dups, len(todo), reused)


def _run_units(args: list[tuple], workers: int) -> Iterator[UnitResult]:
    if workers <= 1 or len(args) <= 1:
        for a in args:
            yield _worker(a)
        return
    import multiprocessing as mp

    ctx = mp.get_context("spawn" if sys.platform == "win32" else "fork")
    with ctx.Pool(workers, initializer=_worker_init, maxtasksperchild=200) as pool:
        yield from pool.imap_unordered(_worker, args, chunksize=1)


def _labels_for(units: list[Unit]) -> dict[str, dict]:
    from .moods import read_labels_csv

    out: dict[str, dict] = {}
    for root in {u.root for u in units if u.kind == "midi"}:
        p = Path(root) / "labels.csv"
        if p.exists():
            out[root] = read_labels_csv(p)
    return out


def _labels_sig(labels: dict | None) -> str:
    if not labels:
        return ""
    return hashlib.sha1(json.dumps(labels, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _finish(results: list[UnitResult]) -> tuple[list[dict], list[dict], int]:
    """Deduplicate by content (first by path order wins) and sort the manifest."""
    rows = sorted((r for res in results for r in res.rows), key=lambda r: r["path"])
    skipped = sorted((s for res in results for s in res.skipped), key=lambda s: s["path"])
    seen: dict[str, dict] = {}
    kept = []
    for r in rows:
        if r["content"] in seen:
            continue
        seen[r["content"]] = r
        kept.append(r)
    return kept, skipped, len(rows) - len(kept)


def _remove_orphans(pieces_dir: Path, rows: list[dict]) -> None:
    keep = {Path(r["file"]).name for r in rows}
    for p in [*pieces_dir.glob("*.mid"), *pieces_dir.glob(".*.tmp")]:  # stale pieces, temp files of a kill
        if p.name not in keep:
            with contextlib.suppress(OSError):
                p.unlink()


def load_manifest(corpus_dir: str | os.PathLike) -> list[dict]:
    """Rows of ``C/manifest.jsonl``, with a clear error when the folder is not a corpus.

    Example: ``rows = load_manifest("C")``
    """
    from .fileio import read_jsonl

    p = Path(corpus_dir) / "manifest.jsonl"
    if not p.is_file():
        raise BadInputError(f"{corpus_dir}: not a corpus folder (no manifest.jsonl; run `melodia corpus build`)")
    return read_jsonl(p)


def corpus_stats(corpus_dir: str | os.PathLike) -> dict:
    """Distributions of mood, key, mode, tempo, meter, source and split.

    Example: ``corpus_stats("C")["moods"]``
    """
    rows = load_manifest(corpus_dir)
    n = len(rows) or 1

    def dist(values) -> dict:
        c = Counter(values)
        return {k: {"pieces": v, "share": round(v / n, 4)} for k, v in c.most_common()}

    tempos = sorted(r["tempo"] for r in rows if r.get("tempo_known"))
    bands = Counter(_tempo_band(t) for t in tempos)
    return {
        "pieces": len(rows),
        "notes": sum(r["notes"] for r in rows),
        "hours": round(sum(r["duration_s"] for r in rows) / 3600, 2),
        "moods": dist(r["mood"] for r in rows),
        "mood_sources": dist(r["mood_source"] for r in rows),
        "modes": dist(r["key"].split()[-1] for r in rows),
        "keys": dist(r["key"] for r in rows),
        "tempo_known": sum(1 for r in rows if r.get("tempo_known")),
        "tempo_bands": {k: bands[k] for k in ("<70", "70-99", "100-129", "130-159", ">=160") if k in bands},
        "time_signatures": dist(r["time_signature"] for r in rows),
        "sources": dist(r["source"] for r in rows),
        "splits": dist(r["split"] for r in rows),
        "grid16": _grid_summary(rows),
        "chord_sources": dist(r.get("chord_source") or "none" for r in rows),
        "progressions": {mode: [{"progression": p, "pieces": c} for p, c in Counter(
            p for r in rows if r["key"].split()[-1] == mode for p in r.get("progressions") or []).most_common(8)]
            for mode in ("major", "minor")},
    }


def _grid_summary(rows: list[dict]) -> dict:
    """Onsets on a sixteenth of their bar lines: mean share over pieces (weighted by notes) and
    the pieces a grid check shifted, found off the grid, or quantised."""
    measured = [r for r in rows if r.get("grid16") is not None]
    notes = sum(r["notes"] for r in measured) or 1
    return {"share": round(sum(r["grid16"] * r["notes"] for r in measured) / notes, 4) if measured else None,
            "shifted": sum(1 for r in rows if r.get("grid_shift")),
            "off_grid": sum(1 for r in rows if r.get("off_grid") and not r.get("quantized")),
            "quantized": sum(1 for r in rows if r.get("quantized")),
            "pickups": sum(1 for r in rows if r.get("pickup"))}


def ensemble_programs(rows: Iterable[dict]) -> list[int] | None:
    """The commonest program set among pieces with two or more parts (POP909's melody,
    counter-melody and piano: ``[0, 1, 2]``); None when no piece has two. A model trained on
    these rows names it in melodia.json ("default_programs"): what plays when a request names
    no instruments.

    Example: ``ensemble_programs(load_manifest("C"))  # [0, 1, 2]``
    """
    sets = Counter(tuple(r.get("programs") or ()) for r in rows if len(r.get("programs") or ()) >= 2)
    return list(sets.most_common(1)[0][0]) if sets else None


def tempo_unknown_token(rows: Iterable[dict], tempo_tokens: dict[str, float]) -> dict:
    """Whether the Tempo token of 120 qpm means "the file gave no tempo" in these rows.

    music21 and abc2midi write 120 qpm into files that have none, so they all land in that
    bin. Returns ``{"token": ..., "pieces": ..., "tempo_less": ...}``: the bin's token when over
    half its pieces are tempo-less (else ``None``), the pieces in it and how many are. A model
    trained on these rows names the token in melodia.json ("tempo_unknown"; see
    ``Generator.tempo_for_model``).

    Example: ``tempo_unknown_token(load_manifest("C"), {"Tempo_122.99": 122.99, ...})``
    """
    import math

    def nearest(q: float) -> str:
        return min(tempo_tokens, key=lambda t: abs(math.log(tempo_tokens[t] / q)))

    token, pieces, tempo_less = nearest(120.0), 0, 0
    for r in rows:
        if nearest(float(r.get("tempo") or 120.0)) == token:
            pieces += 1
            tempo_less += not r.get("tempo_known", True)
    return {"token": token if 2 * tempo_less > pieces else None, "pieces": pieces, "tempo_less": tempo_less}


def _tempo_band(t: float) -> str:
    return "<70" if t < 70 else "70-99" if t < 100 else "100-129" if t < 130 else "130-159" if t < 160 else ">=160"


def format_stats(stats: dict) -> str:
    """Human-readable text of :func:`corpus_stats`. Example: ``print(format_stats(s))``."""
    lines = [f"{stats['pieces']} pieces, {stats['notes']:,} notes, {stats['hours']} hours"]
    for name in ("moods", "mood_sources", "modes", "sources", "splits", "time_signatures"):
        items = list(stats[name].items())[:10]
        lines.append(f"{name}: " + ", ".join(f"{k} {v['pieces']} ({v['share']:.0%})" for k, v in items))
    keys = list(stats["keys"].items())[:8]
    lines.append("keys (top 8): " + ", ".join(f"{k} {v['pieces']}" for k, v in keys))
    lines.append(f"tempo (where marked, {stats['tempo_known']} pieces): "
                 + ", ".join(f"{k} qpm {v}" for k, v in stats["tempo_bands"].items()))
    g = stats.get("grid16") or {}
    if g.get("share") is not None:
        lines.append(f"metre: {g['share']:.1%} of onsets on a sixteenth of their bar lines; {g['pickups']} pickups "
                     f"padded; {g['shifted']} files shifted onto the grid; {g['off_grid']} off the grid "
                     f"(unquantised, see report.json; --quantize snaps them); {g['quantized']} quantised")
    if stats.get("chord_sources"):
        lines.append("chords: " + ", ".join(f"{k} {v['pieces']}" for k, v in stats["chord_sources"].items()))
    for mode, items in (stats.get("progressions") or {}).items():
        if items:
            lines.append(f"commonest progressions ({mode}): "
                         + ", ".join(f"{x['progression']} ({x['pieces']})" for x in items[:5]))
    return "\n".join(lines)
