"""POP909 on its annotated beats: a song folder (``NNN/NNN.mid`` + ``beat_midi.txt``,
``key_audio.txt``, ``chord_midi.txt``) read as a score whose bar lines are the music's.

Beat k of ``beat_midi.txt`` becomes quarter note k counted from the first downbeat, the tempo
follows the beat spacing, onsets close to a sixteenth are put on it, and the annotated key and
chords come along. Why and what it gives: docs/corpus.md, "Bar lines and beats".

Its phrase labels (``data/pop909-structure``, a sibling folder of the POP909 folder) are placed
on those bar lines by :func:`align_sections`, matching the annotators' quantised melody
against the song's MELODY track (docs/corpus.md, "Sections").

Example: ``score, key, chords = read_pop909("data/pop909/001/001.mid")``
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import BadInputError, BadMidiError, MelodiaError
from .midifile import load_score
from .music.harmony import NoteArrays, bass_on_downbeat, parse_chord, quantize_times
from .music.keys import parse_key
from .music.meter import bar_starts
from .prepare import TPQ
from .sections import parse_phrases, phrase_starts

if TYPE_CHECKING:
    import symusic

POP909_SNAP = 0.05  # POP909 onsets/ends this close (beats) to a sixteenth are put on it


def is_pop909(root: Path) -> bool:
    """Whether a folder is laid out as POP909 (``001/001.mid`` and ``001/key_audio.txt``).

    Example: ``is_pop909(Path("data/pop909"))  # True``
    """
    return (root / "001" / "001.mid").exists() and (root / "001" / "key_audio.txt").exists()


def beats_of(times: np.ndarray, beat_times: np.ndarray) -> np.ndarray:
    """Seconds → beat index through annotated beat times, extrapolated at both ends.

    Example: ``beats_of(np.array([0.75]), np.array([0.5, 1.0, 1.5]))  # array([0.5])``
    """
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
    import symusic  # heavy: a native library, loaded on first use

    folder = Path(mid_path).parent
    name = display or str(mid_path)
    beats = _read_beats(folder / "beat_midi.txt", name)
    bar_len, first_down = _first_downbeat(beats)
    src = load_score(Path(mid_path).read_bytes(), name).to("second")
    times = beats[:, 0]
    chord_rows = pop909_chord_rows(folder)
    first_down += pop909_phase(src, times, first_down, bar_len, chord_rows)
    onsets = [np.asarray(t.notes.numpy()["time"], np.float64) for t in src.tracks]
    earliest = min((float(o.min()) for o in onsets if len(o)), default=float(times[first_down]))
    lead = first_down - float(beats_of(np.array([earliest]), times)[0])  # beats before bar 1
    pad_bars = int(np.ceil(max(lead - POP909_SNAP, 0.0) / bar_len))
    origin = first_down - pad_bars * bar_len  # beat index that becomes quarter 0

    def quarters(t: np.ndarray) -> np.ndarray:
        q = beats_of(np.asarray(t, np.float64), times) - origin
        snapped = quantize_times(q)
        q = np.where(np.abs(snapped - q) <= POP909_SNAP, snapped, q)
        return np.maximum(q, 0.0)

    out = symusic.Score(TPQ)
    out.time_signatures.append(symusic.TimeSignature(0, bar_len, 4))
    _add_tempos(out, times, first_down, bar_len, pad_bars, origin)
    _add_tracks(out, src, quarters)
    return out, pop909_key(mid_path), _chords_on_beats(chord_rows, quarters)


def _read_beats(path: Path, name: str) -> np.ndarray:
    """``beat_midi.txt`` as rows of (seconds, column 2, column 3); BadMidiError when unusable."""
    try:
        rows = [ln.split() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        beats = np.array([[float(x) for x in r[:3]] for r in rows])
    except (OSError, ValueError, IndexError) as e:
        raise BadMidiError(name, f"unreadable beat_midi.txt ({e})") from None
    if len(beats) < 8 or np.any(np.diff(beats[:, 0]) <= 0):
        raise BadMidiError(name, "beat_midi.txt has too few beats or times that do not increase")
    return beats


def _first_downbeat(beats: np.ndarray) -> tuple[int, int]:
    """(beats per bar, index of the first annotated downbeat): 3 when column 2 marks every
    third beat, else 4 with the downbeats of column 3."""
    twos = np.flatnonzero(beats[:, 1] == 1)
    triple = len(twos) > 2 and np.median(np.diff(twos)) == 3
    downs = twos if triple else np.flatnonzero(beats[:, 2] == 1)
    return (3 if triple else 4), (int(downs[0]) if len(downs) else 0)


def _add_tempos(out: "symusic.Score", times: np.ndarray, first_down: int, bar_len: int,
                pad_bars: int, origin: int) -> None:
    """One tempo per bar from the beat spacing, written where it moves by more than 2%."""
    import symusic  # heavy: a native library, loaded on first use

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


def _add_tracks(out: "symusic.Score", src: "symusic.Score",
                quarters: Callable[[np.ndarray], np.ndarray]) -> None:
    """The second-time tracks of ``src`` re-timed by ``quarters`` (a note at least a 24th of a beat)."""
    import symusic  # heavy: a native library, loaded on first use

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


def _chords_on_beats(chord_rows: list, quarters: Callable[[np.ndarray], np.ndarray]) -> list:
    """Chord rows (start seconds, chord) as ``[(beat, chord)]`` at the nearest half beat, one per change."""
    chords: list = []
    for start, chord in chord_rows:
        beat = float(np.round(quarters(np.array([start]))[0] * 2) / 2)
        if chords and abs(chords[-1][0] - beat) < 1e-9:
            chords[-1] = (beat, chord)
        elif not chords or chords[-1][1] != chord:
            chords.append((beat, chord))
    return chords


def pop909_chord_rows(folder: Path) -> list:
    """``chord_midi.txt`` as ``[(start seconds, Chord|None)]`` ([] when missing).

    Example: ``pop909_chord_rows(Path("data/pop909/001"))[:2]``
    """
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


def pop909_phase(src: "symusic.Score", times: np.ndarray, first_down: int, bar_len: int, chord_rows: list) -> int:
    """Beats to move an annotated first downbeat that the music contradicts.

    In some songs the downbeat flags sit one beat off the music (how many: docs/corpus.md, "Bar
    lines and beats"): most chord changes fall on beats 2 and 4 of the annotated bars, and the
    lowest notes are no more often on the annotated beat 1 than on any other. When under half
    of the chord changes fall on the annotated beat 1 (or, in 4/4, beat 3), the phase moves to
    the beat with the most changes (of beats 2 and 4, the one where the bass lands longest).
    Returns 0 to keep the annotation.

    Example: ``pop909_phase(src, beats[:, 0], 4, 4, pop909_chord_rows(folder))  # 0``
    """
    changes = [c for c in chord_rows if c[1] is not None]
    if len(changes) < 8:
        return 0
    pos = np.round(beats_of(np.array([t for t, _ in changes]), times) - first_down).astype(np.int64) % bar_len
    counts = np.bincount(pos, minlength=bar_len)
    strong = counts[0] + (counts[2] if bar_len == 4 else 0)
    if strong >= 0.5 * counts.sum():
        return 0
    if bar_len != 4:
        return int(np.argmax(counts))
    on, end, pitch = [], [], []
    for tr in src.tracks:
        a = tr.notes.numpy()
        on.append(beats_of(np.asarray(a["time"], np.float64), times))
        end.append(beats_of(np.asarray(a["time"], np.float64) + np.asarray(a["duration"], np.float64), times))
        pitch.append(np.asarray(a["pitch"], np.int64))
    notes = NoteArrays(np.concatenate(on) - first_down, np.concatenate(end) - first_down, np.concatenate(pitch))
    lo = float(notes.onset.min()) if notes.onset.size else 0.0
    hi = float(notes.end.max()) if notes.end.size else 4.0

    def bass(phi: int) -> float:
        bars = np.arange(np.floor((lo - phi) / 4) * 4 + phi, hi + 4, 4.0)
        v = bass_on_downbeat(notes, bars)
        return -1.0 if np.isnan(v) else v

    return max((1, 3), key=lambda phi: (counts[phi] + counts[(phi + 2) % 4], bass(phi)))


def pop909_key(mid_path: str) -> str | None:
    """The key of a POP909 song: the first segment of its ``key_audio.txt``; None when missing
    or unreadable. Example: ``pop909_key("data/pop909/001/001.mid")  # 'E major'``"""
    p = Path(mid_path).parent / "key_audio.txt"
    try:
        first = p.read_text(encoding="utf-8").split("\n", 1)[0].split("\t")
        return parse_key(first[2].strip())
    except (OSError, IndexError, MelodiaError):
        return None


# --------------------------------------------------------------------------- phrase sections
STRUCTURE_DIR = "pop909-structure"  # the phrase labels' folder, beside the POP909 folder
SECTION_FIT = 0.95  # an alignment whose fit is below this places no sections (docs/corpus.md, "Sections")
#: labels that end more than this many bars after the piece's last bar, or more than
#: SECTION_SHORTFALL bars before it, place no sections (a typo in the lengths, bars counted otherwise)
SECTION_OVERRUN, SECTION_SHORTFALL = 2, 16
SECTION_SHIFT_BARS = 16  # offsets tried: melody.txt's bar 1 at corpus bars -16 … +16


@dataclass(frozen=True)
class SectionAlignment:
    """A song's phrase labels placed on its corpus bar lines (:func:`align_sections`).

    ``sections``: ``[(bar index, letter)]`` where each phrase starts (bar 0 = the corpus
    piece's first bar, a padded pickup included); empty when ``fit`` is below
    :data:`SECTION_FIT` or the labels end more than :data:`SECTION_OVERRUN` bars after the
    piece's end or :data:`SECTION_SHORTFALL` bars before it. ``offset``: the corpus bar where
    the labels' bar 1 falls; ``fit``: the share of ``melody.txt``'s notes found in the MELODY
    track at that offset (same pitch, onset within a sixteenth); ``beat_offset``/``beat_fit``:
    the best offset in beats, whole bar or not, and its fit (a better fit off the bar lines
    means the two disagree on where the bars are); ``label_bars``: the phrase lengths summed;
    ``bars``: the corpus piece's bars.

    Example: ``align_sections(score, "data/pop909/001/001.mid").sections[:2]  # [(1, 'i'), (5, 'A')]``
    """

    sections: list
    offset: int
    fit: float
    beat_offset: float
    beat_fit: float
    label_bars: int
    bars: int


def structure_folder(mid_path: str | Path) -> Path:
    """Where a POP909 song's phrase labels are: ``<POP909>/../pop909-structure/NNN``.

    Example: ``structure_folder("data/pop909/001/001.mid")  # data/pop909-structure/001``
    """
    song = Path(mid_path).parent
    return song.parent.parent / STRUCTURE_DIR / song.name


def read_melody_txt(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``melody.txt`` (``pitch length`` in sixteenths per line, pitch 0 a rest) as the onsets
    (sixteenths from its first bar line) and pitches of its notes; BadInputError naming the
    file when unreadable. Example: ``onsets, pitches = read_melody_txt(Path("…/001/melody.txt"))``"""
    try:
        rows = [ln.split() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        a = np.array([[int(r[0]), int(r[1])] for r in rows], dtype=np.int64).reshape(-1, 2)
    except (OSError, ValueError, IndexError) as e:
        raise BadInputError(f"{path}: unreadable melody.txt ({e.__class__.__name__}: {e})") from None
    if np.any(a[:, 1] < 0):
        raise BadInputError(f"{path}: a negative note length")
    onsets = np.concatenate([[0], np.cumsum(a[:-1, 1])]) if len(a) else np.zeros(0, np.int64)
    keep = a[:, 0] > 0
    return onsets[keep], a[keep, 0]


def align_sections(score: "symusic.Score", mid_path: str | Path) -> SectionAlignment | None:
    """A POP909 song's phrase labels (``human_label1.txt`` in :func:`structure_folder`) placed
    on the bar lines of ``score`` (the song as :func:`read_pop909` reads it): ``melody.txt`` is
    matched against the track named MELODY at every offset of whole beats within
    :data:`SECTION_SHIFT_BARS` bars, and the best whole-bar offset places the phrases
    (:func:`melodia.sections.phrase_starts`) when its fit reaches :data:`SECTION_FIT` and the
    labels end near the piece's end (:class:`SectionAlignment`). None
    when the song has no labels; BadInputError naming the file when they are unreadable.

    Example: ``align_sections(read_pop909(p)[0], p).offset  # 1, for p = "data/pop909/001/001.mid"``
    """
    folder = structure_folder(mid_path)
    label_path = folder / "human_label1.txt"
    if not label_path.is_file():
        return None
    try:
        phrases = parse_phrases(label_path.read_text(encoding="utf-8"), str(label_path))
    except OSError as e:
        raise BadInputError(f"{label_path}: unreadable ({e.strerror})") from None
    t_on, t_pitch = read_melody_txt(folder / "melody.txt")
    bars = len(bar_starts(score))
    label_bars = sum(n for _, n in phrases)
    ts = score.time_signatures[0] if len(score.time_signatures) else None
    bar16 = 16 * ts.numerator // ts.denominator if ts else 16  # sixteenths per bar
    step = 16 // (ts.denominator if ts else 4)  # sixteenths per beat
    melody = [t for t in score.tracks if t.name.strip().upper() == "MELODY"]
    fits = np.zeros(2 * SECTION_SHIFT_BARS * bar16 // step + 1)
    shifts = np.arange(-SECTION_SHIFT_BARS * bar16, SECTION_SHIFT_BARS * bar16 + 1, step)
    if melody and len(t_on):
        a = melody[0].notes.numpy()
        on16 = np.round(a["time"] * 4 / score.ticks_per_quarter).astype(np.int64)
        have = np.unique(on16 * 128 + a["pitch"].astype(np.int64))
        for k, d in enumerate(shifts):
            hit = np.zeros(len(t_on), bool)
            for e in (-1, 0, 1):  # an onset within a sixteenth
                hit |= np.isin((t_on + d + e) * 128 + t_pitch, have)
            fits[k] = hit.mean()
    whole = shifts % bar16 == 0
    best_bar = max(np.flatnonzero(whole), key=lambda k: (fits[k], -abs(shifts[k])))
    best = max(range(len(shifts)), key=lambda k: (fits[k], -abs(shifts[k])))
    fit = round(float(fits[best_bar]), 4)
    offset = int(shifts[best_bar] // bar16)
    ok = fit >= SECTION_FIT and -SECTION_SHORTFALL <= offset + label_bars - bars <= SECTION_OVERRUN
    return SectionAlignment(phrase_starts(phrases, offset, bars) if ok else [], offset, fit,
                            float(shifts[best] / step), round(float(fits[best]), 4), label_bars, bars)
