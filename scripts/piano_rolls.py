"""Piano rolls of a model's pieces next to a real POP909 excerpt, and a bar-by-bar reading of each.

Generates with :class:`melodia.Composer` (the shipped model unless ``--model``), with the
defaults a user gets: ``mood="happy"``, ``mood="sad"`` and ``form="AABA"`` (no mood), each
``--bars`` bars on ``--seed``; and cuts one ``--bars``-bar excerpt of a held-out POP909 song
of ``--corpus`` (valid/test split, :func:`melodia.evaluate.realism.heldout_rows`), starting on
the bar line of a melodic phrase section (POP909's labels) where the piece has them. Writes one
piano roll (:func:`melodia.render.render_png`) and one MIDI file per piece to ``--out``, and
``--out/rolls.md``: per piece, a table read from its notes, bar by bar:

* melody: notes of the melody line (:func:`melodia.evaluate.parts.melody_line`, the parts the
  realism test reads), lowest-highest pitch, longest note in beats;
* accompaniment (:func:`~melodia.evaluate.parts.part_roles`): distinct onsets on the sixteenth
  grid, and the first earlier bar with the same rhythm / the same figure (rhythm and pitch
  ranks, :func:`~melodia.evaluate.parts.bar_figures`, what the realism features'
  ``accompaniment_rhythm_repeat`` / ``accompaniment_figure_repeat`` count);
* chords recognised from all the notes per half bar (:func:`melodia.music.harmony.recognise_chords`);
* the bass at the bar line (the lowest accompaniment note sounding there or starting in the
  first beat, :func:`~melodia.evaluate.parts.beat_bass`) and whether it is the root of the
  chord recognised from the notes above the bass line (the realism feature ``bass_root``).

Everything is measured from the notes written; nothing is listened to.

Example:
    $ python scripts/piano_rolls.py --corpus C --seed 3            # docs/rolls/shipped-*.png
    $ python scripts/piano_rolls.py --model runs/pop/model --prefix pop --out /tmp/rolls --corpus C
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from melodia.corpus import load_manifest
from melodia.errors import BadInputError, BadMidiError, MelodiaError
from melodia.evaluate.parts import bar_figures, beat_bass, melody_line, part_roles
from melodia.evaluate.real import excerpt, load_piece, note_bars
from melodia.evaluate.realism import heldout_rows, piece_bars
from melodia.music.harmony import beats_in_bar, chord_at, pitch_name, recognise_chords
from melodia.music.notes import NoteArrays, tick_score
from melodia.sections import read_section_markers

ROOT = Path(__file__).resolve().parent.parent
#: the pieces generated, in order: (name in file names, Composer.generate arguments, label)
CASES = (("happy", {"mood": "happy"}, "mood happy"),
         ("sad", {"mood": "sad"}, "mood sad"),
         ("aaba", {"form": "AABA"}, "form AABA"))


# ----------------------------------------------------------------------------- reading
def read_bars(score, bars: int | None = None) -> list[dict]:
    """A piece read bar by bar from its notes (drums left out), on its own bar lines
    (:func:`melodia.evaluate.realism.piece_bars`; ``bars`` fixes how many). One dict per bar:

    ``bar`` (from 1); ``melody_notes`` (melody-line notes starting in the bar), ``melody_low``,
    ``melody_high`` (pitch names, None without melody), ``melody_longest`` (beats);
    ``other_notes``, ``other_low``, ``other_high``: the same for the notes of neither part (a
    counter-melody, program 1 of a POP909-style piece);
    ``acc_onsets`` (sixteenth positions where an accompaniment note starts), ``rhythm_as`` /
    ``figure_as`` (the first earlier bar whose accompaniment rhythm / figure is the same, None
    if none or the bar is empty); ``chords`` (names of the chords recognised from all the notes,
    the one in force at the bar line first, then each change in the bar; ``N.C.`` where nothing
    sounds); ``bass`` (pitch name at the bar line, None if no accompaniment note is there);
    ``bass_root`` (True/False: it is the root of ``chord_above``, the chord recognised from the
    notes above the bass line; None without a bass or a chord); ``chord_above``.

    Example: ``read_bars(piece.to_score(), 16)[0]["chords"]  # ['C', 'Am']``
    """
    score = tick_score(score)
    notes = NoteArrays.of_score(score)
    lines = piece_bars(score, bars)
    n_bars = len(lines) - 1
    roles = part_roles(notes)
    line = melody_line(notes, roles)
    acc = roles.accompaniment
    rhythm, figure = bar_figures(notes, acc, lines)
    chords = recognise_chords(notes, lines)
    # the bass line as the realism features read it: the lowest accompaniment note of each beat;
    # the chord it is judged against comes from the other notes, so it cannot make itself the root
    low = acc if acc.any() else np.ones(notes.pitch.size, bool)
    beat_low = beat_bass(notes, low, np.arange(0.0, lines[-1], 1.0))
    upper = np.ones(notes.pitch.size, bool)
    upper[beat_low[beat_low >= 0]] = False
    above = recognise_chords(NoteArrays(notes.onset[upper], notes.end[upper], notes.pitch[upper]), lines) \
        if upper.any() else []
    bar_low = beat_bass(notes, low, lines[:-1])
    k_note = beats_in_bar(notes.onset, lines)[0]
    k_note[notes.onset >= lines[-1] - 1e-9] = n_bars  # after the last bar line: in no bar
    k_line = k_note[line]
    others = ~(roles.melody | acc)  # a counter-melody: neither melody nor accompaniment
    rows = []
    for b in range(n_bars):
        mel = line[k_line == b]
        other = np.flatnonzero(others & (k_note == b))
        changes = [c for t, c in chords if lines[b] + 1e-9 < t < lines[b + 1] - 1e-9]
        in_force = chord_at(chords, np.array([lines[b]]))[0] if chords else None
        names = [c.name if c is not None else "N.C." for c in [in_force, *changes]]
        bass = int(bar_low[b])
        over = chord_at(above, np.array([lines[b]]))[0] if above else None
        rows.append({
            "bar": b + 1,
            "melody_notes": int(mel.size),
            "melody_low": pitch_name(notes.pitch[mel].min()) if mel.size else None,
            "melody_high": pitch_name(notes.pitch[mel].max()) if mel.size else None,
            "melody_longest": float((notes.end[mel] - notes.onset[mel]).max()) if mel.size else None,
            "other_notes": int(other.size),
            "other_low": pitch_name(notes.pitch[other].min()) if other.size else None,
            "other_high": pitch_name(notes.pitch[other].max()) if other.size else None,
            "acc_onsets": len(rhythm[b]),
            "rhythm_as": _first_equal(rhythm, b),
            "figure_as": _first_equal(figure, b),
            "chords": names,
            "bass": pitch_name(notes.pitch[bass]) if bass >= 0 else None,
            "bass_root": (int(notes.pitch[bass]) % 12 == over.root) if bass >= 0 and over is not None else None,
            "chord_above": over.name if over is not None else None,
        })
    return rows


def _first_equal(sets: list[frozenset], b: int) -> int | None:
    """The first bar (from 1) before bar index ``b`` with the same non-empty set."""
    if not sets[b]:
        return None
    return next((a + 1 for a in range(b) if sets[a] == sets[b]), None)


def summary(rows: list[dict]) -> dict:
    """Counts over a piece's bars: bars with melody, accompaniment bars (with an onset) whose
    rhythm / figure repeats an earlier bar's (of those after the first such bar), bars whose bass
    is the root (of those with a bass and a chord), chord names in order of first use.

    Example: ``summary(read_bars(score, 16))["figure_repeats"]  # (11, 15)``
    """
    acc = [r for r in rows if r["acc_onsets"]]
    judged = [r for r in rows if r["bass_root"] is not None]
    return {
        "bars": len(rows),
        "melody_bars": sum(r["melody_notes"] > 0 for r in rows),
        "other_bars": sum(r["other_notes"] > 0 for r in rows),
        "rhythm_repeats": (sum(r["rhythm_as"] is not None for r in acc), max(len(acc) - 1, 0)),
        "figure_repeats": (sum(r["figure_as"] is not None for r in acc), max(len(acc) - 1, 0)),
        "bass_root": (sum(bool(r["bass_root"]) for r in judged), len(judged)),
        "chords": list(dict.fromkeys(c for r in rows for c in r["chords"])),
    }


def bars_markdown(rows: list[dict]) -> str:
    """The rows of :func:`read_bars` as a markdown table.

    Example: ``print(bars_markdown(read_bars(score, 16)))``
    """
    out = ["| bar | melody: notes · range · longest (beats) | other parts: notes · range | acc. onsets "
           "| acc. rhythm = bar | acc. figure = bar | chords (half bars) | bass at bar line "
           "| bass = root of chord above? |",
           "|---:|---|---|---:|---:|---:|---|---|---|"]
    for r in rows:
        mel = _notes_cell(r["melody_notes"], r["melody_low"], r["melody_high"])
        if r["melody_notes"]:
            mel += f" · {round(r['melody_longest'], 2):g}"
        other = _notes_cell(r["other_notes"], r["other_low"], r["other_high"])
        root = "—" if r["bass_root"] is None else "yes" if r["bass_root"] else f"no ({r['chord_above']})"
        out.append(f"| {r['bar']} | {mel} | {other} | {r['acc_onsets']} | {r['rhythm_as'] or '—'} "
                   f"| {r['figure_as'] or '—'} | {' → '.join(r['chords'])} | {r['bass'] or '—'} | {root} |")
    return "\n".join(out)


def _notes_cell(n: int, low: str | None, high: str | None) -> str:
    if not n:
        return "—"
    return f"{n} · {low}–{high}" if low != high else f"{n} · {low}"


def summary_line(s: dict) -> str:
    """One line of :func:`summary`. Example: ``summary_line(summary(rows))``."""
    return (f"melody in {s['melody_bars']} of {s['bars']} bars (other parts in {s['other_bars']}); accompaniment rhythm repeats an earlier bar in "
            f"{s['rhythm_repeats'][0]} of {s['rhythm_repeats'][1]}, its figure in {s['figure_repeats'][0]} of "
            f"{s['figure_repeats'][1]}; bass on the root in {s['bass_root'][0]} of {s['bass_root'][1]} bars; "
            f"chords: {' '.join(s['chords'])}")


def _anchor(title: str) -> str:
    """GitHub's anchor of a markdown heading: lower case, punctuation dropped, spaces as '-'."""
    return "".join(c for c in title.lower() if c.isalnum() or c in " -_").replace(" ", "-")


def role_names(score):
    """A copy of ``score`` whose tracks are named by the part they play (:func:`part_roles` by
    program: ``melody``, ``counter-melody``, ``accompaniment``, with the program), so a piano
    roll's legend says which colour is the melody; a piece read by register keeps its names.

    Example: ``render_png(role_names(piece.to_score()), "roll.png")``
    """
    notes = NoteArrays.of_score(score)
    roles = part_roles(notes)
    out = score.copy()
    if roles.by != "program":
        return out
    melody = set(notes.program[roles.melody].tolist())
    accompaniment = set(notes.program[roles.accompaniment].tolist())
    for t in out.tracks:
        if t.is_drum:
            continue
        role = "melody" if t.program in melody else "accompaniment" if t.program in accompaniment else "counter-melody"
        t.name = f"{role} (program {t.program})"
    return out


# ----------------------------------------------------------------------------- the real side
def pick_excerpt(corpus: Path, bars: int, seed: int, song: str | None = None) -> tuple[object, dict]:
    """One ``bars``-bar excerpt of a held-out pop song of ``corpus`` (``song``: its manifest
    ``song``, e.g. ``pop909:003``; else one drawn by ``seed`` among those with phrase sections
    and enough bars), starting on the bar line of its first melodic phrase section (upper-case
    label) with ``bars`` bars after it, else on the bar drawn by ``seed``. Returns the excerpt
    and ``{"song", "split", "start_bar" (from 0), "section"}``.

    Example: ``pick_excerpt(Path("C"), 16, 0)[1]  # {'song': 'pop909:003', 'start_bar': 8, ...}``
    """
    held, _ = heldout_rows(load_manifest(corpus))  # pop where the corpus names styles
    held = [r for r in held if r.get("source") == "pop909"]
    if song is not None:
        held = [r for r in held if r.get("song") == song]
        if not held:
            raise BadInputError(f"{corpus}: no held-out POP909 piece of song {song!r}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(held)).tolist()
    order.sort(key=lambda i: not held[i].get("sections"))  # pieces with sections first, drawn order kept
    for i in order:
        row = held[i]
        try:
            score = load_piece(corpus, row)
        except BadMidiError:
            continue
        n_bars = len(note_bars(score)) - 1
        if n_bars < bars:
            continue
        starts = [(b, s) for b, s in read_section_markers(score) if s.isupper() and s != "X" and b + bars <= n_bars]
        start, section = starts[0] if starts else (int(rng.integers(0, n_bars - bars + 1)), None)
        return excerpt(score, start, bars), {"song": row.get("song"), "split": row.get("split"),
                                             "start_bar": start, "section": section}
    raise BadInputError(f"{corpus}: no held-out POP909 piece of {bars} bars or more")


# ----------------------------------------------------------------------------- the run
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model directory (default: the shipped model, melodia/weights/default)")
    ap.add_argument("--corpus", required=True, help="a corpus folder (`melodia corpus build`) with POP909 pieces")
    ap.add_argument("--out", default=str(ROOT / "docs" / "rolls"), help="output folder (default docs/rolls)")
    ap.add_argument("--prefix", help="file-name prefix of the generated pieces (default: 'shipped' for the "
                                     "shipped model, else the model folder's name)")
    ap.add_argument("--seed", type=int, default=0, help="seed of every generation and of the excerpt's draw")
    ap.add_argument("--bars", type=int, default=16, help="bars of every piece (default 16)")
    ap.add_argument("--style", help="style to ask for (default: the model's default; the shipped model has none)")
    ap.add_argument("--song", help="the held-out POP909 song to cut the excerpt from (manifest song, e.g. pop909:003)")
    a = ap.parse_args(argv)
    try:
        return run(a)
    except MelodiaError as e:
        print(f"piano_rolls: {e}", file=sys.stderr)
        return 2


def run(a: argparse.Namespace) -> int:
    import torch

    from melodia import Composer
    from melodia.render import render_png, write_midi

    torch.set_num_threads(1)
    real, origin = pick_excerpt(Path(a.corpus), a.bars, a.seed, a.song)  # a bad --corpus fails before sampling
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    composer = Composer.load(a.model, device="cpu")
    prefix = a.prefix or ("shipped" if a.model is None else composer.name.replace("/", "-"))
    label = "shipped model" if a.model is None else f"model {composer.name}"
    pieces = []
    for name, kwargs, what in CASES:
        piece = composer.generate(bars=a.bars, seed=a.seed, style=a.style, **kwargs)[0]
        title = " · ".join(x for x in (label, what, piece.key, f"seed {a.seed}") if x)
        pieces.append((f"{prefix}-{name}", title, piece.to_score()))
    first = origin["start_bar"] + 1
    where = f"bars {first}-{first + a.bars - 1}" + (f", from section {origin['section']}" if origin["section"] else "")
    song = str(origin["song"]).replace(":", "-")
    pieces.append((f"real-{song}-bar{first}", f"real POP909 {origin['song']} ({origin['split']}) · {where}", real))

    head = [f"# Piano rolls, read bar by bar: {label}", "",
            f"Made by `python scripts/piano_rolls.py{' --model ' + a.model if a.model else ''} --corpus "
            f"{a.corpus} --seed {a.seed} --bars {a.bars}` (n = 1 per case, seed {a.seed}; the generated pieces "
            "with the defaults a user gets). Each table is measured from the notes, not listened to. Columns: "
            "melody = the melody line (program 0 of a POP909-style piece, else the highest note at each onset), "
            "its notes starting in the bar, lowest-highest pitch, longest note in beats; other parts = notes of "
            "neither melody nor accompaniment (the counter-melody, program 1); accompaniment (the highest "
            "program) onsets on the sixteenth grid, and the first earlier bar with the same rhythm / the same "
            "figure (rhythm and pitch ranks); chords recognised from all the notes per half bar; the bass "
            "(lowest accompaniment note sounding at the bar line or starting in its first beat) and whether it "
            "is the root of the chord recognised from the notes above the bass line (as the realism test "
            "reads it).", "",
            "| piece | bars with melody | with other parts | acc. rhythm repeats an earlier bar "
            "| acc. figure repeats an earlier bar | bass on the root |", "|---|---:|---:|---:|---:|---:|"]
    body: list[str] = []
    for stem, title, score in pieces:
        render_png(role_names(score), out / f"{stem}.png", title=title)
        write_midi(score, out / f"{stem}.mid")
        rows = read_bars(score, a.bars)
        s = summary(rows)
        table = bars_markdown(rows)
        print(f"\n## {title}\n{summary_line(s)}\n{table}")
        head.append(f"| [{stem}](#{_anchor(title)}) | {s['melody_bars']}/{s['bars']} | {s['other_bars']}/{s['bars']} "
                    f"| {s['rhythm_repeats'][0]}/{s['rhythm_repeats'][1]} "
                    f"| {s['figure_repeats'][0]}/{s['figure_repeats'][1]} | {s['bass_root'][0]}/{s['bass_root'][1]} |")
        body += [f"## {title}", "", f"![{stem}]({stem}.png) ([MIDI]({stem}.mid))", "", summary_line(s) + ".", "",
                 table, ""]
    doc = head + [""] + body
    (out / "rolls.md").write_text("\n".join(doc), encoding="utf-8")
    print(f"\nwrote {out}/rolls.md and {len(pieces)} piano rolls")
    return 0


if __name__ == "__main__":
    sys.exit(main())
