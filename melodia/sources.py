"""What a corpus is built from: source arguments expanded into units of work, and how a unit's
song, split and style are decided.

A unit is one file to read: a MIDI file, an ABC book (many tunes), a music21 work or a POP909
song. :func:`discover` expands ``"music21:"``, folders and files into units;
:func:`song_key` says which units are "the same song", and :func:`split_of` puts a song in
train, valid or test by a hash, so no song is on both sides. Every unit has a *style* (the
``STYLE_`` control token of its pieces): "pop" for POP909, "folk", "chorale" or "classical" for
music21's corpus (:func:`melodia.music21_source.music21_style`), and for the user's MIDI folders
and files the ``--style`` of the build, or none (their pieces get no style token).

Example: ``units = discover(["music21:", "my_midi/"])``
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .errors import BadInputError
from .music.moods import normalise_word
from .music21_source import music21_corpus_dir, music21_style
from .pop909 import is_pop909

SPLIT_SHARES = (("train", 90), ("valid", 5), ("test", 5))
MIDI_SUFFIXES = (".mid", ".midi", ".smf", ".kar")
MUSIC21_OTHER = (".krn", ".mxl", ".xml", ".musicxml", ".rntxt")
POP909_STYLE = "pop"


@dataclass
class Unit:
    """One source file to process (a MIDI file, an ABC book, a music21 work, a POP909 song).

    Example: ``Unit("midi", "/a/x.mid", "a/x.mid", "/a", "x.mid")``
    """

    kind: str          # "midi" | "abc" | "music21" | "pop909"
    path: str          # absolute path of the file
    display: str       # what the manifest and report call it (relative, readable)
    root: str = ""     # folder the labels are relative to (kind "midi")
    rel: str = ""      # path relative to root
    cost: float = 1.0  # rough relative processing time, slow units first
    style: str | None = None  # the style of its pieces (None: no style token)


@dataclass
class UnitResult:
    """What processing a unit gave: manifest rows and skipped entries.

    Example: ``UnitResult(unit, skipped=[{"path": unit.display, "reason": "cannot read"}])``
    """

    unit: Unit
    rows: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)


def discover(sources: Iterable[str], style: str | None = None) -> list[Unit]:
    """Expand source arguments into units of work. ``style`` is the style of the MIDI folders
    and files among them (checked by :func:`style_name`; None: no style); POP909 and music21's
    corpus always have their own.

    Example:
        >>> units = discover(["music21:", "my_midi/"], style="jazz")
    """
    style = style_name(style) if style is not None else None
    units: list[Unit] = []
    for src in sources:
        if src.strip().lower() in ("music21:", "music21"):
            units.extend(_music21_units())
            continue
        root = Path(src).expanduser()
        if not root.exists():
            raise BadInputError(f"{src}: no such file or folder")
        if root.is_file():
            units.append(Unit("midi", str(root.resolve()), str(root), str(root.parent.resolve()), root.name,
                              style=style))
            continue
        if is_pop909(root):
            for song in sorted(p for p in root.iterdir() if p.is_dir() and re.fullmatch(r"\d{3}", p.name)):
                mid = song / f"{song.name}.mid"
                if mid.exists():
                    units.append(Unit("pop909", str(mid.resolve()), f"pop909/{song.name}/{mid.name}", cost=3.0,
                                      style=POP909_STYLE))
            continue
        for p in sorted(root.rglob("*")):
            if p.is_file() and p.suffix.lower() in MIDI_SUFFIXES:
                rel = p.relative_to(root).as_posix()
                units.append(Unit("midi", str(p.resolve()), f"{root.name}/{rel}", str(root.resolve()), rel,
                                  style=style))
    return units


def style_name(text: str) -> str:
    """A style as a corpus stores it (the ``STYLE_`` token's name): normalised like a tag
    (ASCII lowercase, other characters ``_``); :class:`BadInputError` when nothing is left.

    Example: ``style_name("Film Noir")  # 'film_noir'``
    """
    word = normalise_word(text) if isinstance(text, str) else ""
    if not word:
        raise BadInputError(f"style {text!r}: name it with letters or digits, e.g. --style jazz")
    return word


def set_styles(results: Iterable[UnitResult]) -> None:
    """Give every manifest row its unit's style (``"style"``: a name, or None). A property of
    the unit rather than of reading it, so rows a re-run reuses get the style of this build.

    Example: ``set_styles(results); results[0].rows[0]["style"]  # 'pop'``
    """
    for res in results:
        for row in res.rows:
            row["style"] = res.unit.style


def _music21_units() -> list[Unit]:
    """music21's corpus: each ABC book, and each other work music21 reads."""
    from music21 import corpus as m21corpus  # heavy: loaded on first use

    root = music21_corpus_dir()
    units = []
    for p in sorted(str(x) for x in m21corpus.getCorePaths()):
        rel = os.path.relpath(p, root)
        if p.endswith(".abc"):
            units.append(Unit("abc", p, f"music21:{rel}", cost=1.0, style=music21_style(rel)))
        elif p.endswith(MUSIC21_OTHER):
            units.append(Unit("music21", p, f"music21:{rel}", cost=20.0, style=music21_style(rel)))
    return units


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Silence C-level stdout and stderr (abc2midi inside symusic prints warnings for most tunes).

    Example: ``with quiet_stderr(): score = symusic.Score.from_abc(tune)``
    """
    fds = []
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
            fds.append(stream.fileno())
        except (OSError, ValueError, AttributeError):
            pass
    saved = [os.dup(fd) for fd in fds]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in fds:
            os.dup2(null, fd)
        yield
    finally:
        for fd, keep in zip(fds, saved):
            os.dup2(keep, fd)
            os.close(keep)
        os.close(null)


def song_key(unit: Unit, tune_title: str | None = None) -> str:
    """What counts as 'the same song' for the split (title, or path without version marks).

    Example: ``song_key(Unit("midi", "/a/b_v2.mid", "x/b_v2.mid"))`` → ``'midi:x/b'``
    """
    if tune_title:
        t = re.sub(r"[^a-z0-9]+", " ", tune_title.lower()).strip()
        t = re.sub(r"^(the|a|an) ", "", t)
        return f"title:{t}"
    if unit.kind == "pop909":
        return "pop909:" + Path(unit.path).parent.name
    stem = re.sub(r"([ _-]?(v|version|take|alt)\s*\d+|\s*\(\d+\))$", "", Path(unit.display).with_suffix("").as_posix(), flags=re.I)
    return f"{unit.kind}:{stem}"


def split_of(song: str) -> str:
    """Deterministic split from a song key (sha1 bucket out of 100).

    Example: ``split_of("title:drowsy maggie")`` → ``'train'``
    """
    bucket = int(hashlib.sha1(song.encode("utf-8")).hexdigest()[:8], 16) % 100
    acc = 0
    for name, share in SPLIT_SHARES:
        acc += share
        if bucket < acc:
            return name
    return "train"
