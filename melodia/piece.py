"""One piece of music: :class:`Piece` (a score plus what it was made with), its :class:`Note`
and :class:`ChordSpan` records, and :func:`notes_to_score` for notes given as plain values.

Beats are quarter notes throughout (as in MIDI and in DAWs' "QN"), counted from 0 at the start
of the piece. A note's ``program`` is its General MIDI program (0-127), or ``-1`` for drums
(MidiTok's convention). A Piece writes itself as ``.mid``, ``.wav``, ``.musicxml`` or ``.png``
by the extension you name, and converts to ``pretty_midi``, ``music21`` and ``symusic`` objects.

Example:
    >>> piece = Piece.from_notes([{"pitch": 60, "start_beat": 0, "duration_beats": 1}], tempo=90)
    >>> piece.save("one.mid"); piece.notes[0].end_beat
"""
from __future__ import annotations

import base64
import io
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import BadInputError
from .midifile import load_score
from .music.meter import bar_starts, bar_ticks_at, parse_meter
from .prepare import read_chord_markers
from .render import save as render_save
from .render import to_music21
from .values import count, integer, number

if TYPE_CHECKING:  # pragma: no cover - typing only
    import music21
    import pretty_midi
    import symusic

__all__ = ["Piece", "Note", "ChordSpan", "NoteLike", "notes_to_score", "midi_safe", "DEFAULT_TPQ",
           "MAX_PROMPT_NOTES", "MAX_PROMPT_BEATS"]

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


NoteLike = Note | Mapping[str, Any]

def notes_to_score(notes: Iterable[NoteLike], tempo: float = 120.0, meter: str = "4/4",
                   ticks_per_quarter: int = DEFAULT_TPQ) -> "symusic.Score":
    """Build a ``symusic.Score`` from notes (:class:`Note` objects or dicts with ``pitch``,
    ``start_beat``, ``duration_beats`` and optionally ``velocity`` (default 90) and
    ``program`` (default 0; -1 = drums)). Timing comes from the beats and ``tempo``; any
    ``start_s``/``duration_s`` are ignored. A bad note raises :class:`BadInputError` naming it.

    Example:
        >>> score = notes_to_score([{"pitch": 60, "start_beat": 0, "duration_beats": 1}], tempo=90)
    """
    import symusic  # heavy: loaded on first use

    tempo = number(tempo, "tempo", 20.0, 400.0)
    num, den = parse_meter(meter)
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
        pitch = integer(n["pitch"], f"{where}.pitch", 0, 127)
        start = number(n["start_beat"], f"{where}.start_beat", 0.0, MAX_PROMPT_BEATS)
        dur = number(n["duration_beats"], f"{where}.duration_beats", 0.0, MAX_PROMPT_BEATS, lo_open=True)
        if start + dur > MAX_PROMPT_BEATS:
            raise BadInputError(f"{where}: ends at beat {start + dur:g}, after the limit {MAX_PROMPT_BEATS:g}")
        vel = integer(n.get("velocity", 90), f"{where}.velocity", 1, 127)
        prog = integer(n.get("program", 0), f"{where}.program", -1, 127)
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


def midi_safe(score: "symusic.Score") -> "symusic.Score":
    """``score`` with overlapping notes of one pitch on one track cut where the next one starts
    (and same-onset duplicates dropped, the longest kept). A MIDI file cannot hold such overlaps:
    a reader pairs the note-offs with the wrong note-ons, so without this the saved file would
    not hold the notes the Piece shows. Returns ``score`` itself when nothing overlaps."""
    import symusic  # heavy: loaded on first use

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
                 seed: int | None = None, bars: int | None = None, warnings: Iterable[str] = ()) -> None:
        loaded = load_score(score, "<piece>")
        if loaded is score:  # never share a Score with the caller: the piece's notes must not change
            loaded = loaded.copy()
        self._score = midi_safe(loaded)
        self.mood = mood
        self.key = key
        self.seed = seed
        self._bars = bars
        self._notes: list[Note] | None = None
        #: what melodia had to say about the request, one line each (chords asked for outside
        #: the key, a clip's metre read anew); () when nothing
        self.warnings: tuple[str, ...] = tuple(warnings)

    # ------------------------------------------------------------------ building
    @classmethod
    def from_midi(cls, src: "str | os.PathLike | bytes") -> "Piece":
        """Read a MIDI file (path or bytes) through melodia's checked reader.

        Example: ``piece = Piece.from_midi("clip.mid")``
        """
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
            self._bars = len(bar_starts(self._score))
        return self._bars

    @property
    def length_beats(self) -> float:
        """Length in beats of the whole bars the piece spans (what a DAW item should cover).

        Example: ``piece.length_beats  # 32.0 for 8 bars of 4/4``
        """
        starts = bar_starts(self._score)
        tpq = self._score.ticks_per_quarter
        bar_len = bar_ticks_at(self._score, starts[-1])
        end = starts[-1] + bar_len
        if self._bars is not None and self._bars > len(starts):  # trailing empty bars asked for
            end += (self._bars - len(starts)) * bar_len
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
        return (f"Piece({count(self.bars, 'bar')}, {self.meter}, {self.tempo:g} qpm, {len(self)} notes"
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
        import pretty_midi  # heavy: loaded on first use

        return pretty_midi.PrettyMIDI(io.BytesIO(self.to_midi_bytes()))

    def to_music21(self, quantize: bool = True) -> "music21.stream.Score":
        """The piece as a ``music21`` score (quantized to sixteenths and triplet eighths unless
        ``quantize=False``), one part per track, tempo and meter shared by every part.

        Example: ``piece.to_music21().analyze("key")``
        """
        return to_music21(self._score, quantize=quantize)

    def to_dict(self, include_midi: bool = True) -> dict[str, Any]:
        """A JSON-ready summary: notes, chords, bars, tempo, meter, mood, key, seed, lengths, any
        ``warnings`` (only when there are some) and (unless ``include_midi=False``) the MIDI file as base64. This is what ``melodia serve`` answers.

        Example: ``json.dumps(piece.to_dict(include_midi=False))``
        """
        d: dict[str, Any] = {
            "bars": self.bars, "tempo": self.tempo, "meter": self.meter, "mood": self.mood,
            "key": self.key, "seed": self.seed, "length_beats": self.length_beats,
            "duration_s": self.duration_s, "chords": [c.to_dict() for c in self.chords],
            "notes": [n.to_dict() for n in self.notes],
        }
        if self.warnings:
            d["warnings"] = list(self.warnings)
        if include_midi:
            d["midi_base64"] = base64.b64encode(self.to_midi_bytes()).decode("ascii")
        return d

    def _title(self) -> str:
        parts = [p for p in (self.mood if self.mood not in (None, "any") else None,
                             self.key, count(self.bars, "bar")) if p]
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
        return render_save(self._score, path, force=force, soundfont=soundfont, title=title or self._title())
