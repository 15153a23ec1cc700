"""Stage 2: pieces → token ids → training shards.

A :class:`MelodiaTokenizer` is MidiTok's REMI tokenizer (with tempos, time signatures and
programs, one token stream per piece) trained with BPE, plus melodia's *control tokens*
(``MOOD_*``, ``KEY_*``, ``TAG_*``). Control tokens live in their own id range after MidiTok's
vocabulary, so BPE never sees or merges them, and fine-tuning can add new ones (a user's tags)
without touching the BPE model. The whole tokenizer saves to one JSON file (MidiTok's own
format with an extra ``melodia`` attribute) and loads back identical.

Why these REMI settings (measured on the built-in corpus, see docs/tokenizer.md):

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

from .errors import BadInputError, BadModelError

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
    from .harmony import chord_token_names

    return chord_token_names() + [FIM_SUFFIX, FIM_MIDDLE]


def default_controls(moods: Iterable[str] = (), tags: Iterable[str] = ()) -> list[str]:
    """Control token names in id order: moods (canonical, any, user), keys (24, any), chords
    and infilling markers, tags.

    Example:
        >>> default_controls()[:5]
        ['MOOD_happy', 'MOOD_tense', 'MOOD_sad', 'MOOD_calm', 'MOOD_any']
    """
    from .moods import CANONICAL_MOODS, KEY_NAMES, key_token_name

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
        from .fileio import write_json

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
        """Size of MidiTok's vocabulary (after BPE): control ids start here."""
        return len(self.remi)

    @property
    def vocab_size(self) -> int:
        """Total vocabulary: MidiTok's plus the control tokens."""
        return self.base_size + len(self.controls)

    @property
    def is_trained(self) -> bool:
        """Whether BPE has been trained."""
        return self.remi.is_trained

    def control_id(self, name: str) -> int:
        """Id of a control token by full name. Example: ``tok.control_id("MOOD_sad")``."""
        try:
            return self.base_size + self.controls.index(name)
        except ValueError:
            raise BadInputError(f"unknown control token {name!r}") from None

    def mood_id(self, mood: str) -> int:
        """Id of ``MOOD_<mood>`` (canonical, alias, user mood or "any"). Example: ``tok.mood_id("joyful")``."""
        from .moods import ALIASES

        m = mood.strip().lower()
        m = ALIASES.get(m, m)
        if f"MOOD_{m}" not in self.controls:
            known = [c[5:] for c in self.controls if c.startswith("MOOD_")]
            raise BadInputError(f"unknown mood {mood!r}; this model knows: {', '.join(known)}")
        return self.control_id(f"MOOD_{m}")

    def key_id(self, key: str | None) -> int:
        """Id of ``KEY_<key>`` ("D minor", "Dm", None/"any"). Example: ``tok.key_id("D minor")``."""
        from .moods import key_token_name, parse_key

        if key is None or key.strip().lower() == "any":
            return self.control_id("KEY_any")
        return self.control_id(key_token_name(parse_key(key)))

    def tag_id(self, tag: str) -> int:
        """Id of ``TAG_<tag>``. Example: ``tok.tag_id("lofi")``."""
        if f"TAG_{tag}" not in self.controls:
            known = [c[4:] for c in self.controls if c.startswith("TAG_")]
            raise BadInputError(f"unknown tag {tag!r}; this model knows: {', '.join(known) or 'none'}")
        return self.control_id(f"TAG_{tag}")

    def add_controls(self, names: Iterable[str]) -> list[str]:
        """Append new control tokens (e.g. a user's TAG_/MOOD_); returns those added.

        Example: ``tok.add_controls(["TAG_lofi"])``
        """
        added = [n for n in dict.fromkeys(names) if n not in self.controls]
        for n in added:
            if not n.startswith(("MOOD_", "TAG_", "KEY_", "Chord_", "FIM_")):
                raise BadInputError(f"control token {n!r} must start with MOOD_, KEY_, TAG_, Chord_ or FIM_")
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
        """Whether this tokenizer writes chord tokens (tokenizers made before them do not)."""
        return "Chord_N" in self.controls

    def chord_id(self, chord: "Chord | None") -> int:
        """Id of a chord's token (``None`` = ``Chord_N``). Example: ``tok.chord_id(parse_chord("Am"))``."""
        from .harmony import chord_token_name

        return self.control_id(chord_token_name(chord))

    def chord_ids(self) -> dict[int, "Chord | None"]:
        """Every chord token id and its chord. Example: ``tok.chord_ids()[tok.chord_id(None)]  # None``."""
        from .harmony import chord_from_token_name

        return {self.base_size + k: chord_from_token_name(c) for k, c in enumerate(self.controls)
                if c.startswith("Chord_")}

    def fim_ids(self) -> dict[str, int]:
        """The fill-in-the-middle markers: ``{"suffix": id, "middle": id}``, {} for a tokenizer
        made before them. Example: ``tok.fim_ids()["middle"]``."""
        return {c[4:]: self.control_id(c) for c in self.controls if c.startswith("FIM_")}

    # ------------------------------------------------------------------ encode / decode
    def controls_prefix(self, mood: str = "any", key: str | None = None, tags: Sequence[str] = ()) -> list[int]:
        """``[BOS, MOOD_m, KEY_k, TAG_t…]``. Example: ``tok.controls_prefix("sad", "A minor")``."""
        return [BOS_ID, self.mood_id(mood), self.key_id(key)] + [self.tag_id(t) for t in tags]

    def key_for_model(self, key: str | None) -> str | None:
        """The key token the model sees for a key: itself, or (key-normalised) its mode on C.

        Example: ``tok.key_for_model("A minor")  # "C minor" when key_normalised``
        """
        if not self.key_normalised or key is None:
            return key
        from .moods import key_in_c

        return key_in_c(key)

    def model_shift(self, key: str | None) -> int:
        """Semitones that move a piece in ``key`` to what the model reads: key-normalised, its
        tonic onto C; else (or with no key) 0. Example: ``tok.model_shift("A minor")  # 3``"""
        if not self.key_normalised or not key:
            return 0
        from .moods import tonic_shift

        return -tonic_shift(key)

    def encode_score(self, score: "symusic.Score", shift: int = 0) -> list[int]:
        """REMI(+BPE) ids of a score, no controls; ``shift`` transposes its pitched notes first
        (semitones; drums stay). Example: ``ids = tok.encode_score(score)``."""
        import numpy as np

        chords = chord_positions(score, self.remi, shift) if self.has_chords else []
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
        return [i for b in encode_bars(self, split_bars(base, self.remi.vocab["Bar_None"])) for i in b]

    def encode_piece(self, score: "symusic.Score", mood: str = "any", key: str | None = None,
                     tags: Sequence[str] = ()) -> list[int]:
        """A whole sequence: controls, the score's ids, EOS. Key-normalised, the notes are written
        with ``key``'s tonic on C (decode moves them back). Example: ``tok.encode_piece(s, "calm")``."""
        return self.controls_prefix(mood, key, tags) + self.encode_score(score, self.model_shift(key)) + [EOS_ID]

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
        return score

    def chords(self, ids: Sequence[int]) -> list[tuple[float, "Chord | None"]]:
        """The chord tokens of a sequence as ``(start beat, chord)``, in the key the notes
        decode to (key-normalised: moved from C like the notes). Beats are quarter notes from
        the first bar line. Example: ``tok.chords(ids)[:2]  # [(0.0, Chord(0, 'maj')), ...]``"""
        chord_of = self.chord_ids()
        if not chord_of:
            return []
        shift = self.decode_shift(ids)
        out: list = []
        bar, bar_start, bar_len, pos_beats = -1, 0.0, 4.0, 0.0
        per_beat = int(self.remi.config.max_num_pos_per_beat)
        den = 4
        for i in ids:
            i = int(i)
            if i in chord_of:
                ch = chord_of[i]
                out.append((bar_start + pos_beats, ch.transposed(shift) if ch is not None and shift else ch))
                continue
            if i >= self.base_size or i < 4:
                continue
            for t in self.base_tokens(i):
                kind, _, val = t.partition("_")
                if kind == "Bar":
                    bar_start = bar_start + bar_len if bar >= 0 else 0.0
                    bar += 1
                    pos_beats = 0.0
                elif kind == "TimeSig":
                    num, den = (int(x) for x in val.split("/"))
                    bar_len = 4.0 * num / den
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
        from .moods import key_from_token_name, tonic_shift

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
        import numpy as np
        import symusic

        remi = self.remi
        items = list(scores or []) + [symusic.Score(str(f)) for f in (files or [])]
        seqs = []
        for sc in items:
            seq = remi.encode(sc, encode_ids=False)
            seqs.append(np.asarray((seq[0] if isinstance(seq, list) else seq).ids))
        _train_bpe_on_ids(remi, seqs, vocab_size)


# =========================================================================== shards
# ``melodia tokenize --corpus C --out T``: every piece of the corpus → REMI base ids (both
# cores) → BPE trained on the train split → pieces cut at bar lines into chunks of at most
# ``max_len`` ids, each prefixed with its controls → uint16 shards + index.json.

SHARD_TOKENS = 8_000_000  # ids per shard file (16 MB of uint16)


@dataclass
class TokenizeSummary:
    """What ``tokenize_corpus`` wrote. ``tokens`` maps split → ids written."""

    out: Path
    vocab_size: int
    chunks: int
    tokens: dict
    truncated_bars: int
    failed: list


_WORKER_TOK: "miditok.REMI | None" = None
_WORKER_MTOK: "MelodiaTokenizer | None" = None


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
    import numpy as np

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


_SHIFT_TABLES: dict = {}  # per worker process: semitones -> pitch_shift_table


def _base_worker_init(tok_json: str | None) -> None:
    global _WORKER_TOK, _WORKER_MTOK
    if tok_json is None:
        from miditok import REMI

        _WORKER_TOK = REMI(miditok_config())
    else:
        _WORKER_MTOK = MelodiaTokenizer.load(tok_json)
        _WORKER_TOK = _WORKER_MTOK.remi


def _base_ids(path: str) -> tuple[str, "np.ndarray | str"]:
    """Worker: one piece file → REMI base ids (int32), or an error message."""
    import numpy as np
    import symusic

    assert _WORKER_TOK is not None
    try:
        score = symusic.Score(path)
        seq = _WORKER_TOK.encode(score, encode_ids=False)
        if isinstance(seq, list):
            seq = seq[0]
        ids = np.asarray(seq.ids, dtype=np.int32)
        if _WORKER_MTOK is not None and _WORKER_MTOK.has_chords:
            return path, (ids, chord_positions(score, _WORKER_TOK))
        return path, ids
    except Exception as e:  # reported by the caller, never fatal for the whole corpus
        return path, f"{e.__class__.__name__}: {e}"


def _chunk_piece(job: tuple) -> tuple[str, "tuple[list, int] | str"]:
    """Worker: one piece → its chunks (uint16 arrays with controls and EOS), the number of
    truncated bars and each chunk's labels, or an error.

    ``label`` is None to keep the prefix on every chunk, else ``(tempo_known, own_mood)``: each
    chunk is estimated from its own notes (in the piece's own key, with the tempo in force);
    with ``own_mood`` its MOOD becomes the estimated mood, and its KEY becomes ``KEY_any`` when
    the notes read in the other mode than the piece's key. The labels returned per chunk are
    ``(mood or None, key_kept)``.
    """
    import numpy as np

    from .moods import key_from_token_name

    path, ids, prefix, max_len, shift, label = job
    tok = _WORKER_MTOK
    assert tok is not None
    chords: list = []
    if ids is None:
        path, ids = _base_ids(path)
        if isinstance(ids, str):
            return path, ids
        if isinstance(ids, tuple):
            ids, chords = ids
    elif tok.has_chords:  # base ids from the BPE stage: the chords are still to be read
        import symusic

        chords = chord_positions(symusic.Score(path), tok.remi)
    if len(ids) == 0:
        return path, "no tokens"
    remi = tok.remi
    own_bars = split_bars(ids, remi.vocab["Bar_None"]) if label is not None else None
    key_token = tok.id_to_token(prefix[2]) if len(prefix) > 2 and prefix[2] >= tok.base_size else "KEY_any"
    key_mode = None if key_token == "KEY_any" else key_from_token_name(key_token).split()[-1]
    if shift:  # key-normalised: the piece's tonic onto C
        table = _SHIFT_TABLES.get(shift)
        if table is None:
            table = _SHIFT_TABLES[shift] = pitch_shift_table(remi, shift)
        ids = table[ids]
    if chords:  # chord tokens, moved with the notes (key-normalised: onto C)
        ids = insert_chords(tok, ids, [(b, p, c.transposed(shift) if c is not None and shift else c)
                                       for b, p, c in chords])
    budget = max_len - len(prefix) - 1 - 4  # 4: room for the tempo re-stated at a chunk start
    bars = split_bars(ids, remi.vocab["Bar_None"])
    encoded = encode_bars(tok, bars)  # BPE never crosses a bar line: a chunk's ids are its bars' ids
    # the tempo in force when each bar starts (REMI writes only tempo changes)
    is_tempo = np.isin(ids, np.fromiter(_tempo_ids(remi), dtype=np.int64))
    tempo_at_bar, tempo = [], None
    for b, flags in zip(bars, np.split(is_tempo, np.cumsum([len(b) for b in bars])[:-1])):
        tempo_at_bar.append(tempo)
        if flags.any():
            tempo = int(b[np.flatnonzero(flags)[-1]])
    chunks, cur, truncated, firsts = [], [], 0, []
    cur_len = 0
    for bi, (b, e) in enumerate(zip(bars, encoded)):
        if len(e) > budget:  # one absurdly dense bar: keep its first notes only
            b = _truncate_bar(b, remi, tok, budget)
            e = encode_bars(tok, [b])[0]
            truncated += 1
        if cur and cur_len + len(e) > budget:
            chunks.append(cur)
            cur, cur_len = [], 0
        if not cur:
            firsts.append(bi)
        if not cur and bi > 0:
            restated = restate_tempo(b, tempo_at_bar[bi], remi)
            if restated is not b:
                e = encode_bars(tok, [restated])[0]
        cur.append(e)
        cur_len += len(e)
    if cur:
        chunks.append(cur)
    out, labels = [], []
    for k, c in enumerate(chunks):
        music = [i for e in c for i in e][: max_len - len(prefix) - 1]
        head = list(prefix)
        mood, key_kept = None, True
        if own_bars is not None:  # the chunk's own notes, in the piece's own key
            first, end = firsts[k], firsts[k] + len(c)
            own = [restate_tempo(own_bars[first], tempo_at_bar[first], remi)] + own_bars[first + 1:end]
            est = _passage_estimate(remi, np.concatenate(own), label[0])
            if label[1]:
                mood = est.mood
                head[1] = tok.mood_id(mood)
            if key_mode is not None and est.features.mode != key_mode:
                key_kept = False
                head[2] = tok.key_id(None)
        labels.append((mood, key_kept))
        out.append(np.asarray(head + music + [EOS_ID], dtype=np.uint16))
    return path, (out, truncated, labels)


def _passage_estimate(remi, base_ids: "np.ndarray", tempo_known: bool):
    """The mood estimate (moods.MoodEstimate) of a passage given as REMI base ids."""
    from miditok import TokSequence

    from .moods import MoodEstimator

    score = remi.decode(TokSequence(ids=[int(i) for i in base_ids if int(i) < len(remi.vocab)], are_ids_encoded=False))
    return MoodEstimator().estimate(score, tempo_known=tempo_known)


def _pool_map(fn, items: list, workers: int, init, initargs: tuple, desc: str, progress: bool):
    """Ordered map over a process pool (or in-process for one worker), with a progress bar."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(items), desc=desc, unit="piece", disable=not progress)
    try:
        if workers <= 1:
            init(*initargs)
            for it in items:
                yield fn(it)
                bar.update(1)
            return
        import multiprocessing as mp

        with mp.get_context("fork").Pool(workers, initializer=init, initargs=initargs) as pool:
            for r in pool.imap(fn, items, chunksize=8):
                yield r
                bar.update(1)
    finally:
        bar.close()


def _train_bpe_on_ids(remi, seqs: list, vocab_size: int) -> None:
    """Train MidiTok's BPE from REMI base-id sequences (one list of bar strings per piece)."""
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
    import numpy as np

    starts = np.flatnonzero(ids == bar_id)
    if len(starts) == 0:
        return [ids] if len(ids) else []
    return [b for b in np.split(ids, starts) if len(b)]


def chord_positions(score: "symusic.Score", remi, shift: int = 0) -> list[tuple[int, int, "Chord | None"]]:
    """A score's chords as ``(bar index, REMI position in the bar, chord)``: its chord markers
    (as the corpus writes them) or, with none, the chords recognised from its notes
    (:func:`melodia.harmony.recognise_chords`), moved by ``shift`` semitones.

    Example: ``chord_positions(symusic.Score("C/pieces/x.mid"), tok.remi)[:2]``
    """
    import numpy as np

    from .corpus import read_chord_markers
    from .harmony import NoteArrays, bar_lines, recognise_chords

    tpq = score.ticks_per_quarter
    chords = [(t / tpq, c) for t, c in read_chord_markers(score)]
    bars = bar_lines(score)
    if not chords:
        notes = NoteArrays.of_score(score)
        if notes.onset.size == 0:
            return []
        chords = recognise_chords(notes, bars)
    per_beat = int(remi.config.max_num_pos_per_beat)
    dens = sorted((float(ts.time) / tpq, int(ts.denominator)) for ts in score.time_signatures) or [(0.0, 4)]
    out = []
    for beat, ch in chords:
        b = int(np.clip(np.searchsorted(bars, beat + 1e-9, side="right") - 1, 0, len(bars) - 2))
        den = [d for t, d in dens if t <= beat + 1e-9]
        pos = int(round((beat - bars[b]) * per_beat * (den[-1] if den else 4) / 4))
        out.append((b, pos, ch.transposed(shift) if ch is not None and shift else ch))
    return out


def insert_chords(tok: "MelodiaTokenizer", ids: "np.ndarray", chords: Sequence[tuple]) -> "np.ndarray":
    """REMI base ids with a chord token at each chord change: after the ``Position`` where the
    chord starts (and after a ``Tempo`` right behind it), before its notes; where no note starts
    at that position a ``Position`` is added for it.

    Example: ``ids = insert_chords(tok, base_ids, chord_positions(score, tok.remi))``
    """
    import numpy as np

    if not chords:
        return ids
    remi = tok.remi
    names = [remi[int(i)] if int(i) < len(remi.vocab) else "" for i in ids]
    pending: dict[int, list] = {}
    for b, pos, ch in chords:
        pending.setdefault(b, []).append((pos, tok.chord_id(ch)))
    for v in pending.values():
        v.sort()
    out: list[int] = []
    bar = -1
    queue: list = []

    def flush(before: int) -> None:  # chords at positions where no note starts
        while queue and queue[0][0] < before:
            pos, cid = queue.pop(0)
            out.extend([remi.vocab[f"Position_{pos}"], cid] if f"Position_{pos}" in remi.vocab else [])

    n = len(ids)
    k = 0
    while k < n:
        name = names[k]
        if name == "Bar_None":
            flush(1 << 30)
            bar += 1
            queue = list(pending.get(bar, []))
            out.append(int(ids[k]))
            k += 1
            continue
        if name.startswith("Position_"):
            pos = int(name.split("_")[1])
            flush(pos)
            out.append(int(ids[k]))
            k += 1
            if k < n and names[k].startswith("Tempo_"):
                out.append(int(ids[k]))
                k += 1
            if queue and queue[0][0] == pos:
                out.append(queue.pop(0)[1])
            continue
        out.append(int(ids[k]))
        k += 1
    flush(1 << 30)
    return np.asarray(out, dtype=np.int64)


def restate_tempo(bar: "np.ndarray", tempo_id: int | None, remi) -> "np.ndarray":
    """A bar (REMI base ids) that opens a chunk or a context, made to carry the tempo in force:
    ``Bar TimeSig Position_0 Tempo …`` (REMI writes only tempo changes).

    Example: ``first = restate_tempo(bars[k], tempo_id, tok.remi)``
    """
    import numpy as np

    if tempo_id is None:
        return bar
    toks = [remi[int(i)] if int(i) < len(remi.vocab) else "" for i in bar[:4]]
    k = 1 + int(len(toks) > 1 and toks[1].startswith("TimeSig_"))
    if len(toks) > k and toks[k] == "Position_0":
        if len(toks) > k + 1 and toks[k + 1].startswith("Tempo_"):
            return bar
        return np.concatenate([bar[: k + 1], [tempo_id], bar[k + 1:]])
    return np.concatenate([bar[:k], [remi.vocab["Position_0"], tempo_id], bar[k:]])


def tokenize_corpus(corpus_dir: str | os.PathLike, out_dir: str | os.PathLike, vocab_size: int = DEFAULT_VOCAB,
                    max_len: int = DEFAULT_MAX_LEN, workers: int | None = None, progress: bool = True,
                    tokenizer: "MelodiaTokenizer | str | os.PathLike | None" = None,
                    key_normalise: bool | None = None, chunk_labels: bool = False) -> TokenizeSummary:
    """Tokenize a corpus folder into shards (see docs/ARCHITECTURE.md for the layout).

    With ``tokenizer`` (a trained tokenizer or its path, e.g. a base model's for fine-tuning)
    BPE is not retrained; moods and tags it lacks are appended as new control tokens.
    ``key_normalise`` writes every piece with its tonic on C and the key token of its mode on C
    (default: on for a new tokenizer, the given tokenizer's own setting otherwise).
    ``chunk_labels``: the control tokens describe the passage the model reads, not the whole
    song (a verse and a chorus can differ): a piece whose mood was estimated (no label from
    labels.csv or a folder) gives each chunk the mood estimated from the chunk's own notes
    (labelled pieces keep their label), and a chunk whose notes read in the other mode than
    its piece's key gets ``KEY_any``. False (default): every chunk carries its piece's mood and
    key (docs/ARCHITECTURE.md says what each gave the default model).

    Example:
        >>> s = tokenize_corpus("C", "T", vocab_size=4000); s.tokens["train"]
    """
    import numpy as np

    from .corpus import load_manifest
    from .fileio import atomic_write, write_json
    from .moods import CANONICAL_MOODS

    corpus_dir, out = Path(corpus_dir), Path(out_dir)
    if max_len < 64:
        raise BadInputError(f"max_len {max_len} is too small (at least 64)")
    rows = load_manifest(corpus_dir)
    if not rows:
        raise BadInputError(f"{corpus_dir}: the corpus has no pieces")
    workers = workers or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    user_moods = sorted({r["mood"] for r in rows if r["mood"] not in CANONICAL_MOODS and r["mood"] != "any"})
    tags = sorted({t for r in rows for t in r.get("tags", [])})

    if tokenizer is not None:
        tok = tokenizer if isinstance(tokenizer, MelodiaTokenizer) else MelodiaTokenizer.load(tokenizer)
        # a tokenizer made before chord tokens gets them (and the infilling markers) appended
        tok.add_controls(harmony_controls() + [f"MOOD_{m}" for m in user_moods] + [f"TAG_{t}" for t in tags])
    else:
        tok = MelodiaTokenizer.new(user_moods, tags)
        tok.key_normalised = True
    if key_normalise is not None:
        tok.key_normalised = bool(key_normalise)

    # 1. BPE on the train split (base ids on all cores; bars never merge across bars)
    paths = [str(corpus_dir / r["file"]) for r in rows]
    remi = tok.remi
    base: dict[str, np.ndarray] = {}
    failed: list[dict] = []
    if not tok.is_trained and vocab_size > len(remi):
        train_paths = [p for p, r in zip(paths, rows) if r["split"] == "train"]
        if not train_paths:
            raise BadInputError(f"{corpus_dir}: no train pieces to learn BPE from")
        for path, res in _pool_map(_base_ids, train_paths, workers, _base_worker_init, (None,), "bpe input", progress):
            if isinstance(res, np.ndarray) and len(res):
                base[path] = res
        _train_bpe_on_ids(remi, list(base.values()), vocab_size)

    # 2. chunks: whole bars, at most max_len ids with controls and EOS (all cores)
    out.mkdir(parents=True, exist_ok=True)
    tok_path = tok.save(out / TOKENIZER_FILE)
    shifts = [tok.model_shift(r.get("key")) for r in rows]
    jobs = [(p, base.pop(p, None), tok.controls_prefix(r["mood"], tok.key_for_model(r.get("key")), r.get("tags", [])),
             max_len, sh, (bool(r.get("tempo_known", True)), r.get("mood_source") == "estimated") if chunk_labels else None)
            for p, r, sh in zip(paths, rows, shifts)]
    per_split: dict[str, list] = {"train": [], "valid": [], "test": []}
    index_chunks: list[dict] = []
    truncated = 0
    for (path, res), r, sh in zip(_pool_map(_chunk_piece, jobs, workers, _base_worker_init, (str(tok_path),),
                                            "tokenize", progress), rows, shifts):
        if isinstance(res, str):
            failed.append({"file": path, "reason": res})
            continue
        chunks, n_trunc, labels = res
        truncated += n_trunc
        per_split[r["split"]].extend((c, {**r, "shift": sh, "mood": m or r["mood"], "key_kept": kept})
                                     for c, (m, kept) in zip(chunks, labels))

    # 3. shards
    for old in out.glob("*-[0-9][0-9][0-9].npy"):
        old.unlink()
    shards, tokens = [], {}
    for split, items in per_split.items():
        tokens[split] = int(sum(len(s) for s, _ in items))
        shard_no, buf, buf_len = 0, [], 0

        def flush():
            nonlocal shard_no, buf, buf_len
            if not buf:
                return
            name = f"{split}-{shard_no:03d}.npy"
            arr = np.concatenate([s for s, _ in buf])
            with atomic_write(out / name) as f:
                np.save(f, arr)
            off = 0
            for s, r in buf:
                index_chunks.append({"shard": len(shards), "offset": off, "length": int(len(s)), "piece": r["id"],
                                     "split": split, "mood": r["mood"], "key": r["key"], "shift": r["shift"],
                                     "key_any": not r["key_kept"],
                                     "tags": r.get("tags", [])})
                off += len(s)
            shards.append({"file": name, "split": split, "tokens": int(len(arr))})
            shard_no, buf, buf_len = shard_no + 1, [], 0

        for s, r in items:
            buf.append((s, r))
            buf_len += len(s)
            if buf_len >= SHARD_TOKENS:
                flush()
        flush()

    index = {
        "format": 1, "vocab_size": tok.vocab_size, "base_vocab_size": tok.base_size, "max_len": max_len,
        "key_normalised": tok.key_normalised, "chunk_labels": bool(chunk_labels),
        "pad_id": PAD_ID, "bos_id": BOS_ID, "eos_id": EOS_ID,
        "mood_ids": {c[5:]: tok.control_id(c) for c in tok.controls if c.startswith("MOOD_")},
        "key_ids": {("any" if c == "KEY_any" else _key_name(c)): tok.control_id(c) for c in tok.controls if c.startswith("KEY_")},
        "tag_ids": {c[4:]: tok.control_id(c) for c in tok.controls if c.startswith("TAG_")},
        "chord_ids": {c[6:]: tok.control_id(c) for c in tok.controls if c.startswith("Chord_")},
        "fim_ids": tok.fim_ids(),
        "bar_ids": bar_start_ids(tok),
        "shards": shards, "chunks": index_chunks,
        "splits": {s: {"chunks": sum(1 for c in index_chunks if c["split"] == s), "tokens": tokens.get(s, 0)} for s in per_split},
        "corpus": str(corpus_dir.resolve()), "truncated_bars": truncated, "failed": failed,
    }
    write_json(out / "index.json", index, indent=None)
    return TokenizeSummary(out, tok.vocab_size, len(index_chunks), tokens, truncated, failed)


def bar_start_ids(tok: MelodiaTokenizer) -> list[int]:
    """The ids that open a bar (``Bar`` alone or BPE-merged with what follows it): training
    cuts chunks at them to rearrange bars for infilling. Example: ``bar_start_ids(tok)[:3]``."""
    if not tok.is_trained:
        return [int(tok.remi.vocab["Bar_None"])]
    return [i for i in range(tok.base_size) if tok.base_tokens(i)[:1] == ["Bar_None"]]


def _key_name(token: str) -> str:
    from .moods import key_from_token_name

    return key_from_token_name(token)


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


def _tempo_ids(remi) -> list[int]:
    return [i for t, i in remi.vocab.items() if t.startswith("Tempo_")]


def encode_bars(tok: MelodiaTokenizer, bars: list) -> list[list[int]]:
    """BPE ids of each base-id bar, each bar on its own as BPE never crosses a bar line (the bar
    itself when BPE is not trained). Training chunks and continuation contexts both use it.

    Example: ``ids = [i for b in encode_bars(tok, split_bars(base, bar_id)) for i in b]``
    """
    if not tok.is_trained or not bars:
        return [[int(i) for i in b] for b in bars]
    import numpy as np

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
    # BPE marks the start of every word it encodes; a run that starts inside a bar (after a
    # chord) keeps that mark as an id of its own that stands for no token: drop it
    first_runs = {items[0] for items in plan if items and items[0] >= 0}
    for k, r in enumerate(run_ids):
        if k not in first_runs and r and not tok.base_tokens(r[0]):
            run_ids[k] = r[1:]
    return [[i for it in items for i in (run_ids[it] if it >= 0 else [-it - 1])] for items in plan]


def _truncate_bar(bar, remi, tok: MelodiaTokenizer, budget: int):
    """Cut a bar at the last Position boundary that keeps its BPE length within budget."""
    starts = [i for i in range(len(bar)) if int(bar[i]) < len(remi.vocab)
              and remi[int(bar[i])].startswith("Position_")] + [len(bar)]
    best = bar[: starts[0]]
    for s in starts[1:]:
        if len(encode_bars(tok, [bar[:s]])[0]) > budget:
            break
        best = bar[:s]
    return best


# =========================================================================== round trip
@dataclass
class RoundTrip:
    """Result of :func:`check_roundtrip`: ``kept`` of ``notes`` came back (share in ``ratio``)."""

    pieces: int
    notes: int
    kept: int
    lost_by_reason: dict

    @property
    def ratio(self) -> float:
        return self.kept / self.notes if self.notes else 1.0


def note_table(score: "symusic.Score") -> "np.ndarray":
    """Notes as an (n, 4) float array: onset beat, duration beats, pitch, program (-1 = drums).

    Example: ``note_table(score)[:, 2]`` are the pitches.
    """
    import numpy as np

    tpq = score.ticks_per_quarter
    parts = []
    for tr in score.tracks:
        a = tr.notes.numpy()
        n = len(a["time"])
        parts.append(np.stack([a["time"] / tpq, a["duration"] / tpq, a["pitch"].astype(float),
                               np.full(n, -1.0 if tr.is_drum else float(tr.program))], axis=1))
    return np.concatenate(parts) if parts else np.zeros((0, 4))


def compare_notes(orig: "np.ndarray", back: "np.ndarray", onset_step: float, dur_step) -> tuple[int, dict]:
    """How many original notes come back: same pitch and program, onset within one grid step,
    duration within one grid step of the duration grid at that length.

    ``dur_step(d)`` gives the duration grid step (beats) at duration ``d``. Returns the count
    kept and the lost ones by reason. Example: ``kept, lost = compare_notes(a, b, 1/24, f)``.
    """
    from collections import defaultdict

    pool: dict = defaultdict(list)
    for on, du, p, prog in back:
        pool[(int(p), int(prog))].append([on, du, False])
    kept, lost = 0, {"pitch/program missing": 0, "onset moved": 0, "duration changed": 0}
    for on, du, p, prog in orig:
        cands = pool.get((int(p), int(prog)), [])
        best, reason = None, "pitch/program missing" if not cands else "onset moved"
        tol_on = onset_step + 1e-6
        for c in cands:
            if c[2] or abs(c[0] - on) > tol_on:
                continue
            if abs(c[1] - du) <= dur_step(du) + 1e-6:
                best = c
                break
            reason = "duration changed"
        if best is not None:
            best[2] = True
            kept += 1
        else:
            lost[reason] += 1
    return kept, lost


def _duration_step_fn(remi):
    """Grid step (beats) of MidiTok's duration tokens at a given length."""
    ranges = sorted(remi.config.beat_res.items())
    max_beats = ranges[-1][0][1]

    def step(d: float) -> float:
        for (lo, hi), res in ranges:
            if d < hi:
                return 1.0 / res
        return max(d - max_beats, 0.0) + 1.0 / ranges[-1][1]  # longer notes are clipped: count as lost
    return step


def _roundtrip_one(path: str) -> tuple[int, int, dict]:
    import symusic

    remi = _WORKER_TOK
    assert remi is not None
    score = symusic.Score(path)
    seq = remi.encode(score)
    back = remi.decode(seq if not isinstance(seq, list) else seq[0])
    orig = note_table(score)
    res = max(remi.config.beat_res.values())
    kept, lost = compare_notes(orig, note_table(back), 1.0 / res, _duration_step_fn(remi))
    return len(orig), kept, lost


def check_roundtrip(shards_dir: str | os.PathLike, split: str = "train", workers: int | None = None,
                    progress: bool = True, limit: int | None = None) -> RoundTrip:
    """Encode and decode every piece of a split; count notes that come back (see :func:`compare_notes`).

    Example: ``print(f"{check_roundtrip('T').ratio:.1%}")``
    """
    from .corpus import load_manifest

    shards_dir = Path(shards_dir)
    index = _read_index(shards_dir)
    corpus = Path(index["corpus"])
    rows = [r for r in load_manifest(corpus) if r["split"] == split]
    if limit:
        rows = rows[:limit]
    workers = workers or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    total = kept = 0
    lost: dict = {}
    paths = [str(corpus / r["file"]) for r in rows]
    for n, k, l in _pool_map(_roundtrip_one, paths, workers, _base_worker_init, (str(shards_dir / TOKENIZER_FILE),),
                             "round trip", progress):
        total += n
        kept += k
        for key, v in l.items():
            lost[key] = lost.get(key, 0) + v
    return RoundTrip(len(rows), total, kept, lost)


def _read_index(shards_dir: Path) -> dict:
    p = Path(shards_dir) / "index.json"
    if not p.is_file():
        raise BadInputError(f"{shards_dir}: not a shards folder (no index.json; run `melodia tokenize`)")
    with open(p, encoding="utf-8") as f:
        return json.load(f)
