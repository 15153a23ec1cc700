"""Chords and metre: chord names, chord recognition from notes, and how music sits on its bars.

Used by every stage that reads harmony or metre: the corpus (POP909's annotated chords,
chords recognised elsewhere, the grid check of a user's MIDI files), the tokenizer (one
``Chord_<root>:<quality>`` token at each chord change) and the evaluation (metre and harmony
figures for real and generated pieces). Plain numpy over note arrays; no music21.

Chord vocabulary: 12 roots (``C C# D Eb E F F# G Ab A Bb B``) × :data:`QUALITIES`, plus ``N``
(no chord). Names read both the Harte syntax of POP909's annotations (``A:min7``,
``Bb:maj/3``, ``C:sus4(9)``) and lead-sheet spellings (``Am7``, ``Cmaj7``, ``C/E``, ``Bbdim``,
``Csus4``, ``Cm7b5``); extensions beyond the seventh (9ths, 11ths, added tones) fold onto the
nearest quality (``C:9`` → ``C:7``, ``C:maj6`` → ``C:maj``).

Metre figures use a piece's own bar lines (its time signatures) and quarter-note beats counted
from each bar line. An onset is *on the grid* when it lies within :data:`GRID_TOLERANCE` beats
(a tenth of a sixteenth note) of a sixteenth position: with a looser tolerance (a tenth of a
beat) onsets at random phases would count as on the grid 80% of the time.

Example:
    >>> parse_chord("Am7")
    Chord(root=9, quality='min7', bass=None)
    >>> chord_token_name(parse_chord("B:maj"))
    'Chord_B:maj'
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..errors import BadInputError
from .keys import key_from_histogram
from .meter import bar_starts
from .notes import NoteArrays, tick_score

if TYPE_CHECKING:
    import symusic

__all__ = [
    "GRID_TOLERANCE", "NO_CHORD", "PITCH_NAMES", "QUALITIES", "SIXTEENTH", "TRIADS", "Chord", "NoteArrays",
    "bar_lines", "bass_on_downbeat", "beats_in_bar", "best_phase", "chord_at", "chord_beat_share",
    "chord_from_token_name", "chord_of_weights", "chord_token_name", "chord_token_names", "chord_tone_share",
    "grid_share", "key_of_chords", "metre_figures", "parse_chord", "parse_progression", "pitch_name",
    "progression_string", "quantize_times",
    "recognise_chords", "rhythm_repetition", "split_section_chords",
]

PITCH_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
#: chord qualities and their intervals above the root (semitones)
QUALITIES: dict[str, tuple[int, ...]] = {
    "maj": (0, 4, 7), "min": (0, 3, 7), "dim": (0, 3, 6), "aug": (0, 4, 8),
    "sus2": (0, 2, 7), "sus4": (0, 5, 7),
    "7": (0, 4, 7, 10), "maj7": (0, 4, 7, 11), "min7": (0, 3, 7, 10),
    "hdim7": (0, 3, 6, 10), "dim7": (0, 3, 6, 9),
}
TRIADS = ("maj", "min", "dim", "aug")
NO_CHORD = "N"
#: an onset within this many beats of a sixteenth position is on the grid (a tenth of a 16th)
GRID_TOLERANCE = 0.025
SIXTEENTH = 0.25

_LETTER = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
# Harte qualities (POP909) → ours; anything with a 7th-like extension keeps its seventh
_HARTE = {
    "maj": "maj", "min": "min", "dim": "dim", "aug": "aug", "sus2": "sus2", "sus4": "sus4",
    "7": "7", "maj7": "maj7", "min7": "min7", "hdim7": "hdim7", "dim7": "dim7",
    "maj6": "maj", "min6": "min", "9": "7", "11": "7", "13": "7", "maj9": "maj7", "maj11": "maj7",
    "maj13": "maj7", "min9": "min7", "min11": "min7", "min13": "min7", "minmaj7": "min",
    "sus": "sus4", "5": "maj", "1": "maj",
}
# lead-sheet suffixes, longest first
_LEAD = [
    ("maj7", "maj7"), ("Maj7", "maj7"), ("M7", "maj7"), ("Δ7", "maj7"), ("Δ", "maj7"),
    ("maj9", "maj7"), ("m7b5", "hdim7"), ("m7-5", "hdim7"), ("ø7", "hdim7"), ("ø", "hdim7"),
    ("dim7", "dim7"), ("o7", "dim7"), ("°7", "dim7"), ("min7", "min7"), ("mi7", "min7"),
    ("-7", "min7"), ("m7", "min7"), ("m9", "min7"), ("m6", "min"), ("min", "min"), ("mi", "min"),
    ("m", "min"), ("-", "min"), ("dim", "dim"), ("o", "dim"), ("°", "dim"), ("aug", "aug"),
    ("+", "aug"), ("sus2", "sus2"), ("sus4", "sus4"), ("sus", "sus4"), ("maj", "maj"),
    ("M", "maj"), ("6", "maj"), ("9", "7"), ("11", "7"), ("13", "7"), ("7", "7"), ("5", "maj"),
    ("", "maj"),
]


@dataclass(frozen=True)
class Chord:
    """A chord: root pitch class (0 = C), quality (a key of :data:`QUALITIES`), optional bass
    pitch class (a slash chord). Example: ``Chord(9, "min")`` is A minor."""

    root: int
    quality: str
    bass: int | None = None

    @property
    def pitch_classes(self) -> frozenset[int]:
        """Pitch classes of the chord's tones. Example: ``Chord(0, "maj").pitch_classes``."""
        tones = {(self.root + i) % 12 for i in QUALITIES[self.quality]}
        if self.bass is not None:
            tones.add(self.bass)
        return frozenset(tones)

    @property
    def name(self) -> str:
        """Lead-sheet name: ``Am7``, ``C/E``. Example: ``Chord(9, "min7").name``."""
        suffix = {"maj": "", "min": "m", "7": "7", "maj7": "maj7", "min7": "m7", "dim": "dim",
                  "aug": "aug", "sus2": "sus2", "sus4": "sus4", "hdim7": "m7b5", "dim7": "dim7"}[self.quality]
        bass = f"/{PITCH_NAMES[self.bass]}" if self.bass is not None and self.bass != self.root else ""
        return f"{PITCH_NAMES[self.root]}{suffix}{bass}"

    def transposed(self, semitones: int) -> "Chord":
        """The same chord moved. Example: ``Chord(0, "maj").transposed(2).root  # 2``."""
        bass = None if self.bass is None else (self.bass + semitones) % 12
        return Chord((self.root + semitones) % 12, self.quality, bass)


def _pitch_class(text: str) -> tuple[int, str] | None:
    m = re.match(r"([A-Ga-g])([#b♯♭]*)", text)
    if not m:
        return None
    pc = _LETTER[m.group(1).upper()] + sum(1 if c in "#♯" else -1 for c in m.group(2))
    return pc % 12, text[m.end():]


def parse_chord(name: str) -> Chord | None:
    """A chord name (Harte ``A:min7``, ``Bb:maj/3`` or lead sheet ``Am7``, ``C/E``) → Chord;
    ``N`` / ``NC`` (no chord) → None. A name it cannot read raises :class:`BadInputError`
    naming it.

    Example: ``parse_chord("C/E")  # Chord(root=0, quality='maj', bass=4)``
    """
    text = str(name).strip()
    if text.upper() in ("N", "NC", "N.C.", "X"):
        return None
    head = _pitch_class(text)
    if head is None:
        raise BadInputError(f"chord {name!r}: not a chord name (expected e.g. C, Am, G7, Cmaj7, F/A)")
    root, rest = head
    bass = None
    if ":" in rest or rest == "":
        quality_text = rest[1:] if rest.startswith(":") else ""
        quality_text, _, slash = quality_text.partition("/")
        base = re.sub(r"\(.*\)", "", quality_text) or "maj"
        quality = _HARTE.get(base)
        if quality is None:
            raise BadInputError(f"chord {name!r}: unknown quality {base!r}")
        if slash:
            bass = _harte_degree(root, slash, name)
        return Chord(root, quality, bass)
    rest, _, slash = rest.partition("/")
    rest = re.sub(r"\((.*)\)", "", rest).replace("add9", "").replace("add2", "")
    quality = next((q for suffix, q in _LEAD if rest == suffix), None)
    if quality is None:
        raise BadInputError(f"chord {name!r}: unknown chord quality {rest!r} "
                            "(known: m, 7, maj7, m7, dim, dim7, m7b5, aug, sus2, sus4, 6, 9)")
    if slash:
        b = _pitch_class(slash)
        if b is None or b[1]:
            raise BadInputError(f"chord {name!r}: the bass after '/' must be a note name")
        bass = b[0]
    return Chord(root, quality, bass)


def _harte_degree(root: int, degree: str, name: str) -> int:
    m = re.fullmatch(r"([#b]*)(\d+)", degree)
    if not m:
        raise BadInputError(f"chord {name!r}: bad bass degree {degree!r}")
    steps = {1: 0, 2: 2, 3: 4, 4: 5, 5: 7, 6: 9, 7: 11, 9: 2, 11: 5, 13: 9}.get(int(m.group(2)) % 14 or 1, 0)
    return (root + steps + sum(1 if c == "#" else -1 for c in m.group(1))) % 12


def parse_progression(text: str | Sequence[str], beats_per_bar: float, bars: int) -> list[tuple[float, float, Chord]]:
    """A chord progression for ``bars`` bars: ``"Am F C G"`` is one chord per bar, ``"Am:2 F:2
    C G"`` gives the first two 2 beats each; the list is cycled until the bars are full (the
    last chord is cut at the end). Returns ``(start beat, length in beats, Chord)``.

    Example: ``parse_progression("C G Am F", 4, 8)[4]  # (16.0, 4.0, Chord(0, 'maj'))``
    """
    items = text.split() if isinstance(text, str) else [str(x) for x in text]
    if not items:
        raise BadInputError("chords: give at least one chord, e.g. \"Am F C G\"")
    parsed: list[tuple[float, Chord]] = []
    for item in items:
        name, _, beats = item.partition(":") if re.search(r":\d+(\.\d+)?$", item) else (item, "", "")
        chord = parse_chord(name)
        if chord is None:
            raise BadInputError(f"chords: {item!r} is no chord (N.C. cannot be asked for)")
        length = float(beats) if beats else float(beats_per_bar)
        if not 0 < length <= 64:
            raise BadInputError(f"chords: {item!r}: a chord lasts from a fraction of a beat to 64 beats")
        parsed.append((length, chord))
    total = beats_per_bar * bars
    out: list[tuple[float, float, Chord]] = []
    t, k = 0.0, 0
    while t < total - 1e-9:
        length, chord = parsed[k % len(parsed)]
        out.append((t, min(length, total - t), chord))
        t += length
        k += 1
    return out


_SECTION = re.compile(r"^\s*([A-Za-z])\s*:(?:\s+(.*))?$", re.S)


def split_section_chords(text: str) -> dict[str, str] | None:
    """Chords given per section of a form, ``"A: C G Am F; B: F G Em Am"`` → ``{"A": "C G Am
    F", "B": "F G Em Am"}`` (letters upper-cased); None for a plain progression (``"Am F C G"``,
    ``"Am:2 F:2 C G"``, ``"A:min7"``). A label is one letter, a colon and a space; sections are
    separated by ``;``.

    Example: ``split_section_chords("A: C G; B: F")  # {'A': 'C G', 'B': 'F'}``
    """
    if not isinstance(text, str) or (";" not in text and _SECTION.match(text) is None):
        return None
    out: dict[str, str] = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        m = _SECTION.match(part)
        if m is None:
            raise BadInputError(f"chords: {part.strip()!r} has no section label; write sections like "
                                "\"A: C G Am F; B: F G Em Am\"")
        letter, chords = m.group(1).upper(), (m.group(2) or "").strip()
        if not chords:
            raise BadInputError(f"chords: section {letter} has no chords")
        if letter in out:
            raise BadInputError(f"chords: section {letter} is given twice")
        out[letter] = chords
    return out


def key_of_chords(chords: Sequence[Chord]) -> str:
    """The key a progression implies: Krumhansl-Kessler profiles against the chords' tones
    (roots counted twice, the first chord's tones twice more: a progression usually starts on
    its tonic), as :func:`melodia.music.keys.estimate_key` reads notes.

    Example: ``key_of_chords([parse_chord(c) for c in "Am F C G".split()])  # 'A minor'``
    """
    w = np.zeros(12)
    for k, ch in enumerate(chords):
        for pc in ch.pitch_classes:
            w[pc] += 3.0 if k == 0 else 1.0
        w[ch.root] += 3.0 if k == 0 else 1.0
    return key_from_histogram(w).name


def chord_token_name(chord: Chord | None) -> str:
    """The control token of a chord (the bass is not part of it): ``Chord_A:min``, ``Chord_N``.

    Example: ``chord_token_name(parse_chord("Am7"))  # 'Chord_A:min7'``
    """
    return f"Chord_{NO_CHORD}" if chord is None else f"Chord_{PITCH_NAMES[chord.root]}:{chord.quality}"


def chord_from_token_name(token: str) -> Chord | None:
    """Inverse of :func:`chord_token_name`. Example: ``chord_from_token_name("Chord_C:maj")``."""
    body = token[len("Chord_"):] if token.startswith("Chord_") else token
    return parse_chord(body)


def chord_token_names() -> list[str]:
    """Every chord token, in id order: ``Chord_N`` then 12 roots × qualities.

    Example: ``len(chord_token_names())  # 133``
    """
    return [f"Chord_{NO_CHORD}"] + [f"Chord_{r}:{q}" for r in PITCH_NAMES for q in QUALITIES]


# ----------------------------------------------------------------------------- recognition
_TEMPLATES = np.array([[1.0 if (pc - r) % 12 in QUALITIES[q] else 0.0 for pc in range(12)]
                       for r in range(12) for q in QUALITIES])
_TEMPLATE_CHORDS = [Chord(r, q) for r in range(12) for q in QUALITIES]
# a seventh or a suspension must earn its place over the plain triad
_TEMPLATE_COST = np.array([0.0 if q in ("maj", "min") else 0.08 if q in ("7", "min7", "maj7") else 0.12
                           for r in range(12) for q in QUALITIES])


def chord_of_weights(weights: np.ndarray, bass: int | None = None) -> Chord | None:
    """The chord whose template best fits a 12-bin pitch-class weight vector (note time per
    pitch class), or None when the vector is empty. Fit = weight on the chord's tones minus
    weight off them, per unit of total weight, plus a bonus when the bass is the root, minus a
    small cost for the rarer qualities (a 7th or a suspension must be heard to win).

    Example: ``chord_of_weights(np.eye(12)[[0, 4, 7]].sum(0))  # Chord(0, 'maj')``
    """
    w = np.asarray(weights, np.float64)
    total = w.sum()
    if total <= 0:
        return None
    w = w / total
    fit = _TEMPLATES @ w - (1 - _TEMPLATES) @ w - _TEMPLATE_COST
    # every tone of the template should sound a little: a missing third costs
    missing = ((_TEMPLATES > 0) & (w[None, :] < 0.02)).sum(1)
    fit -= 0.15 * missing
    if bass is not None:
        fit += 0.1 * np.array([c.root == bass for c in _TEMPLATE_CHORDS])
    return _TEMPLATE_CHORDS[int(np.argmax(fit))]


def bar_lines(score: "symusic.Score", end_beats: float | None = None) -> np.ndarray:
    """Bar starts in beats (quarter notes) by the one bar rule (:func:`melodia.music.meter.bar_starts`)
    up to ``end_beats`` (default: where the last note of a track ends), plus the closing line.

    Example: ``bar_lines(score)[:3]  # array([0., 4., 8.])``
    """
    score = tick_score(score)
    tpq = float(score.ticks_per_quarter)
    if end_beats is None:
        end = max((int(tr.end()) for tr in score.tracks if len(tr.notes)), default=0)
    else:
        end = math.ceil(end_beats * tpq - 1e-6)
    return np.asarray(bar_starts(score, end, close=True), np.float64) / tpq


def _windows(bars: np.ndarray) -> np.ndarray:
    """Chord windows: half bars (a bar of 3 beats or less stays whole)."""
    edges = []
    for a, b in zip(bars[:-1], bars[1:]):
        edges.append(a)
        if b - a > 3.0 + 1e-9:
            edges.append(a + (b - a) / 2)
    edges.append(bars[-1])
    return np.asarray(edges)


def recognise_chords(notes: NoteArrays, bars: np.ndarray) -> list[tuple[float, Chord | None]]:
    """Chords recognised from the notes per half bar (a bar of ≤ 3 beats: per bar), as
    ``(start beat, chord)`` at every change (None = no chord: nothing sounds).

    Example: ``recognise_chords(NoteArrays.of_score(score), bar_lines(score))[:2]``
    """
    edges = _windows(bars)
    out: list[tuple[float, Chord | None]] = []
    prev: object = "start"
    for a, b in zip(edges[:-1], edges[1:]):
        overlap = np.clip(np.minimum(notes.end, b) - np.maximum(notes.onset, a), 0, None)
        sounding = overlap > 1e-6
        if not sounding.any():
            chord = None
        else:
            w = np.bincount(notes.pitch[sounding] % 12, weights=overlap[sounding], minlength=12)
            # the lowest note heard at the window's start (or first after it) is the bass
            starts = np.where(sounding, np.maximum(notes.onset, a), np.inf)
            first = starts.min()
            bass_pitch = notes.pitch[sounding & (starts <= first + 0.25)].min()
            chord = chord_of_weights(w, int(bass_pitch % 12))
        if chord != prev:
            out.append((float(a), chord))
            prev = chord
    return out


def chord_at(chords: Sequence[tuple[float, Chord | None]], times: np.ndarray) -> list[Chord | None]:
    """The chord in force at each time (beats) of a change list such as :func:`recognise_chords`
    gives: the last change at or before it (a change at exactly the time counts); None before the
    first change, or where no chord sounds.

    Example: ``chord_at([(0.0, Chord(0, "maj")), (2.0, Chord(7, "maj"))], np.array([1.0, 2.0]))  # [C, G]``
    """
    starts = np.array([c[0] for c in chords], np.float64)
    k = np.searchsorted(starts, np.asarray(times, np.float64) + 1e-9, side="right") - 1
    return [chords[i][1] if i >= 0 else None for i in np.atleast_1d(k).tolist()]


def pitch_name(pitch: int) -> str:
    """A MIDI pitch as a name with its octave, C4 = 60 (octaves as the piano roll counts them),
    spelled as :data:`PITCH_NAMES` whatever the key. Example: ``pitch_name(70)  # 'Bb4'``"""
    return f"{PITCH_NAMES[int(pitch) % 12]}{int(pitch) // 12 - 1}"


# ----------------------------------------------------------------------------- metre figures
def _near(x: np.ndarray, step: float, tol: float = GRID_TOLERANCE) -> np.ndarray:
    r = np.mod(x, step)
    return np.minimum(r, step - r) <= tol + 1e-9


def beats_in_bar(onsets: np.ndarray, bars: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(bar index, beats since that bar's line) of each onset. Example: see :func:`metre_figures`."""
    k = np.clip(np.searchsorted(bars, onsets + 1e-9, side="right") - 1, 0, len(bars) - 1)
    return k, onsets - bars[k]


def grid_share(onsets: np.ndarray, bars: np.ndarray | None = None, step: float = SIXTEENTH) -> float:
    """Share of onsets within :data:`GRID_TOLERANCE` of a multiple of ``step`` beats, counted
    from each onset's bar line (or from 0). NaN for no onsets.

    Example: ``grid_share(np.array([0.0, 0.25, 0.3]))  # 0.667``
    """
    onsets = np.asarray(onsets, np.float64)
    if onsets.size == 0:
        return float("nan")
    pos = beats_in_bar(onsets, bars)[1] if bars is not None else onsets
    return float(_near(pos, step).mean())


def best_phase(onsets: np.ndarray, steps: int = 48) -> tuple[float, float]:
    """The constant shift of the grid, in steps of 1/``steps`` beat over one beat, that puts the
    most onsets on a sixteenth (ties: the onsets closest to it, then the most on a beat, then
    the smallest shift), and the share it gives: ``(shift in beats to add to every time, share)``.

    Example: ``best_phase(np.arange(16) * 0.25 + 0.1)  # (0.1458.., 1.0)``
    """
    onsets = np.asarray(onsets, np.float64)
    if onsets.size == 0:
        return 0.0, float("nan")
    scored = []
    for k in range(steps):
        x = onsets + k / steps
        r = np.mod(x, SIXTEENTH)
        dist = float(np.minimum(r, SIXTEENTH - r).mean())
        scored.append((-round(grid_share(x), 9), round(dist, 9), -float(_near(x, 1.0).mean()), k))
    best = min(scored)
    return best[3] / steps, -best[0]


def quantize_times(times: np.ndarray) -> np.ndarray:
    """Times (beats) snapped to the nearest sixteenth or eighth-note triplet position.

    Example: ``quantize_times(np.array([0.27, 0.35]))  # [0.25, 0.333..]``
    """
    t = np.asarray(times, np.float64)
    q16 = np.round(t * 4) / 4
    q12 = np.round(t * 3) / 3
    return np.where(np.abs(t - q16) <= np.abs(t - q12), q16, q12)


def rhythm_repetition(onsets: np.ndarray, bars: np.ndarray) -> float:
    """Mean Jaccard similarity of consecutive bars' onset patterns on a sixteenth grid (bars
    where neither has an onset are skipped); NaN for fewer than two bars.

    Example: ``rhythm_repetition(np.array([0, 1, 4, 5.0]), np.array([0, 4, 8.0]))  # 1.0``
    """
    k, pos = beats_in_bar(np.asarray(onsets, np.float64), bars)
    slots = np.round(pos / SIXTEENTH).astype(np.int64)
    n_bars = len(bars) - 1
    sets = [set() for _ in range(max(n_bars, 0))]
    for b, s in zip(k, slots):
        if 0 <= b < n_bars:
            sets[b].add(int(s))
    sims = [len(a & b) / len(a | b) for a, b in zip(sets[:-1], sets[1:]) if a or b]
    return float(np.mean(sims)) if sims else float("nan")


def bass_on_downbeat(notes: NoteArrays, bars: np.ndarray) -> float:
    """Of the lowest notes starting on each beat, the duration-weighted share that starts on a
    bar's first beat (1/beats-per-bar means the bass has no sense of the bar). NaN if none.

    Example: ``bass_on_downbeat(NoteArrays.of_score(score), bar_lines(score))``
    """
    k, pos = beats_in_bar(notes.onset, bars)
    on_beat = _near(pos, 1.0)
    if not on_beat.any():
        return float("nan")
    beat_no = np.round(pos).astype(np.int64)
    key = k * 64 + beat_no
    idx = np.flatnonzero(on_beat)
    order = idx[np.lexsort((notes.pitch[idx], key[idx]))]
    _, first = np.unique(key[order], return_index=True)
    lowest = order[first]
    dur = notes.end[lowest] - notes.onset[lowest]
    total = dur.sum()
    return float(dur[beat_no[lowest] == 0].sum() / total) if total > 0 else float("nan")


def chord_beat_share(notes: NoteArrays, bars: np.ndarray) -> float:
    """Share of beats (with something sounding) whose sounding pitch classes hold a complete
    triad (major, minor, diminished, augmented; so every seventh chord too). A note sounds in a
    beat when it covers at least a sixteenth of it. NaN when nothing sounds.

    Example: ``chord_beat_share(NoteArrays.of_score(score), bar_lines(score))``
    """
    end = bars[-1]
    beats = np.arange(0.0, end, 1.0)
    if beats.size == 0 or notes.onset.size == 0:
        return float("nan")
    triads = [frozenset((r + i) % 12 for i in QUALITIES[q]) for r in range(12) for q in TRIADS]
    hits = total = 0
    for b in beats:
        cover = np.minimum(notes.end, b + 1) - np.maximum(notes.onset, b)
        pcs = frozenset(int(p) for p in notes.pitch[cover >= SIXTEENTH - 1e-9] % 12)
        if not pcs:
            continue
        total += 1
        hits += any(t <= pcs for t in triads)
    return hits / total if total else float("nan")


def chord_tone_share(notes: NoteArrays, chords: Sequence[tuple[float, Chord | None]],
                     end: float | None = None, mask: np.ndarray | None = None) -> float:
    """Share of note time (notes selected by ``mask``) on the tones of the chord in force, over
    the time some chord (not N) is in force. NaN when no such time.

    Example: ``chord_tone_share(notes, [(0.0, Chord(0, "maj"))])``
    """
    if not chords:
        return float("nan")
    sel = np.ones(notes.onset.size, bool) if mask is None else mask
    on, off, pc = notes.onset[sel], notes.end[sel], notes.pitch[sel] % 12
    starts = [c[0] for c in chords]
    stops = starts[1:] + [end if end is not None else (float(off.max()) if off.size else starts[-1])]
    inside = total = 0.0
    for a, b, (_, ch) in zip(starts, stops, chords):
        if ch is None or b <= a:
            continue
        cover = np.clip(np.minimum(off, b) - np.maximum(on, a), 0, None)
        tones = np.isin(pc, list(ch.pitch_classes))
        inside += float(cover[tones].sum())
        total += float(cover.sum())
    return inside / total if total > 0 else float("nan")


def metre_figures(notes: NoteArrays, bars: np.ndarray) -> dict[str, float]:
    """The metre and harmony figures of one piece on its own bar lines: ``grid16`` (share of
    onsets on a sixteenth), ``on_beat``, ``rhythm_repetition``, ``bass_downbeat``,
    ``chord_beats``.

    Example: ``metre_figures(NoteArrays.of_score(score), bar_lines(score))["grid16"]``
    """
    return {
        "grid16": grid_share(notes.onset, bars),
        "on_beat": grid_share(notes.onset, bars, step=1.0),
        "rhythm_repetition": rhythm_repetition(notes.onset, bars),
        "bass_downbeat": bass_on_downbeat(notes, bars),
        "chord_beats": chord_beat_share(notes, bars),
    }


def progression_string(chords: Iterable[tuple[float, Chord | None]], tonic: int, limit: int = 4) -> list[str]:
    """The piece's chords as degrees from its tonic (``I``, ``vi``, ``V7`` …), one per change,
    ``N`` dropped; the first ``limit``-chord windows are what ``corpus stats`` counts.

    Example: ``progression_string([(0, Chord(0, "maj")), (4, Chord(7, "maj"))], 0)  # ['I', 'V']``
    """
    numerals = ("I", "bII", "II", "bIII", "III", "IV", "#IV", "V", "bVI", "VI", "bVII", "VII")
    out = []
    for _, ch in chords:
        if ch is None:
            continue
        n = numerals[(ch.root - tonic) % 12]
        if ch.quality in ("min", "min7", "dim", "hdim7", "dim7"):
            n = n.lower()
        n += {"maj": "", "min": "", "7": "7", "maj7": "maj7", "min7": "7", "dim": "o", "aug": "+",
              "sus2": "sus2", "sus4": "sus4", "hdim7": "ø7", "dim7": "o7"}[ch.quality]
        if not out or out[-1] != n:
            out.append(n)
    return out
