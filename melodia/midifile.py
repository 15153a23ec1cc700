"""Reading MIDI safely: the one door every stage uses (corpus, render, generate, API, server).

Users feed melodia whatever MIDI they have. :func:`load_score` reads a path, bytes or an
existing ``symusic.Score`` and answers every bad file with a :class:`BadMidiError` that names
the file and the problem — never another exception, a hang, or runaway memory:

* the header is checked before parsing (empty file, not MIDI, ticks-per-beat 0, SMPTE time);
* symusic (C++) parses; its failures are reworded;
* a file whose header promises more tracks than it holds is truncated, even where symusic
  would accept it;
* sanity limits: size, note count, length in time;
* tempo changes less than a 32nd note apart are merged (:func:`merge_dense_tempos`): a file
  with a tempo change on every tick is valid MIDI, but each change costs every later stage
  (seconds, notation, tokens) work, and no one hears a tempo held for less than a 32nd. It is
  reported as a :class:`MelodiaWarning` (or appended to ``notes``, for callers that collect
  them, like the server).

Example:
    >>> score = load_score("song.mid")
"""
from __future__ import annotations

import os
import struct
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import BadInputError, BadMidiError, MelodiaWarning

if TYPE_CHECKING:  # pragma: no cover
    import symusic

    ScoreLike = str | os.PathLike | bytes | symusic.Score

MAX_MIDI_BYTES = 64 * 1024 * 1024   # larger is no MIDI file a person made
MAX_NOTES = 500_000                 # ~100× a dense orchestral piece
MAX_DURATION_S = 3 * 3600           # three hours
MAX_BEATS = 50_000                  # ~7 hours at 120 qpm: bounds the token count of any piece
TEMPO_RANGE = (4.0, 1000.0)         # quarter notes per minute a score may ask for
TEMPO_MIN_GAP = 1 / 8               # quarter notes: tempo changes closer than a 32nd note are merged


def check_midi_bytes(data: bytes, name: str) -> None:
    """Reject what is clearly not a usable MIDI file, with the reason.

    Example:
        >>> check_midi_bytes(b"", "x.mid")
        Traceback (most recent call last):
        melodia.errors.BadMidiError: x.mid: empty file (0 bytes)
    """
    if len(data) == 0:
        raise BadMidiError(name, "empty file (0 bytes)")
    if len(data) > MAX_MIDI_BYTES:
        raise BadMidiError(name, f"{len(data)} bytes is too large for a MIDI file (limit {MAX_MIDI_BYTES})")
    if data[:4] != b"MThd":
        raise BadMidiError(name, "not a MIDI file (no 'MThd' header)")
    if len(data) < 14:
        raise BadMidiError(name, "truncated header")
    division = int.from_bytes(data[12:14], "big")
    if division & 0x8000:
        raise BadMidiError(name, "SMPTE time division is not supported")
    if division == 0:
        raise BadMidiError(name, "ticks per beat is 0 in the header")


def _count_tracks(data: bytes) -> tuple[int, int]:
    """(tracks the MThd header promises, complete MTrk chunks present)."""
    header_len = struct.unpack(">I", data[4:8])[0]
    promised = struct.unpack(">H", data[10:12])[0]
    pos, found = 8 + header_len, 0
    while pos + 8 <= len(data):
        kind, length = data[pos:pos + 4], struct.unpack(">I", data[pos + 4:pos + 8])[0]
        if pos + 8 + length > len(data):
            break
        found += kind == b"MTrk"
        pos += 8 + length
    return promised, found


def merge_dense_tempos(score: "symusic.Score", name: str, notes: list[str] | None = None) -> "symusic.Score":
    """``score`` with tempo changes closer than :data:`TEMPO_MIN_GAP` (a 32nd note) merged.

    A run of changes each less than a 32nd note after the run's first becomes that first one,
    at the average tempo of the span it now covers up to the next change kept, so that every
    kept change, and every note on one, stays at the second the file puts it (a note inside a
    run moves by less than the run's tempos differ over a 32nd). The last run takes the tempo
    in force at its end, so the music goes on at the tempo the file leaves it at (what follows
    it moves by as little). Changes at one tick are a run too (the last one wins, as when the
    file is played). ``score`` itself is
    returned when nothing is merged, else a copy; what was merged is said in one line appended
    to ``notes``, or warned as a :class:`MelodiaWarning` when ``notes`` is None.

    Example:
        >>> len(merge_dense_tempos(score, "dense.mid").tempos)   # 20000 changes, one a tick
        334
    """
    import numpy as np
    import symusic

    tempos = score.tempos
    if len(tempos) < 2:
        return score
    arr = tempos.numpy()
    order = np.argsort(arr["time"], kind="stable")
    times, mspq = arr["time"][order].astype(np.int64), arr["mspq"][order].astype(np.float64)
    gap = score.ticks_per_quarter * TEMPO_MIN_GAP
    if np.all(np.diff(times) >= gap):
        return score
    # spent[k]: microseconds (x ticks per quarter) from the first change to change k
    spent = np.concatenate([[0.0], np.cumsum(mspq[:-1] * np.diff(times))])
    keep_t, keep_q = [], []
    i, n = 0, len(times)
    while i < n:  # one step per kept change: at most (length / a 32nd) steps, however dense the file
        j = int(np.searchsorted(times, times[i] + gap, side="left"))  # the first change a 32nd or more later
        keep_t.append(times[i])
        if j < n:  # the span up to change j lasts as long as in the file
            keep_q.append((spent[j] - spent[i]) / (times[j] - times[i]))
        else:
            keep_q.append(mspq[-1])  # the tempo in force at the end
        i = j
    out = score.copy()
    out.tempos = symusic.Tempo.from_numpy(np.asarray(keep_t, dtype=arr["time"].dtype),
                                          np.rint(keep_q).astype(arr["mspq"].dtype))
    line = (f"{name}: {n} tempo changes merged into {len(keep_t)} (those less than a 32nd note apart "
            "folded into one, the music's timing kept)")
    if notes is None:
        warnings.warn(MelodiaWarning(line), stacklevel=2)
    else:
        notes.append(line)
    return out


def parse_midi_bytes(data: bytes, name: str, notes: list[str] | None = None) -> "symusic.Score":
    """Bytes → checked ``symusic.Score`` (see the module docstring; ``notes`` as for
    :func:`merge_dense_tempos`). Example: ``parse_midi_bytes(b, "a.mid")``."""
    import symusic

    check_midi_bytes(data, name)
    promised, found = _count_tracks(data)
    if found < promised:
        raise BadMidiError(name, f"truncated: the header promises {promised} track"
                                 f"{'s' if promised != 1 else ''}, the file holds {found}")
    try:
        score = symusic.Score.from_midi(data)
    except Exception as e:  # symusic raises RuntimeError/ValueError with its own words
        msg = str(e).replace("MiniMidi: ", "").replace(": iostream error", "")
        raise BadMidiError(name, f"unreadable MIDI ({msg})") from None
    score = merge_dense_tempos(score, name, notes)
    check_score(score, name)
    return score


def check_score(score: "symusic.Score", name: str, need_notes: bool = False) -> None:
    """Sanity limits on a parsed score. Example: ``check_score(score, "a.mid")``."""
    if score.ticks_per_quarter <= 0:
        raise BadMidiError(name, f"ticks per beat is {score.ticks_per_quarter}; must be positive")
    for ts in score.time_signatures:
        if ts.numerator <= 0 or ts.denominator <= 0 or ts.denominator & (ts.denominator - 1):
            raise BadMidiError(name, f"invalid time signature {ts.numerator}/{ts.denominator} at tick {ts.time}")
    for t in score.tempos:
        if not TEMPO_RANGE[0] <= t.qpm <= TEMPO_RANGE[1]:
            raise BadMidiError(name, f"absurd tempo {t.qpm:.4g} qpm at tick {t.time} "
                                     f"(allowed {TEMPO_RANGE[0]:g}-{TEMPO_RANGE[1]:g})")
    n = score.note_num()
    if n > MAX_NOTES:
        raise BadMidiError(name, f"too many notes ({n} > {MAX_NOTES})")
    if n == 0:
        if need_notes:
            raise BadMidiError(name, "no notes")
        return
    beats = score.end() / score.ticks_per_quarter
    if beats > MAX_BEATS:
        raise BadMidiError(name, f"too long ({beats:.0f} beats; limit {MAX_BEATS})")
    try:
        dur = score.to("second").end()
    except Exception as e:  # absurd tempo maps
        raise BadMidiError(name, f"unusable tempo map ({e})") from None
    if not dur == dur or dur > MAX_DURATION_S:  # NaN or too long
        raise BadMidiError(name, f"too long ({dur / 60:.0f} minutes; limit {MAX_DURATION_S // 60})")


def load_score(src: "ScoreLike", name: str | None = None, notes: list[str] | None = None) -> "symusic.Score":
    """Read a MIDI path, MIDI bytes or a Score into a checked, tick-based ``symusic.Score``.

    Dense tempo changes are merged (:func:`merge_dense_tempos`; a Score given is copied first,
    never changed): what was merged is appended to ``notes`` if it is a list, else warned as a
    :class:`MelodiaWarning`.

    Example:
        >>> score = load_score("song.mid")
    """
    import symusic

    if isinstance(src, symusic.core.ScoreTick):
        return merge_dense_tempos(src, name or "<score>", notes)
    if isinstance(src, (symusic.core.ScoreQuarter, symusic.core.ScoreSecond)):
        return merge_dense_tempos(src.to("tick"), name or "<score>", notes)
    if isinstance(src, (bytes, bytearray, memoryview)):
        return parse_midi_bytes(bytes(src), name or "<bytes>", notes)
    if isinstance(src, (str, os.PathLike)):
        path = Path(src)
        label = name or str(path)
        try:
            size = path.stat().st_size
            if size > MAX_MIDI_BYTES:
                raise BadMidiError(label, f"{size} bytes is too large for a MIDI file (limit {MAX_MIDI_BYTES})")
            data = path.read_bytes()
        except FileNotFoundError:
            raise BadMidiError(label, "no such file") from None
        except IsADirectoryError:
            raise BadMidiError(label, "is a directory, not a MIDI file") from None
        except OSError as e:
            raise BadMidiError(label, f"cannot be read ({e.strerror or e})") from None
        return parse_midi_bytes(data, label, notes)
    raise BadInputError(f"cannot read a score from {type(src).__name__}: give a MIDI path, MIDI bytes or a symusic.Score")
