"""What a request can say: :class:`GenerationConfig` (the one list of generation parameters)
and the limits on them.

Example: ``GenerationConfig(bars=16, mood="happy", form="AABA").validate()``
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from ..errors import BadInputError
from ..music.harmony import parse_progression, split_section_chords
from ..music.keys import parse_key
from ..music.meter import beats_per_bar, parse_meter
from ..values import count, is_bool, is_int, is_number

__all__ = ["GenerationConfig", "MAX_BARS", "MAX_N", "MAX_SECTIONS", "MAX_ONSETS", "DYNAMICS", "REPEATS",
           "with_overrides", "check_context_bars", "Request", "key_name"]

MAX_BARS = 64           # bars one request may ask for
MAX_N = 16              # variations one request may ask for
MAX_SECTIONS = 8        # letters of a form
MAX_ONSETS = 8          # notes one program may start at one position (a two-hand chord)
#: ``dynamics`` values: "mood" shapes velocities after sampling (see
#: :func:`melodia.generate.arrange.shape_dynamics`), "flat" keeps the model's own
DYNAMICS = ("mood", "flat")
#: ``repeat`` values: how a form's returning letter returns. "sections": the model writes every
#: section, each opening on its letter's ``SECTION_`` token (a model trained with sections);
#: "exact": a return copies its letter's first section note for note
REPEATS = ("sections", "exact")


@dataclass
class GenerationConfig:
    """What to generate. Every field has a usable default.

    * ``bars`` 1–64 (exactly that many bars come out); ``n`` 1–16 variations, one batch.
    * ``mood`` (name or alias) or ``valence`` and ``arousal`` in [-1, 1]; ``key`` ("F major",
      "Am"); ``tags`` (user tags the model knows); ``style`` (a style the model has a ``STYLE_``
      token for: "pop", "folk", "chorale", "classical", a fine-tuning folder's own; None = the
      model's default, "pop" where it knows it, else no style token).
    * ``tempo`` in quarter notes per minute (nearest tempo token; None lets the model choose);
      ``meter`` "4/4", "3/4", "6/8", ...; ``instruments``: names (see :data:`melodia.music.instruments.INSTRUMENTS`) or
      GM programs (0–127, -1 drums); None = the model's default set (melodia.json's
      ``default_programs``; else melody + accompaniment on two piano programs).
    * sampling: ``temperature`` > 0, ``top_k`` (0 = off), ``top_p`` in (0, 1] (1 = off),
      ``guidance`` (classifier-free guidance scale; 1 = off), ``seed`` (same seed, same model,
      same device → identical output), ``max_tokens`` (budget of new ids per sequence; None =
      a generous default from ``bars``).
    * scale: ``in_key`` (default True) keeps pitched notes in the key's scale, natural minor
      for a minor key; ``leading_tone=True`` also lets a minor key use its raised 7th (G♯ in
      A minor: harmonic minor's major V chord). ``in_key=False``: any pitch.
    * harmony and form: ``chords`` (``"Am F C G"``, a chord a bar, cycled; ``"Am:2 F:2 …"``;
      with a form, per letter: ``"A: C G Am F; B: F G Em Am"``), ``chord_tones``,
      ``tonic_frame``; ``form`` (``"AABA"``: equal sections) and how a letter returns,
      ``repeat``: ``"sections"`` (each section opens on its letter's ``SECTION_`` token and the
      model writes it: a model trained with sections) or ``"exact"`` (a return copies its
      letter's first section note for note; ``vary``: its last bar written anew; a copy that
      ends the piece on a bar with no note gets one, so the piece keeps its last bar). None:
      "exact" with ``vary`` or for a model without section tokens, else "sections".

    Example:
        >>> cfg = GenerationConfig(bars=16, mood="happy", key="G major", tempo=120, n=4, seed=7)
    """

    bars: int = 8
    mood: str | None = None
    valence: float | None = None
    arousal: float | None = None
    key: str | None = None
    tempo: float | None = None
    meter: str = "4/4"
    instruments: Sequence[str | int] | None = None
    tags: Sequence[str] = ()
    style: str | None = None
    n: int = 1
    seed: int | None = None
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 0.95
    guidance: float = 1.0
    max_tokens: int | None = None
    in_key: bool = True  # pitched notes stay in the key's scale (when there is a key); False: chromatic
    leading_tone: bool = False  # minor keys may also use the raised 7th (for a major V chord)
    chords: str | Sequence[str] | None = None  # "Am F C G" (a chord a bar, cycled) or "Am:2 F:2 …"; None: the model's
    chord_tones: bool = True  # with chords asked for: notes on their tones (the melody's off-beat notes free)
    tonic_frame: bool = True  # no chords asked for, a key known: each 4-bar phrase and the last bar open on the tonic
    form: str | None = None   # "AABA": equal sections, each returning letter as ``repeat`` says
    vary: bool = False        # with form and repeat "exact": a returning section's last bar is written anew
    repeat: str | None = None  # with form: "sections" or "exact" (REPEATS); None: the model's way (see above)

    def validate(self) -> None:
        """Raise :class:`BadInputError` naming the first bad value. Example: ``cfg.validate()``."""
        if not is_int(self.bars) or not 1 <= self.bars <= MAX_BARS:
            raise BadInputError(f"bars {self.bars!r}: must be an integer from 1 to {MAX_BARS}")
        if not is_int(self.n) or not 1 <= self.n <= MAX_N:
            raise BadInputError(f"n {self.n!r}: must be an integer from 1 to {MAX_N}")
        if not is_number(self.temperature) or self.temperature <= 0:
            raise BadInputError(f"temperature {self.temperature!r}: must be a number above 0")
        if not is_int(self.top_k) or self.top_k < 0:
            raise BadInputError(f"top_k {self.top_k!r}: must be an integer >= 0 (0 = off)")
        if not is_number(self.top_p) or not 0 < self.top_p <= 1:
            raise BadInputError(f"top_p {self.top_p!r}: must be in (0, 1] (1 = off)")
        if not is_number(self.guidance) or not 0 <= self.guidance <= 20:
            raise BadInputError(f"guidance {self.guidance!r}: must be a number from 0 to 20 (1 = off)")
        if self.tempo is not None and (not is_number(self.tempo) or not 20 <= self.tempo <= 400):
            raise BadInputError(f"tempo {self.tempo!r}: must be from 20 to 400 quarter notes per minute")
        if self.seed is not None and not is_int(self.seed):
            raise BadInputError(f"seed {self.seed!r}: must be an integer or None")
        if self.max_tokens is not None and (not is_int(self.max_tokens) or self.max_tokens < self.min_tokens()):
            raise BadInputError(f"max_tokens {self.max_tokens!r}: must be an integer of at least "
                                f"{self.min_tokens()} for {count(self.bars, 'bar')}")
        if isinstance(self.tags, str):
            raise BadInputError(f"tags {self.tags!r}: give a list of tags")
        if self.style is not None and (not isinstance(self.style, str) or not self.style.strip()):
            raise BadInputError(f"style {self.style!r}: name a style, e.g. \"pop\" or \"folk\"")
        for name in ("in_key", "leading_tone"):
            if not is_bool(getattr(self, name)):
                raise BadInputError(f"{name} {getattr(self, name)!r}: must be true or false")
        num, den = parse_meter(self.meter)
        if not is_bool(self.vary):
            raise BadInputError(f"vary {self.vary!r}: must be true or false")
        if self.vary and self.form is None:
            raise BadInputError("vary applies to a form: give a form such as \"AABA\" too")
        if self.repeat is not None:
            if self.repeat not in REPEATS:
                raise BadInputError(f"repeat {self.repeat!r}: must be one of {', '.join(REPEATS)}")
            if self.form is None:
                raise BadInputError("repeat applies to a form: give a form such as \"AABA\" too")
            if self.vary and self.repeat == "sections":
                raise BadInputError("vary changes the last bar of an exact repeat; with repeat \"sections\" "
                                    "the model writes every bar anew (use repeat \"exact\" with vary)")
        self.sections()
        if self.chords is not None:
            self.progression()

    def sections(self) -> list[tuple[str, int, int, int | None]]:
        """The form as ``(letter, first bar, bars, first bar of the section it repeats or None)``
        (bars counted from 0), or [] with no form. ``form`` is letters only, one per section,
        up to :data:`MAX_SECTIONS`; the sections share ``bars`` equally.

        Example: ``GenerationConfig(bars=16, form="AABA").sections()[2]  # ('B', 8, 4, None)``
        """
        if self.form is None:
            return []
        form = self.form.strip().upper() if isinstance(self.form, str) else None
        if not form or not form.isalpha() or not form.isascii():
            raise BadInputError(f"form {self.form!r}: write the sections as letters, e.g. \"AABA\" or \"ABAC\"")
        if len(form) > MAX_SECTIONS:
            raise BadInputError(f"form {self.form!r} has {len(form)} sections; at most {MAX_SECTIONS}")
        if len(form) > self.bars:
            raise BadInputError(f"form {self.form!r} has {len(form)} sections, more than the {count(self.bars, 'bar')}")
        if self.bars % len(form):
            raise BadInputError(f"form {self.form!r}: {self.bars} bars do not divide into {len(form)} equal "
                                f"sections (try --bars {len(form) * max(1, round(self.bars / len(form)))})")
        size = self.bars // len(form)
        first: dict[str, int] = {}
        out = []
        for k, letter in enumerate(form):
            out.append((letter, k * size, size, first.get(letter)))
            first.setdefault(letter, k * size)
        return out

    def repeat_mode(self, has_sections: bool) -> str | None:
        """How a returning letter returns for a model with (``has_sections``) or without section
        tokens: ``repeat`` itself, or its default; None with no form. BadInputError for
        "sections" asked of a model without section tokens.

        Example: ``GenerationConfig(bars=16, form="AABA").repeat_mode(True)  # 'sections'``
        """
        if self.form is None:
            return None
        mode = self.repeat or ("sections" if has_sections and not self.vary else "exact")
        if mode == "sections" and not has_sections:
            raise BadInputError("repeat \"sections\": this model has no section tokens (it was trained "
                                "without phrase sections), so it cannot write a form's sections itself; use "
                                "repeat \"exact\" (a returning section copies its first one's notes)")
        return mode

    def progression(self) -> list:
        """The chords asked for as ``(start beat, length, Chord)`` over the bars, or [] (see
        :func:`melodia.music.harmony.parse_progression`). Example: ``cfg.progression()[0]``"""
        if self.chords is None:
            return []
        num, den = parse_meter(self.meter)
        per_bar = beats_per_bar(num, den)
        by_letter = split_section_chords(self.chords)
        sections = self.sections()
        if by_letter is not None and not sections:
            raise BadInputError(f"chords {self.chords!r} are given per section: give a form too "
                                "(e.g. --form AABA)")
        if not sections:
            return parse_progression(self.chords, per_bar, self.bars)
        if by_letter is not None:  # each letter its own chords
            letters = {s[0] for s in sections}
            extra = sorted(set(by_letter) - letters)
            if extra:
                raise BadInputError(f"chords: section {extra[0]} is not in the form {self.form!r}")
            missing = [x for x in dict.fromkeys(s[0] for s in sections) if x not in by_letter]
            if missing:
                raise BadInputError(f"chords: section {missing[0]} of the form {self.form!r} has no chords; "
                                    "give chords for every section (\"A: C G Am F; B: F G Em Am\")")
        out = []  # each section starts its chords afresh, so a returning section has its chords
        for letter, first, size, _ in sections:
            text = by_letter[letter] if by_letter is not None else self.chords
            out += [(first * per_bar + t, n, c) for t, n, c in parse_progression(text, per_bar, size)]
        return out

    def min_tokens(self) -> int:
        """The smallest ``max_tokens`` that always leaves room to finish validly."""
        return 16 + 2 * self.bars + 2 * len(self.progression())

    def token_budget(self) -> int:
        """``max_tokens`` or its default (about 200 ids per bar: room for dense piano)."""
        return self.max_tokens if self.max_tokens is not None else 64 + 200 * self.bars


def with_overrides(cfg: GenerationConfig | None, overrides: dict) -> GenerationConfig:
    """``cfg`` (or the defaults) with some fields replaced; unknown names are a BadInputError.

    Example: ``with_overrides(None, {"bars": 4}).bars == 4``
    """
    cfg = cfg if cfg is not None else GenerationConfig()
    if not isinstance(cfg, GenerationConfig):
        raise BadInputError(f"expected a GenerationConfig, got {type(cfg).__name__}")
    try:
        return replace(cfg, **overrides)
    except TypeError:
        known = ", ".join(f.name for f in fields(GenerationConfig))
        bad = ", ".join(sorted(set(overrides) - {f.name for f in fields(GenerationConfig)}))
        raise BadInputError(f"unknown generation setting(s) {bad}; known: {known}") from None


def check_context_bars(context_bars: Any) -> None:
    """Raise :class:`BadInputError` unless ``context_bars`` is an integer 1..MAX_BARS. Example: ``check_context_bars(4)``."""
    if not is_int(context_bars) or not 1 <= context_bars <= MAX_BARS:
        raise BadInputError(f"context_bars {context_bars!r}: must be an integer from 1 to {MAX_BARS}")


@dataclass(frozen=True)
class Request:
    """A request resolved once, at the top (:meth:`melodia.generate.Generator.resolve`): the
    mood's name, the key the music is in (given, from the chords, or the mood's default; None:
    no key), the tags, the style (the model's default when none was asked for; None: no style
    token) and the tempo band the mood implies (None: any). Everything below the
    top reads these instead of resolving ``GenerationConfig`` again; ``progression`` is
    :meth:`GenerationConfig.progression`, parsed once.

    Example: ``Request(mood="sad", key="E minor", tags=(), band=(50.0, 72.0))``
    """

    mood: str
    key: str | None
    tags: tuple[str, ...] = ()
    band: tuple[float, float] | None = None
    progression: tuple = ()
    style: str | None = None


def key_name(key: str | None) -> str | None:
    """The canonical spelling of a key (``"Am"`` → ``"A minor"``), None for None/"any".

    Example: ``key_name("Am") == "A minor"``
    """
    if key is None or (isinstance(key, str) and key.strip().lower() == "any"):
        return None
    if not isinstance(key, str):
        raise BadInputError(f"key {key!r}: write it like 'F major' or 'Am'")
    return parse_key(key)
