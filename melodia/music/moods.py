"""Mood vocabulary: the four moods, their aliases, valence/arousal, and what a mood implies.

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
(labels.csv, folder names: :mod:`melodia.labels`); :func:`normalise_word` is how they are kept.
The estimator that labels unlabelled music is :mod:`melodia.music.mood_estimator`.

Example:
    >>> resolve_mood("Joyful"), resolve_mood(valence=-0.2, arousal=-0.7)
    ('happy', 'sad')
"""
from __future__ import annotations

import math
import random
import re
import unicodedata

from ..errors import BadInputError
from .keys import ANY, parse_key

CANONICAL_MOODS: tuple[str, ...] = ("happy", "tense", "sad", "calm")

#: (valence, arousal) at the centre of each canonical mood's quadrant (Russell 1980).
QUADRANT: dict[str, tuple[float, float]] = {
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


def valid_moods_text() -> str:
    """The moods a caller may name, for error messages. Example: ``"one of happy, ..."``."""
    aliases = ", ".join(sorted(ALIASES))
    return f"one of {', '.join(CANONICAL_MOODS)}, '{ANY}' or an alias ({aliases})"


def canonical_mood(word: str) -> str | None:
    """The canonical mood (or "any") a normalised word names, or None.

    Example: ``canonical_mood("joyful") == "happy"``; ``canonical_mood("lofi") is None``
    """
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
            raise BadInputError(f"mood {mood!r} is not a string; use {valid_moods_text()}")
        found = canonical_mood(mood.strip().lower())
        if found is None:
            raise BadInputError(f"unknown mood {mood!r}; use {valid_moods_text()}")
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
                f"a mood, {valid_moods_text()}")
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
    return QUADRANT[canonical]


def mood_token_name(mood: str) -> str:
    """The control-token name of a canonical mood, ``"any"`` or a user mood word.

    Example: ``mood_token_name("Joyful") == "MOOD_happy"``
    """
    word = normalise_word(mood)
    canonical = canonical_mood(word)
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
    if mood not in MOOD_MODE:
        return None, None
    mode = MOOD_MODE[mood]
    tonic = random.Random(seed).choice(_COMMON_TONICS[mode])
    return parse_key(f"{tonic} {mode}"), MOOD_TEMPO_BANDS[mood]
