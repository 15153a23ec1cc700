"""The face users see: :class:`Composer` makes music; each result is a :class:`Piece`.

A :class:`Composer` wraps one model directory (the shipped default unless told otherwise) and
its tokenizer; :meth:`Composer.generate`, :meth:`Composer.continue_from` and
:meth:`Composer.infill` return :class:`Piece` objects (see :mod:`melodia.piece`: notes in beats
and seconds, ``.mid``/``.wav``/``.musicxml``/``.png``). Each call resolves its request once
(mood here, key and the rest in the generator) and the generator finishes the pieces
(:mod:`melodia.generate.arrange`).

A Composer is safe to share between threads: generation calls on one Composer run one at a
time (one model, one key/value cache). torch is imported only when a Composer is loaded.
Loading sets torch's CPU threads (:func:`set_threads`: 1 unless told otherwise), the same
policy as ``melodia generate`` and ``melodia serve``.

Example:
    >>> from melodia import Composer
    >>> c = Composer.load()                                   # the shipped default, CPU, offline
    >>> pieces = c.generate(mood="calm", bars=8, key="F major", tempo=72, n=2, seed=1)
    >>> pieces[0].save("calm.mid"); pieces[0].save("calm.wav")
    >>> more = c.continue_from("my_clip.mid", bars=4, mood="tense")
"""
from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from .errors import BadInputError, BadModelError
from .generate import MAX_BARS, GenerationConfig, Generator
from .generate.arrange import (
    dynamics_level,
    finish_continuation,
    finish_infill,
    finish_piece,
    new_bars_span,
    part_warnings,
    prompt_end,
)
from .generate.config import key_name, with_overrides
from .generate.prompt import read_clip
from .midifile import load_score
from .model import DEFAULT_MODEL_DIR, load_inference_weights
from .music.instruments import PartPlan, plan_parts
from .music.meter import bar_starts
from .music.moods import normalise_word, resolve_mood
from .piece import ChordSpan, Note, NoteLike, Piece, notes_to_score
from .tokenizer import MelodiaTokenizer

if TYPE_CHECKING:  # pragma: no cover - typing only
    import symusic

__all__ = ["Composer", "Piece", "Note", "ChordSpan", "notes_to_score", "parse_bar_span", "DEFAULT_MODEL_DIR",
           "set_threads"]


PromptLike = Union[str, os.PathLike, bytes, Piece, "symusic.Score", Sequence[NoteLike]]


def set_threads(threads: int = 1) -> None:
    """Set torch's intra-op CPU threads for sampling (process-wide): melodia's one thread policy.

    Batch-1 sampling makes one token at a time, so it is latency-bound: a second thread mostly
    adds synchronisation, and on a busy 2-core machine it made generation 10-90x slower. So
    :meth:`Composer.load`, ``melodia generate`` and ``melodia serve`` all use 1 thread unless
    told otherwise; ``0`` keeps torch's own choice. Raises :class:`BadInputError` unless
    ``threads`` is an int >= 0.

    Example:
        >>> set_threads(1)      # what Composer.load() does by default
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise BadInputError(f"threads {threads!r}: use a whole number >= 1, or 0 for torch's default")
    if threads:
        import torch

        torch.set_num_threads(threads)


def _pick_device(device: str) -> str:
    if not isinstance(device, str) or not device.strip():
        raise BadInputError(f"device {device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    device = device.strip().lower()
    if device != "auto":
        if device != "cpu" and not device.startswith("cuda"):
            raise BadInputError(f"device {device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'")
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class Composer:
    """A loaded model that composes: :meth:`generate` new pieces, :meth:`continue_from` a prompt.

    Calls on one Composer are serialised by a lock, so threads may share it.

    Example:
        >>> c = Composer.load("runs/small/model")
        >>> [p.bars for p in c.generate(mood="happy", bars=4, n=2, seed=3)]
        [4, 4]
    """

    def __init__(self, model: Any, tokenizer: "MelodiaTokenizer", meta: Mapping[str, Any] | None = None, *,
                 device: str = "cpu", weights: str = "auto", name: str | None = None) -> None:
        """Wrap an already loaded model and tokenizer (most callers use :meth:`load`).

        Example: ``Composer(model, MelodiaTokenizer.load("m/tokenizer.json"), meta)``
        """
        self.tokenizer = tokenizer
        self.meta: dict[str, Any] = dict(meta or {})
        self.device = device
        self.name = name or str(self.meta.get("name") or "model")
        self._gen = Generator(model, tokenizer, device=device, weights=weights,
                              default_programs=self.meta.get("default_programs"),
                              tempo_unknown=self.meta.get("tempo_unknown"),
                              style_programs=self.meta.get("style_programs"))
        self._lock = threading.RLock()

    @classmethod
    def load(cls, path: "str | os.PathLike | None" = None, device: str = "auto", weights: str = "auto",
             threads: int = 1) -> "Composer":
        """Load a model directory (``None``: the shipped default, ``melodia/weights/default``).

        ``device``: ``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        ``weights``: how the generator stores the matrices (``"auto"``, ``"fp32"``, ``"fp16"``,
        ``"bf16"``; see :class:`melodia.model.lean.LeanLlama`). ``threads``: torch's CPU threads,
        set for the whole process (:func:`set_threads`; default 1, as sampling one token at a time
        is latency-bound; ``0`` keeps torch's choice). Raises :class:`BadModelError` naming the
        directory and the problem, :class:`BadInputError` for a bad argument.

        Example:
            >>> c = Composer.load()                             # the shipped default, 1 CPU thread
            >>> c = Composer.load("runs/jazz/model", device="cpu", threads=0)   # torch's threads
        """
        if path is None:
            if not (DEFAULT_MODEL_DIR / "config.json").is_file():
                raise BadModelError(
                    f"the shipped default model is not built yet ({DEFAULT_MODEL_DIR} is missing or "
                    "incomplete; `python scripts/train_default.py` builds it); pass a model directory "
                    "instead, e.g. Composer.load('runs/a/model') or `--model DIR`")
            path, name = DEFAULT_MODEL_DIR, "default"
        else:
            if not isinstance(path, (str, os.PathLike)):
                raise BadInputError(f"path must be a model directory path, got {type(path).__name__}")
            path = Path(path)
            name = path.name if path.name != "model" else f"{path.parent.name}/{path.name}"
        dev = _pick_device(device)
        set_threads(threads)
        model, meta = load_inference_weights(path, device=dev)  # no transformers import: faster start
        tok = MelodiaTokenizer.load(Path(path) / "tokenizer.json")
        meta = {**meta, "name": name, "path": str(path)}
        return cls(model, tok, meta, device=dev, weights=weights, name=name)

    # ------------------------------------------------------------------ what the model knows
    @property
    def moods(self) -> list[str]:
        """Moods this model can be asked for: the four canonical ones, then any user moods.

        Example: ``Composer.load().moods  # ['happy', 'tense', 'sad', 'calm']``
        """
        return [c[5:] for c in self.tokenizer.controls if c.startswith("MOOD_") and c != "MOOD_any"]

    @property
    def tags(self) -> list[str]:
        """User tags this model knows (``tags=`` of :meth:`generate`). Example: ``c.tags  # ['jazz']``."""
        return [c[4:] for c in self.tokenizer.controls if c.startswith("TAG_")]

    @property
    def styles(self) -> list[str]:
        """Styles this model can be asked for (``style=`` of :meth:`generate`): the one list the
        CLI, the server and ``melodia info`` show. [] for a model trained before styles (the
        shipped one today): such a model takes no style. Example: ``c.styles  # ['chorale', 'classical', 'folk', 'pop']``
        """
        return list(self.tokenizer.styles)

    @property
    def default_style(self) -> str | None:
        """The style of a request that names none: "pop" when the model knows it, else None (no
        style token). Example: ``c.default_style  # 'pop'``"""
        return self.tokenizer.default_style

    @property
    def meters(self) -> list[str]:
        """Time signatures the model can write, like ``["4/4", "3/4", "6/8"]``. Example: ``c.meters``."""
        names = [t[8:] for t in self.tokenizer.remi.vocab if t.startswith("TimeSig_")]
        return sorted(names, key=lambda m: (int(m.split("/")[1]), int(m.split("/")[0])))

    def resolve_mood(self, mood: str | None = None, valence: float | None = None,
                     arousal: float | None = None) -> str:
        """The mood a request means: canonical name, ``"any"``, or a user mood of this model.
        Raises :class:`BadInputError` listing what is known.

        Example: ``c.resolve_mood("joyful") == "happy"``
        """
        try:
            return resolve_mood(mood, valence, arousal)
        except BadInputError:
            if isinstance(mood, str) and valence is None and arousal is None:
                word = normalise_word(mood)
                if word in self.moods:
                    return word
                extra = [m for m in self.moods if m not in ("happy", "tense", "sad", "calm")]
                if extra:
                    raise BadInputError(f"unknown mood {mood!r}; this model knows happy, tense, sad, calm, "
                                        f"their aliases, and {', '.join(extra)}") from None
            raise

    def mood_or_tag(self, mood: str | None, tags: Sequence[str] = ()) -> tuple[str | None, list[str]]:
        """A request's ``mood`` and ``tags`` as this model knows them: tags normalised as corpus
        folder names are (``"Film Noir"`` → ``"film_noir"``), each once; a ``mood`` that is no
        mood of this model but one of its tags (a fine-tuning folder ``jazzy/``) becomes a tag,
        with mood None (any). Returns ``(mood, tags)``; an unknown tag, or a word that is
        neither, raises :class:`BadInputError` naming the moods and tags the model knows.

        Example: ``c.mood_or_tag("jazzy", ["Film"]) == (None, ["film", "jazzy"])``
        """
        words = list(dict.fromkeys(w for w in (normalise_word(t) for t in tags) if w))
        known = ", ".join(self.tags)
        for t in words:
            if t not in self.tags:
                raise BadInputError(f"unknown tag {t!r}; " + (f"this model knows {known}" if known else
                                    "this model has no tags (a fine-tuning corpus's sub-folder names and "
                                    "labels.csv give them)"))
        if mood is None:
            return None, words
        try:
            self.resolve_mood(mood)
        except BadInputError as e:
            word = normalise_word(mood)
            if word not in self.tags:
                raise BadInputError(f"{e}; this model also knows the tags {known}" if known else str(e)) from None
            return None, words + [word] * (word not in words)
        return mood, words

    # ------------------------------------------------------------------ composing
    def _config(self, **kw: Any) -> GenerationConfig:
        cfg = GenerationConfig(**kw)
        cfg.validate()
        return cfg

    def generate(self, mood: str | None = None, bars: int = 8, key: str | None = None, tempo: float | None = None,
                 meter: str = "4/4", instruments: Sequence[str | int] | str | None = None, n: int = 1,
                 seed: int | None = None, temperature: float = 1.0, guidance: float = 1.0, *,
                 valence: float | None = None, arousal: float | None = None, tags: Sequence[str] = (),
                 top_k: int = 0, top_p: float = 0.95, in_key: bool = True,
                 leading_tone: bool = False, dynamics: str = "mood",
                 chords: str | Sequence[str] | None = None, form: str | None = None,
                 vary: bool = False, style: str | None = None, repeat: str | None = None) -> list[Piece]:
        """Compose ``n`` new pieces of exactly ``bars`` bars.

        ``form`` (``"AABA"``, ``"ABAC"``: letters, up to 8) splits the bars into equal
        sections, and a new letter continues from what came before. ``repeat`` says how a
        letter returns: ``"sections"`` (each section opens on its letter's ``SECTION_`` token
        and the model writes it anew: a model trained with sections) or ``"exact"`` (it repeats
        the notes of its first section exactly; with ``vary=True``, all but its last bar, which
        is written anew); None: "sections" for a model with section tokens (without ``vary``),
        else "exact" (the shipped model has none; asking it for "sections" is a BadInputError). With a form, ``chords`` apply to each section, or
        per letter: ``"A: C G Am F; B: F G Em Am"``. The dynamics' phrases are the sections.

        ``chords`` (``"Am F C G"``: one chord a bar, cycled over the bars; ``"Am:2 F:2 C G"``:
        the first two for 2 beats each) writes those chords at those places and no others; with
        no ``key`` the key follows from them. Without ``chords`` the model writes its own
        progression. Either way ``piece.chords`` lists them and the MIDI file carries them as
        markers.

        ``dynamics="mood"`` (default) shapes the velocities after sampling: louder for happy
        and tense, softer for sad and calm, with a swell over each 4-bar phrase
        (:func:`melodia.generate.arrange.shape_dynamics`); ``"flat"`` keeps the model's own. A piece
        with no mood keeps the model's.

        ``in_key`` (default) keeps pitched notes in the scale of the key (given, or chosen for
        the mood): major, or natural minor; ``leading_tone=True`` also allows a minor key's
        raised 7th (G♯ in A minor, for a major V chord); ``in_key=False`` lets the model write
        chromatic notes.

        * ``mood``: ``happy``, ``tense``, ``sad``, ``calm``, an alias (``"melancholic"``), a user
          mood the model was fine-tuned on, or None (no mood); or instead ``valence`` and
          ``arousal`` in [-1, 1] (Russell's quadrants).
        * ``style``: one of :attr:`styles` ("pop", "folk", "chorale", "classical", or a fine-tuning
          folder's own); None = :attr:`default_style` ("pop" where the model knows it, else no
          style). A model without style tokens (the shipped one today) takes no style: asking for
          one is a :class:`BadInputError` saying so; an unknown style names the known ones.
        * ``key`` ("F major", "Am"; None: the generator picks one that suits the mood, and the
          piece's ``key`` says which), ``tempo`` (quarter notes per minute, 20-400; None lets the
          model choose), ``meter`` ("4/4", "3/4", "6/8" ...), ``instruments`` (names such as
          ``["piano", "bass"]`` or GM programs; None = the model's default set, melodia.json's
          ``default_programs``: for the shipped model melody, counter-melody and piano, 0, 1, 2).
          Named instruments each get a part of what the model wrote with its own set: a bass
          a bass line, the first other the melody, the next that plays chords the
          accompaniment, the next the counter-melody (:func:`melodia.music.instruments.plan_parts`);
          what cannot be honoured is left out and said in ``piece.warnings``.
        * ``n`` variations (1-16) sampled as one batch; ``seed`` makes the result repeatable
          (same seed, model and device → same notes); ``temperature`` > 0; ``guidance`` is the
          classifier-free guidance scale (1 = off; above 1 weighs the mood and key more, which for
          the shipped model did not help: docs/evidence.md, "Guidance").

        Example:
            >>> pieces = c.generate(mood="calm", bars=8, key="F major", tempo=72, n=2, seed=1)
        """
        mood_name = self.resolve_mood(mood, valence, arousal)
        level = dynamics_level(dynamics, mood_name, arousal)
        cfg = self._config(bars=bars, mood=mood, valence=valence, arousal=arousal, key=key, tempo=tempo,
                           meter=meter, instruments=instruments, tags=tuple(tags), style=style, n=n, seed=seed,
                           temperature=temperature, guidance=guidance, top_k=top_k, top_p=top_p, in_key=in_key,
                           leading_tone=leading_tone, chords=chords, form=form, vary=vary, repeat=repeat)
        if cfg.form is not None:  # the model's way of returning, so the finishing knows it too
            cfg = with_overrides(cfg, {"repeat": cfg.repeat_mode(self.tokenizer.has_sections)})
        key_name(key)  # a bad key fails before any work
        plan, sample = self._parts(cfg, None)
        with self._lock:
            rows, key_used = self._gen.generate_keyed(sample, self._gen.resolve(sample, mood_name))
            notes = list(self._gen.notes)  # e.g. chords asked for outside the key
            scores = [finish_piece(self.tokenizer.decode(ids), cfg, level, plan) for ids in rows]
        return [Piece(s, mood=mood_name, key=key_used, seed=seed, bars=bars,
                      warnings=notes + part_warnings(s, plan))
                for s in scores]

    def continue_from(self, prompt: PromptLike, bars: int = 4, mood: str | None = None, key: str | None = None,
                      instruments: Sequence[str | int] | str | None = None, n: int = 1, seed: int | None = None,
                      temperature: float = 1.0, guidance: float = 1.0, *, context_bars: int = 4,
                      include_prompt: bool = True, tempo: float | None = None, meter: str | None = None,
                      valence: float | None = None, arousal: float | None = None, tags: Sequence[str] = (),
                      top_k: int = 0, top_p: float = 0.95, in_key: bool = True,
                      leading_tone: bool = False, dynamics: str = "mood",
                      chords: str | Sequence[str] | None = None, style: str | None = None) -> list[Piece]:
        """Continue a prompt by exactly ``bars`` new bars; its last ``context_bars`` bars are the
        model's context. ``dynamics`` shapes the new bars only (the prompt keeps its own).
        ``chords`` are the new bars' chords (cycled from the first new bar; the key stays the
        prompt's unless ``key`` is given).

        ``prompt``: a MIDI path, MIDI bytes, a :class:`Piece`, a ``symusic.Score``, or a list of
        notes (:class:`Note` objects or dicts, see :func:`notes_to_score`). ``tempo`` and
        ``meter`` describe a notes prompt (default 120 qpm, 4/4); a MIDI, Piece or Score prompt
        brings its own, and giving them then is an error. The new bars keep the prompt's last
        tempo and meter. What reading the prompt changed (dense tempo changes merged, a metre
        its notes contradict) is said in each piece's ``warnings``, never as a Python warning. With ``include_prompt`` (default) each piece holds the prompt unchanged
        followed by the new bars; without it, only the new bars, starting at beat 0. ``key``
        None means the prompt's own key (estimated from its notes; the pieces' ``key`` says
        which; the new bars keep to its scale unless ``in_key=False``). Other arguments as in
        :meth:`generate`.

        Example:
            >>> more = c.continue_from("my_clip.mid", bars=4, mood="tense", include_prompt=False)
        """
        mood_name = self.resolve_mood(mood, valence, arousal)
        level = dynamics_level(dynamics, mood_name, arousal)
        if not isinstance(include_prompt, bool):
            raise BadInputError(f"include_prompt must be true or false, got {include_prompt!r}")
        notes: list[str] = []  # what reading the prompt changed (dense tempos merged), then its metre
        score, metre = read_clip(self._prompt_score(prompt, tempo, meter, "continue_from", notes))
        notes += metre
        cfg = self._config(bars=bars, mood=mood, valence=valence, arousal=arousal, key=key,
                           instruments=instruments, tags=tuple(tags), style=style, n=n, seed=seed,
                           temperature=temperature,
                           guidance=guidance, top_k=top_k, top_p=top_p, in_key=in_key,
                           leading_tone=leading_tone, chords=chords)
        plan, sample = self._parts(cfg, list(self._gen.default_programs))
        with self._lock:  # no key given: the new bars are in the prompt's, and the pieces say so
            scores, key_used = self._gen.continue_keyed(score, bars=bars, context_bars=context_bars, cfg=sample,
                                                        include_prompt=include_prompt, mood=mood_name)
            notes += self._gen.notes
        scores = finish_continuation(scores, score, level, include_prompt, plan)
        new_from = prompt_end(score, scores[0].ticks_per_quarter) if include_prompt else 0
        return [Piece(s, mood=mood_name, key=key_used, seed=seed, bars=None if include_prompt else bars,
                      warnings=notes + part_warnings(s, plan, start=new_from)) for s in scores]

    def infill(self, prompt: PromptLike, bars: "tuple[int, int] | Sequence[int] | int | str",
               mood: str | None = None, key: str | None = None, chords: str | Sequence[str] | None = None,
               instruments: Sequence[str | int] | str | None = None, n: int = 1, seed: int | None = None,
               temperature: float = 1.0, guidance: float = 1.0, *, context_bars: int = 4,
               tempo: float | None = None, meter: str | None = None, valence: float | None = None,
               arousal: float | None = None, tags: Sequence[str] = (), top_k: int = 0, top_p: float = 0.95,
               in_key: bool = True, leading_tone: bool = False, dynamics: str = "mood",
               style: str | None = None) -> list[Piece]:
        """Rewrite some bars of a clip in place: ``bars=(5, 8)`` (or ``"5-8"``, or ``6`` for one
        bar; counted from 1, inclusive). Every note that starts outside those bars stays as it
        was (notes held into them from before included); the notes starting inside are
        replaced by new ones that end by the span's end. Each piece has the clip's length,
        tempo, meter and instruments.

        The model sees up to ``context_bars`` bars on each side of the span (it was trained to
        fill in the middle). ``chords`` apply to the span, cycled from its first bar; ``key``
        None means the clip's own key (estimated; the pieces' ``key`` says which).
        ``dynamics="mood"`` shapes the new notes when a mood is given (the clip keeps its own);
        with no mood they keep the loudness the model gave them from the clip. ``prompt``,
        ``tempo`` and ``meter`` as in :meth:`continue_from`; other arguments as in
        :meth:`generate`.

        Example:
            >>> pieces = c.infill("clip.mid", bars=(5, 8), mood="sad", seed=1)
        """
        first, last = parse_bar_span(bars)
        mood_name = self.resolve_mood(mood, valence, arousal)
        level = dynamics_level(dynamics, mood_name, arousal)
        notes: list[str] = []  # what reading the prompt changed (dense tempos merged), then its metre
        score, metre = read_clip(self._prompt_score(prompt, tempo, meter, "infill", notes))
        notes += metre
        if score.note_num() == 0:
            raise BadInputError("infill: the clip has no notes")
        cfg = self._config(bars=min(last - first + 1, MAX_BARS), mood=mood, valence=valence, arousal=arousal,
                           key=key, instruments=instruments, tags=tuple(tags), style=style, n=n, seed=seed,
                           temperature=temperature, guidance=guidance, top_k=top_k, top_p=top_p, in_key=in_key,
                           leading_tone=leading_tone, chords=chords)
        plan, sample = self._parts(cfg, list(self._gen.default_programs))
        with self._lock:  # no key given: the clip's own
            scores, key_used = self._gen.infill_keyed(score, first, last, context_bars=context_bars, cfg=sample,
                                                      mood=mood_name)
            notes += self._gen.notes
        scores = finish_infill(scores, first, last, level, plan)
        span = new_bars_span(scores[0], first, last)
        return [Piece(s, mood=mood_name, key=key_used, seed=seed, bars=len(bar_starts(score)),
                      warnings=notes + part_warnings(s, plan, *span)) for s in scores]

    def _parts(self, cfg: GenerationConfig, sample: Any) -> tuple[PartPlan | None, GenerationConfig]:
        """The plan that gives the model's own parts to ``cfg.instruments`` (:func:`plan_parts`;
        None: nothing to arrange) and the config to sample with: the model writes with its own
        set (``sample``: None for a new piece; the set itself for a prompt, where None means the
        prompt's programs), and the parts are given to the instruments after sampling
        (:func:`melodia.generate.arrange.arrange_parts`). Example: ``plan, sample = self._parts(cfg, None)``
        """
        plan = plan_parts(cfg.instruments, self._gen.default_programs)
        return plan, (cfg if plan is None else with_overrides(cfg, {"instruments": sample}))

    def _prompt_score(self, prompt: Any, tempo: float | None, meter: str | None,
                      what: str = "continue_from", notes: list[str] | None = None) -> "symusic.Score":
        """``prompt`` as a checked Score; what reading a MIDI file or Score changed (dense tempo
        changes merged, :func:`melodia.midifile.load_score`) is appended to ``notes``, for the
        pieces' ``warnings``. Example: ``self._prompt_score("clip.mid", None, None, "infill", [])``"""
        is_notes = isinstance(prompt, (list, tuple)) and not isinstance(prompt, (str, bytes))
        if not is_notes and (tempo is not None or meter is not None):
            raise BadInputError("tempo and meter describe a prompt given as notes; a MIDI, Piece or Score "
                                "prompt brings its own tempo and meter")
        if isinstance(prompt, Piece):
            return prompt.to_score()
        if is_notes:
            if not prompt:
                raise BadInputError(f"{what}: the prompt has no notes")
            return notes_to_score(prompt, tempo=120.0 if tempo is None else tempo,
                                  meter="4/4" if meter is None else meter)
        if isinstance(prompt, (bytes, bytearray, memoryview)):
            return load_score(bytes(prompt), "<prompt MIDI>", notes)
        return load_score(prompt, notes=notes)  # a path or a symusic Score; anything else: BadInputError

    def info(self) -> dict[str, Any]:
        """What the server's ``/health`` shows about the model. Example: ``c.info()["preset"]``."""
        return {"name": self.name, "preset": self.meta.get("preset"), "parameters": self.meta.get("parameters"),
                "version": self.meta.get("version"), "device": self.device, "moods": self.moods,
                "meters": self.meters, "tags": self.tags, "styles": self.styles,
                "default_style": self.default_style}

    def __repr__(self) -> str:
        return f"Composer({self.name!r}, preset={self.meta.get('preset')!r}, device={self.device!r})"


def parse_bar_span(bars: Any) -> tuple[int, int]:
    """A span of bars, counted from 1: ``(5, 8)``, ``[5, 8]``, ``"5-8"``, ``"6"`` or ``6`` →
    ``(first, last)``. :class:`BadInputError` for anything else.

    Example: ``parse_bar_span("5-8") == (5, 8)``
    """
    span: Any = bars
    if isinstance(bars, str):
        parts = bars.replace(" ", "").split("-")
        if not 1 <= len(parts) <= 2 or not all(p.isdigit() for p in parts):
            raise BadInputError(f"bars {bars!r}: write a span of bars like 5-8, or one bar like 6")
        span = [int(p) for p in parts]
    elif isinstance(bars, int) and not isinstance(bars, bool):
        span = [bars]
    if not isinstance(span, (list, tuple)) or not 1 <= len(span) <= 2 \
            or any(isinstance(v, bool) or not isinstance(v, int) for v in span):
        raise BadInputError(f"bars {bars!r}: give the first and last bar, like (5, 8) or \"5-8\"")
    first, last = span[0], span[-1]
    if first < 1 or last < first:
        raise BadInputError(f"bars {bars!r}: bars count from 1 and the last comes after the first, like 5-8")
    return int(first), int(last)
