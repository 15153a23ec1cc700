"""Stage 2: pieces → token ids → training shards.

A :class:`MelodiaTokenizer` is MidiTok's REMI tokenizer (with tempos, time signatures and
programs, one token stream per piece) trained with BPE, plus melodia's *control tokens*
(``MOOD_*``, ``KEY_*``, ``STYLE_*``, ``TAG_*``). Control tokens live in their own id range after MidiTok's
vocabulary, so BPE never sees or merges them, and fine-tuning can add new ones (a user's tags)
without touching the BPE model. The whole tokenizer saves to one JSON file (MidiTok's own
format with an extra ``melodia`` attribute) and loads back identical.

Why these REMI settings (measured on the built-in corpus, see docs/corpus.md):

* 24 positions per beat for the first 4 beats of durations and for onsets: the least common
  multiple of 8 (32nd notes) and 3 (triplets), so both land exactly on the grid.
* durations up to 16 beats (coarser past 4 beats), so long pop-ballad notes are not clipped.
* programs on, one stream per piece: the corpus stage gives every track of a piece its own
  program (tracks sharing one are moved to a free program of the same General MIDI family),
  so melody, counter-melody and accompaniment stay apart through a round trip.

Example:
    >>> tok = MelodiaTokenizer.new()
    >>> ids = tok.encode_piece(score, mood="calm", key="F major")
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .chordtokens import chord_positions, insert_chords
from .errors import BadInputError, BadModelError
from .fileio import write_json
from .music.harmony import Chord, chord_from_token_name, chord_token_name, chord_token_names
from .music.keys import KEY_NAMES, key_from_token_name, key_in_c, key_token_name, parse_key, tonic_shift
from .music.meter import beats_per_bar
from .music.moods import ALIASES, CANONICAL_MOODS, normalise_word
from .sections import SECTION_MARKER, SECTION_TOKEN, insert_sections, read_section_markers

if TYPE_CHECKING:  # pragma: no cover
    import miditok
    import symusic

PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
DEFAULT_VOCAB = 4000
DEFAULT_MAX_LEN = 1024
TOKENIZER_FILE = "tokenizer.json"


def miditok_config() -> "miditok.TokenizerConfig":
    """The REMI settings melodia uses (see the module docstring for the reasons).

    Example:
        >>> cfg = miditok_config(); cfg.use_programs
        True
    """
    from miditok import TokenizerConfig

    return TokenizerConfig(
        pitch_range=(21, 109),
        beat_res={(0, 4): 24, (4, 8): 4, (8, 16): 2},
        num_velocities=16,
        special_tokens=["PAD", "BOS", "EOS", "MASK"],
        use_velocities=True,
        use_tempos=True,
        num_tempos=32,
        tempo_range=(40, 250),
        log_tempos=True,
        use_time_signatures=True,
        time_signature_range={8: [3, 6, 9, 12], 4: [1, 2, 3, 4, 5, 6], 2: [1, 2, 3, 4]},
        use_programs=True,
        one_token_stream_for_programs=True,
        use_sustain_pedals=False,
        use_pitch_bends=False,
        use_chords=False,
        use_rests=False,
        remove_duplicated_notes=True,
    )


#: fill-in-the-middle markers: ``prefix bars FIM_suffix suffix bars FIM_middle middle bars EOS``
FIM_SUFFIX, FIM_MIDDLE = "FIM_suffix", "FIM_middle"


def harmony_controls() -> list[str]:
    """The chord tokens (``Chord_N``, ``Chord_C:maj`` …) and the two infilling markers.

    Example: ``harmony_controls()[-2:]  # ['FIM_suffix', 'FIM_middle']``
    """
    return chord_token_names() + [FIM_SUFFIX, FIM_MIDDLE]


#: a piece's style (``STYLE_pop``, ``STYLE_folk`` …): one control token after the key, where the
#: corpus gives the piece one (docs/ARCHITECTURE.md, "One training sequence")
STYLE_PREFIX = "STYLE_"
#: what a request without a style gets from a model whose tokenizer knows it
DEFAULT_STYLE = "pop"


def style_controls(styles: Iterable[str]) -> list[str]:
    """The control token names of some styles, each once, in the order given.

    Example: ``style_controls(["pop", "folk"])  # ['STYLE_pop', 'STYLE_folk']``
    """
    return [f"{STYLE_PREFIX}{s}" for s in dict.fromkeys(styles) if s]


def default_controls(moods: Iterable[str] = (), tags: Iterable[str] = ()) -> list[str]:
    """Control token names in id order: moods (canonical, any, user), keys (24, any), chords
    and infilling markers, tags.

    Example:
        >>> default_controls()[:5]
        ['MOOD_happy', 'MOOD_tense', 'MOOD_sad', 'MOOD_calm', 'MOOD_any']
    """
    names = [f"MOOD_{m}" for m in CANONICAL_MOODS] + ["MOOD_any"]
    names += [f"MOOD_{m}" for m in moods if f"MOOD_{m}" not in names]
    names += [key_token_name(k) for k in KEY_NAMES] + ["KEY_any"]
    names += harmony_controls()
    names += [f"TAG_{t}" for t in dict.fromkeys(tags)]
    return names


@dataclass
class MelodiaTokenizer:
    """MidiTok REMI+BPE plus melodia's control tokens (ids after MidiTok's vocabulary).

    Example:
        >>> tok = MelodiaTokenizer.load("melodia/weights/default/tokenizer.json")
        >>> tok.mood_id("calm"), tok.vocab_size
    """

    remi: "miditok.REMI"
    controls: list[str] = field(default_factory=default_controls)
    #: pieces are written with their tonic on C (C major / C minor) and the KEY_ token of a
    #: sequence says where decoding moves them; the model itself only ever sees KEY_C_major,
    #: KEY_C_minor or KEY_any, so all 12 keys of a mode teach it one thing (see key_for_model)
    key_normalised: bool = False

    # ------------------------------------------------------------------ construction
    @classmethod
    def new(cls, moods: Iterable[str] = (), tags: Iterable[str] = ()) -> "MelodiaTokenizer":
        """An untrained tokenizer (no BPE yet). Example: ``tok = MelodiaTokenizer.new()``."""
        from miditok import REMI

        return cls(REMI(miditok_config()), default_controls(moods, tags))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "MelodiaTokenizer":
        """Load from a ``tokenizer.json`` (or a folder holding one).

        Example: ``tok = MelodiaTokenizer.load("model/tokenizer.json")``
        """
        from miditok import REMI

        path = Path(path)
        if path.is_dir():
            path = path / TOKENIZER_FILE
        if not path.is_file():
            raise BadModelError(f"{path}: tokenizer file not found")
        try:
            with open(path, encoding="utf-8") as f:
                params = json.load(f)
            extra = params.pop("melodia")
            controls = list(extra["controls"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise BadModelError(f"{path}: not a melodia tokenizer ({e.__class__.__name__}: {e})") from None
        # MidiTok reads a file path; give it the JSON without our extra attribute.
        with tempfile.TemporaryDirectory() as tmp:
            p = Path(tmp) / TOKENIZER_FILE
            p.write_text(json.dumps(params), encoding="utf-8")
            try:
                remi = REMI(params=p)
            except Exception as e:  # MidiTok raises many kinds on a bad file
                raise BadModelError(f"{path}: MidiTok cannot load it ({e.__class__.__name__}: {e})") from None
        return cls(remi, controls, bool(extra.get("key_normalised", False)))

    def save(self, path: str | os.PathLike) -> Path:
        """Save to one JSON file (atomically). Example: ``tok.save("out/tokenizer.json")``."""
        path = Path(path)
        if path.is_dir() or path.suffix != ".json":
            path = path / TOKENIZER_FILE
        d = self.remi.to_dict()
        d["melodia"] = {"controls": self.controls, "format": 1, "key_normalised": self.key_normalised}
        write_json(path, d, indent=None)
        return path

    def to_json(self) -> str:
        """The tokenizer as the JSON text :meth:`save` writes. Example: ``s = tok.to_json()``."""
        d = self.remi.to_dict()
        d["melodia"] = {"controls": self.controls, "format": 1, "key_normalised": self.key_normalised}
        return json.dumps(d)

    # ------------------------------------------------------------------ vocabulary
    @property
    def base_size(self) -> int:
        """Size of MidiTok's vocabulary (after BPE): control ids start here. Example: ``tok.base_size  # 4000``"""
        return len(self.remi)

    @property
    def vocab_size(self) -> int:
        """Total vocabulary: MidiTok's plus the control tokens. Example: ``tok.vocab_size``"""
        return self.base_size + len(self.controls)

    @property
    def is_trained(self) -> bool:
        """Whether BPE has been trained. Example: ``tok.is_trained``"""
        return self.remi.is_trained

    def control_id(self, name: str) -> int:
        """Id of a control token by full name. Example: ``tok.control_id("MOOD_sad")``."""
        try:
            return self.base_size + self.controls.index(name)
        except ValueError:
            raise BadInputError(f"unknown control token {name!r}") from None

    def mood_id(self, mood: str) -> int:
        """Id of ``MOOD_<mood>`` (canonical, alias, user mood or "any"). Example: ``tok.mood_id("joyful")``."""
        m = mood.strip().lower()
        m = ALIASES.get(m, m)
        if f"MOOD_{m}" not in self.controls:
            known = [c[5:] for c in self.controls if c.startswith("MOOD_")]
            raise BadInputError(f"unknown mood {mood!r}; this model knows: {', '.join(known)}")
        return self.control_id(f"MOOD_{m}")

    def key_id(self, key: str | None) -> int:
        """Id of ``KEY_<key>`` ("D minor", "Dm", None/"any"). Example: ``tok.key_id("D minor")``."""
        if key is None or key.strip().lower() == "any":
            return self.control_id("KEY_any")
        return self.control_id(key_token_name(parse_key(key)))

    def tag_id(self, tag: str) -> int:
        """Id of ``TAG_<tag>``. Example: ``tok.tag_id("lofi")``."""
        if f"TAG_{tag}" not in self.controls:
            known = [c[4:] for c in self.controls if c.startswith("TAG_")]
            raise BadInputError(f"unknown tag {tag!r}; this model knows: {', '.join(known) or 'none'}")
        return self.control_id(f"TAG_{tag}")

    @property
    def styles(self) -> list[str]:
        """The styles this tokenizer has a ``STYLE_`` token for, in id order ([] for one made
        before styles, like the shipped model's). Example: ``tok.styles  # ['chorale', 'classical', 'folk', 'pop']``"""
        return [c[len(STYLE_PREFIX):] for c in self.controls if c.startswith(STYLE_PREFIX)]

    @property
    def default_style(self) -> str | None:
        """The style of a request that names none: :data:`DEFAULT_STYLE` ("pop") when this
        tokenizer knows it, else None (no style token). Example: ``tok.default_style``"""
        return DEFAULT_STYLE if DEFAULT_STYLE in self.styles else None

    def style_id(self, style: str) -> int:
        """Id of ``STYLE_<style>``; :class:`BadInputError` naming the known styles (or saying the
        model has none). Example: ``tok.style_id("folk")``."""
        known = self.styles
        if not known:
            raise BadInputError(f"style {style!r}: this model has no style tokens (it was trained before "
                                "styles); leave the style out")
        if not isinstance(style, str) or style not in known:
            raise BadInputError(f"unknown style {style!r}; this model knows: {', '.join(known)}")
        return self.control_id(f"{STYLE_PREFIX}{style}")

    def add_controls(self, names: Iterable[str]) -> list[str]:
        """Append new control tokens (e.g. a user's TAG_/MOOD_); returns those added.

        Example: ``tok.add_controls(["TAG_lofi"])``
        """
        added = [n for n in dict.fromkeys(names) if n not in self.controls]
        for n in added:
            if not n.startswith(("MOOD_", "TAG_", "KEY_", "Chord_", "FIM_", STYLE_PREFIX, SECTION_TOKEN)):
                raise BadInputError(f"control token {n!r} must start with MOOD_, KEY_, TAG_, Chord_, FIM_, "
                                    f"{SECTION_TOKEN} or {STYLE_PREFIX}")
        self.controls.extend(added)
        return added

    def id_to_token(self, i: int) -> str:
        """Readable name of an id (BPE ids show their base tokens joined by ``+``).

        Example: ``tok.id_to_token(1)`` → ``'BOS_None'``
        """
        if i >= self.base_size:
            return self.controls[i - self.base_size]
        if self.is_trained:
            return "+".join(self.base_tokens(i))
        return self.remi[i]

    def base_tokens(self, i: int) -> list[str]:
        """The REMI tokens a (possibly BPE-merged) id stands for. Example: ``tok.base_tokens(7)``."""
        if not self.is_trained:
            return [self.remi[i]]
        return list(self.remi._vocab_learned_bytes_to_tokens[self.remi._model.id_to_token(i)])

    @property
    def has_chords(self) -> bool:
        """Whether this tokenizer writes chord tokens (tokenizers made before them do not). Example: ``tok.has_chords``"""
        return "Chord_N" in self.controls

    def chord_id(self, chord: "Chord | None") -> int:
        """Id of a chord's token (``None`` = ``Chord_N``). Example: ``tok.chord_id(parse_chord("Am"))``."""
        return self.control_id(chord_token_name(chord))

    def chord_ids(self) -> dict[int, "Chord | None"]:
        """Every chord token id and its chord. Example: ``tok.chord_ids()[tok.chord_id(None)]  # None``."""
        base = self.base_size  # len(MidiTok) asks the BPE model for its whole vocabulary: once
        return {base + k: chord_from_token_name(c) for k, c in enumerate(self.controls) if c.startswith("Chord_")}

    def fim_ids(self) -> dict[str, int]:
        """The fill-in-the-middle markers: ``{"suffix": id, "middle": id}``, {} for a tokenizer
        made before them. Example: ``tok.fim_ids()["middle"]``."""
        return {c[4:]: self.control_id(c) for c in self.controls if c.startswith("FIM_")}

    @property
    def has_sections(self) -> bool:
        """Whether this tokenizer writes phrase section tokens (``SECTION_A`` …; appended by
        ``melodia tokenize`` for a corpus with sections; the shipped model's has none). Example: ``tok.has_sections``"""
        return any(c.startswith(SECTION_TOKEN) for c in self.controls)

    def section_ids(self) -> dict[int, str]:
        """Every section token id and its letter ({} without sections).
        Example: ``tok.section_ids()  # {4203: 'A', ...}``"""
        base = self.base_size
        return {base + k: c[len(SECTION_TOKEN):] for k, c in enumerate(self.controls)
                if c.startswith(SECTION_TOKEN)}

    def section_positions(self, score: "symusic.Score") -> list[tuple[int, int]]:
        """A score's section markers as ``(bar index, section token id)``; [] without section
        tokens (letters this tokenizer lacks are dropped). Example: ``tok.section_positions(score)``"""
        ids = {s: i for i, s in self.section_ids().items()}
        return [(b, ids[s]) for b, s in read_section_markers(score) if s in ids] if ids else []

    # ------------------------------------------------------------------ encode / decode
    def controls_prefix(self, mood: str = "any", key: str | None = None, tags: Sequence[str] = (),
                        style: str | None = None) -> list[int]:
        """``[BOS, MOOD_m, KEY_k, STYLE_s, TAG_t…]``; no style token when ``style`` is None.
        Example: ``tok.controls_prefix("sad", "A minor", style="folk")``."""
        return ([BOS_ID, self.mood_id(mood), self.key_id(key)] + self.style_ids(style)
                + [self.tag_id(t) for t in tags])

    def style_ids(self, style: str | None) -> list[int]:
        """The style part of a prefix: ``[STYLE_s]``, or [] for None. Example: ``tok.style_ids("pop")``."""
        return [] if style is None else [self.style_id(style)]

    def resolve_style(self, style: str | None) -> str | None:
        """The style a request means: None → :attr:`default_style`; a name → the style as the
        corpus stored it (``"Folk"`` → ``"folk"``). :class:`BadInputError` for a style the model
        does not know (naming those it does) or any style for a model without style tokens.

        Example: ``tok.resolve_style(None)  # 'pop' for a model with styles, None for the shipped one``
        """
        if style is None:
            return self.default_style
        name = normalise_word(style) if isinstance(style, str) else ""
        if name not in self.styles:
            self.style_id(style)  # raises, naming the style asked for and the known ones
        return name

    def key_for_model(self, key: str | None) -> str | None:
        """The key token the model sees for a key: itself, or (key-normalised) its mode on C.

        Example: ``tok.key_for_model("A minor")  # "C minor" when key_normalised``
        """
        if not self.key_normalised or key is None:
            return key
        return key_in_c(key)

    def model_shift(self, key: str | None) -> int:
        """Semitones that move a piece in ``key`` to what the model reads: key-normalised, its
        tonic onto C; else (or with no key) 0. Example: ``tok.model_shift("A minor")  # 3``"""
        if not self.key_normalised or not key:
            return 0
        return -tonic_shift(key)

    def encode_score(self, score: "symusic.Score", shift: int = 0) -> list[int]:
        """REMI(+BPE) ids of a score, no controls; ``shift`` transposes its pitched notes first
        (semitones; drums stay). Example: ``ids = tok.encode_score(score)``."""
        chords = chord_positions(score, self.remi, shift) if self.has_chords else []
        sections = self.section_positions(score)  # a tokenizer with sections has chords too
        if shift:
            score = transpose_score(score, shift)
        if not self.has_chords:
            seq = self.remi.encode(score)
            if isinstance(seq, list):  # defensive: one stream is configured
                seq = seq[0]
            return list(seq.ids)
        seq = self.remi.encode(score, encode_ids=False)
        base = np.asarray((seq[0] if isinstance(seq, list) else seq).ids, dtype=np.int64)
        base = insert_chords(self, base, chords)
        base = insert_sections(base, sections, self.remi.vocab["Bar_None"])
        return [i for b in encode_bars(self, split_bars(base, self.remi.vocab["Bar_None"])) for i in b]

    def encode_piece(self, score: "symusic.Score", mood: str = "any", key: str | None = None,
                     tags: Sequence[str] = (), style: str | None = None) -> list[int]:
        """A whole sequence: controls, the score's ids, EOS. Key-normalised, the notes are written
        with ``key``'s tonic on C (decode moves them back). Example: ``tok.encode_piece(s, "calm")``."""
        return (self.controls_prefix(mood, key, tags, style) + self.encode_score(score, self.model_shift(key))
                + [EOS_ID])

    def strip_controls(self, ids: Sequence[int]) -> list[int]:
        """Drop special and control ids, keeping the music. Example: ``tok.strip_controls(ids)``."""
        base = self.base_size
        return [int(i) for i in ids if 3 < int(i) < base]

    def decode(self, ids: Sequence[int]) -> "symusic.Score":
        """Token ids (controls allowed) → ``symusic.Score``. Example: ``score = tok.decode(ids)``."""
        from miditok import TokSequence

        music = self.strip_controls(ids)
        seq = TokSequence(ids=music, are_ids_encoded=self.is_trained)
        score = self.remi.decode(seq)
        shift = self.decode_shift(ids)
        score = transpose_score(score, shift) if shift else score
        if self.has_chords:  # the chords the sequence names, as MIDI markers a DAW shows
            import symusic

            tpq = score.ticks_per_quarter
            for beat, ch in self.chords(ids):
                score.markers.append(symusic.TextMeta(int(round(beat * tpq)), ch.name if ch else "N.C."))
        self.add_section_markers(score, ids)
        return score

    def add_section_markers(self, score: "symusic.Score", ids: Sequence[int]) -> None:
        """Write the section tokens of ``ids`` into ``score`` (decoded from them) as markers
        ``Section_<letter>`` on their bar lines, in time order with the other markers (none
        without section tokens). Example: ``tok.add_section_markers(score, ids)``"""
        found = self.sections(ids)
        if not found:
            return
        import symusic  # heavy: a native library, loaded on first use

        tpq = score.ticks_per_quarter
        for beat, letter in found:
            score.markers.append(symusic.TextMeta(int(round(beat * tpq)), SECTION_MARKER + letter))
        score.markers.sort(key=lambda m: m.time)

    def chords(self, ids: Sequence[int]) -> list[tuple[float, "Chord | None"]]:
        """The chord tokens of a sequence as ``(start beat, chord)``, in the key the notes
        decode to (key-normalised: moved from C like the notes). Beats are quarter notes from
        the first bar line. Example: ``tok.chords(ids)[:2]  # [(0.0, Chord(0, 'maj')), ...]``"""
        chord_of = self.chord_ids()
        if not chord_of:
            return []
        shift = self.decode_shift(ids)
        return [(beat, ch.transposed(shift) if ch is not None and shift else ch)
                for beat, ch in ((b, chord_of[i]) for b, i in self.control_beats(ids, chord_of))]

    def sections(self, ids: Sequence[int]) -> list[tuple[float, str]]:
        """The section tokens of a sequence as ``(beat of their bar line, letter)``; [] for a
        tokenizer without them. Example: ``tok.sections(ids)[:2]  # [(0.0, 'i'), (16.0, 'A')]``"""
        letter_of = self.section_ids()
        return [(b, letter_of[i]) for b, i in self.control_beats(ids, letter_of)] if letter_of else []

    def control_beats(self, ids: Sequence[int], wanted: "dict[int, object] | set[int]") -> list[tuple[float, int]]:
        """Where the ``wanted`` control ids of a sequence stand, as ``(beat, id)``: the beat (in
        quarter notes from the first bar line) of the bar line and position read before each.
        Example: ``tok.control_beats(ids, tok.chord_ids())[:1]  # [(0.0, 4012)]``"""
        out: list = []
        bar, bar_start, bar_len, pos_beats = -1, 0.0, 4.0, 0.0
        per_beat = int(self.remi.config.max_num_pos_per_beat)
        den = 4
        base = self.base_size  # a property that asks the BPE model for its vocabulary: once, not per id
        for i in ids:
            i = int(i)
            if i in wanted:
                out.append((bar_start + pos_beats, i))
                continue
            if i >= base or i < 4:
                continue
            for t in self.base_tokens(i):
                kind, _, val = t.partition("_")
                if kind == "Bar":
                    bar_start = bar_start + bar_len if bar >= 0 else 0.0
                    bar += 1
                    pos_beats = 0.0
                elif kind == "TimeSig":
                    num, den = (int(x) for x in val.split("/"))
                    bar_len = beats_per_bar(num, den)
                elif kind == "Position":
                    pos_beats = int(val) / per_beat * 4.0 / den
        return out

    def decode_shift(self, ids: Sequence[int]) -> int:
        """Semitones :meth:`decode` moves a sequence's notes: key-normalised, from C to the tonic
        of the sequence's KEY_ token (position 2); else 0. Example: ``tok.decode_shift(ids)``."""
        if not self.key_normalised or len(ids) < 3 or int(ids[0]) != BOS_ID:
            return 0
        name = self.id_to_token(int(ids[2])) if int(ids[2]) >= self.base_size else ""
        if not name.startswith("KEY_"):
            return 0
        return tonic_shift(key_from_token_name(name))

    def count_errors(self, ids: Sequence[int]) -> float:
        """MidiTok's token-type error rate of a sequence (0.0 = fully valid).

        Example: ``assert tok.count_errors(ids) == 0``
        """
        from miditok import TokSequence

        if not self.has_chords:
            seq = TokSequence(ids=self.strip_controls(ids), are_ids_encoded=self.is_trained)
            if self.is_trained:
                self.remi.decode_token_ids(seq)
            self.remi.complete_sequence(seq)
            return float(self.remi.tokens_errors(seq))
        # a chord change where no note starts has a Position of its own: without the chord it is
        # an empty Position, which MidiTok's type check counts as an error; it is not one
        chord_ids = set(self.chord_ids())
        toks: list[str] = []
        empty_at = None
        for i in ids:
            i = int(i)
            if i in chord_ids:
                empty_at = len(toks) - 1 if toks and toks[-1].startswith("Position_") else None
                continue
            if not 3 < i < self.base_size:
                continue
            for t in self.base_tokens(i):
                if empty_at is not None:
                    if t.startswith(("Position_", "Bar_")):
                        del toks[empty_at]
                    empty_at = None
                toks.append(t)
        if empty_at is not None:
            del toks[empty_at]
        if not toks:
            return 0.0
        seq = TokSequence(tokens=toks)
        self.remi.complete_sequence(seq)
        return float(self.remi.tokens_errors(seq))

    def train_bpe(self, scores: Iterable["symusic.Score"] | None = None, vocab_size: int = DEFAULT_VOCAB,
                  files: Sequence[Path] | None = None) -> None:
        """Train BPE on scores or MIDI files (the train split); merges never cross a bar line.

        Example: ``tok.train_bpe(files=paths, vocab_size=4000)``
        """
        import symusic

        remi = self.remi
        items = list(scores or []) + [symusic.Score(str(f)) for f in (files or [])]
        seqs = []
        for sc in items:
            seq = remi.encode(sc, encode_ids=False)
            seqs.append(np.asarray((seq[0] if isinstance(seq, list) else seq).ids))
        train_bpe_on_ids(remi, seqs, vocab_size)



# =========================================================================== token helpers
def transpose_score(score: "symusic.Score", semitones: int) -> "symusic.Score":
    """A copy with every pitched note moved by ``semitones`` (drums stay); a note that would
    leave MIDI's 0-127 moves by octaves back inside. Example: ``up = transpose_score(s, 2)``."""
    out = score.copy()
    for tr in out.tracks:
        if tr.is_drum or not semitones:
            continue
        for nt in tr.notes:
            p = nt.pitch + semitones
            while p > 127:
                p -= 12
            while p < 0:
                p += 12
            nt.pitch = p
    return out


def pitch_shift_table(remi, semitones: int) -> "np.ndarray":
    """Base-id lookup that moves every ``Pitch_`` token by ``semitones`` (by octaves back into
    the tokenizer's pitch range where it would leave it); other ids map to themselves.

    Example: ``ids = pitch_shift_table(tok.remi, -3)[ids]``
    """
    vocab = remi.vocab
    table = np.arange(len(vocab), dtype=np.int64)
    pitches = {int(t[6:]): i for t, i in vocab.items() if t.startswith("Pitch_")}
    lo, hi = min(pitches), max(pitches)
    for p, i in pitches.items():
        q = p + semitones
        while q > hi:
            q -= 12
        while q < lo:
            q += 12
        table[i] = pitches[q]
    return table


def train_bpe_on_ids(remi, seqs: list, vocab_size: int) -> None:
    """Train MidiTok's BPE from REMI base-id sequences (one list of bar strings per piece). Example: ``train_bpe_on_ids(tok.remi, [ids_of_piece], 4000)``"""
    bar_id = remi.vocab["Bar_None"]

    class _BarBytes:  # MidiTok wants len() and iteration
        def __len__(self):
            return len(seqs)

        def __iter__(self):
            for ids in seqs:
                yield [remi._ids_to_bytes(b.tolist(), as_one_str=True) for b in split_bars(ids, bar_id)]

    if vocab_size > len(remi):
        remi.train(vocab_size=vocab_size, model="BPE", iterator=_BarBytes())


def split_bars(ids: "np.ndarray", bar_id: int) -> list["np.ndarray"]:
    """REMI base ids cut before every Bar token. Example: ``split_bars(ids, remi.vocab["Bar_None"])``."""
    starts = np.flatnonzero(ids == bar_id)
    if len(starts) == 0:
        return [ids] if len(ids) else []
    return [b for b in np.split(ids, starts) if len(b)]


def restate_tempo(bar: "np.ndarray", tempo_id: int | None, remi) -> "np.ndarray":
    """A bar (REMI base ids) that opens a chunk or a context, made to carry the tempo in force:
    ``Bar TimeSig Position_0 Tempo …`` (REMI writes only tempo changes; a section token right
    after ``Bar`` stays there).

    Example: ``first = restate_tempo(bars[k], tempo_id, tok.remi)``
    """
    if tempo_id is None:
        return bar
    toks = [remi[int(i)] if int(i) < len(remi.vocab) else "" for i in bar[:5]]
    k = 1 + int(len(toks) > 1 and toks[0] == "Bar_None" and toks[1] == "")  # Bar SECTION_…
    k += int(len(toks) > k and toks[k].startswith("TimeSig_"))
    if len(toks) > k and toks[k] == "Position_0":
        if len(toks) > k + 1 and toks[k + 1].startswith("Tempo_"):
            return bar
        return np.concatenate([bar[: k + 1], [tempo_id], bar[k + 1:]])
    return np.concatenate([bar[:k], [remi.vocab["Position_0"], tempo_id], bar[k:]])


def bar_start_ids(tok: MelodiaTokenizer) -> list[int]:
    """The ids that open a bar (``Bar`` alone or BPE-merged with what follows it): training
    cuts chunks at them to rearrange bars for infilling. Example: ``bar_start_ids(tok)[:3]``."""
    if not tok.is_trained:
        return [int(tok.remi.vocab["Bar_None"])]
    return [i for i in range(tok.base_size) if tok.base_tokens(i)[:1] == ["Bar_None"]]



def tempo_tokens(tokenizer_json: str | os.PathLike) -> dict[str, float]:
    """A saved tokenizer's Tempo tokens and their qpm, read from the JSON alone (no MidiTok:
    training runs on machines without it); {} when the file is missing or unreadable.

    Example: ``tempo_tokens("T/tokenizer.json")["Tempo_122.99"]  # 122.99``
    """
    try:
        vocab = json.loads(Path(tokenizer_json).read_text(encoding="utf-8")).get("_vocab_base", {})
    except (OSError, ValueError):
        return {}
    return {t: float(t.split("_", 1)[1]) for t in vocab if t.startswith("Tempo_")}


def tempo_ids(remi) -> list[int]:
    """Example: ``tempo_ids(tok.remi)[:3]``."""
    return [i for t, i in remi.vocab.items() if t.startswith("Tempo_")]


def encode_bars(tok: MelodiaTokenizer, bars: list) -> list[list[int]]:
    """BPE ids of each base-id bar, each bar on its own as BPE never crosses a bar line (the bar
    itself when BPE is not trained). Training chunks and continuation contexts both use it.

    Example: ``ids = [i for b in encode_bars(tok, split_bars(base, bar_id)) for i in b]``
    """
    if not tok.is_trained or not bars:
        return [[int(i) for i in b] for b in bars]
    remi = tok.remi
    base = len(remi.vocab)
    # control ids (chords) stay as they are and cut their bar into runs BPE encodes apart
    plan: list[list] = []
    runs: list = []
    for b in bars:
        b = np.asarray(b)
        ctrl = np.flatnonzero(b >= base)
        if ctrl.size == 0:
            plan.append([len(runs)])
            runs.append(b)
            continue
        items, start = [], 0
        for c in ctrl:
            if c > start:
                items.append(len(runs))
                runs.append(b[start:c])
            items.append(-int(b[c]) - 1)
            start = c + 1
        if start < len(b):
            items.append(len(runs))
            runs.append(b[start:])
        plan.append(items)
    encs = remi._model.encode_batch([[remi._ids_to_bytes(r.tolist(), as_one_str=True)] for r in runs],
                                    is_pretokenized=True)
    run_ids = [e.ids for e in encs]
    # BPE marks the start of every word it encodes; where no merge holds the mark together with
    # the run's first token (a run after a chord, or a bar's lone ``Bar`` before its section
    # token) the mark is an id of its own that stands for no token: drop it
    for k, r in enumerate(run_ids):
        if r and not tok.base_tokens(r[0]):
            run_ids[k] = r[1:]
    return [[i for it in items for i in (run_ids[it] if it >= 0 else [-it - 1])] for items in plan]
