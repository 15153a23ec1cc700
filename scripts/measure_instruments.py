"""Measure what ``--instruments`` gives (issue 22, item 2): the parts, their programs, their
ranges and the bars each part plays in.

For each seed: ``Composer.generate(bars=BARS, instruments=INSTRUMENTS, seed=seed)`` on the
shipped default model (or ``--model``), one CPU thread, and per part its program, track name
(instrument and role), note count, pitch span, whether every note lies in the instrument's
range (``melodia.music.instruments.instrument_range``) and the number of bars where at least
one of its notes starts or sounds. The acceptance of the issue: three parts with programs 0, 48
and 33, each present in at least 6 of the 8 bars for every seed 0-7.

Example:
    $ python scripts/measure_instruments.py --seeds 0-7 --instruments piano,strings,bass --bars 8
"""
from __future__ import annotations

import argparse
import json
import sys
import time


def part_figures(piece) -> list[dict]:
    """Per track of ``piece``: program, name, notes, pitch span, in range, bars it plays in."""
    from melodia.music.instruments import instrument_range
    from melodia.music.meter import bar_starts

    score = piece.to_score()
    lines = bar_starts(score, close=True)[: piece.bars + 1]
    out = []
    for tr in score.tracks:
        prog = -1 if tr.is_drum else tr.program
        lo, hi = instrument_range(prog)
        present = {b for n in tr.notes for b in range(len(lines) - 1)
                   if n.time < lines[b + 1] and n.time + max(n.duration, 1) > lines[b]}
        pitches = [n.pitch for n in tr.notes]
        out.append({"program": prog, "name": tr.name, "notes": len(tr.notes),
                    "pitch": [min(pitches), max(pitches)] if pitches else None,
                    "in_range": all(lo <= p <= hi for p in pitches), "bars_present": len(present)})
    return out


def _seeds(text: str) -> list[int]:
    if "-" in text:
        a, b = text.split("-")
        return list(range(int(a), int(b) + 1))
    return [int(x) for x in text.split(",")]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="model directory (default: the shipped one)")
    ap.add_argument("--instruments", default="piano,strings,bass")
    ap.add_argument("--bars", type=int, default=8)
    ap.add_argument("--seeds", default="0-7", help="e.g. 0-7 or 1,5,9")
    ap.add_argument("--mood", default=None)
    ap.add_argument("--min-bars", type=int, default=6, help="the bars each part must play in (default 6)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = ap.parse_args(argv)

    from melodia import Composer

    c = Composer.load(args.model, device="cpu", threads=1)
    instruments = [x.strip() for x in args.instruments.split(",")]
    rows, ok = [], True
    t0 = time.perf_counter()
    for seed in _seeds(args.seeds):
        piece = c.generate(bars=args.bars, instruments=instruments, seed=seed, mood=args.mood)[0]
        parts = part_figures(piece)
        good = all(p["bars_present"] >= args.min_bars and p["in_range"] for p in parts)
        ok &= good
        rows.append({"seed": seed, "parts": parts, "warnings": list(piece.warnings), "ok": good})
        if not args.json:
            print(f"seed {seed}: " + " | ".join(
                f"{p['name']} prog {p['program']}: {p['notes']} notes, pitch {p['pitch']}, "
                f"{'in range' if p['in_range'] else 'OUT OF RANGE'}, {p['bars_present']}/{args.bars} bars"
                for p in parts) + ("" if good else "  <-- below the bar")
                + (f"  warnings: {piece.warnings}" if piece.warnings else ""))
    elapsed = time.perf_counter() - t0
    programs = sorted({tuple(p["program"] for p in r["parts"]) for r in rows})
    worst = min(p["bars_present"] for r in rows for p in r["parts"])
    if args.json:
        print(json.dumps({"instruments": instruments, "bars": args.bars, "rows": rows, "programs": programs,
                          "fewest_bars": worst, "ok": ok, "elapsed_s": round(elapsed, 1)}))
    else:
        print(f"programs per piece: {programs}; fewest bars a part plays in: {worst}/{args.bars}; "
              f"all parts in range and in >= {args.min_bars} bars: {ok}; {elapsed:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
