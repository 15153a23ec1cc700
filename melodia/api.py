"""The face users see: :class:`Composer` makes music, :class:`Piece` holds one result.

A :class:`Composer` wraps one model directory (the shipped default unless told otherwise) and
its tokenizer; :meth:`Composer.generate` and :meth:`Composer.continue_from` return
:class:`Piece` objects. A Piece is a score plus what was asked for; it gives its notes as plain
:class:`Note` records (beats *and* seconds), writes itself as ``.mid``, ``.wav``,
``.musicxml`` or ``.png`` by the extension you name, and converts to ``pretty_midi``,
``music21`` and ``symusic`` objects.

Beats are quarter notes throughout (as in MIDI and in DAWs' "QN"), counted from 0 at the
start of the piece. A note's ``program`` is its General MIDI program (0-127), or ``-1`` for
drums (MidiTok's convention).

A Composer is safe to share between threads: generation calls on one Composer run one at a
time (one model, one key/value cache). torch, miditok and music21 are imported only when a
Composer is loaded or a conversion needs them.

Example:
    >>> from melodia import Composer
    >>> c = Composer.load()                                   # the shipped default, CPU, offline
    >>> pieces = c.generate(mood="calm", bars=8, key="F major", tempo=72, n=2, seed=1)
    >>> pieces[0].save("calm.mid"); pieces[0].save("calm.wav")
    >>> pieces[0].notes[0]        # Note(pitch=65, start_beat=0.0, duration_beats=1.0, ...)
    >>> more = c.continue_from("my_clip.mid", bars=4, mood="tense")
"""
from __future__ import annotations

import base64
import math
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence, Union

from .errors import BadInputError, BadModelError

if TYPE_CHECKING:  # pragma: no cover - typing only
    import music21
    import pretty_midi
    import symusic

    from .tokenizer import MelodiaTokenizer

__all__ = ["Composer", "Piece", "Note", "ChordSpan", "notes_to_score", "DEFAULT_MODEL_DIR"]

#: Where the shipped default model lives (built by the project's training script).
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "weights" / "default"

#: Prompt notes accepted by :func:`notes_to_score` (a long piano piece has ~10,000).
MAX_PROMPT_NOTES = 20_000
#: Latest beat a prompt note may end on (~20 minutes at 120 qpm).
MAX_PROMPT_BEATS = 2_400.0
DEFAULT_TPQ = 480


# ============================================================================ Note
@dataclass(frozen=True)
class Note:
    """One note: pitch, where it starts and how long it lasts (in quarter-note beats and in
    seconds, from the piece's tempo map), velocity and General MIDI program (-1 = drums).

    Example:
        >>> Note(pitch=60, start_beat=0.0, duration_beats=1.0, start_s=0.0, duration_s=0.5,
        ...      velocity=90, program=0).end_beat
        1.0
    """

    pitch: int
    start_beat: float
    duration_beats: float
    start_s: float
    duration_s: float
    velocity: int
    program: int

    @property
    def end_beat(self) -> float:
        """Beat where the note ends. Example: ``note.end_beat``."""
        return self.start_beat + self.duration_beats

    @property
    def is_drum(self) -> bool:
        """True for a drum note (program -1). Example: ``[n for n in piece.notes if not n.is_drum]``."""
        return self.program == -1

    def to_dict(self) -> dict[str, Any]:
        """The note as a JSON-ready dict. Example: ``json.dumps(note.to_dict())``."""
        return asdict(self)


@dataclass(frozen=True)
class ChordSpan:
    """A chord of a piece: its lead-sheet name (``Am7``, ``F/A``), where it starts and how long
    it lasts, in beats. Example: ``ChordSpan("Am", 0.0, 4.0).name``."""

    name: str
    start_beat: float
    length_beats: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict. Example: ``piece.chords[0].to_dict()``."""
        return asdict(self)


NoteLike = Union[Note, Mapping[str, Any]]


def _number(value: Any, what: str, lo: float, hi: float, lo_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadInputError(f"{what} must be a number, got {value!r}")
    if value < lo or value > hi or (lo_open and value == lo):
        raise BadInputError(f"{what} {value!r} is outside {'(' if lo_open else '['}{lo:g}, {hi:g}]")
    return float(value)


def _integer(value: Any, what: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise BadInputError(f"{what} must be an integer, got {value!r}")
    if not lo <= value <= hi:
        raise BadInputError(f"{what} {value!r} is outside {lo}-{hi}")
    return int(value)


def _meter_of(meter: Any) -> tuple[int, int]:
    if isinstance(meter, str):
        parts = meter.strip().split("/")
        if len(parts) == 2 and all(p.strip().isdigit() for p in parts):
            num, den = int(parts[0]), int(parts[1])
            if 1 <= num <= 64 and den in (1, 2, 4, 8, 16, 32, 64):
                return num, den
    raise BadInputError(f"meter {meter!r}: write it like '4/4', '3/4' or '6/8'")


def notes_to_score(notes: Iterable[NoteLike], tempo: float = 120.0, meter: str = "4/4",
                   ticks_per_quarter: int = DEFAULT_TPQ) -> "symusic.Score":
    """Build a ``symusic.Score`` from notes (:class:`Note` objects or dicts with ``pitch``,
    ``start_beat``, ``duration_beats`` and optionally ``velocity`` (default 90) and
    ``program`` (default 0; -1 = drums)). Timing comes from the beats and ``tempo``; any
    ``start_s``/``duration_s`` are ignored. A bad note raises :class:`BadInputError` naming it.

    Example:
        >>> score = notes_to_score([{"pitch": 60, "start_beat": 0, "duration_beats": 1}], tempo=90)
    """
    import symusic

    tempo = _number(tempo, "tempo", 20.0, 400.0)
    num, den = _meter_of(meter)
    if isinstance(notes, (str, bytes, Mapping)):
        raise BadInputError("notes must be a list of notes (objects with pitch, start_beat, duration_beats)")
    try:
        notes = list(notes)
    except TypeError:
        raise BadInputError(f"notes must be a list of notes, got {type(notes).__name__}") from None
    if len(notes) > MAX_PROMPT_NOTES:
        raise BadInputError(f"{len(notes)} notes is too many (limit {MAX_PROMPT_NOTES})")
    tracks: dict[int, list] = {}
    for i, n in enumerate(notes):
        where = f"notes[{i}]"
        if isinstance(n, Note):
            n = n.to_dict()
        if not isinstance(n, Mapping):
            raise BadInputError(f"{where}: a note is an object with pitch, start_beat and duration_beats; "
                                f"got {type(n).__name__}")
        for name in ("pitch", "start_beat", "duration_beats"):
            if name not in n:
                raise BadInputError(f"{where}: missing {name!r}")
        pitch = _integer(n["pitch"], f"{where}.pitch", 0, 127)
        start = _number(n["start_beat"], f"{where}.start_beat", 0.0, MAX_PROMPT_BEATS)
        dur = _number(n["duration_beats"], f"{where}.duration_beats", 0.0, MAX_PROMPT_BEATS, lo_open=True)
        if start + dur > MAX_PROMPT_BEATS:
            raise BadInputError(f"{where}: ends at beat {start + dur:g}, after the limit {MAX_PROMPT_BEATS:g}")
        vel = _integer(n.get("velocity", 90), f"{where}.velocity", 1, 127)
        prog = _integer(n.get("program", 0), f"{where}.program", -1, 127)
        on = round(start * ticks_per_quarter)
        off = max(on + 1, round((start + dur) * ticks_per_quarter))
        tracks.setdefault(prog, []).append(symusic.Note(on, off - on, pitch, vel))
    score = symusic.Score(ticks_per_quarter)
    score.tempos.append(symusic.Tempo(0, qpm=tempo))
    score.time_signatures.append(symusic.TimeSignature(0, num, den))
    for prog in sorted(tracks, key=lambda p: (p == -1, p)):
        tr = symusic.Track("drums" if prog == -1 else f"program {prog}", program=max(prog, 0), is_drum=prog == -1)
        for nt in sorted(tracks[prog], key=lambda x: (x.time, x.pitch)):
            tr.notes.append(nt)
        score.tracks.append(tr)
    return score


def _bar_starts(score: "symusic.Score") -> list[int]:
    """Bar start ticks up to the score's end (the rule of ``miditok.utils.get_bars_ticks``,
    without importing miditok): 4/4 until the first valid time signature, each time signature
    starting a new bar where it stands."""
    end = score.end()
    if end <= 0:
        return [0]
    tpq = score.ticks_per_quarter
    sigs = [(ts.time, ts.numerator, ts.denominator) for ts in score.time_signatures
            if ts.numerator > 0 and ts.denominator > 0]
    cur = sigs[0] if sigs and sigs[0][0] == 0 else (0, 4, 4)
    bars: list[int] = []
    for nxt in [s for s in sigs if s[0] > 0] + [(end, 4, 4)]:
        per_bar = max(1, int(tpq * 4 / cur[2] * cur[1]))
        count = math.ceil((nxt[0] - cur[0]) / per_bar)
        bars.extend(cur[0] + per_bar * i for i in range(count))
        cur = nxt
    return bars or [0]


def _midi_safe(score: "symusic.Score") -> "symusic.Score":
    """``score`` with overlapping notes of one pitch on one track cut where the next one starts
    (and same-onset duplicates dropped, the longest kept). A MIDI file cannot hold such overlaps:
    a reader pairs the note-offs with the wrong note-ons, so without this the saved file would
    not hold the notes the Piece shows. Returns ``score`` itself when nothing overlaps."""
    import symusic

    fixed: dict[int, list] = {}
    for ti, tr in enumerate(score.tracks):
        if len(tr.notes) < 2:
            continue
        a = tr.notes.numpy()
        rows = sorted(zip(a["pitch"].tolist(), a["time"].tolist(), (-a["duration"]).tolist(),
                          a["velocity"].tolist()))
        keep: list[list[int]] = []
        changed = False
        for pitch, time_, neg_dur, vel in rows:
            dur = -neg_dur
            if keep and keep[-1][0] == pitch and keep[-1][1] + keep[-1][2] > time_:
                changed = True
                if keep[-1][1] == time_:
                    continue  # same pitch, same onset: keep the longest (sorted first)
                keep[-1][2] = time_ - keep[-1][1]
            keep.append([pitch, time_, dur, vel])
        if changed:
            fixed[ti] = sorted(keep, key=lambda r: (r[1], r[0]))
    if not fixed:
        return score
    score = score.copy()
    for ti, rows in fixed.items():
        notes = score.tracks[ti].notes
        notes.clear()
        for pitch, time_, dur, vel in rows:
            notes.append(symusic.Note(time_, dur, pitch, vel))
    return score


# ============================================================================ Piece
class Piece:
    """One piece of music: a ``symusic.Score`` plus what it was made with.

    Build one with :meth:`Composer.generate` / :meth:`Composer.continue_from`, or from a MIDI
    file (:meth:`from_midi`) or notes (:meth:`from_notes`). A piece always holds what its MIDI
    file will hold: overlapping notes of one pitch on one track, which MIDI cannot represent,
    are cut where the next one starts.

    Example:
        >>> piece = Piece.from_midi("calm.mid")
        >>> piece.bars, piece.tempo, piece.meter, len(piece.notes)
        (8, 72.0, '4/4', 93)
        >>> piece.save("calm.png")
    """

    def __init__(self, score: "symusic.Score", *, mood: str | None = None, key: str | None = None,
                 seed: int | None = None, bars: int | None = None) -> None:
        from .midifile import load_score

        loaded = load_score(score, "<piece>")
        if loaded is score:  # never share a Score with the caller: the piece's notes must not change
            loaded = loaded.copy()
        self._score = _midi_safe(loaded)
        self.mood = mood
        self.key = key
        self.seed = seed
        self._bars = bars
        self._notes: list[Note] | None = None

    # ------------------------------------------------------------------ building
    @classmethod
    def from_midi(cls, src: "str | os.PathLike | bytes") -> "Piece":
        """Read a MIDI file (path or bytes) through melodia's checked reader.

        Example: ``piece = Piece.from_midi("clip.mid")``
        """
        from .midifile import load_score

        if isinstance(src, (bytes, bytearray, memoryview)):
            return cls(load_score(bytes(src), "<MIDI bytes>"))
        if not isinstance(src, (str, os.PathLike)):
            raise BadInputError(f"from_midi: give a MIDI path or bytes, got {type(src).__name__}")
        return cls(load_score(src))

    @classmethod
    def from_notes(cls, notes: Iterable[NoteLike], tempo: float = 120.0, meter: str = "4/4") -> "Piece":
        """A piece holding ``notes`` (see :func:`notes_to_score`).

        Example: ``Piece.from_notes([{"pitch": 60, "start_beat": 0, "duration_beats": 2}], tempo=90)``
        """
        return cls(notes_to_score(notes, tempo=tempo, meter=meter))

    # ------------------------------------------------------------------ reading
    @property
    def chords(self) -> list[ChordSpan]:
        """The piece's chords, from its chord markers (a generated piece carries the chords the
        model wrote, one per change; ``N.C.`` = no chord): name, start beat, length in beats.

        Example: ``[(c.name, c.start_beat) for c in piece.chords[:4]]``
        """
        from .corpus import read_chord_markers

        tpq = self._score.ticks_per_quarter
        marks = [(t, c.name if c is not None else "N.C.") for t, c in read_chord_markers(self._score)]
        marks.sort()
        end = max(self.length_beats, (marks[-1][0] / tpq) if marks else 0.0)
        out = []
        for k, (t, name) in enumerate(marks):
            stop = marks[k + 1][0] / tpq if k + 1 < len(marks) else end
            out.append(ChordSpan(name, round(t / tpq, 4), round(stop - t / tpq, 4)))
        return out

    @property
    def notes(self) -> list[Note]:
        """Every note, sorted by start beat, then pitch, then program.

        Example: ``[(n.pitch, n.start_beat) for n in piece.notes[:4]]``
        """
        if self._notes is None:
            self._notes = self._compute_notes()
        return list(self._notes)

    def _compute_notes(self) -> list[Note]:
        s = self._score
        tpq = s.ticks_per_quarter
        secs = s.to("second")
        out: list[Note] = []
        for tr, tr_s in zip(s.tracks, secs.tracks):
            if not len(tr.notes):
                continue
            prog = -1 if tr.is_drum else int(tr.program)
            a, b = tr.notes.numpy(), tr_s.notes.numpy()
            for i in range(len(a["time"])):
                out.append(Note(
                    pitch=int(a["pitch"][i]),
                    start_beat=int(a["time"][i]) / tpq,
                    duration_beats=int(a["duration"][i]) / tpq,
                    start_s=round(float(b["time"][i]), 6),
                    duration_s=round(float(b["duration"][i]), 6),
                    velocity=int(a["velocity"][i]),
                    program=prog,
                ))
        out.sort(key=lambda n: (n.start_beat, n.pitch, n.program))
        return out

    @property
    def tempo(self) -> float:
        """Tempo at the start, in quarter notes per minute (120 if the score has none).

        Example: ``piece.tempo  # 72.0``
        """
        tempos = sorted(self._score.tempos, key=lambda t: t.time)
        return round(float(tempos[0].qpm), 3) if tempos else 120.0

    @property
    def meter(self) -> str:
        """Time signature at the start, like ``"4/4"`` (4/4 if the score has none).

        Example: ``piece.meter  # '3/4'``
        """
        sigs = sorted(self._score.time_signatures, key=lambda t: t.time)
        return f"{sigs[0].numerator}/{sigs[0].denominator}" if sigs else "4/4"

    @property
    def bars(self) -> int:
        """Number of bars (as asked for when generated; counted from the score otherwise).

        Example: ``piece.bars  # 8``
        """
        if self._bars is None:
            self._bars = len(_bar_starts(self._score))
        return self._bars

    @property
    def length_beats(self) -> float:
        """Length in beats of the whole bars the piece spans (what a DAW item should cover).

        Example: ``piece.length_beats  # 32.0 for 8 bars of 4/4``
        """
        starts = _bar_starts(self._score)
        tpq = self._score.ticks_per_quarter
        sigs = sorted((t for t in self._score.time_signatures if t.numerator > 0 and t.denominator > 0),
                      key=lambda t: t.time)
        last = next((t for t in reversed(sigs) if t.time <= starts[-1]), None)
        num, den = (last.numerator, last.denominator) if last else (4, 4)
        end = starts[-1] + tpq * 4 * num / den
        if self._bars is not None and self._bars > len(starts):  # trailing empty bars asked for
            end += (self._bars - len(starts)) * tpq * 4 * num / den
        return end / tpq

    @property
    def end_beat(self) -> float:
        """Beat where the last note ends. Example: ``piece.end_beat  # 31.5``."""
        return self._score.end() / self._score.ticks_per_quarter

    @property
    def duration_s(self) -> float:
        """Seconds from the start to the end of the last note. Example: ``piece.duration_s``."""
        return round(float(self._score.to("second").end()), 6)

    def __len__(self) -> int:
        return self._score.note_num()

    def __repr__(self) -> str:
        what = ", ".join(f"{k}={v!r}" for k, v in (("mood", self.mood), ("key", self.key)) if v)
        return (f"Piece({self.bars} bars, {self.meter}, {self.tempo:g} qpm, {len(self)} notes"
                + (f", {what}" if what else "") + ")")

    # ------------------------------------------------------------------ converting
    def to_score(self) -> "symusic.Score":
        """A copy of the piece as a tick-based ``symusic.Score``. Example: ``piece.to_score().tracks``."""
        return self._score.copy()

    def to_midi_bytes(self) -> bytes:
        """The piece as a standard MIDI file in memory. Example: ``data = piece.to_midi_bytes()``."""
        return bytes(self._score.dumps_midi())

    def to_pretty_midi(self) -> "pretty_midi.PrettyMIDI":
        """The piece as a ``pretty_midi.PrettyMIDI`` (via MIDI bytes).

        Example: ``pm = piece.to_pretty_midi(); pm.get_piano_roll(fs=100)``
        """
        import io

        import pretty_midi

        return pretty_midi.PrettyMIDI(io.BytesIO(self.to_midi_bytes()))

    def to_music21(self, quantize: bool = True) -> "music21.stream.Score":
        """The piece as a ``music21`` score (quantized to sixteenths and triplet eighths unless
        ``quantize=False``), one part per track, tempo and meter shared by every part.

        Example: ``piece.to_music21().analyze("key")``
        """
        from .render import to_music21

        return to_music21(self._score, quantize=quantize)

    def to_dict(self, include_midi: bool = True) -> dict[str, Any]:
        """A JSON-ready summary: notes, chords, bars, tempo, meter, mood, key, seed, lengths and (unless
        ``include_midi=False``) the MIDI file as base64. This is what ``melodia serve`` answers.

        Example: ``json.dumps(piece.to_dict(include_midi=False))``
        """
        d: dict[str, Any] = {
            "bars": self.bars, "tempo": self.tempo, "meter": self.meter, "mood": self.mood,
            "key": self.key, "seed": self.seed, "length_beats": self.length_beats,
            "duration_s": self.duration_s, "chords": [c.to_dict() for c in self.chords],
            "notes": [n.to_dict() for n in self.notes],
        }
        if include_midi:
            d["midi_base64"] = base64.b64encode(self.to_midi_bytes()).decode("ascii")
        return d

    def _title(self) -> str:
        parts = [p for p in (self.mood if self.mood not in (None, "any") else None,
                             self.key, f"{self.bars} bars") if p]
        return " · ".join(parts)

    # ------------------------------------------------------------------ writing
    def save(self, path: "str | os.PathLike", force: bool = True, soundfont: "str | os.PathLike | None" = None,
             title: str | None = None) -> Path:
        """Write the piece in the format the extension names: ``.mid``/``.midi``, ``.wav``
        (SoundFont synthesis), ``.musicxml``/``.xml``/``.mxl``, ``.png`` (piano roll).

        Writes are atomic; ``force=False`` refuses to overwrite. ``title`` (MusicXML, PNG)
        defaults to mood · key · bars. Returns the path written.

        Example:
            >>> piece.save("calm.wav")
            PosixPath('calm.wav')
        """
        from .render import save

        return save(self._score, path, force=force, soundfont=soundfont, title=title or self._title())


# ============================================================================ Composer
PromptLike = Union[str, os.PathLike, bytes, Piece, "symusic.Score", Sequence[NoteLike]]


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
        from .generate import Generator

        self.tokenizer = tokenizer
        self.meta: dict[str, Any] = dict(meta or {})
        self.device = device
        self.name = name or str(self.meta.get("name") or "model")
        self._gen = Generator(model, tokenizer, device=device, weights=weights,
                              default_programs=self.meta.get("default_programs"),
                              tempo_unknown=self.meta.get("tempo_unknown"))
        self._lock = threading.RLock()

    @classmethod
    def load(cls, path: "str | os.PathLike | None" = None, device: str = "auto", weights: str = "auto") -> "Composer":
        """Load a model directory (``None``: the shipped default, ``melodia/weights/default``).

        ``device``: ``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        ``weights``: how the generator stores the matrices (``"auto"``, ``"fp32"``, ``"fp16"``,
        ``"bf16"``; see :class:`melodia.generate.LeanLlama`). Raises :class:`BadModelError`
        naming the directory and the problem.

        Example:
            >>> c = Composer.load()                             # the shipped default
            >>> c = Composer.load("runs/jazz/model", device="cpu")
        """
        from .model import load_inference_weights
        from .tokenizer import MelodiaTokenizer

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
        from .moods import normalise_word, resolve_mood

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

    # ------------------------------------------------------------------ composing
    def _config(self, **kw: Any) -> Any:
        from .generate import GenerationConfig

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
                 vary: bool = False) -> list[Piece]:
        """Compose ``n`` new pieces of exactly ``bars`` bars.

        ``form`` (``"AABA"``, ``"ABAC"``: letters, up to 8) splits the bars into equal
        sections; a letter that returns repeats the notes of its first section exactly (with
        ``vary=True``, all but its last bar, which is written anew), and a new letter
        continues from what came before. With a form, ``chords`` apply to each section, or
        per letter: ``"A: C G Am F; B: F G Em Am"``. The dynamics' phrases are the sections.

        ``chords`` (``"Am F C G"``: one chord a bar, cycled over the bars; ``"Am:2 F:2 C G"``:
        the first two for 2 beats each) writes those chords at those places and no others; with
        no ``key`` the key follows from them. Without ``chords`` the model writes its own
        progression. Either way ``piece.chords`` lists them and the MIDI file carries them as
        markers.

        ``dynamics="mood"`` (default) shapes the velocities after sampling: louder for happy
        and tense, softer for sad and calm, with a swell over each 4-bar phrase
        (:func:`melodia.generate.shape_dynamics`); ``"flat"`` keeps the model's own. A piece
        with no mood keeps the model's.

        ``in_key`` (default) keeps pitched notes in the scale of the key (given, or chosen for
        the mood): major, or natural minor; ``leading_tone=True`` also allows a minor key's
        raised 7th (G♯ in A minor, for a major V chord); ``in_key=False`` lets the model write
        chromatic notes.

        * ``mood``: ``happy``, ``tense``, ``sad``, ``calm``, an alias (``"melancholic"``), a user
          mood the model was fine-tuned on, or None (no mood); or instead ``valence`` and
          ``arousal`` in [-1, 1] (Russell's quadrants).
        * ``key`` ("F major", "Am"; None: the generator picks one that suits the mood, and the
          piece's ``key`` says which), ``tempo`` (quarter notes per minute, 20-400; None lets the
          model choose), ``meter`` ("4/4", "3/4", "6/8" ...), ``instruments`` (names such as
          ``["piano", "bass"]`` or GM programs; None = the model's default set, melodia.json's
          ``default_programs``: for the shipped model melody, counter-melody and piano, 0, 1, 2).
        * ``n`` variations (1-16) sampled as one batch; ``seed`` makes the result repeatable
          (same seed, model and device → same notes); ``temperature`` > 0; ``guidance`` is the
          classifier-free guidance scale (1 = off; above 1 weighs the mood and key more, which for
          the shipped model did not help: at 1.5 tense agreed 64% instead of 83%, sad 88% instead of 91%).

        Example:
            >>> pieces = c.generate(mood="calm", bars=8, key="F major", tempo=72, n=2, seed=1)
        """
        mood_name = self.resolve_mood(mood, valence, arousal)
        level = _dynamics_arousal(dynamics, mood_name, arousal)
        cfg = self._config(bars=bars, mood=mood, valence=valence, arousal=arousal, key=key, tempo=tempo,
                           meter=meter, instruments=instruments, tags=tuple(tags), n=n, seed=seed,
                           temperature=temperature, guidance=guidance, top_k=top_k, top_p=top_p, in_key=in_key,
                           leading_tone=leading_tone, chords=chords, form=form, vary=vary)
        _key_name(key)  # a bad key fails before any work
        with self._lock:
            rows = self._gen.generate(cfg)
            scores = [self.tokenizer.decode(ids) for ids in rows]
        key_name = self._key_used(rows[0])
        sections = cfg.sections()
        phrase = sections[0][2] if sections else 4
        out = []
        for s in scores:
            if sections:  # a repeated last section may hold notes past the end: cut there
                from .generate import clip_to_bars, unify_sections

                s = unify_sections(_midi_safe(clip_to_bars(s, bars)), sections, vary)  # cuts first, then unified
            if tempo is not None:  # the model saw the nearest tempo token; the piece gets the exact tempo
                import symusic

                s.tempos.clear()
                s.tempos.append(symusic.Tempo(0, qpm=float(tempo)))
            if level is not None:
                from .generate import shape_dynamics

                s = shape_dynamics(s, level, phrase_bars=phrase)
            out.append(Piece(s, mood=mood_name, key=key_name, seed=seed, bars=bars))
        return out

    def continue_from(self, prompt: PromptLike, bars: int = 4, mood: str | None = None, key: str | None = None,
                      instruments: Sequence[str | int] | str | None = None, n: int = 1, seed: int | None = None,
                      temperature: float = 1.0, guidance: float = 1.0, *, context_bars: int = 4,
                      include_prompt: bool = True, tempo: float | None = None, meter: str | None = None,
                      valence: float | None = None, arousal: float | None = None, tags: Sequence[str] = (),
                      top_k: int = 0, top_p: float = 0.95, in_key: bool = True,
                      leading_tone: bool = False, dynamics: str = "mood",
                      chords: str | Sequence[str] | None = None) -> list[Piece]:
        """Continue a prompt by exactly ``bars`` new bars; its last ``context_bars`` bars are the
        model's context. ``dynamics`` shapes the new bars only (the prompt keeps its own).
        ``chords`` are the new bars' chords (cycled from the first new bar; the key stays the
        prompt's unless ``key`` is given).

        ``prompt``: a MIDI path, MIDI bytes, a :class:`Piece`, a ``symusic.Score``, or a list of
        notes (:class:`Note` objects or dicts, see :func:`notes_to_score`). ``tempo`` and
        ``meter`` describe a notes prompt (default 120 qpm, 4/4); a MIDI, Piece or Score prompt
        brings its own, and giving them then is an error. The new bars keep the prompt's last
        tempo and meter. With ``include_prompt`` (default) each piece holds the prompt unchanged
        followed by the new bars; without it, only the new bars, starting at beat 0. ``key``
        None means the prompt's own key (estimated from its notes; the pieces' ``key`` says
        which; the new bars keep to its scale unless ``in_key=False``). Other arguments as in
        :meth:`generate`.

        Example:
            >>> more = c.continue_from("my_clip.mid", bars=4, mood="tense", include_prompt=False)
        """
        mood_name = self.resolve_mood(mood, valence, arousal)
        level = _dynamics_arousal(dynamics, mood_name, arousal)
        if not isinstance(include_prompt, bool):
            raise BadInputError(f"include_prompt must be true or false, got {include_prompt!r}")
        score = self._prompt_score(prompt, tempo, meter, "continue_from")
        key = _prompt_key(score, key)  # none given: the new bars are in the prompt's, and the pieces say so
        cfg = self._config(bars=bars, mood=mood, valence=valence, arousal=arousal, key=key,
                           instruments=instruments, tags=tuple(tags), n=n, seed=seed, temperature=temperature,
                           guidance=guidance, top_k=top_k, top_p=top_p, in_key=in_key,
                           leading_tone=leading_tone, chords=chords)
        with self._lock:
            scores = self._gen.continue_from(score, bars=bars, context_bars=context_bars, cfg=cfg,
                                             include_prompt=include_prompt)
        if level is not None:
            from .generate import shape_dynamics

            new_from = _prompt_end(score, scores[0].ticks_per_quarter) if include_prompt else 0
            scores = [shape_dynamics(s, level, start_tick=new_from) for s in scores]
        return [Piece(s, mood=mood_name, key=_key_name(key), seed=seed, bars=None if include_prompt else bars)
                for s in scores]

    def infill(self, prompt: PromptLike, bars: "tuple[int, int] | Sequence[int] | int | str",
               mood: str | None = None, key: str | None = None, chords: str | Sequence[str] | None = None,
               instruments: Sequence[str | int] | str | None = None, n: int = 1, seed: int | None = None,
               temperature: float = 1.0, guidance: float = 1.0, *, context_bars: int = 4,
               tempo: float | None = None, meter: str | None = None, valence: float | None = None,
               arousal: float | None = None, tags: Sequence[str] = (), top_k: int = 0, top_p: float = 0.95,
               in_key: bool = True, leading_tone: bool = False, dynamics: str = "mood") -> list[Piece]:
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
        level = _dynamics_arousal(dynamics, mood_name, arousal)
        score = self._prompt_score(prompt, tempo, meter, "infill")
        if score.note_num() == 0:
            raise BadInputError("infill: the clip has no notes")
        key = _prompt_key(score, key)
        cfg = self._config(bars=min(last - first + 1, 64), mood=mood, valence=valence, arousal=arousal, key=key,
                           instruments=instruments, tags=tuple(tags), n=n, seed=seed, temperature=temperature,
                           guidance=guidance, top_k=top_k, top_p=top_p, in_key=in_key,
                           leading_tone=leading_tone, chords=chords)
        with self._lock:
            scores = self._gen.infill(score, first, last, context_bars=context_bars, cfg=cfg)
        n_bars = len(_bar_starts(score))
        if level is not None:
            from .generate import shape_dynamics

            starts = _bar_starts(scores[0])
            t0 = starts[first - 1]
            t1 = starts[last] if last < len(starts) else None
            scores = [shape_dynamics(s, level, start_tick=t0, end_tick=t1) for s in scores]
        return [Piece(s, mood=mood_name, key=_key_name(key), seed=seed, bars=n_bars) for s in scores]

    def _key_used(self, ids: Sequence[int]) -> str | None:
        """The key a generated sequence was conditioned on (position 2 is always a KEY_ token;
        with no key asked for, the generator picks one that suits the mood), None for any."""
        from .moods import key_from_token_name

        name = self.tokenizer.id_to_token(int(ids[2])) if len(ids) > 2 else ""
        if not name.startswith("KEY_"):
            return None
        key = key_from_token_name(name)
        return None if key == "any" else key

    def _prompt_score(self, prompt: Any, tempo: float | None, meter: str | None,
                      what: str = "continue_from") -> "symusic.Score":
        from .midifile import load_score

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
            return load_score(bytes(prompt), "<prompt MIDI>")
        return load_score(prompt)  # a path or a symusic Score; anything else: BadInputError

    def info(self) -> dict[str, Any]:
        """What the server's ``/health`` shows about the model. Example: ``c.info()["preset"]``."""
        return {"name": self.name, "preset": self.meta.get("preset"), "parameters": self.meta.get("parameters"),
                "version": self.meta.get("version"), "device": self.device, "moods": self.moods,
                "meters": self.meters, "tags": self.tags}

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


def _dynamics_arousal(dynamics: str, mood: str | None, arousal: float | None) -> float | None:
    """The arousal ``shape_dynamics`` follows, or None to keep the model's velocities."""
    from .generate import DYNAMICS
    from .moods import mood_valence_arousal

    if dynamics not in DYNAMICS:
        raise BadInputError(f"dynamics {dynamics!r}: use one of {', '.join(DYNAMICS)}")
    if dynamics == "flat":
        return None
    if arousal is not None:
        return float(arousal)
    if mood is None or mood == "any":
        return None
    try:
        return float(mood_valence_arousal(mood)[1])
    except BadInputError:  # a user's own mood has no place on the plane
        return None


def _prompt_key(score: "symusic.Score", key: str | None) -> str | None:
    """``key``, or when it is None the key of the prompt's notes (None for drums only)."""
    if key is not None:
        return key
    from .moods import estimate_key

    try:
        return estimate_key(score).name
    except BadInputError:  # a drums-only prompt has no key
        return None


def _prompt_end(score: "symusic.Score", tpq: int) -> int:
    """Tick (at ``tpq``) where a continuation's new bars start: the bar line after the prompt's
    last bar, as Generator.continue_from places them."""
    starts = _bar_starts(score)
    ts = sorted(score.time_signatures, key=lambda t: t.time)
    num, den = (ts[-1].numerator, ts[-1].denominator) if ts else (4, 4)
    end = starts[-1] + score.ticks_per_quarter * 4 * num // den
    return int(round(end * tpq / score.ticks_per_quarter))


def _key_name(key: str | None) -> str | None:
    """The canonical spelling of a key (``"Am"`` → ``"A minor"``), None for None/"any"."""
    from .moods import parse_key

    if key is None or (isinstance(key, str) and key.strip().lower() == "any"):
        return None
    if not isinstance(key, str):
        raise BadInputError(f"key {key!r}: write it like 'F major' or 'Am'")
    return parse_key(key)
