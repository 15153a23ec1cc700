"""User labels of a corpus: a ``labels.csv`` and folder names give a piece its mood and tags.

:func:`read_labels_csv` reads a ``labels.csv`` (header ``file,mood`` and an optional ``tags``
column of ``;``-separated tags). :func:`label_from_path` decides a piece's label: a labels.csv
entry wins; otherwise a folder named after a mood or alias gives the mood; other folder names
become tags; with no mood the caller runs :class:`melodia.music.mood_estimator.MoodEstimator`.

Example: ``label_from_path("jazz/sad/x.mid", read_labels_csv("corpus/labels.csv")).mood  # 'sad'``
"""
from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import BadInputError
from .music.keys import ANY
from .music.moods import canonical_mood, normalise_word


@dataclass(frozen=True)
class Label:
    """A piece's mood (canonical, a user word, or None = estimate it), tags and where from.

    ``source`` is "labels.csv", "folder" or "estimated" (no label found; the caller estimates).

    Example: ``Label("sad", ("jazz",), "folder")``
    """

    mood: str | None
    tags: tuple[str, ...] = ()
    source: str = "estimated"


class Labels(dict):
    """What :func:`read_labels_csv` returns: ``{relative file path: mood}`` (mood "" when the
    row gave only tags), plus ``tags``: ``{relative file path: (tag, ...)}`` and the ``path``
    it was read from. Being a plain ``dict[str, str]`` it can be built by hand too.

    Example: ``Labels({"a.mid": "calm"}, {"a.mid": ("piano",)})``
    """

    def __init__(self, moods: Mapping[str, str] | None = None,
                 tags: Mapping[str, tuple[str, ...]] | None = None, path: str = "") -> None:
        super().__init__(moods or {})
        self.tags: dict[str, tuple[str, ...]] = dict(tags or {})
        self.path = path


def _normalise_rel_path(rel_path: str) -> str:
    text = str(rel_path).strip().replace("\\", "/")
    while text.startswith("./"):
        text = text[2:]
    return text


def _mood_word(value: str) -> str:
    """Canonical mood for a mood/alias, "" for empty/"any", else the normalised user word."""
    word = normalise_word(value)
    canonical = canonical_mood(word)
    if canonical == ANY:
        return ""
    return canonical or word


def _split_tags(cell: str) -> tuple[str, ...]:
    out: list[str] = []
    for part in cell.split(";"):
        word = normalise_word(part)
        if word and word not in out:
            out.append(word)
    return tuple(out)


def read_labels_csv(path: str | Path) -> Labels:
    """Read a labels.csv: header ``file,mood`` (+ optional ``tags``, ``;``-separated).

    Keys are the relative file paths as written (backslashes turned into "/", a leading "./"
    dropped). Mood values that are canonical moods or aliases become the canonical mood, other
    words a normalised user mood; an empty mood (or "any") leaves the mood to folders/the
    estimator. Extra columns are ignored. A malformed row raises :class:`BadInputError` naming
    the file and line.

    Example: ``read_labels_csv("corpus/labels.csv")["piano/a.mid"]  # 'calm'``
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(f"{path}: cannot read labels file ({exc})") from exc
    reader = csv.reader(text.splitlines())
    header: list[str] | None = None
    moods: dict[str, str] = {}
    tags: dict[str, tuple[str, ...]] = {}
    for row in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if header is None:
            header = [cell.strip().lower() for cell in row]
            missing = [c for c in ("file", "mood") if c not in header]
            if missing:
                raise BadInputError(
                    f"{path}:{line}: header must name the columns 'file' and 'mood' (and "
                    f"optionally 'tags'); got {row!r}")
            continue
        if len(row) > len(header):
            raise BadInputError(f"{path}:{line}: {len(row)} fields but the header has "
                                f"{len(header)} (quote a value that holds a comma): {row!r}")
        cells = dict(zip(header, (c.strip() for c in row)))
        rel = _normalise_rel_path(cells.get("file", ""))
        if not rel:
            raise BadInputError(f"{path}:{line}: empty 'file' value in row {row!r}")
        raw_mood = cells.get("mood", "")
        mood = _mood_word(raw_mood)
        if raw_mood and not mood and normalise_word(raw_mood) != ANY:
            raise BadInputError(f"{path}:{line}: mood {raw_mood!r} has no letters or digits")
        row_tags = _split_tags(cells.get("tags", ""))
        if rel in moods and (moods[rel], tags.get(rel, ())) != (mood, row_tags):
            raise BadInputError(f"{path}:{line}: {rel!r} is listed again with a different label "
                                f"({moods[rel] or '-'} before, {mood or '-'} now)")
        moods[rel] = mood
        if row_tags:
            tags[rel] = row_tags
    if header is None:
        raise BadInputError(f"{path}: empty labels file; expected a header 'file,mood[,tags]'")
    return Labels(moods, tags, str(path))


def label_from_path(rel_path: str, labels: Mapping[str, str] | None = None) -> Label:
    """The label of a piece from labels.csv (wins) or its folder names.

    * a labels.csv mood gives the mood (source "labels.csv"): canonical for a mood or alias,
      otherwise the user's normalised word;
    * otherwise a folder named after a mood or alias gives it (source "folder"; the innermost
      such folder if several);
    * otherwise the mood is None (source "estimated": the caller runs :class:`MoodEstimator`).

    Tags are the labels.csv tags followed by every folder name that is not a mood, normalised.

    Example: ``label_from_path("jazz/sad/x.mid", None) == Label("sad", ("jazz",), "folder")``
    """
    rel = _normalise_rel_path(rel_path)
    folders = [part for part in rel.split("/")[:-1] if part not in ("", ".", "..")]
    tags: list[str] = []
    folder_mood: str | None = None
    if labels is not None:
        tags.extend(getattr(labels, "tags", {}).get(rel, ()))
    for folder in folders:
        word = normalise_word(folder)
        canonical = canonical_mood(word)
        if canonical is not None and canonical != ANY:
            folder_mood = canonical
        elif word and word != ANY and word not in tags:
            tags.append(word)
    csv_mood = _mood_word(labels.get(rel) or "") if labels is not None else ""
    if csv_mood:
        return Label(csv_mood, tuple(tags), "labels.csv")
    if folder_mood is not None:
        return Label(folder_mood, tuple(tags), "folder")
    return Label(None, tuple(tags), "estimated")
