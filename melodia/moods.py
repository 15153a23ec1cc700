"""Mood vocabulary, keys, user labels and the estimator that labels unlabelled music.

Moods
-----
melodia knows four canonical moods, the quadrants of Russell's (1980) valence-arousal plane,
as in the EMOPIA data set:

=========  ========  ========
mood       valence   arousal
=========  ========  ========
happy      +         +
tense      -         +
sad        -         -
calm       +         -
=========  ========  ========

``"any"`` (:data:`ANY`) means "no mood": the unconditional token used for classifier-free
guidance. Aliases (:data:`ALIASES`: joyful -> happy, anxious -> tense, ...) map everyday words
onto the quadrants. A caller may instead give ``valence`` and ``arousal`` in [-1, 1]; the
quadrant decides, 0 counting as positive. A user's corpus may bring its own mood words and tags
(labels.csv, folder names); :func:`label_from_path` keeps those as normalised words.

Keys
----
:data:`KEY_NAMES` lists the 24 keys with one spelling each (``index = mode * 12 + tonic``,
mode 0 major, 1 minor; ``"any"`` gets index 24, the ``KEY_any`` token that follows the 24 keys).
:func:`parse_key` reads the usual spellings, including POP909's ``"Gb:maj"`` / ``"A:min"``.
:func:`estimate_key` is the Krumhansl-Kessler key-finding algorithm (Krumhansl & Kessler 1982;
Krumhansl 1990, *Cognitive Foundations of Musical Pitch*): correlate the duration-weighted
pitch-class histogram with the 24 rotations of the major and minor probe-tone profiles; the best
correlation names the key, and the gap between the best major and the best minor correlation
(:attr:`KeyEstimate.major_minor_margin`) says how clearly the music is major or minor.

The estimator: rules and reasons
--------------------------------
Music-psychology reviews agree on which structural cues carry which emotion dimension
(Gabrielsson & Lindström 2010, "The role of structure in the musical expression of emotions",
in *Handbook of Music and Emotion*; Juslin & Laukka 2003, "Communication of emotions in vocal
expression and music performance", *Psychological Bulletin* 129; Juslin & Lindström 2010):

* **Valence** rests mainly on *mode* (major -> positive, minor -> negative; the most consistent
  valence cue in both reviews) and secondarily on *register* (high pitch -> happy, low pitch ->
  sad / serious). melodia's valence score is::

      valence = clip(w_mode * tanh((margin - margin_centre) / margin_scale)
                     + w_register * clip((pitch_mean - register_centre) / register_scale, -1, 1),
                     -1, 1)

  ``margin`` is the major-minus-minor profile correlation gap. ``margin_centre`` sits a
  little above 0: relative major and minor share their pitch classes, and a bare melody in
  minor (no chords confirming the tonic) often reaches a small positive gap, so a piece must
  be clearly major to count as positive (see "Calibration" and the field's comment).

* **Arousal** rests on *tempo* (fast -> high arousal: happy/tense; slow -> sad/calm), *note
  density* (many events per second -> high arousal) and *loudness* (loud -> high arousal);
  all three are among the strongest arousal cues in Gabrielsson & Lindström's table and in
  Juslin & Laukka's performance cues. Each cue becomes a score in [-1, 1]; tempo and density
  on a log (ratio) scale, because tempo is perceived proportionally (60 -> 120 qpm is as big a
  step as 120 -> 240)::

      tempo_score   = clip(log2(tempo_qpm / tempo_centre) / tempo_octaves, -1, 1)
      density_score = clip(log2(onsets_per_second / density_centre) / density_octaves, -1, 1)
      loud_score    = clip((velocity_mean - velocity_centre) / velocity_scale, -1, 1)
      arousal       = w_tempo * tempo_score + w_density * density_score + w_loud * loud_score

* **Unknown tempo.** music21 writes 120 qpm into every work that has no tempo mark (about 90%
  of its corpus), and abc2midi does the same for ABC tunes without a ``Q:`` field. That 120 is
  an invention, not a measurement: a slow air and a fast reel would both "play at 120". So a
  caller that knows the tempo is a default passes ``tempo_known=False``; then
  :func:`extract_features` leaves ``tempo_qpm`` and ``onsets_per_second`` as ``None`` and the
  estimator uses only cues that do not depend on the clock: onsets per beat (how busy the
  notated rhythm is: running quavers and semiquavers against minims and crotchets) and
  velocity::

      arousal = w_beat_density * clip(log2(onsets_per_beat / beat_density_centre)
                                      / beat_density_octaves, -1, 1)
              + w_loud_unknown * loud_score

  A file with no tempo event at all is treated the same way (its 120 qpm is MIDI's default).

* **Mood** is the quadrant of (valence, arousal), 0 counting as positive, exactly as
  :func:`resolve_mood` reads a caller's valence/arousal. So minor + slow -> sad,
  minor + fast/busy/loud -> tense, major + fast -> happy, major + slow/soft -> calm.

Every threshold is a field of :class:`MoodEstimator` with its reason next to it; change one by
making ``MoodEstimator(tempo_centre=...)``. The estimate's ``reasons`` list says in words which
cue pushed which way, so a surprising label can be traced.

Calibration
-----------
Defaults were set on two random samples of melodia's built-in corpus, each of 300 POP909 songs
(tempo and velocities real) and 450 ABC folk tunes from music21's corpus read with
``symusic.Score.from_abc`` (tempo known only where the tune has a ``Q:`` field, about 8%).
Centres sit near the corpus medians (quoted next to each field), so the quadrants split the
corpus rather than piling it into one corner; the cue scales are one octave of tempo or density
and two dynamic levels, so a cue saturates only at the extremes. Only the sign of valence and
arousal decides the mood, so a centre moves pieces between quadrants and a scale or weight
only changes how cues trade off. The key estimate was checked against POP909's own
annotations (``key_audio.txt``, the key held longest): the exact key agrees on 82% of songs,
the mode (margin below/above ``margin_centre``) on 90%.

Measured with the defaults (sample 1 / sample 2):

* POP909: happy 25/24%, tense 19/22%, sad 19/22%, calm 37/33%
* ABC folk: happy 48/49%, tense 12/17%, sad 11/14%, calm 28/20%
  (tempo-less tunes alone: 46/47, 12/17, 12/15, 30/20)

Folk tunes are mostly major (about 80% by the key estimate), so fewer of them fall on the
negative-valence side; tempo-marked fiddle tunes (median 124 qpm) are mostly happy, as they
should be. Every mood gets at least 10% in each source.

Labels
------
:func:`read_labels_csv` reads a ``labels.csv`` (header ``file,mood`` and an optional ``tags``
column of ``;``-separated tags). :func:`label_from_path` decides a piece's label: a labels.csv
entry wins; otherwise a folder named after a mood or alias gives the mood; other folder names
become tags; with no mood the caller runs :class:`MoodEstimator`.

Example:
    >>> resolve_mood("Joyful"), resolve_mood(valence=-0.2, arousal=-0.7), parse_key("Gb:maj")
    ('happy', 'sad', 'F# major')
"""
from __future__ import annotations

import csv
import math
import re
import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from .errors import BadInputError

if TYPE_CHECKING:  # symusic is only needed by the caller who built the Score
    import symusic

__all__ = [
    "ALIASES", "ANY", "CANONICAL_MOODS", "KEY_NAMES", "KeyEstimate", "Label", "Labels",
    "MoodEstimate", "MoodEstimator", "MoodFeatures", "estimate_key", "extract_features",
    "features_to_dict", "key_from_index", "key_from_token_name", "key_in_c", "key_index", "key_token_name",
    "label_from_path", "mood_token_name", "mood_valence_arousal", "normalise_word", "parse_key",
    "read_labels_csv", "resolve_mood", "tonic_shift",
]

# --------------------------------------------------------------------------------------------
# Moods
# --------------------------------------------------------------------------------------------

CANONICAL_MOODS: tuple[str, ...] = ("happy", "tense", "sad", "calm")
ANY = "any"

#: (valence, arousal) at the centre of each canonical mood's quadrant (Russell 1980).
_QUADRANT: dict[str, tuple[float, float]] = {
    "happy": (0.5, 0.5),
    "tense": (-0.5, 0.5),
    "sad": (-0.5, -0.5),
    "calm": (0.5, -0.5),
}

ALIASES: dict[str, str] = {
    # +valence, +arousal
    "joyful": "happy", "upbeat": "happy", "cheerful": "happy", "bright": "happy",
    "excited": "happy", "energetic": "happy", "playful": "happy", "merry": "happy",
    "lively": "happy", "festive": "happy", "triumphant": "happy", "elated": "happy",
    "happiness": "happy", "joy": "happy",
    # -valence, +arousal
    "angry": "tense", "anxious": "tense", "dark": "tense", "agitated": "tense",
    "fearful": "tense", "nervous": "tense", "aggressive": "tense", "scary": "tense",
    "suspenseful": "tense", "furious": "tense", "restless": "tense", "menacing": "tense",
    "tension": "tense", "anger": "tense", "fear": "tense",
    # -valence, -arousal
    "melancholic": "sad", "gloomy": "sad", "sorrowful": "sad", "depressed": "sad",
    "melancholy": "sad", "mournful": "sad", "somber": "sad", "sombre": "sad",
    "lonely": "sad", "heartbroken": "sad", "tragic": "sad", "sadness": "sad",
    # +valence, -arousal
    "peaceful": "calm", "relaxed": "calm", "tender": "calm", "serene": "calm",
    "tranquil": "calm", "gentle": "calm", "soothing": "calm", "mellow": "calm",
    "dreamy": "calm", "relaxing": "calm", "chill": "calm", "calmness": "calm",
}
# (Words that are also common folder names, such as "content", are left out on purpose:
# label_from_path reads folder names as moods.)


def _valid_moods_text() -> str:
    aliases = ", ".join(sorted(ALIASES))
    return f"one of {', '.join(CANONICAL_MOODS)}, '{ANY}' or an alias ({aliases})"


def _canonical_or_none(word: str) -> str | None:
    """The canonical mood (or "any") a normalised word names, or None."""
    if word in CANONICAL_MOODS or word == ANY:
        return word
    return ALIASES.get(word)


def resolve_mood(mood: str | None = None, valence: float | None = None,
                 arousal: float | None = None) -> str:
    """Canonical mood name from a mood name/alias or from valence and arousal in [-1, 1].

    Names are case-insensitive and stripped; ``None`` (with no valence/arousal) or ``"any"``
    gives ``"any"``. Valence and arousal pick Russell's quadrant, 0 counting as positive.
    Raises :class:`BadInputError` for an unknown name, a value outside [-1, 1], only one of
    valence/arousal, or both a name and valence/arousal.

    Example: ``resolve_mood("Melancholic") == resolve_mood(valence=-0.3, arousal=-0.1) == "sad"``
    """
    if valence is None and arousal is None:
        if mood is None:
            return ANY
        if not isinstance(mood, str):
            raise BadInputError(f"mood {mood!r} is not a string; use {_valid_moods_text()}")
        found = _canonical_or_none(mood.strip().lower())
        if found is None:
            raise BadInputError(f"unknown mood {mood!r}; use {_valid_moods_text()}")
        return found
    if mood is not None:
        raise BadInputError(
            f"give either mood ({mood!r}) or valence/arousal ({valence!r}, {arousal!r}), not both")
    if valence is None or arousal is None:
        raise BadInputError(
            f"give both valence and arousal (got valence={valence!r}, arousal={arousal!r})")
    for name, value in (("valence", valence), ("arousal", arousal)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or not -1.0 <= value <= 1.0:
            raise BadInputError(
                f"{name} {value!r} is outside [-1, 1]; give valence and arousal in [-1, 1] or "
                f"a mood, {_valid_moods_text()}")
    if valence >= 0:
        return "happy" if arousal >= 0 else "calm"
    return "tense" if arousal >= 0 else "sad"


def mood_valence_arousal(mood: str) -> tuple[float, float]:
    """The centre (valence, arousal) of a mood's quadrant: (+-0.5, +-0.5). Aliases accepted.

    ``"any"`` has no place on the plane and raises :class:`BadInputError`.

    Example: ``mood_valence_arousal("tense") == (-0.5, 0.5)``
    """
    canonical = resolve_mood(mood)
    if canonical == ANY:
        raise BadInputError(f"mood {mood!r} has no valence/arousal; use one of {CANONICAL_MOODS}")
    return _QUADRANT[canonical]


def mood_token_name(mood: str) -> str:
    """The control-token name of a canonical mood, ``"any"`` or a user mood word.

    Example: ``mood_token_name("Joyful") == "MOOD_happy"``
    """
    word = normalise_word(mood)
    canonical = _canonical_or_none(word)
    if canonical is None and not word:
        raise BadInputError(f"mood {mood!r} has no letters or digits to name a token")
    return f"MOOD_{canonical or word}"


def normalise_word(text: str) -> str:
    """A user mood or tag as melodia stores it: ASCII lowercase, runs of other characters -> "_".

    Accents are dropped (NFKD), leading/trailing underscores stripped; may return "".

    Example: ``normalise_word(" Film Noir ") == "film_noir"``
    """
    ascii_text = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "_", ascii_text.lower()).strip("_")


# --------------------------------------------------------------------------------------------
# Keys
# --------------------------------------------------------------------------------------------

_MAJOR_TONICS = ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
_MINOR_TONICS = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B")
KEY_NAMES: tuple[str, ...] = tuple(f"{t} major" for t in _MAJOR_TONICS) + tuple(
    f"{t} minor" for t in _MINOR_TONICS)
_KEY_ANY_INDEX = 24
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
    return _KEY_ANY_INDEX if canonical == ANY else KEY_NAMES.index(canonical)


def key_from_index(index: int) -> str:
    """Inverse of :func:`key_index`: 0..23 -> key name, 24 -> ``"any"``.

    Example: ``key_from_index(21) == "A minor"``
    """
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) \
            or not 0 <= index <= _KEY_ANY_INDEX:
        raise BadInputError(f"key index {index!r} is outside 0..24")
    return ANY if index == _KEY_ANY_INDEX else KEY_NAMES[int(index)]


def tonic_shift(name: str) -> int:
    """Semitones from C up (or down) to a key's tonic, in -5..+6; 0 for ``"any"``.

    A key-normalised tokenizer writes every piece with its tonic on C; this is how far the
    notes move back into the key asked for (the smaller way round, so the register stays).

    Example: ``tonic_shift("A minor") == -3``; ``tonic_shift("F# major") == 6``
    """
    index = key_index(name)
    if index == _KEY_ANY_INDEX:
        return 0
    tonic = index % 12
    return tonic if tonic <= 6 else tonic - 12


def key_in_c(name: str) -> str:
    """The same mode on C: ``"A minor"`` -> ``"C minor"``, ``"any"`` -> ``"any"``.

    Example: ``key_in_c("Eb major") == "C major"``
    """
    index = key_index(name)
    return ANY if index == _KEY_ANY_INDEX else KEY_NAMES[12 * (index // 12)]


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
    """

    name: str
    tonic: int
    mode: str
    correlation: float
    major_minor_margin: float


def _tick_score(score: "symusic.Score") -> "symusic.Score":
    return score if "Tick" in str(score.ttype) else score.to("tick")


def _note_arrays(score: "symusic.Score", drums: bool) -> dict[str, np.ndarray]:
    """Concatenated note arrays (time, duration, pitch, velocity as int64) of a tick score."""
    parts: dict[str, list[np.ndarray]] = {"time": [], "duration": [], "pitch": [], "velocity": []}
    for track in score.tracks:
        if track.is_drum and not drums:
            continue
        arrays = track.notes.numpy()
        for key in parts:
            parts[key].append(np.asarray(arrays[key], dtype=np.int64))
    return {key: (np.concatenate(v) if v else np.zeros(0, np.int64)) for key, v in parts.items()}


def _key_from_histogram(hist: np.ndarray) -> KeyEstimate:
    centred = hist - hist.mean()
    norm = float(np.linalg.norm(centred))
    if norm == 0.0:  # every pitch class equally present (or none): no key information
        return KeyEstimate(KEY_NAMES[0], 0, "major", 0.0, 0.0)
    corr = _PROFILES @ (centred / norm)
    best = int(np.argmax(corr))
    margin = float(corr[:12].max() - corr[12:].max())
    return KeyEstimate(KEY_NAMES[best], best % 12, "minor" if best >= 12 else "major",
                       float(corr[best]), margin)


def estimate_key(score: "symusic.Score") -> KeyEstimate:
    """Krumhansl-Kessler key of a score from its duration-weighted pitch-class histogram.

    Drum tracks are skipped. Raises :class:`BadInputError` when there is no pitched note.

    Example: ``estimate_key(symusic.Score("song.mid")).name  # 'G major'``
    """
    notes = _note_arrays(_tick_score(score), drums=False)
    if notes["pitch"].size == 0:
        raise BadInputError("score has no pitched notes, so it has no key")
    return _key_of_notes(notes)


def _key_of_notes(notes: dict[str, np.ndarray]) -> KeyEstimate:
    """Key from note arrays: pitch-class histogram weighted by duration (at least one tick)."""
    weights = np.maximum(notes["duration"], 1).astype(np.float64)
    return _key_from_histogram(np.bincount(notes["pitch"] % 12, weights=weights, minlength=12))


# --------------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MoodFeatures:
    """The measurements the mood estimator reads, from :func:`extract_features`.

    ``tempo_qpm`` and ``onsets_per_second`` are ``None`` when the tempo is not known (see the
    module docstring); ``duration_s`` is then at the file's nominal (probably default) tempo and
    is for bookkeeping only. Beats are quarter notes. Drum notes count in ``note_count``,
    as onsets and towards the span, but not towards key, register (``pitch_*``) or velocity.
    Onsets closer than a sixteenth of a beat count as one (a chord, a spread attack).
    """

    key: KeyEstimate
    note_count: int
    onset_count: int
    duration_s: float
    duration_beats: float
    onsets_per_beat: float
    onsets_per_second: float | None
    tempo_qpm: float | None
    tempo_known: bool
    pitch_mean: float
    pitch_std: float
    velocity_mean: float

    @property
    def mode(self) -> str:
        """"major" or "minor", from the key estimate."""
        return self.key.mode

    @property
    def major_minor_margin(self) -> float:
        """Best major minus best minor key-profile correlation (> 0 leans major)."""
        return self.key.major_minor_margin

    def to_dict(self) -> dict[str, Any]:
        """Flat JSON-ready dict for the manifest (floats rounded to 4 places).

        Example: ``extract_features(score).to_dict()["key"]  # 'G major'``
        """
        return features_to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "MoodFeatures":
        """Inverse of :meth:`to_dict` (e.g. to re-score a manifest with other thresholds).

        Example: ``MoodFeatures.from_dict(features.to_dict()).key.name == features.key.name``
        """
        try:
            index = key_index(str(data["key"]))
            key = KeyEstimate(KEY_NAMES[index], index % 12, "minor" if index >= 12 else "major",
                              float(data["key_correlation"]), float(data["major_minor_margin"]))
            values = {name: data[name] for name in cls.__dataclass_fields__ if name != "key"}
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise BadInputError(f"mood features dict is missing or has a bad value: {exc!r}") \
                from exc
        return cls(key=key, **values)


def features_to_dict(features: MoodFeatures) -> dict[str, Any]:
    """Flat JSON-ready dict of :class:`MoodFeatures` (key fields flattened, floats rounded).

    Example: ``features_to_dict(extract_features(score))["mode"]  # 'minor'``
    """
    raw = asdict(features)
    key = raw.pop("key")
    out: dict[str, Any] = {"key": key["name"], "mode": key["mode"],
                           "key_correlation": key["correlation"],
                           "major_minor_margin": key["major_minor_margin"]}
    out.update(raw)
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}


#: Onsets closer than this fraction of a beat count as one (a chord, a slightly spread attack).
_ONSET_MERGE_BEATS = 1.0 / 16.0


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, cumulative[-1] / 2.0)])


def _median_tempo(score: "symusic.Score", start: int, end: int) -> float | None:
    """Tempo (qpm) in force for the most beats between ticks start and end; None if no event."""
    tempos = score.tempos.numpy()
    times = np.asarray(tempos["time"], dtype=np.int64)
    if times.size == 0:
        return None
    order = np.argsort(times, kind="stable")
    times = times[order]
    qpm = 60_000_000.0 / np.maximum(np.asarray(tempos["mspq"], dtype=np.float64)[order], 1.0)
    seg_start = np.clip(times, start, end)
    seg_end = np.clip(np.append(times[1:], end), start, end)
    weights = (seg_end - seg_start).astype(np.float64)
    if weights.sum() <= 0:  # every tempo event after the music ends: the last before it rules
        return float(qpm[max(int(np.searchsorted(times, start, side="right")) - 1, 0)])
    return _weighted_median(qpm, weights)


def extract_features(score: "symusic.Score", tempo_known: bool = True) -> MoodFeatures:
    """Measure key, density, tempo, register and loudness of a score (numpy only, ~1 ms).

    Pass ``tempo_known=False`` when the file's tempo is a tool's default (music21 and abc2midi
    write 120 qpm for unmarked works): then ``tempo_qpm`` and ``onsets_per_second`` are None.
    A score with no tempo event is treated as tempo-unknown too. Raises
    :class:`BadInputError` when the score has no pitched note.

    Example: ``extract_features(symusic.Score("song.mid")).onsets_per_beat  # 2.41``
    """
    score = _tick_score(score)
    pitched = _note_arrays(score, drums=False)
    if pitched["pitch"].size == 0:
        raise BadInputError("score has no pitched notes; cannot measure mood features")
    key = _key_of_notes(pitched)

    every = _note_arrays(score, drums=True)
    tpq = max(int(score.ticks_per_quarter), 1)
    onsets = np.unique(every["time"])
    merge = max(int(tpq * _ONSET_MERGE_BEATS), 1)
    onset_count = 1 + int(np.count_nonzero(np.diff(onsets) >= merge))
    start = int(onsets[0])
    end = int((every["time"] + every["duration"]).max())
    # At least one sixteenth, so that a lone zero-length note gives a finite density.
    span_ticks = max(end - start, tpq // 4, 1)
    duration_beats = span_ticks / tpq

    seconds = _span_seconds(score)
    duration_s = max(seconds[1] - seconds[0], 1e-3)
    tempo = _median_tempo(score, start, start + span_ticks) if tempo_known else None
    known = tempo is not None
    return MoodFeatures(
        key=key,
        note_count=int(every["time"].size),
        onset_count=onset_count,
        duration_s=float(duration_s),
        duration_beats=float(duration_beats),
        onsets_per_beat=onset_count / duration_beats,
        onsets_per_second=(onset_count / duration_s) if known else None,
        tempo_qpm=tempo,
        tempo_known=known,
        pitch_mean=float(pitched["pitch"].mean()),
        pitch_std=float(pitched["pitch"].std()),
        velocity_mean=float(pitched["velocity"].mean()),
    )


def _span_seconds(score: "symusic.Score") -> tuple[float, float]:
    """(first onset, last note end) in seconds, at the score's tempo map (120 qpm if none)."""
    seconds = score.to("second")
    firsts, lasts = [], []
    for track in seconds.tracks:
        arrays = track.notes.numpy()
        if arrays["time"].size:
            firsts.append(float(arrays["time"].min()))
            lasts.append(float((arrays["time"] + arrays["duration"]).max()))
    return (min(firsts), max(lasts)) if firsts else (0.0, 0.0)


# --------------------------------------------------------------------------------------------
# The estimator
# --------------------------------------------------------------------------------------------

def _clip(x: float) -> float:
    return float(min(1.0, max(-1.0, x)))


def _log_score(value: float, centre: float, octaves: float) -> float:
    return _clip(math.log2(max(value, 1e-6) / centre) / octaves)


@dataclass(frozen=True)
class MoodEstimate:
    """A mood label with the scores, the measurements and the reasons behind it."""

    mood: str
    valence: float
    arousal: float
    features: MoodFeatures
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: mood, valence, arousal, reasons and the flat features.

        Example: ``MoodEstimator().estimate(score).to_dict()["mood"]  # 'calm'``
        """
        return {"mood": self.mood, "valence": round(self.valence, 4),
                "arousal": round(self.arousal, 4), "reasons": list(self.reasons),
                "features": features_to_dict(self.features)}


@dataclass
class MoodEstimator:
    """Rule-based valence/arousal estimator; every threshold is a field with its reason.

    See the module docstring for the formulas and the literature. Defaults calibrated on
    POP909 and music21's ABC folk tunes (module docstring, "Calibration").

    Example: ``MoodEstimator().estimate(symusic.Score("song.mid")).mood  # 'happy'``
    """

    # --- valence ---------------------------------------------------------------------------
    #: Major-minus-minor correlation gap at which the music counts as neither major nor minor.
    #: Agreement with POP909's annotated modes is flat (90-92%) from -0.025 to +0.075; within
    #: that plateau 0.05 is chosen because unaccompanied melodies, with no chords to confirm
    #: the tonic, reach small positive gaps even when notated in minor (ABC tunes marked
    #: K:..m, min or dor: 90th percentiles 0.00 to +0.07), and a piece must be clearly major to
    #: count as positive. It also keeps tense/sad above 10% on the (mostly major) folk tunes.
    margin_centre: float = 0.05
    #: Gap (beyond the centre) at which the mode cue reaches tanh(1) = 76% of its weight; the
    #: annotated-major POP909 songs have median gap +0.23, annotated-minor -0.14, so clearly
    #: major or minor music is near saturation.
    margin_scale: float = 0.1
    #: Mode is the dominant valence cue (Gabrielsson & Lindström 2010; Juslin & Laukka 2003).
    w_mode: float = 0.8
    #: Mean MIDI pitch: higher -> brighter (happy), lower -> darker (sad). Between the median
    #: of accompanied pop (POP909: 62.8, melody plus piano) and of bare folk melodies (ABC:
    #: 70.2), so neither texture is pushed one way as a whole.
    register_centre: float = 66.0
    #: An octave away from the centre gives the full register cue.
    register_scale: float = 12.0
    #: Register is a secondary cue: it decides only when the mode is ambiguous.
    w_register: float = 0.2

    # --- arousal, tempo known --------------------------------------------------------------
    #: Tempo (qpm) that counts as neither fast nor slow: faster -> higher arousal. POP909's
    #: median is 74 (quartiles 64 / 92), tempo-marked folk tunes' 124; 80 splits pop ballads
    #: (60-75) from mid-tempo and dance songs.
    tempo_centre: float = 80.0
    #: Octaves of tempo (ratio 2^x) from the centre to saturate: 40 or 160 qpm at 1 octave.
    tempo_octaves: float = 1.0
    #: Note density (distinct onsets per second, all tracks) that counts as neither busy nor
    #: sparse: busier -> higher arousal. POP909 median 3.2 (quartiles 2.9 / 3.6).
    density_centre: float = 3.2
    density_octaves: float = 1.0
    #: Mean MIDI velocity (pitched notes) that counts as neither loud nor soft: louder ->
    #: higher arousal. POP909 median 86 (quartiles 79 / 93); abc2midi's accent pattern
    #: averages 83-91, so tunes without dynamics land near 0 on this cue, as they should.
    velocity_centre: float = 85.0
    #: 25 velocity steps (about two dynamic levels, mf -> ff) saturate the cue.
    velocity_scale: float = 25.0
    #: Tempo and density carry arousal about equally in the reviews; loudness is weaker in
    #: MIDI (velocity is often set by the sequencer, not the performer).
    w_tempo: float = 0.4
    w_density: float = 0.4
    w_loud: float = 0.2

    # --- arousal, tempo unknown (music21 / abc2midi default 120 qpm) -----------------------
    #: Onsets per quarter note that count as neither busy nor plain: busier notated rhythm ->
    #: higher arousal. Tempo-less ABC tunes: median 1.56 (quartiles 1.16 / 1.90); running
    #: quavers (reels, jigs) give ~2, songs in crotchets ~1. 1.4 sits a little under the
    #: median because the minor tunes are plainer, and it splits them evenly into tense/sad.
    beat_density_centre: float = 1.4
    #: Halving or doubling the rhythmic activity (crotchets vs quavers) saturates the cue.
    beat_density_octaves: float = 1.0
    w_beat_density: float = 0.8
    w_loud_unknown: float = 0.2

    def valence_arousal(self, features: MoodFeatures) -> tuple[float, float, list[str]]:
        """(valence, arousal, reasons) of measured features, both scores in [-1, 1].

        Example: ``MoodEstimator().valence_arousal(extract_features(score))[:2]  # (0.61, -0.2)``
        """
        reasons: list[str] = []
        margin = features.key.major_minor_margin
        mode_part = self.w_mode * math.tanh((margin - self.margin_centre) / self.margin_scale)
        reg_part = self.w_register * _clip(
            (features.pitch_mean - self.register_centre) / self.register_scale)
        valence = _clip(mode_part + reg_part)
        reasons.append(
            f"key {features.key.name} (major-minor margin {margin:+.3f}, centre "
            f"{self.margin_centre:+.3f}) -> valence {mode_part:+.2f}")
        reasons.append(f"mean pitch {features.pitch_mean:.1f} (centre {self.register_centre:g}) "
                       f"-> valence {reg_part:+.2f}")

        loud = _clip((features.velocity_mean - self.velocity_centre) / self.velocity_scale)
        if features.tempo_known and features.tempo_qpm is not None \
                and features.onsets_per_second is not None:
            tempo_part = self.w_tempo * _log_score(features.tempo_qpm, self.tempo_centre,
                                                   self.tempo_octaves)
            dens_part = self.w_density * _log_score(features.onsets_per_second,
                                                    self.density_centre, self.density_octaves)
            loud_part = self.w_loud * loud
            arousal = _clip(tempo_part + dens_part + loud_part)
            reasons.append(f"tempo {features.tempo_qpm:.0f} qpm (centre {self.tempo_centre:g}) "
                           f"-> arousal {tempo_part:+.2f}")
            reasons.append(f"{features.onsets_per_second:.2f} onsets/s (centre "
                           f"{self.density_centre:g}) -> arousal {dens_part:+.2f}")
        else:
            dens_part = self.w_beat_density * _log_score(
                features.onsets_per_beat, self.beat_density_centre, self.beat_density_octaves)
            loud_part = self.w_loud_unknown * loud
            arousal = _clip(dens_part + loud_part)
            reasons.append("tempo unknown: arousal from onsets per beat and velocity only")
            reasons.append(f"{features.onsets_per_beat:.2f} onsets/beat (centre "
                           f"{self.beat_density_centre:g}) -> arousal {dens_part:+.2f}")
        reasons.append(f"mean velocity {features.velocity_mean:.0f} (centre "
                       f"{self.velocity_centre:g}) -> arousal {loud_part:+.2f}")
        return valence, arousal, reasons

    def estimate_features(self, features: MoodFeatures) -> MoodEstimate:
        """Mood estimate from features already measured (for re-scoring a manifest).

        Example: ``MoodEstimator().estimate_features(extract_features(score)).mood  # 'sad'``
        """
        valence, arousal, reasons = self.valence_arousal(features)
        mood = resolve_mood(valence=valence, arousal=arousal)
        reasons.append(f"valence {valence:+.2f}, arousal {arousal:+.2f} -> {mood}")
        return MoodEstimate(mood, valence, arousal, features, reasons)

    def estimate(self, score: "symusic.Score", tempo_known: bool = True) -> MoodEstimate:
        """Estimate the mood of a score (see :func:`extract_features` for ``tempo_known``).

        Example: ``MoodEstimator().estimate(symusic.Score("song.mid")).mood  # 'happy'``
        """
        return self.estimate_features(extract_features(score, tempo_known=tempo_known))


# --------------------------------------------------------------------------------------------
# User labels
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Label:
    """A piece's mood (canonical, a user word, or None = estimate it), tags and where from.

    ``source`` is "labels.csv", "folder" or "estimated" (no label found; the caller estimates).
    """

    mood: str | None
    tags: tuple[str, ...] = ()
    source: str = "estimated"


class Labels(dict):
    """What :func:`read_labels_csv` returns: ``{relative file path: mood}`` (mood "" when the
    row gave only tags), plus ``tags``: ``{relative file path: (tag, ...)}`` and the ``path``
    it was read from. Being a plain ``dict[str, str]`` it can be built by hand too.
    """

    def __init__(self, moods: Mapping[str, str] | None = None,
                 tags: Mapping[str, tuple[str, ...]] | None = None, path: str = "") -> None:
        super().__init__(moods or {})
        self.tags: dict[str, tuple[str, ...]] = dict(tags or {})
        self.path = path


def _normalise_rel_path(rel_path: str) -> str:
    text = str(rel_path).strip().replace("\\", "/")
    while text.startswith("./"):
        text = text[2:]
    return text


def _mood_word(value: str) -> str:
    """Canonical mood for a mood/alias, "" for empty/"any", else the normalised user word."""
    word = normalise_word(value)
    canonical = _canonical_or_none(word)
    if canonical == ANY:
        return ""
    return canonical or word


def _split_tags(cell: str) -> tuple[str, ...]:
    out: list[str] = []
    for part in cell.split(";"):
        word = normalise_word(part)
        if word and word not in out:
            out.append(word)
    return tuple(out)


def read_labels_csv(path: str | Path) -> Labels:
    """Read a labels.csv: header ``file,mood`` (+ optional ``tags``, ``;``-separated).

    Keys are the relative file paths as written (backslashes turned into "/", a leading "./"
    dropped). Mood values that are canonical moods or aliases become the canonical mood, other
    words a normalised user mood; an empty mood (or "any") leaves the mood to folders/the
    estimator. Extra columns are ignored. A malformed row raises :class:`BadInputError` naming
    the file and line.

    Example: ``read_labels_csv("corpus/labels.csv")["piano/a.mid"]  # 'calm'``
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(f"{path}: cannot read labels file ({exc})") from exc
    reader = csv.reader(text.splitlines())
    header: list[str] | None = None
    moods: dict[str, str] = {}
    tags: dict[str, tuple[str, ...]] = {}
    for row in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if header is None:
            header = [cell.strip().lower() for cell in row]
            missing = [c for c in ("file", "mood") if c not in header]
            if missing:
                raise BadInputError(
                    f"{path}:{line}: header must name the columns 'file' and 'mood' (and "
                    f"optionally 'tags'); got {row!r}")
            continue
        if len(row) > len(header):
            raise BadInputError(f"{path}:{line}: {len(row)} fields but the header has "
                                f"{len(header)} (quote a value that holds a comma): {row!r}")
        cells = dict(zip(header, (c.strip() for c in row)))
        rel = _normalise_rel_path(cells.get("file", ""))
        if not rel:
            raise BadInputError(f"{path}:{line}: empty 'file' value in row {row!r}")
        raw_mood = cells.get("mood", "")
        mood = _mood_word(raw_mood)
        if raw_mood and not mood and normalise_word(raw_mood) != ANY:
            raise BadInputError(f"{path}:{line}: mood {raw_mood!r} has no letters or digits")
        row_tags = _split_tags(cells.get("tags", ""))
        if rel in moods and (moods[rel], tags.get(rel, ())) != (mood, row_tags):
            raise BadInputError(f"{path}:{line}: {rel!r} is listed again with a different label "
                                f"({moods[rel] or '-'} before, {mood or '-'} now)")
        moods[rel] = mood
        if row_tags:
            tags[rel] = row_tags
    if header is None:
        raise BadInputError(f"{path}: empty labels file; expected a header 'file,mood[,tags]'")
    return Labels(moods, tags, str(path))


def label_from_path(rel_path: str, labels: Mapping[str, str] | None = None) -> Label:
    """The label of a piece from labels.csv (wins) or its folder names.

    * a labels.csv mood gives the mood (source "labels.csv"): canonical for a mood or alias,
      otherwise the user's normalised word;
    * otherwise a folder named after a mood or alias gives it (source "folder"; the innermost
      such folder if several);
    * otherwise the mood is None (source "estimated": the caller runs :class:`MoodEstimator`).

    Tags are the labels.csv tags followed by every folder name that is not a mood, normalised.

    Example: ``label_from_path("jazz/sad/x.mid", None) == Label("sad", ("jazz",), "folder")``
    """
    rel = _normalise_rel_path(rel_path)
    folders = [part for part in rel.split("/")[:-1] if part not in ("", ".", "..")]
    tags: list[str] = []
    folder_mood: str | None = None
    if labels is not None:
        tags.extend(getattr(labels, "tags", {}).get(rel, ()))
    for folder in folders:
        word = normalise_word(folder)
        canonical = _canonical_or_none(word)
        if canonical is not None and canonical != ANY:
            folder_mood = canonical
        elif word and word != ANY and word not in tags:
            tags.append(word)
    csv_mood = _mood_word(labels.get(rel) or "") if labels is not None else ""
    if csv_mood:
        return Label(csv_mood, tuple(tags), "labels.csv")
    if folder_mood is not None:
        return Label(folder_mood, tuple(tags), "folder")
    return Label(None, tuple(tags), "estimated")


# --------------------------------------------------------------------------- generation defaults
# What a mood asks of the music when the caller leaves key and tempo open. The two strongest,
# best-replicated cues of the valence-arousal plane (Gabrielsson & Lindström 2010): mode for
# valence (major: happy, calm; minor: sad, tense) and tempo for arousal (fast: happy, tense;
# slow: sad, calm). The tempo bands sit on either side of the estimator's 80 qpm boundary;
# the model still chooses the exact tempo inside the band, and everything else (density,
# register, dynamics, harmony) from the MOOD token it was trained with.
MOOD_MODE = {"happy": "major", "calm": "major", "sad": "minor", "tense": "minor"}
MOOD_TEMPO_BANDS = {"happy": (112.0, 150.0), "tense": (120.0, 168.0), "sad": (50.0, 72.0), "calm": (56.0, 78.0)}
_COMMON_TONICS = {"major": ("C", "G", "D", "F", "A", "Bb", "Eb", "E"),
                  "minor": ("A", "E", "D", "G", "C", "B", "F#", "F")}


def mood_defaults(mood: str, seed: int | None = None) -> tuple[str | None, tuple[float, float] | None]:
    """(key, tempo band in qpm) a canonical mood implies; (None, None) for "any" or a user mood.

    The tonic is drawn from common keys of the mood's mode, by ``seed``.
    Example: ``mood_defaults("sad", seed=1)`` → ``('E minor', (50.0, 72.0))``
    """
    import random

    if mood not in MOOD_MODE:
        return None, None
    mode = MOOD_MODE[mood]
    tonic = random.Random(seed).choice(_COMMON_TONICS[mode])
    return parse_key(f"{tonic} {mode}"), MOOD_TEMPO_BANDS[mood]
