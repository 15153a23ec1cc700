"""Keys: the 24 key names, how spellings are read, the key tokens, and key finding.

:data:`KEY_NAMES` lists the 24 keys with one spelling each (``index = mode * 12 + tonic``, mode
0 major, 1 minor; ``"any"`` gets index 24, the ``KEY_any`` token that follows the 24 keys).
:func:`parse_key` reads the usual spellings, including POP909's ``"Gb:maj"`` / ``"A:min"``.
:func:`estimate_key` is the Krumhansl-Kessler key-finding algorithm (Krumhansl & Kessler 1982;
Krumhansl 1990, *Cognitive Foundations of Musical Pitch*): correlate the duration-weighted
pitch-class histogram with the 24 rotations of the major and minor probe-tone profiles; the best
correlation names the key, and the gap between the best major and the best minor correlation
(:attr:`KeyEstimate.major_minor_margin`) says how clearly the music is major or minor. How
often it agrees with POP909's annotations: docs/corpus.md, "Mood estimator calibration".
:func:`estimate_clip_key` adds what a listener hears between a key and its relative
(C major / A minor share their notes): the tonic at the ends, the bass, the leading tone.
:func:`scale_of` and :func:`scale_with_chord` are the scales the sampler keeps notes in.

Example: ``parse_key("Gb:maj") == "F# major"``; ``key_token_name("A minor") == "KEY_A_minor"``
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..errors import BadInputError
from .notes import TickNotes

if TYPE_CHECKING:  # symusic is only needed by the caller who built the Score
    import symusic

#: "no key" (and "no mood"): the unconditional control word
ANY = "any"
_MAJOR_TONICS = ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
_MINOR_TONICS = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B")
KEY_NAMES: tuple[str, ...] = tuple(f"{t} major" for t in _MAJOR_TONICS) + tuple(
    f"{t} minor" for t in _MINOR_TONICS)
#: the index of "any" (the KEY_any token after the 24 keys)
KEY_ANY_INDEX = 24
_LETTER_PC = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}
_KEY_RE = re.compile(
    r"^(?P<letter>[A-Ga-g])(?P<acc>[#b\u266f\u266d]{0,2}|[\s-]?(?i:sharp|flat))?"
    r"\s*[:_\s-]?\s*(?P<mode>major|minor|maj|min|ionian|aeolian|M|m|)$")


def parse_key(text: str) -> str:
    """Canonical key name (one of :data:`KEY_NAMES`) from a usual spelling; ``"any"`` passes.

    Accepts "D minor", "d minor", "Dm", "D" (major), "F#", "Gb:maj", "A:min", "Bbm", "c#:min",
    "Eb_major", "KEY_F#_minor" style names without the prefix, and unicode sharps/flats.
    Enharmonics map to the canonical spelling ("Gb major" -> "F# major", "D# minor" -> "Eb minor").

    Example: ``parse_key("Gb:maj") == "F# major"``
    """
    if not isinstance(text, str):
        raise BadInputError(f"key {text!r} is not a string; write e.g. 'D minor' or 'F#'")
    stripped = text.strip()
    if stripped.lower() == ANY:
        return ANY
    match = _KEY_RE.match(stripped)
    if match is None:
        # Full-word modes are case-insensitive ("D MINOR"); a lone M/m is not.
        lowered = re.sub(r"(?i)(major|minor|maj|min|ionian|aeolian)$",
                         lambda m: m.group(1).lower(), stripped)
        match = _KEY_RE.match(lowered)
    if match is None:
        raise BadInputError(
            f"unknown key {text!r}; write a tonic and mode such as 'D minor', 'Dm', 'F#', "
            f"'Gb:maj' or 'A:min' (keys: {', '.join(KEY_NAMES)})")
    pc = _LETTER_PC[match.group("letter").lower()]
    acc = (match.group("acc") or "").lstrip(" \t-").lower()
    if acc == "sharp":
        pc += 1
    elif acc == "flat":
        pc -= 1
    else:
        pc += sum(1 if c in "#\u266f" else -1 for c in acc)
    minor = match.group("mode") in ("minor", "min", "aeolian", "m")
    return KEY_NAMES[int(minor) * 12 + pc % 12]


def key_index(name: str) -> int:
    """Index of a key in :data:`KEY_NAMES` (``mode * 12 + tonic``); ``"any"`` -> 24.

    Any spelling :func:`parse_key` reads is accepted.

    Example: ``key_index("A minor") == 21``
    """
    canonical = parse_key(name)
    return KEY_ANY_INDEX if canonical == ANY else KEY_NAMES.index(canonical)


def key_from_index(index: int) -> str:
    """Inverse of :func:`key_index`: 0..23 -> key name, 24 -> ``"any"``.

    Example: ``key_from_index(21) == "A minor"``
    """
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) \
            or not 0 <= index <= KEY_ANY_INDEX:
        raise BadInputError(f"key index {index!r} is outside 0..24")
    return ANY if index == KEY_ANY_INDEX else KEY_NAMES[int(index)]


def tonic_shift(name: str) -> int:
    """Semitones from C up (or down) to a key's tonic, in -5..+6; 0 for ``"any"``.

    A key-normalised tokenizer writes every piece with its tonic on C; this is how far the
    notes move back into the key asked for (the smaller way round, so the register stays).

    Example: ``tonic_shift("A minor") == -3``; ``tonic_shift("F# major") == 6``
    """
    index = key_index(name)
    if index == KEY_ANY_INDEX:
        return 0
    tonic = index % 12
    return tonic if tonic <= 6 else tonic - 12


def key_in_c(name: str) -> str:
    """The same mode on C: ``"A minor"`` -> ``"C minor"``, ``"any"`` -> ``"any"``.

    Example: ``key_in_c("Eb major") == "C major"``
    """
    index = key_index(name)
    return ANY if index == KEY_ANY_INDEX else KEY_NAMES[12 * (index // 12)]


def key_token_name(name: str) -> str:
    """Control-token name of a key: spaces become "_" and a "KEY_" prefix is added.

    Example: ``key_token_name("f# minor") == "KEY_F#_minor"``
    """
    return "KEY_" + parse_key(name).replace(" ", "_")


def key_from_token_name(token: str) -> str:
    """Inverse of :func:`key_token_name`: "KEY_F#_minor" -> "F# minor", "KEY_any" -> "any".

    Example: ``key_from_token_name("KEY_Bb_major") == "Bb major"``
    """
    if not isinstance(token, str) or not token.startswith("KEY_"):
        raise BadInputError(f"{token!r} is not a key token (expected e.g. 'KEY_F#_minor')")
    rest = token[4:]
    canonical = parse_key(rest.replace("_", " "))
    if key_token_name(canonical) != token:
        raise BadInputError(f"{token!r} is not a canonical key token; "
                            f"the token for that key is {key_token_name(canonical)!r}")
    return canonical


# --------------------------------------------------------------------------------------------
# Scales
# --------------------------------------------------------------------------------------------

_MAJOR_STEPS = (0, 2, 4, 5, 7, 9, 11)
_MINOR_STEPS = (0, 2, 3, 5, 7, 8, 10)  # natural minor: the scale of the corpus's minor music
_LETTERS = "CDEFGAB"
#: letter steps above a chord's root of each interval (semitones) a chord quality uses
_INTERVAL_LETTERS = {0: 0, 1: 1, 2: 1, 3: 2, 4: 2, 5: 3, 6: 4, 7: 4, 8: 4, 9: 6, 10: 6, 11: 6}
#: the letter of each pitch class as melodia spells chord roots (C C# D Eb E F F# G Ab A Bb B)
_ROOT_LETTER = (0, 0, 1, 2, 2, 3, 3, 4, 5, 5, 6, 6)


def _spelled_scale(key: str) -> tuple[dict[int, int], bool]:
    """A key's seven degrees as ``{letter index (C=0 … B=6): pitch class}``, and whether it is minor."""
    index = key_index(key)
    if index == KEY_ANY_INDEX:
        raise BadInputError("'any' has no scale")
    tonic, minor = index % 12, index >= 12
    first = _LETTERS.index(KEY_NAMES[index][0])
    steps = _MINOR_STEPS if minor else _MAJOR_STEPS
    return {(first + k) % 7: (tonic + steps[k]) % 12 for k in range(7)}, minor


def scale_of(key: str, leading_tone: bool = False) -> frozenset[int]:
    """Pitch classes of a key's scale: major, or natural minor (with ``leading_tone`` also the
    raised 7th: G♯ in A minor).

    Example: ``sorted(scale_of("A minor", leading_tone=True))  # [0, 2, 4, 5, 7, 8, 9, 11]``
    """
    degrees, minor = _spelled_scale(key)
    out = set(degrees.values())
    if minor and leading_tone:
        out.add((key_index(key) + 11) % 12)
    return frozenset(out)


def scale_with_chord(key: str, root: int, intervals: Sequence[int], bass: int | None = None,
                     leading_tone: bool = False) -> frozenset[int]:
    """The key's scale while a chord is in force: each chord tone replaces the scale degree of
    its letter (F major in D major: F for F♯, C for C♯ → D E F G A B C); a chord inside the
    scale leaves it as it is (:func:`scale_of`). The root is spelled as a degree of the key
    when it is one, else as melodia names roots (C♯, E♭, F♯, A♭, B♭); the other tones by their
    interval (a third two letters up, a fifth four …); a slash chord's bass is added.

    Example: ``sorted(scale_with_chord("D major", 5, (0, 4, 7)))  # [0, 2, 4, 5, 7, 9, 11]``
    """
    plain = scale_of(key, leading_tone)
    root %= 12
    if {(root + i) % 12 for i in intervals} <= plain and (bass is None or bass % 12 in plain):
        return plain
    degrees, minor = _spelled_scale(key)
    root_letter = next((letter for letter, pc in degrees.items() if pc == root), _ROOT_LETTER[root])
    tones = {(root_letter + _INTERVAL_LETTERS[i % 12]) % 7: (root + i) % 12 for i in intervals}
    out = set({**degrees, **tones}.values())
    seventh = (_LETTERS.index(parse_key(key)[0]) + 6) % 7
    if minor and leading_tone and seventh not in tones:  # the chord leaves the 7th alone: G♯ stays allowed
        out.add((key_index(key) + 11) % 12)
    if bass is not None:
        out.add(bass % 12)
    return frozenset(out)


# --------------------------------------------------------------------------------------------
# Key finding
# --------------------------------------------------------------------------------------------

# Krumhansl & Kessler (1982) probe-tone profiles, tonic first.
_KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


def _centred_profiles() -> np.ndarray:
    """24 x 12 matrix, row ``mode*12 + tonic``: the rotated profiles, centred and unit length."""
    rows = [np.roll(_KK_MAJOR, t) for t in range(12)] + [np.roll(_KK_MINOR, t) for t in range(12)]
    matrix = np.array(rows)
    matrix -= matrix.mean(axis=1, keepdims=True)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


_PROFILES = _centred_profiles()  # a constant, computed once from the published numbers


@dataclass(frozen=True)
class KeyEstimate:
    """Result of :func:`estimate_key`.

    ``correlation`` is the best Pearson correlation (-1..1); ``major_minor_margin`` is the best
    major-key correlation minus the best minor-key correlation (> 0 leans major).

    Example: ``KeyEstimate("A minor", 9, "minor", 0.82, -0.15)``
    """

    name: str
    tonic: int
    mode: str
    correlation: float
    major_minor_margin: float


def key_from_histogram(hist: np.ndarray) -> KeyEstimate:
    """The key whose Krumhansl-Kessler profile best correlates with a 12-bin pitch-class
    histogram; C major with correlation 0 for a flat (or empty) histogram.

    Example: ``key_from_histogram(np.eye(12)[[0, 4, 7]].sum(0)).name  # 'C major'``
    """
    centred = hist - hist.mean()
    norm = float(np.linalg.norm(centred))
    if norm == 0.0:  # every pitch class equally present (or none): no key information
        return KeyEstimate(KEY_NAMES[0], 0, "major", 0.0, 0.0)
    corr = _PROFILES @ (centred / norm)
    best = int(np.argmax(corr))
    margin = float(corr[:12].max() - corr[12:].max())
    return KeyEstimate(KEY_NAMES[best], best % 12, "minor" if best >= 12 else "major",
                       float(corr[best]), margin)


#: a key's relative (C major / A minor) within this much correlation of it is decided by
#: :func:`relative_cues` when they agree by at least :data:`RELATIVE_VOTES` votes (measured on
#: POP909: docs/evidence.md, "Relative minor")
RELATIVE_MARGIN = 0.15
RELATIVE_VOTES = 3


def relative_cues(minor_tonic: int, notes: TickNotes) -> int:
    """Votes for the minor key over its relative major (``> 0``: minor, ``< 0``: major, 0: no
    say), from what the pitch-class histogram leaves out: the bass under the last onset (2
    votes) and under the first (1), the last melody note (the highest of the last onset, 1),
    the minor's leading tone (G♯ for A minor) held for over 2% of the note time (1), and
    which tonic the bass holds on more beats (1).

    Example: ``relative_cues(9, TickNotes.of_score(a_minor_clip))  # 5``
    """
    major_tonic = (minor_tonic + 3) % 12
    time, end, pitch = notes.p_time, notes.p_end, notes.p_pitch
    dur = np.maximum(end - time, 1).astype(np.float64)

    def vote(pc: int, weight: int) -> int:
        return weight if pc == minor_tonic else -weight if pc == major_tonic else 0

    beat = notes.tpq
    last, first = int(time.max()), int(time.min())
    under_last = (time <= last) & (end > last)  # what sounds as the last onset strikes
    at_last = time >= last - beat // 4
    votes = vote(int(pitch[under_last].min()) % 12, 2)
    votes += vote(int(pitch[at_last].max()) % 12, 1)
    votes += vote(int(pitch[time <= first + beat // 4].min()) % 12, 1)
    leading = dur[pitch % 12 == (minor_tonic + 11) % 12].sum()
    votes += int(leading > 0.02 * dur.sum())
    bass = np.zeros(12)  # the lowest note sounding on each beat
    for b in range(first - first % beat, int(end.max()), beat):
        sounding = (time <= b) & (end > b)
        if sounding.any():
            bass[int(pitch[sounding].min()) % 12] += 1
    votes += int(np.sign(bass[minor_tonic] - bass[major_tonic]))
    return votes


def estimate_clip_key(score: "symusic.Score") -> KeyEstimate:
    """The key of a clip (what ``--continue`` and infill read a clip in): :func:`estimate_key`,
    except that when the best key's relative (C major / A minor) correlates within
    :data:`RELATIVE_MARGIN` of it, :func:`relative_cues` choose between the two when at least
    :data:`RELATIVE_VOTES` of them agree (the tonic in the bass at the ends and on the beats,
    the last melody note, the leading tone). Raises
    :class:`BadInputError` when there is no pitched note.

    Example: ``estimate_clip_key(symusic.Score("am_clip.mid")).name  # 'A minor'``
    """
    notes = TickNotes.of_score(score)
    if not notes.pitched.any():
        raise BadInputError("score has no pitched notes, so it has no key")
    weights = np.maximum(notes.duration[notes.pitched], 1).astype(np.float64)
    hist = np.bincount(notes.p_pitch % 12, weights=weights, minlength=12)
    best = key_from_histogram(hist)
    if best.correlation == 0.0:
        return best
    corr = _PROFILES @ ((hist - hist.mean()) / np.linalg.norm(hist - hist.mean()))
    minor = best.mode == "minor"
    minor_tonic = best.tonic if minor else (best.tonic + 9) % 12
    relative = minor_tonic + 12 if not minor else (best.tonic + 3) % 12
    if best.correlation - float(corr[relative]) > RELATIVE_MARGIN:
        return best
    votes = relative_cues(minor_tonic, notes)
    if abs(votes) < RELATIVE_VOTES or (votes > 0) == minor:
        return best
    return KeyEstimate(KEY_NAMES[relative], relative % 12, "minor" if relative >= 12 else "major",
                       float(corr[relative]), best.major_minor_margin)


def key_of_notes(pitch: np.ndarray, duration: np.ndarray) -> KeyEstimate:
    """Key of pitched notes: pitch-class histogram weighted by duration (at least one tick).

    Example: ``key_of_notes(np.array([57, 60, 64]), np.array([480, 480, 480])).name``
    """
    weights = np.maximum(duration, 1).astype(np.float64)
    return key_from_histogram(np.bincount(pitch % 12, weights=weights, minlength=12))


def estimate_key(score: "symusic.Score") -> KeyEstimate:
    """Krumhansl-Kessler key of a score from its duration-weighted pitch-class histogram.

    Drum tracks are skipped. Raises :class:`BadInputError` when there is no pitched note.

    Example: ``estimate_key(symusic.Score("song.mid")).name  # 'G major'``
    """
    notes = TickNotes.of_score(score)
    if not notes.pitched.any():
        raise BadInputError("score has no pitched notes, so it has no key")
    return key_of_notes(notes.p_pitch, notes.duration[notes.pitched])
