"""Measure the controls a user asks for (issue: chords, form, infilling, dynamics) on a model.

Prints, for the shipped default model unless ``--model`` names another:

* chords: ``--chords "C G Am F" --key "C major"``, ``--n`` samples of 8 bars: the share of
  note time on the tones of the bar's chord (all notes, and per instrument), and whether every
  sample has exactly the bars asked for;
* form: ``--form AABA --bars 16`` (and with ``--vary``): whether bars 1-3 of every A are
  identical and B differs;
* infill: a 12-bar piece of the model's, bars 5-8 rewritten: notes outside unchanged, new
  notes inside, still 12 bars;
* dynamics: mean velocity per mood over ``--n`` samples of 8 bars (the default ``mood``
  dynamics), and the model's own (``flat``).

With ``--png DIR`` it also writes piano rolls of a form piece and an infilled clip (before
and after) to look at. Each figure is measured here, in this run; nothing is assumed.

Example:
    $ python scripts/measure_controls.py --n 8 --png /tmp/rolls
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


def form_figure(c, n: int, seed: int, vary: bool) -> dict:
    pieces = c.generate(mood="happy", bars=16, form="AABA", vary=vary, n=n, seed=seed)
    same, whole, differs, last_bar_changed = 0, 0, 0, 0
    for p in pieces:
        same += all(_bars_of(p, s, 3) == _bars_of(p, 1, 3) for s in (5, 13))
        whole += all(_bars_of(p, s, 4) == _bars_of(p, 1, 4) for s in (5, 13))
        differs += _bars_of(p, 9, 4) != _bars_of(p, 1, 4)
        last_bar_changed += sum(_bars_of(p, s + 3, 1) != _bars_of(p, 4, 1) for s in (5, 13))
    return {"samples": n, "A_bars_1_3_identical": f"{same}/{n}", "A_all_4_bars_identical": f"{whole}/{n}",
            "B_differs": f"{differs}/{n}", "returning_last_bars_changed": f"{last_bar_changed}/{2 * n}",
            "pieces": pieces}


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


def measure(c, n: int = 8, seed: int = 1, png: str | None = None) -> dict:
    """Every figure of this script for Composer ``c`` (JSON-ready); piano rolls into ``png``."""
    t0 = time.perf_counter()
    figs = {"chords": chords_figure(c, n, seed)}
    figs["form"] = form_figure(c, n, seed, vary=False)
    figs["form_vary"] = form_figure(c, n, seed, vary=True)
    figs["infill"] = infill_figure(c, n, seed)
    figs["velocity"] = velocity_figure(c, n, seed)
    if png:
        out = Path(png)
        out.mkdir(parents=True, exist_ok=True)
        figs["form"]["pieces"][0].save(out / "form-AABA.png", title="happy · AABA · 16 bars")
        figs["form_vary"]["pieces"][0].save(out / "form-AABA-vary.png", title="happy · AABA --vary · 16 bars")
        figs["infill"]["clip"].save(out / "infill-before.png", title="calm clip · 12 bars")
        figs["infill"]["pieces"][0].save(out / "infill-after.png", title="bars 5-8 rewritten")
    for f in figs.values():
        f.pop("pieces", None)
        f.pop("clip", None)
    figs["samples"], figs["seed"] = n, seed
    figs["seconds"] = round(time.perf_counter() - t0, 1)
    return figs


def controls_md(figs: dict) -> str:
    """The figures as the model card's markdown."""
    ch, fo, fv, inf, v = figs["chords"], figs["form"], figs["form_vary"], figs["infill"], figs["velocity"]
    per = ", ".join(f"program {k} {x:.0%}" for k, x in ch["per_program"].items())
    return "\n".join([
        f"{figs['samples']} samples per line, seed {figs['seed']} (`scripts/measure_controls.py`).",
        "",
        "| asked for | measured |",
        "|---|---|",
        f"| `--chords \"C G Am F\" --key \"C major\"`, 8 bars | {ch['chord_tone_share']:.1%} of note time on the "
        f"bar's chord tones ({per}); exact bars and chords in {ch['exact_bars_and_chords']} |",
        f"| `--form AABA --bars 16` | every A identical in {fo['A_all_4_bars_identical']}; B differs from A in "
        f"{fo['B_differs']} |",
        f"| `--form AABA --vary` | bars 1-3 of every A identical in {fv['A_bars_1_3_identical']}; returning last "
        f"bars rewritten {fv['returning_last_bars_changed']} |",
        f"| `infill` bars 5-8 of a 12-bar piece | notes outside unchanged {inf['outside_unchanged']}; new notes in "
        f"the span {inf['new_notes_in_span']}; still 12 bars {inf['twelve_bars']} |",
        "| mean velocity, 8 bars, `--dynamics mood` (model's own) | "
        + ", ".join(f"{m} {v[m]['mood']:.0f} ({v[m]['flat']:.0f})" for m in ("happy", "tense", "sad", "calm")) + " |",
    ])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model directory (default: the shipped model)")
    ap.add_argument("--n", type=int, default=8, help="samples per figure (default 8)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--png", help="write piano rolls of a form piece and an infilled clip here")
    ap.add_argument("--json", help="also write the figures as JSON here")
    a = ap.parse_args(argv)
    import torch

    from melodia import Composer

    torch.set_num_threads(1)
    figs = measure(Composer.load(a.model), a.n, a.seed, a.png)
    text = json.dumps(figs, indent=1)
    print(text)
    print(controls_md(figs))
    if a.json:
        Path(a.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
