"""Measure the controls a user asks for (issue: chords, form, infilling, dynamics) on a model.

Prints, for the shipped default model unless ``--model`` names another:

* chords: ``--chords "C G Am F" --key "C major"``, ``--n`` samples of 8 bars: the share of
  note time on the tones of the bar's chord (all notes, and per instrument), and whether every
  sample has exactly the bars asked for;
* form: ``--form AABA --bars 16`` (and with ``--vary``): whether bars 1-3 of every A are
  identical and B differs;
* returning sections: how much of the first A's melody each returning A plays again
  (:mod:`melodia.evaluate.form`), for the form pieces above, for the other ``repeat`` mode
  (``sections`` or ``exact``, whichever is not the model's default; "sections" needs a model
  with section tokens), and with ``--corpus DIR`` for the corpus's pieces with phrase sections
  (POP909's labels: every returning melodic letter, and A alone);
* infill: a 12-bar piece of the model's, bars 5-8 rewritten: notes outside unchanged, new
  notes inside, still 12 bars;
* dynamics: mean velocity per mood over ``--n`` samples of 8 bars (the default ``mood``
  dynamics), and the model's own (``flat``);
* raw notes per mood: ``--n`` samples of 16 bars per mood with ``--dynamics flat``: mean pitch
  and mean note length in seconds (all pitched notes), mean gap in seconds from a melody
  note's end to the next melody note's onset (the melody line of
  :func:`melodia.evaluate.parts.melody_line`; an overlap counts as 0), and the mood
  estimator's agreement with the mood asked for, on those notes with the velocities
  ``--dynamics mood`` gives them (as ``scripts/train_default.py``'s moods stage) and flat.

``--only`` measures some of the figures (``--only form,form_match,mood_notes``).

With ``--png DIR`` it also writes piano rolls of a form piece and an infilled clip (before
and after) to look at. Each figure is measured here, in this run; nothing is assumed.

Example:
    $ python scripts/measure_controls.py --n 8 --png /tmp/rolls
    $ python scripts/measure_controls.py --only form,form_match --corpus C
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def _bars_of(piece, first_bar, count, per_bar=4.0):
    lo, hi = (first_bar - 1) * per_bar, (first_bar - 1 + count) * per_bar
    return sorted((round(n.start_beat - lo, 4), n.pitch, round(n.duration_beats, 4), n.program)
                  for n in piece.notes if lo <= n.start_beat < hi)


def chords_figure(c, n: int, seed: int) -> dict:
    from melodia.music.harmony import NoteArrays, chord_tone_share, parse_chord

    pieces = c.generate(bars=8, chords="C G Am F", key="C major", n=n, seed=seed)
    chords = [(4.0 * b, parse_chord("C G Am F".split()[b % 4])) for b in range(8)]
    shares, by_prog, bars_ok = [], {}, 0
    for p in pieces:
        notes = NoteArrays.of_score(p.to_score())
        shares.append(chord_tone_share(notes, chords, end=32.0))
        for prog in sorted(set(notes.program.tolist())):
            by_prog.setdefault(prog, []).append(chord_tone_share(notes, chords, end=32.0, mask=notes.program == prog))
        written = [(round(x.start_beat, 3), x.name) for x in p.chords]
        bars_ok += p.bars == 8 and max(x.end_beat for x in p.notes) <= 32.0 + 1e-9 \
            and [w[1] for w in written[:4]] == ["C", "G", "Am", "F"]
    return {"samples": n, "chord_tone_share": float(np.nanmean(shares)),
            "per_program": {str(k): float(np.nanmean(v)) for k, v in by_prog.items()},
            "exact_bars_and_chords": f"{bars_ok}/{n}"}


FIGURES = ("chords", "form", "form_vary", "form_match", "infill", "velocity", "mood_notes")
MOOD_BARS = 16  # bars of a raw-notes sample


def returning_matches(pieces, cfg) -> dict:
    """``{"notes", "rhythm"}``: :func:`melodia.evaluate.form.match_summary` of every returning
    section's match against its letter's first section, over generated ``pieces`` laid out as
    ``cfg`` (a :class:`GenerationConfig` with a form) asked for them."""
    from melodia.evaluate.form import match_summary, section_matches
    from melodia.music.harmony import bar_lines
    from melodia.music.notes import NoteArrays

    sections = [(letter, first, size) for letter, first, size, _ in cfg.sections()]
    out = {"notes": [], "rhythm": []}
    for p in pieces:
        score = p.to_score()
        notes, lines = NoteArrays.of_score(score), bar_lines(score, end_beats=p.length_beats)
        for by in out:
            out[by] += [m.match for m in section_matches(notes, lines, sections, by=by)]
    return {by: match_summary(v) for by, v in out.items()}


def form_figure(c, n: int, seed: int, vary: bool, repeat: str | None = None) -> dict:
    from melodia.generate import GenerationConfig

    cfg = GenerationConfig(mood="happy", bars=16, form="AABA", vary=vary, repeat=repeat, n=n, seed=seed)
    mode = cfg.repeat_mode(c.tokenizer.has_sections)  # BadInputError: "sections" of a model without
    pieces = c.generate(mood="happy", bars=16, form="AABA", vary=vary, repeat=repeat, n=n, seed=seed)
    same, whole, differs, last_bar_changed = 0, 0, 0, 0
    for p in pieces:
        same += all(_bars_of(p, s, 3) == _bars_of(p, 1, 3) for s in (5, 13))
        whole += all(_bars_of(p, s, 4) == _bars_of(p, 1, 4) for s in (5, 13))
        differs += _bars_of(p, 9, 4) != _bars_of(p, 1, 4)
        last_bar_changed += sum(_bars_of(p, s + 3, 1) != _bars_of(p, 4, 1) for s in (5, 13))
    return {"samples": n, "A_bars_1_3_identical": f"{same}/{n}", "A_all_4_bars_identical": f"{whole}/{n}",
            "B_differs": f"{differs}/{n}", "returning_last_bars_changed": f"{last_bar_changed}/{2 * n}",
            "repeat": mode, "vary": vary, "returning_A": returning_matches(pieces, cfg), "pieces": pieces}


def form_other_figure(c, n: int, seed: int) -> dict:
    """The returning A's match with the ``repeat`` mode that is not the model's default
    (:func:`form_figure` measures the default): ``{"repeat", "returning_A"}``, or
    ``{"repeat", "unavailable"}`` (the error's text) when the model cannot write it."""
    from melodia.errors import BadInputError

    mode = "exact" if c.tokenizer.has_sections else "sections"
    try:
        f = form_figure(c, n, seed, vary=False, repeat=mode)
    except BadInputError as e:
        return {"samples": 0, "repeat": mode, "unavailable": str(e)}
    return {"samples": n, "repeat": mode, "returning_A": f["returning_A"]}


def real_form_figure(corpus: str | Path) -> dict:
    """Returning sections of a corpus's pieces with phrase sections (``Section_`` markers, the
    manifest's ``sections`` count): :func:`melodia.evaluate.form.match_summary` of every
    returning melodic section (``any``) and of the returning As (``A``), by notes and rhythm."""
    from melodia.corpus import load_manifest
    from melodia.errors import BadInputError
    from melodia.evaluate.form import marker_sections, match_summary, section_matches
    from melodia.evaluate.parts import part_roles
    from melodia.evaluate.real import load_piece
    from melodia.music.harmony import bar_lines
    from melodia.music.notes import NoteArrays

    corpus = Path(corpus)
    rows = [r for r in load_manifest(corpus) if r.get("sections")]
    if not rows:
        raise BadInputError(f"{corpus}: no corpus piece has phrase sections (POP909 with its labels)")
    got = {k: {"notes": [], "rhythm": []} for k in ("any", "A")}
    by_program = 0
    for row in rows:
        score = load_piece(corpus, row)
        notes, lines = NoteArrays.of_score(score), bar_lines(score)
        by_program += part_roles(notes).by == "program"
        sections = marker_sections(score, len(lines) - 1)
        for by in ("notes", "rhythm"):
            for m in section_matches(notes, lines, sections, by=by):
                got["any"][by].append(m.match)
                if m.letter == "A":
                    got["A"][by].append(m.match)
    return {"corpus": str(corpus), "songs": len(rows), "melody_by_program": by_program,
            **{k: {by: match_summary(v) for by, v in g.items()} for k, g in got.items()}}


def infill_figure(c, n: int, seed: int) -> dict:
    clip = c.generate(mood="calm", bars=12, seed=seed)[0]
    pieces = c.infill(clip, bars=(5, 8), n=n, seed=seed + 1)
    kept, new, twelve = 0, 0, 0
    outside = sorted(x for x in _bars_of(clip, 1, 12) if not 16 <= x[0] < 32)
    for p in pieces:
        kept += sorted(x for x in _bars_of(p, 1, 12) if not 16 <= x[0] < 32) == outside
        inside = [x for x in _bars_of(p, 1, 12) if 16 <= x[0] < 32]
        new += bool(inside) and inside != [x for x in _bars_of(clip, 1, 12) if 16 <= x[0] < 32]
        twelve += p.bars == 12
    return {"samples": n, "outside_unchanged": f"{kept}/{n}", "new_notes_in_span": f"{new}/{n}",
            "twelve_bars": f"{twelve}/{n}", "clip": clip, "pieces": pieces}


def velocity_figure(c, n: int, seed: int) -> dict:
    out = {}
    for mood in ("happy", "tense", "sad", "calm"):
        shaped = c.generate(mood=mood, bars=8, n=n, seed=seed)
        flat = c.generate(mood=mood, bars=8, n=n, seed=seed, dynamics="flat")
        out[mood] = {"mood": float(np.mean([x.velocity for p in shaped for x in p.notes])),
                     "flat": float(np.mean([x.velocity for p in flat for x in p.notes]))}
    v = {m: out[m]["mood"] for m in out}
    out["calm_le_happy_minus_10"] = v["calm"] <= v["happy"] - 10
    out["sad_le_tense_minus_10"] = v["sad"] <= v["tense"] - 10
    return out


def note_timing(score) -> dict:
    """Raw-note figures of one piece: ``pitch`` (mean pitch), ``length_s`` (mean note length
    in seconds), both over every pitched note, and ``gap_s``: the mean time in seconds from a
    melody note's end to the next melody note's onset (the melody line of
    :func:`melodia.evaluate.parts.melody_line`; an overlap counts as 0), with the counts they
    are means of (``notes``, ``gaps``) so that pieces pool by note."""
    from melodia.evaluate.parts import melody_line
    from melodia.music.notes import NoteArrays, TickNotes

    notes, ticks = NoteArrays.of_score(score), TickNotes.of_score(score)

    def sec(beats):
        return ticks.seconds(np.asarray(beats) * ticks.tpq)

    mel = melody_line(notes)
    gaps = np.maximum(sec(notes.onset[mel][1:]) - sec(notes.end[mel][:-1]), 0.0)
    length = sec(notes.end) - sec(notes.onset)
    return {"notes": int(notes.pitch.size), "pitch": float(notes.pitch.sum()), "length_s": float(length.sum()),
            "gaps": int(gaps.size), "gap_s": float(gaps.sum())}


def mood_notes_figure(c, n: int, seed: int, bars: int = MOOD_BARS) -> dict:
    """Per mood, ``n`` samples of ``bars`` bars with ``dynamics="flat"``: mean pitch, note length
    and melody gap (:func:`note_timing`, pooled over the samples' notes), and the estimator's
    agreement with the mood asked for (:func:`melodia.evaluate.checks.mood_control_summary`) on
    the same notes with the mood's dynamics (:func:`melodia.generate.shape_dynamics`, as
    ``dynamics="mood"`` shapes an unformed piece) and with the model's own velocities."""
    from melodia.evaluate.checks import mood_control_summary
    from melodia.generate import shape_dynamics
    from melodia.generate.arrange import dynamics_level
    from melodia.music.mood_estimator import MoodEstimator
    from melodia.music.moods import CANONICAL_MOODS

    est = MoodEstimator()
    out = {"samples": n, "bars": bars}
    for mood in CANONICAL_MOODS:
        pieces = c.generate(mood=mood, bars=bars, n=n, seed=seed, dynamics="flat")
        scores = [p.to_score() for p in pieces]
        t = [note_timing(s) for s in scores]
        level = dynamics_level("mood", mood, None)
        shaped = [est.estimate(shape_dynamics(s, level), tempo_known=True) for s in scores]
        flat = [est.estimate(s, tempo_known=True) for s in scores]
        out[mood] = {
            "pitch": sum(x["pitch"] for x in t) / max(1, sum(x["notes"] for x in t)),
            "length_s": sum(x["length_s"] for x in t) / max(1, sum(x["notes"] for x in t)),
            "gap_s": sum(x["gap_s"] for x in t) / max(1, sum(x["gaps"] for x in t)),
            "agreement_mood_dynamics": mood_control_summary([mood] * n, shaped)["per_mood"][mood]["accuracy"],
            "agreement_flat": mood_control_summary([mood] * n, flat)["per_mood"][mood]["accuracy"],
        }
    return out


def measure(c, n: int = 8, seed: int = 1, png: str | None = None, corpus: str | Path | None = None,
            only: tuple[str, ...] = FIGURES) -> dict:
    """The figures ``only`` names (default every one of :data:`FIGURES`) for Composer ``c``
    (JSON-ready); ``form_match`` measures the real side from ``corpus`` when given, and its
    default-mode rows need ``form`` and ``form_vary``; piano rolls into ``png``."""
    t0 = time.perf_counter()
    figs = {}
    if "chords" in only:
        figs["chords"] = chords_figure(c, n, seed)
    if "form" in only or "form_match" in only:
        figs["form"] = form_figure(c, n, seed, vary=False)
    if "form_vary" in only or "form_match" in only:
        figs["form_vary"] = form_figure(c, n, seed, vary=True)
    if "form_match" in only:
        figs["form_other"] = form_other_figure(c, n, seed)
        if corpus is not None:
            figs["form_real"] = real_form_figure(corpus)
    if "infill" in only:
        figs["infill"] = infill_figure(c, n, seed)
    if "velocity" in only:
        figs["velocity"] = velocity_figure(c, n, seed)
    if "mood_notes" in only:
        figs["mood_notes"] = mood_notes_figure(c, n, seed)
    if png:
        out = Path(png)
        out.mkdir(parents=True, exist_ok=True)
        if "form" in figs:
            figs["form"]["pieces"][0].save(out / "form-AABA.png", title="happy · AABA · 16 bars")
        if "form_vary" in figs:
            figs["form_vary"]["pieces"][0].save(out / "form-AABA-vary.png", title="happy · AABA --vary · 16 bars")
        if "infill" in figs:
            figs["infill"]["clip"].save(out / "infill-before.png", title="calm clip · 12 bars")
            figs["infill"]["pieces"][0].save(out / "infill-after.png", title="bars 5-8 rewritten")
    for f in figs.values():
        f.pop("pieces", None)
        f.pop("clip", None)
    figs["samples"], figs["seed"] = n, seed
    figs["seconds"] = round(time.perf_counter() - t0, 1)
    return figs


def _match_cells(summary: dict) -> str:
    """``mean | median | share >= 0.9 | n`` cells of a :func:`match_summary` (notes; rhythm's mean)."""
    nt, rh = summary["notes"], summary["rhythm"]
    if not nt["n"]:
        return "– | – | – | – | 0"
    return f"{nt['mean']:.2f} | {nt['median']:.2f} | {nt['share_ge_0_9']:.0%} | {rh['mean']:.2f} | {nt['n']}"


def form_match_md(figs: dict) -> str:
    """The returning sections as a markdown table: real (``form_real``) and generated rows."""
    lines = ["| returning section's melody, against its letter's first | mean | median | ≥ 0.9 | "
             "rhythm only, mean | returning sections |", "|---|---|---|---|---|---|"]
    real = figs.get("form_real")
    if real:
        lines += [f"| real: `{real['corpus']}`, {real['songs']} pieces with sections, every returning "
                  f"melodic letter | {_match_cells(real['any'])} |",
                  f"| real: the same, returning A | {_match_cells(real['A'])} |"]
    for name in ("form", "form_vary", "form_other"):
        f = figs.get(name)
        if not f:
            continue
        flags = f"--form AABA --bars 16 --repeat {f['repeat']}" + (" --vary" if f.get("vary") else "")
        cells = f"{_match_cells(f['returning_A'])}" if "returning_A" in f else \
            f"not measured: {f['unavailable'].split(';')[0].split(':', 1)[-1].strip()} | | | | 0"
        lines.append(f"| generated, happy, `{flags}`, returning A | {cells} |")
    return "\n".join(lines)


def mood_notes_md(m: dict) -> str:
    """The raw-note figures per mood as a markdown table."""
    moods = ("happy", "tense", "sad", "calm")
    rows = [("mean pitch (MIDI)", "pitch", "{:.1f}"), ("mean note length (s)", "length_s", "{:.3f}"),
            ("mean melody gap, note end to next onset (s)", "gap_s", "{:.3f}"),
            ("estimator agreement, `--dynamics mood`", "agreement_mood_dynamics", "{:.0%}"),
            ("estimator agreement, `--dynamics flat`", "agreement_flat", "{:.0%}")]
    lines = [f"{m['samples']} samples of {m['bars']} bars per mood, `--dynamics flat` notes:", "",
             "| | " + " | ".join(moods) + " |", "|---|" + "---|" * len(moods)]
    lines += [f"| {label} | " + " | ".join(fmt.format(m[x][key]) for x in moods) + " |" for label, key, fmt in rows]
    return "\n".join(lines)


def controls_md(figs: dict) -> str:
    """The figures as the model card's markdown (the rows of the figures measured)."""
    lines = [f"{figs['samples']} samples per line, seed {figs['seed']} (`scripts/measure_controls.py`).", "",
             "| asked for | measured |", "|---|---|"]
    if "chords" in figs:
        ch = figs["chords"]
        per = ", ".join(f"program {k} {x:.0%}" for k, x in ch["per_program"].items())
        lines.append(f"| `--chords \"C G Am F\" --key \"C major\"`, 8 bars | {ch['chord_tone_share']:.1%} of note "
                     f"time on the bar's chord tones ({per}); exact bars and chords in "
                     f"{ch['exact_bars_and_chords']} |")
    if "form" in figs:
        fo = figs["form"]
        lines.append(f"| `--form AABA --bars 16` | every A identical in {fo['A_all_4_bars_identical']}; B differs "
                     f"from A in {fo['B_differs']} |")
    if "form_vary" in figs:
        fv = figs["form_vary"]
        lines.append(f"| `--form AABA --vary` | bars 1-3 of every A identical in {fv['A_bars_1_3_identical']}; "
                     f"returning last bars rewritten {fv['returning_last_bars_changed']} |")
    if "infill" in figs:
        inf = figs["infill"]
        lines.append(f"| `infill` bars 5-8 of a 12-bar piece | notes outside unchanged {inf['outside_unchanged']}; "
                     f"new notes in the span {inf['new_notes_in_span']}; still 12 bars {inf['twelve_bars']} |")
    if "velocity" in figs:
        v = figs["velocity"]
        lines.append("| mean velocity, 8 bars, `--dynamics mood` (model's own) | "
                     + ", ".join(f"{m} {v[m]['mood']:.0f} ({v[m]['flat']:.0f})"
                                 for m in ("happy", "tense", "sad", "calm")) + " |")
    if "form_other" in figs:
        lines += ["", form_match_md(figs)]
    if "mood_notes" in figs:
        lines += ["", mood_notes_md(figs["mood_notes"])]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model directory (default: the shipped model)")
    ap.add_argument("--n", type=int, default=8, help="samples per figure (default 8)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--png", help="write piano rolls of a form piece and an infilled clip here")
    ap.add_argument("--json", help="also write the figures as JSON here")
    ap.add_argument("--corpus", help="a corpus folder whose pieces have phrase sections (POP909): the real "
                                     "returning sections of form_match")
    ap.add_argument("--only", default=",".join(FIGURES),
                    help=f"comma-separated figures to measure (default all: {','.join(FIGURES)})")
    a = ap.parse_args(argv)
    only = tuple(x.strip() for x in a.only.split(",") if x.strip())
    if not only or set(only) - set(FIGURES):
        ap.error(f"--only: choose among {', '.join(FIGURES)}")
    import torch

    from melodia import Composer

    torch.set_num_threads(1)
    figs = measure(Composer.load(a.model), a.n, a.seed, a.png, corpus=a.corpus, only=only)
    text = json.dumps(figs, indent=1)
    print(text)
    print(controls_md(figs))
    if a.json:
        Path(a.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
