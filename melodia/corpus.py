"""Stage 1: music sources → a clean, labelled, split corpus.

``melodia corpus build SOURCE… --out C`` reads

* folders of ``.mid`` / ``.midi`` files (recursively; a ``labels.csv`` at the folder's root and
  sub-folder names label moods and tags, see :mod:`melodia.labels`),
* ``music21:`` — music21's bundled corpus: its ABC collections are split tune by tune and
  parsed by symusic directly (fast; :mod:`melodia.abc`); the other works (Humdrum, MusicXML,
  RomanText) are read by music21 once and cached in ``~/.cache/melodia``
  (:mod:`melodia.music21_source`; later builds take seconds),
* a POP909 folder (``NNN/NNN.mid`` + ``beat_midi.txt``, ``key_audio.txt``,
  ``chord_midi.txt``), recognised by its layout and read on its annotated beats
  (:func:`melodia.pop909.read_pop909`): bar 1 at the first downbeat, tempo from the beat
  spacing, the annotated key and chords; with ``pop909-structure/`` beside it, its phrase
  labels as ``Section_<letter>`` markers where they fit (:func:`melodia.pop909.align_sections`).

Every piece keeps the bar lines of its score (a pickup is padded to a full bar:
:func:`measure_offset_map`, :func:`fix_abc_pickup`), a MIDI file gets a grid check
(:func:`grid_check`), and every piece carries its chords as MIDI markers
(:func:`add_chord_markers`: annotated, or recognised per half bar). Every piece is normalised
(:mod:`melodia.prepare`: 480 ticks per quarter; empty tracks dropped; tracks that share a
program moved to a free program of the same General MIDI family so melody and accompaniment
stay apart), labelled (mood, key, tags, style), deduplicated by note content, and given a split
(train/valid/test) by a hash of its *song*, so no song is on both sides
(:mod:`melodia.sources`). It writes

* ``C/pieces/<id>.mid`` — the normalised piece (the tokenizer reads these),
* ``C/manifest.jsonl`` — one JSON object per piece (see :data:`MANIFEST_FIELDS`),
* ``C/report.json`` — counts and every skipped file with its reason.

A re-run processes only new or changed source files (size and modification time are
remembered in ``C/state.json``). Broken files never stop a build: they are reported.
What the built-in corpus holds: docs/corpus.md.

Example:
    >>> summary = build_corpus(["music21:", "data/pop909"], "C")
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import multiprocessing as mp
import os
import sys
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from .abc import abc_field, abc_pickup_onsets, fix_abc_pickup, split_abc
from .errors import BadInputError, BadMidiError, MelodiaError, MelodiaWarning
from .fileio import cache_dir as melodia_cache_dir
from .fileio import read_jsonl, write_bytes, write_json, write_jsonl
from .labels import Label, label_from_path, read_labels_csv
from .midifile import check_score, load_score
from .music.harmony import progression_string
from .music.keys import estimate_key, tonic_shift
from .music.meter import bar_starts
from .music.mood_estimator import MoodEstimator
from .music21_source import M21_CONVERTER, measure_offset_map, music21_export, music21_to_score
from .pop909 import POP909_SNAP, align_sections, read_pop909
from .prepare import (
    TPQ,
    add_chord_markers,
    content_hash,
    grid16,
    grid_check,
    metre_check,
    normalise,
    read_chord_markers,
    shift_score,
)
from .sections import add_section_markers
from .sources import (
    MIDI_SUFFIXES,
    MUSIC21_OTHER,
    SPLIT_SHARES,
    Unit,
    UnitResult,
    discover,
    quiet_stderr,
    set_styles,
    song_key,
    split_of,
)
from .values import count

__all__ = [
    "M21_CONVERTER", "MANIFEST_FIELDS", "MIDI_SUFFIXES", "MIN_NOTES", "MUSIC21_OTHER", "POP909_SNAP", "READER",
    "SPLIT_SHARES", "TPQ", "BuildSummary", "Unit", "UnitResult", "abc_pickup_onsets", "add_chord_markers",
    "build_corpus", "content_hash", "corpus_stats", "default_cache_dir", "discover", "ensemble_programs",
    "fix_abc_pickup", "format_stats", "grid_check", "load_manifest", "measure_offset_map", "music21_to_score",
    "normalise", "process_unit", "read_chord_markers", "read_pop909", "shift_score", "song_key", "split_abc",
    "split_of", "style_ensembles", "tempo_unknown_token",
]

READER = 3  # bump when how a source is read changes: a re-run then reprocesses every file
MANIFEST_FIELDS = (
    "id", "path", "file", "sha256", "source", "song", "split", "duration_s", "notes", "bars",
    "key", "key_source", "tempo", "tempo_known", "time_signature", "programs", "mood",
    "mood_source", "valence", "arousal", "tags", "chords", "chord_source", "progressions", "grid16",
    "grid_shift", "off_grid", "quantized", "pickup", "style", "sections", "section_fit", "declared_metre",
    "read_notes",
)

if TYPE_CHECKING:
    pass
MIN_NOTES = 8  # fewer is no piece to learn from


# --------------------------------------------------------------------------- one unit
def _row(score, display: str, source_bytes: bytes, source: str, song: str, tempo_known: bool,
         key: str | None, label: Label | None, pieces_dir: Path, chords: list | None = None,
         extra: dict | None = None, sections: list | None = None) -> dict:
    """Normalised piece → written file (with its chords and phrase sections as markers) + manifest row."""
    score, chords, chord_source = add_chord_markers(score, chords)
    score = add_section_markers(score, sections or [])
    chash = content_hash(score)
    pid = chash[:16]
    target = pieces_dir / f"{pid}.mid"
    midi = score.dumps_midi()
    if not target.exists() or target.read_bytes() != midi:  # a re-read source may bring new markers
        write_bytes(target, midi)
    key_source = source if key else "estimated"
    if key is None:
        key = estimate_key(score).name
    degrees = progression_string(chords, tonic_shift(key) % 12)
    fours = Counter("-".join(degrees[i:i + 4]) for i in range(0, max(len(degrees) - 3, 0)))
    est = MoodEstimator().estimate(score, tempo_known=tempo_known)
    mood, mood_source = (label.mood, label.source) if label and label.mood else (est.mood, "estimated")
    ts = score.time_signatures[0] if len(score.time_signatures) else None
    tempo = float(score.tempos[0].qpm) if len(score.tempos) else 120.0
    return {
        "id": pid, "path": display, "file": f"pieces/{pid}.mid",
        "sha256": hashlib.sha256(source_bytes).hexdigest(), "content": chash,
        "source": source, "song": song, "split": split_of(song),
        "duration_s": round(float(score.to("second").end()), 3), "notes": int(score.note_num()),
        "bars": len(bar_starts(score)),
        "key": key, "key_source": key_source,
        "tempo": round(tempo, 2), "tempo_known": tempo_known,
        "time_signature": f"{ts.numerator}/{ts.denominator}" if ts else "4/4",
        "programs": sorted({-1 if t.is_drum else int(t.program) for t in score.tracks}),
        "mood": mood, "mood_source": mood_source,
        "valence": round(est.valence, 3), "arousal": round(est.arousal, 3),
        "tags": list(label.tags) if label else [],
        "chords": sum(1 for _, c in chords if c is not None), "chord_source": chord_source,
        "progressions": [p for p, _ in fours.most_common(3)], "sections": len(sections or []),
        **{"grid16": None, "grid_shift": 0.0, "off_grid": False, "quantized": False, "pickup": 0.0,
           "section_fit": None, **(extra or {})},
    }


def process_unit(unit: Unit, pieces_dir: str, cache_dir: str, labels: dict | None = None,
                 quantize: bool = False) -> UnitResult:
    """Read, normalise and label every piece of one unit; never raises for bad input.
    ``quantize``: snap the onsets of MIDI files that are off the sixteenth grid (see
    :func:`grid_check`).

    Example: ``res = process_unit(Unit("midi", "/a/x.mid", "a/x.mid", "/a", "x.mid"), "C/pieces", "cache")``
    """
    res = UnitResult(unit)
    with warnings.catch_warnings(record=True) as caught:  # a file's reading notes go in its row
        warnings.simplefilter("always", MelodiaWarning)
        _process_unit(unit, Path(pieces_dir), cache_dir, labels, quantize, res)
    notes = [str(w.message) for w in caught if issubclass(w.category, MelodiaWarning)]
    for w in caught:
        if not issubclass(w.category, MelodiaWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    for row in res.rows:
        if notes:
            row["read_notes"] = notes
    return res


def _process_unit(unit: Unit, pieces: Path, cache_dir: str, labels: dict | None, quantize: bool,
                  res: UnitResult) -> None:
    try:
        if unit.kind == "abc":
            _process_abc(unit, pieces, res)
            return
        data = Path(unit.path).read_bytes()
        label = None
        key = None
        tempo_known = True
        chords = None
        alignment = None
        if unit.kind == "pop909":
            score, key, chords = read_pop909(unit.path, unit.display)
            alignment = align_sections(score, unit.path)  # its phrase labels, None when it has none
        elif unit.kind == "music21":
            try:
                with quiet_stderr():
                    midi_bytes, tempo_known = music21_export(unit.path, Path(cache_dir))
            except Exception as e:
                raise BadMidiError(unit.display, f"music21 cannot export it ({e.__class__.__name__}: {e})") from None
            score = load_score(midi_bytes, unit.display)
        else:
            score = load_score(data, unit.display)
        if unit.kind == "midi":
            label = label_from_path(unit.rel, labels)
        score = normalise(score)
        if score.note_num() < MIN_NOTES:
            raise BadMidiError(unit.display, f"too few notes ({score.note_num()} < {MIN_NOTES})")
        if unit.kind == "midi":
            score, extra = grid_check(score, quantize=quantize)
            score, metre = metre_check(score)  # a declared 1/4 or 2/4 the notes contradict
            extra.update(metre)
        else:
            extra = {"grid16": grid16(score)}
        if alignment is not None:
            extra["section_fit"] = alignment.fit
        res.rows.append(_row(score, unit.display, data, unit.kind, song_key(unit), tempo_known, key, label,
                             pieces, chords, extra, alignment.sections if alignment else None))
    except MelodiaError as e:
        res.skipped.append({"path": unit.display, "reason": getattr(e, "problem", str(e))})
    except Exception as e:  # a bug or an unforeseen parser failure: report, keep building
        res.skipped.append({"path": unit.display, "reason": f"unexpected {e.__class__.__name__}: {e}"})


def _process_abc(unit: Unit, pieces: Path, res: UnitResult) -> None:
    import symusic  # heavy: a native library, loaded on first use

    text = Path(unit.path).read_bytes().decode("latin-1")
    for ref, tune in split_abc(text):
        name = f"{unit.display}#X:{ref}"
        try:
            with quiet_stderr():
                score = symusic.Score.from_abc(tune)
            check_score(score, name, need_notes=True)
            score = normalise(score)
            if score.note_num() < MIN_NOTES:
                raise BadMidiError(name, f"too few notes ({score.note_num()} < {MIN_NOTES})")
            score, pickup = fix_abc_pickup(score, tune)
            title = abc_field(tune, "T") or f"{unit.display}#{ref}"
            tempo_known = abc_field(tune, "Q") is not None
            res.rows.append(_row(score, name, tune.encode("utf-8"), "music21", song_key(unit, title),
                                 tempo_known, None, None, pieces,
                                 extra={"pickup": round(pickup, 4), "grid16": grid16(score)}))
        except MelodiaError as e:
            res.skipped.append({"path": name, "reason": getattr(e, "problem", str(e))})
        except Exception as e:
            res.skipped.append({"path": name, "reason": f"unparsable ABC tune ({e.__class__.__name__}: {e})"})


def _worker(args: tuple) -> UnitResult:
    return process_unit(*args)


def _worker_init() -> None:
    # abc2midi and music21 print warnings for many tunes; the main process does the reporting.
    with contextlib.suppress(OSError):
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)


# --------------------------------------------------------------------------- the build
@dataclass
class BuildSummary:
    """What a build did. ``pieces`` kept, ``skipped`` reported, ``duplicates`` dropped.

    Example: ``build_corpus(["my_midi/"], "C").pieces  # 12``
    """

    out: Path
    pieces: int
    skipped: int
    duplicates: int
    processed_units: int
    reused_units: int
    #: "11 of 20 files declared 1/4 or 2/4 were read as 4/4" (:func:`metre_note`), or None
    metre_note: str | None = None
    #: "3 files had tempo changes under a 32nd note apart, merged (report.json: read_notes)", or None
    read_note: str | None = None


def default_cache_dir() -> Path:
    """melodia's cache folder (:func:`melodia.fileio.cache_dir`; music21 exports live here).

    Example: ``default_cache_dir() / "music21-export"``
    """
    return melodia_cache_dir()


def build_corpus(sources: Iterable[str], out: str | os.PathLike, workers: int | None = None,
                 progress: bool = True, cache_dir: str | os.PathLike | None = None,
                 quantize: bool = False, style: str | None = None) -> BuildSummary:
    """Build (or update) a corpus folder from sources. See the module docstring. ``quantize``
    snaps the onsets of MIDI files found off the sixteenth grid (:func:`grid_check`).
    ``style`` names the style of the MIDI folders and files given (their pieces' ``STYLE_``
    token; None: none); POP909 is "pop", music21's corpus "folk", "chorale" or "classical"
    (:mod:`melodia.sources`). Each manifest row says its ``"style"``.

    Example:
        >>> s = build_corpus(["my_midi/"], "C"); s.pieces
    """
    out = Path(out)
    sources = list(sources)
    if not sources:
        raise BadInputError("no sources given")
    units = discover(sources, style)
    pieces_dir = out / "pieces"
    pieces_dir.mkdir(parents=True, exist_ok=True)
    cache = Path(cache_dir) if cache_dir else default_cache_dir() / "music21-export"
    cache.mkdir(parents=True, exist_ok=True)
    labels_by_root = _labels_for(units)

    state_path = out / "state.json"
    results, todo, new_state = _plan(units, _read_state(state_path), labels_by_root, quantize, out)
    reused = len(results)
    todo.sort(key=lambda u: -u.cost)  # slow music21 exports first keep both cores busy
    args = [(u, str(pieces_dir), str(cache), labels_by_root.get(u.root), quantize) for u in todo]
    workers = workers or min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1, 8)
    results.extend(_run_with_progress(args, workers, new_state, state_path, progress))
    _save_state(state_path, new_state)

    set_styles(results)  # the build's styles, also on rows reused from the last build
    rows, skipped, dups = _finish(results)
    write_jsonl(out / "manifest.jsonl", rows)
    write_json(out / "report.json", _report(sources, rows, skipped, dups))
    _remove_orphans(pieces_dir, rows)
    merged = sum(1 for r in rows if r.get("read_notes"))
    read_note = (f"{count(merged, 'file')} had tempo changes under a 32nd note apart, merged on reading "
                 "(report.json: read_notes)") if merged else None
    return BuildSummary(out, len(rows), len(skipped), dups, len(todo), reused, metre_note(rows), read_note)


def metre_note(rows: Iterable[dict]) -> str | None:
    """How many MIDI files declaring 1/4 or 2/4 were read in another metre
    (:func:`melodia.prepare.metre_check`): ``"11 of 20 files declared 1/4 or 2/4 were read as
    4/4"``; None when no file declared them. Only plain MIDI files are checked: POP909 is read on
    its annotated beats and music21's works on their own bar lines (their 2/4 is the music's).

    Example: ``metre_note(load_manifest("C"))``
    """
    short = [r for r in rows if r.get("declared_metre")
             or (r.get("source") == "midi" and r.get("time_signature") in ("1/4", "2/4"))]  # the files checked
    if not short:
        return None
    read = Counter(r["time_signature"] for r in short if r.get("declared_metre"))
    as_ = " or ".join(m if len(read) == 1 else f"{m} ({n})" for m, n in read.most_common()) or "3/4 or 4/4"
    return (f"{sum(read.values())} of {len(short)} files declared 1/4 or 2/4 were read as {as_}"
            + (" (report.json: metre_read)" if read else ""))


def _read_state(state_path: Path) -> dict:
    """The units of the last build's ``state.json`` ({} when none or unreadable)."""
    if not state_path.exists():
        return {}
    try:
        return json.loads(state_path.read_text(encoding="utf-8")).get("units", {})
    except (OSError, ValueError):
        return {}


def _save_state(state_path: Path, new_state: dict[str, dict]) -> None:
    write_json(state_path, {"format": 1, "units": {k: v for k, v in new_state.items() if "rows" in v}}, indent=None)


def _plan(units: list[Unit], state: dict, labels_by_root: dict, quantize: bool,
          out: Path) -> tuple[list[UnitResult], list[Unit], dict[str, dict]]:
    """(results reused from the last build or unreadable, units to process, the new state)."""
    new_state: dict[str, dict] = {}
    todo: list[Unit] = []
    results: list[UnitResult] = []
    for u in units:
        try:
            st = os.stat(u.path)
        except OSError as e:
            results.append(UnitResult(u, skipped=[{"path": u.display, "reason": f"cannot read ({e.strerror})"}]))
            continue
        sig = f"{st.st_size}:{st.st_mtime_ns}:{_labels_sig(labels_by_root.get(u.root))}:q{int(quantize)}:r{READER}"
        prev = state.get(u.path)
        if prev and prev.get("sig") == sig and all((out / r["file"]).exists() for r in prev["rows"]):
            results.append(UnitResult(u, prev["rows"], prev["skipped"]))
            new_state[u.path] = prev
        else:
            todo.append(u)
            new_state[u.path] = {"sig": sig}
    return results, todo, new_state


def _run_with_progress(args: list[tuple], workers: int, new_state: dict[str, dict], state_path: Path,
                       progress: bool) -> list[UnitResult]:
    """Process the units with a progress bar, saving the state every 200 units."""
    results = []
    bar = tqdm(total=len(args), desc="corpus", unit="file", disable=not progress or not args)
    done_since_save = 0
    try:
        for r in _run_units(args, workers):
            results.append(r)
            new_state[r.unit.path].update(rows=r.rows, skipped=r.skipped)
            bar.update(1)
            done_since_save += 1
            if done_since_save >= 200:  # a kill loses at most this much work
                _save_state(state_path, new_state)
                done_since_save = 0
    finally:
        bar.close()
    return results


def _report(sources: list[str], rows: list[dict], skipped: list[dict], dups: int) -> dict:
    return {
        "sources": sources,
        "pieces": len(rows),
        "skipped_count": len(skipped),
        "duplicates": dups,
        "splits": dict(Counter(r["split"] for r in rows)),
        "moods": dict(Counter(r["mood"] for r in rows)),
        "tags": dict(Counter(t for r in rows for t in r.get("tags") or ()).most_common()),
        # MIDI files still off the sixteenth grid after the phase check (played, unquantised):
        # `--quantize` snaps them
        "off_grid": [r["path"] for r in rows if r.get("off_grid") and not r.get("quantized")],
        "quantized": [r["path"] for r in rows if r.get("quantized")],
        # MIDI files declaring 1/4 or 2/4 whose notes clearly say 3/4 or 4/4: read in that metre
        "metre_read": [{"path": r["path"], "declared": r["declared_metre"], "read_as": r["time_signature"]}
                       for r in rows if r.get("declared_metre")],
        # what reading a file changed and said so (tempo changes under a 32nd note apart merged)
        "read_notes": {r["path"]: r["read_notes"] for r in rows if r.get("read_notes")},
        "skipped": skipped,
        "sections": _section_summary(rows),
    }


def _run_units(args: list[tuple], workers: int) -> Iterator[UnitResult]:
    if workers <= 1 or len(args) <= 1:
        for a in args:
            yield _worker(a)
        return
    ctx = mp.get_context("spawn" if sys.platform == "win32" else "fork")
    with ctx.Pool(workers, initializer=_worker_init, maxtasksperchild=200) as pool:
        yield from pool.imap_unordered(_worker, args, chunksize=1)


def _labels_for(units: list[Unit]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for root in {u.root for u in units if u.kind == "midi"}:
        p = Path(root) / "labels.csv"
        if p.exists():
            out[root] = read_labels_csv(p)
    return out


def _labels_sig(labels: dict | None) -> str:
    if not labels:
        return ""
    return hashlib.sha1(json.dumps(labels, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _finish(results: list[UnitResult]) -> tuple[list[dict], list[dict], int]:
    """Deduplicate by content (first by path order wins) and sort the manifest."""
    rows = sorted((r for res in results for r in res.rows), key=lambda r: r["path"])
    skipped = sorted((s for res in results for s in res.skipped), key=lambda s: s["path"])
    seen: dict[str, dict] = {}
    kept = []
    for r in rows:
        if r["content"] in seen:
            continue
        seen[r["content"]] = r
        kept.append(r)
    return kept, skipped, len(rows) - len(kept)


def _remove_orphans(pieces_dir: Path, rows: list[dict]) -> None:
    keep = {Path(r["file"]).name for r in rows}
    for p in [*pieces_dir.glob("*.mid"), *pieces_dir.glob(".*.tmp")]:  # stale pieces, temp files of a kill
        if p.name not in keep:
            with contextlib.suppress(OSError):
                p.unlink()


# --------------------------------------------------------------------------- reading a corpus
def load_manifest(corpus_dir: str | os.PathLike) -> list[dict]:
    """Rows of ``C/manifest.jsonl``, with a clear error when the folder is not a corpus.

    Example: ``rows = load_manifest("C")``
    """
    p = Path(corpus_dir) / "manifest.jsonl"
    if not p.is_file():
        raise BadInputError(f"{corpus_dir}: not a corpus folder (no manifest.jsonl; run `melodia corpus build`)")
    return read_jsonl(p)


def corpus_stats(corpus_dir: str | os.PathLike) -> dict:
    """Distributions of mood, key, mode, tempo, meter, source and split.

    Example: ``corpus_stats("C")["moods"]``
    """
    rows = load_manifest(corpus_dir)
    n = len(rows) or 1

    def dist(values) -> dict:
        c = Counter(values)
        return {k: {"pieces": v, "share": round(v / n, 4)} for k, v in c.most_common()}

    tempos = sorted(r["tempo"] for r in rows if r.get("tempo_known"))
    bands = Counter(_tempo_band(t) for t in tempos)
    return {
        "pieces": len(rows),
        "notes": sum(r["notes"] for r in rows),
        "hours": round(sum(r["duration_s"] for r in rows) / 3600, 2),
        "moods": dist(r["mood"] for r in rows),
        "tags": dist(t for r in rows for t in r.get("tags") or ()),  # folder names, labels.csv: a piece may have several
        "mood_sources": dist(r["mood_source"] for r in rows),
        "modes": dist(r["key"].split()[-1] for r in rows),
        "keys": dist(r["key"] for r in rows),
        "tempo_known": sum(1 for r in rows if r.get("tempo_known")),
        "tempo_bands": {k: bands[k] for k in ("<70", "70-99", "100-129", "130-159", ">=160") if k in bands},
        "time_signatures": dist(r["time_signature"] for r in rows),
        "sources": dist(r["source"] for r in rows),
        "styles": dist(r.get("style") or "none" for r in rows),
        "splits": dist(r["split"] for r in rows),
        "grid16": _grid_summary(rows),
        "chord_sources": dist(r.get("chord_source") or "none" for r in rows),
        "sections": {k: v for k, v in _section_summary(rows).items() if k != "unfit"},
        "progressions": {mode: [{"progression": p, "pieces": c} for p, c in Counter(
            p for r in rows if r["key"].split()[-1] == mode for p in r.get("progressions") or []).most_common(8)]
            for mode in ("major", "minor")},
    }


def _grid_summary(rows: list[dict]) -> dict:
    """Onsets on a sixteenth of their bar lines: mean share over pieces (weighted by notes) and
    the pieces a grid check shifted, found off the grid, or quantised."""
    measured = [r for r in rows if r.get("grid16") is not None]
    notes = sum(r["notes"] for r in measured) or 1
    return {"share": round(sum(r["grid16"] * r["notes"] for r in measured) / notes, 4) if measured else None,
            "shifted": sum(1 for r in rows if r.get("grid_shift")),
            "off_grid": sum(1 for r in rows if r.get("off_grid") and not r.get("quantized")),
            "quantized": sum(1 for r in rows if r.get("quantized")),
            "pickups": sum(1 for r in rows if r.get("pickup"))}


def _section_summary(rows: list[dict]) -> dict:
    """Phrase sections (POP909's labels, :func:`melodia.pop909.align_sections`): pieces with
    labels, the fit of their alignment (median, 10th percentile), the pieces that carry
    sections and their markers, and the labelled pieces left without (fit too low)."""
    fits = sorted(r["section_fit"] for r in rows if r.get("section_fit") is not None)

    def pct(q: float) -> float | None:
        return fits[min(int(q * len(fits)), len(fits) - 1)] if fits else None

    return {"labelled": len(fits), "fit_median": pct(0.5), "fit_p10": pct(0.1),
            "pieces": sum(1 for r in rows if r.get("sections")),
            "markers": sum(r.get("sections") or 0 for r in rows),
            "unfit": [r["path"] for r in rows if r.get("section_fit") is not None and not r.get("sections")]}


def ensemble_programs(rows: Iterable[dict]) -> list[int] | None:
    """The commonest program set among pieces with two or more parts (POP909's melody,
    counter-melody and piano: ``[0, 1, 2]``); None when no piece has two. A model trained on
    these rows names it in melodia.json ("default_programs"): what plays when a request names
    no instruments.

    Example: ``ensemble_programs(load_manifest("C"))  # [0, 1, 2]``
    """
    sets = Counter(tuple(r.get("programs") or ()) for r in rows if len(r.get("programs") or ()) >= 2)
    return list(sets.most_common(1)[0][0]) if sets else None


def style_ensembles(rows: Iterable[dict]) -> dict[str, list[int]]:
    """Each style's commonest program set, one-part pieces included (the folk tunes are one
    line: ``[0]``; the chorales four voices: ``[0, 1, 2, 3]``). A model trained on these rows names
    them in melodia.json ("style_programs"): what plays when a request asks for that style and
    names no instruments.

    Example: ``style_ensembles(load_manifest("C"))["folk"]  # [0]``
    """
    sets: dict[str, Counter] = {}
    for r in rows:
        if r.get("style") and r.get("programs"):
            sets.setdefault(r["style"], Counter())[tuple(r["programs"])] += 1
    return {style: list(c.most_common(1)[0][0]) for style, c in sorted(sets.items())}


def tempo_unknown_token(rows: Iterable[dict], tempo_tokens: dict[str, float]) -> dict:
    """Whether the Tempo token of 120 qpm means "the file gave no tempo" in these rows.

    music21 and abc2midi write 120 qpm into files that have none, so they all land in that
    bin. Returns ``{"token": ..., "pieces": ..., "tempo_less": ...}``: the bin's token when over
    half its pieces are tempo-less (else ``None``), the pieces in it and how many are. A model
    trained on these rows names the token in melodia.json ("tempo_unknown"; see
    ``Generator.tempo_for_model``).

    Example: ``tempo_unknown_token(load_manifest("C"), {"Tempo_122.99": 122.99, ...})``
    """
    def nearest(q: float) -> str:
        return min(tempo_tokens, key=lambda t: abs(math.log(tempo_tokens[t] / q)))

    token, pieces, tempo_less = nearest(120.0), 0, 0
    for r in rows:
        if nearest(float(r.get("tempo") or 120.0)) == token:
            pieces += 1
            tempo_less += not r.get("tempo_known", True)
    return {"token": token if 2 * tempo_less > pieces else None, "pieces": pieces, "tempo_less": tempo_less}


def _tempo_band(t: float) -> str:
    return "<70" if t < 70 else "70-99" if t < 100 else "100-129" if t < 130 else "130-159" if t < 160 else ">=160"


def format_stats(stats: dict) -> str:
    """Human-readable text of :func:`corpus_stats`. Example: ``print(format_stats(s))``."""
    lines = [f"{stats['pieces']} pieces, {stats['notes']:,} notes, {stats['hours']} hours"]
    for name in ("moods", "tags", "mood_sources", "modes", "sources", "styles", "splits", "time_signatures"):
        items = list(stats.get(name, {}).items())[:10]
        lines.append(f"{name}: " + (", ".join(f"{k} {v['pieces']} ({v['share']:.0%})" for k, v in items) or "none"))
    keys = list(stats["keys"].items())[:8]
    lines.append("keys (top 8): " + ", ".join(f"{k} {v['pieces']}" for k, v in keys))
    lines.append(f"tempo (where marked, {stats['tempo_known']} pieces): "
                 + ", ".join(f"{k} qpm {v}" for k, v in stats["tempo_bands"].items()))
    g = stats.get("grid16") or {}
    if g.get("share") is not None:
        lines.append(f"metre: {g['share']:.1%} of onsets on a sixteenth of their bar lines; {g['pickups']} pickups "
                     f"padded; {g['shifted']} files shifted onto the grid; {g['off_grid']} off the grid "
                     f"(unquantised, see report.json; --quantize snaps them); {g['quantized']} quantised")
    if stats.get("chord_sources"):
        lines.append("chords: " + ", ".join(f"{k} {v['pieces']}" for k, v in stats["chord_sources"].items()))
    sec = stats.get("sections") or {}
    if sec.get("labelled"):
        lines.append(f"sections: {sec['pieces']} of {sec['labelled']} labelled pieces carry them ({sec['markers']} "
                     f"phrases); alignment fit median {sec['fit_median']:.2f}, 10th percentile {sec['fit_p10']:.2f}")
    for mode, items in (stats.get("progressions") or {}).items():
        if items:
            lines.append(f"commonest progressions ({mode}): "
                         + ", ".join(f"{x['progression']} ({x['pieces']})" for x in items[:5]))
    return "\n".join(lines)
