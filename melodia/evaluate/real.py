"""The real side of an evaluation: a corpus's held-out pieces and bar-aligned excerpts of them.

Example: ``excerpt(load_piece(corpus, row), 16, 8)  # bars 17-24 of a test piece``
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import BadInputError, BadMidiError
from ..midifile import load_score
from ..music.meter import bar_starts
from ..music.notes import TickNotes, tick_score
from ..values import count

if TYPE_CHECKING:
    import symusic

__all__ = ["corpus_from_meta", "excerpt", "held_out", "load_piece", "note_bars", "real_excerpts"]


def note_bars(score: "symusic.Score") -> list[int]:
    """Bar start ticks from 0 to the end of the last note (drums too) by the one bar rule
    (:func:`melodia.music.meter.bar_starts`), plus the tick closing the last bar: the bars
    :func:`excerpt` counts. A score without notes has one bar.

    Example: ``note_bars(sixteen_quarters_in_4_4)  # [0, 1920, 3840, 5760, 7680]``
    """
    score = tick_score(score)
    end = TickNotes.of_score(score).end
    return bar_starts(score, end=int(end.max()) if end.size else 0, close=True)


def excerpt(score: "symusic.Score", start_bar: int, bars: int) -> "symusic.Score":
    """Bars ``start_bar .. start_bar + bars - 1`` (of :func:`note_bars`) of a score, moved to
    start at tick 0; :class:`BadInputError` when ``start_bar`` is outside the score or ``bars < 1``.

    Notes starting in the window are kept and cut at its end; the tempo and time signature in
    force at the window's start are kept (symusic's ``clip``).

    Example: ``excerpt(song, 16, 8).note_num()  # the notes of bars 17-24``
    """
    score = tick_score(score)
    bounds = note_bars(score)
    if not 0 <= start_bar < len(bounds) - 1 or bars < 1:
        raise BadInputError(f"excerpt: bars {start_bar}..{start_bar + bars - 1} are outside the "
                            f"score's {count(len(bounds) - 1, 'bar')}")
    import symusic  # heavy: loaded on first use

    start = int(bounds[start_bar])
    stop = int(bounds[min(start_bar + bars, len(bounds) - 1)])
    # symusic's clip_end=True drops a note held past the window's end: keep it, cut there
    out = score.clip(start, stop, clip_end=False).shift_time(-start)
    for track in out.tracks:
        a = track.notes.numpy()
        track.notes = symusic.Note.from_numpy(a["time"], np.minimum(a["duration"], stop - start - a["time"]),
                                              a["pitch"], a["velocity"], "tick")
    return out


def load_piece(corpus: Path, row: Mapping[str, Any]) -> "symusic.Score":
    """The score of a manifest row (``corpus / row["file"]``); :class:`BadMidiError` if unreadable.

    Example: ``load_piece(Path("C"), load_manifest("C")[0]).note_num()``
    """
    return load_score(corpus / str(row.get("file", "")))


def held_out(rows: list[dict]) -> tuple[str, list[dict]]:
    """``(split, rows)`` of the *test* split, else the *valid* one; :class:`BadInputError` if neither.

    Example: ``held_out(load_manifest("C"))  # ("test", [...])``
    """
    for split in ("test", "valid"):
        held = [r for r in rows if r.get("split") == split]
        if held:
            return split, held
    raise BadInputError("the corpus has no test or valid pieces to evaluate on")


def real_excerpts(corpus: Path, held: list[dict], n: int, bars: int,
                  rng: np.random.Generator) -> tuple[list["symusic.Score"], int]:
    """``n`` random ``bars``-bar windows of held-out pieces (pieces cycle if there are fewer),
    each with a pitched note, and how many pieces they came from. Unreadable pieces are skipped.

    Example: ``real_excerpts(Path("C"), held, 64, 8, np.random.default_rng(1))``
    """
    order = rng.permutation(len(held))
    cache: dict[int, "symusic.Score | None"] = {}
    out: list["symusic.Score"] = []
    used: set[int] = set()
    for k in range(4 * n + len(held)):
        if len(out) >= n:
            break
        i = int(order[k % len(held)])
        if i not in cache:
            try:
                cache[i] = load_piece(corpus, held[i])
            except BadMidiError:
                cache[i] = None
        score = cache[i]
        if score is None:
            continue
        n_bars = len(note_bars(score)) - 1
        start = int(rng.integers(0, max(n_bars - bars, 0) + 1))
        piece = excerpt(score, start, bars)
        if not any(not t.is_drum and len(t.notes) for t in piece.tracks):
            continue
        out.append(piece)
        used.add(i)
    return out, len(used)


def corpus_from_meta(model_dir: Path, meta: Mapping[str, Any]) -> Path:
    """The corpus a model was trained on: melodia.json's shards folder -> its index.json's
    ``corpus``, when that folder has a manifest; else :class:`BadInputError` ("give --corpus").

    Example: ``corpus_from_meta(model_dir, meta)  # Path("C")``
    """
    data = (meta.get("corpus") or {}).get("data") if isinstance(meta.get("corpus"), dict) else None
    if data:
        index = Path(data) / "index.json"
        if not index.is_absolute():
            index = Path.cwd() / index
        try:
            corpus = json.loads(index.read_text(encoding="utf-8")).get("corpus")
        except (OSError, ValueError):
            corpus = None
        if corpus and (Path(corpus) / "manifest.jsonl").is_file():
            return Path(corpus)
    raise BadInputError(f"{model_dir}: cannot tell which corpus it was trained on; give --corpus DIR")
