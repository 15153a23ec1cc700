#!/usr/bin/env python3
"""Benchmark: melodia's tokenize stage against bare MidiTok, on the same files, in one run.

Both sides use the same trained tokenizer (REMI + BPE) and the same normalised pieces:

* bare MidiTok: ``REMI(params=tokenizer.json).encode(path)`` for every file, one process;
* ours: ``tokenize_corpus(..., tokenizer=tokenizer.json)`` — the same encoding plus cutting at
  bar lines, control prefixes and shard writing — with 1 worker and with 2.

Each side runs ``--repeat`` times, alternating, and the best time counts (machines are noisy).
Prints files/s and tokens/s per side, then the ratios, the last line being
``ours(1 core)/bare = X.XX×, ours(2 cores)/ours(1 core) = Y.YY×``.

Usage: python scripts/bench_tokenize.py [--source DIR] [--files N] [--repeat 3]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default_src = ROOT / "data" / "pop909"
    ap.add_argument("--source", default=str(default_src if default_src.exists() else ROOT / "tests" / "data" / "pop909"))
    ap.add_argument("--files", type=int, default=200, help="pieces to time (default 200)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    from miditok import REMI

    from melodia.corpus import build_corpus, load_manifest
    from melodia.shards import tokenize_corpus

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print(f"building a corpus from {args.source} …", flush=True)
        build_corpus([args.source], tmp / "C", progress=False)
        rows = load_manifest(tmp / "C")[: args.files]
        # a corpus folder holding just the timed pieces
        sub = tmp / "Csub"
        (sub / "pieces").mkdir(parents=True)
        for r in rows:
            os.link(tmp / "C" / r["file"], sub / r["file"])
        (sub / "manifest.jsonl").write_text("".join(__import__("json").dumps(r) + "\n" for r in rows))
        print("training the tokenizer (not timed) …", flush=True)
        tokenize_corpus(sub, tmp / "T0", vocab_size=2000, progress=False)
        tok_json = tmp / "T0" / "tokenizer.json"
        remi_json = tmp / "remi.json"
        import json

        d = json.loads(tok_json.read_text())
        d.pop("melodia")
        remi_json.write_text(json.dumps(d))
        files = [sub / r["file"] for r in rows]

        def bare() -> tuple[float, int]:
            remi = REMI(params=remi_json)
            t = time.perf_counter()
            n = 0
            for f in files:
                n += len(remi.encode(f).ids)
            return time.perf_counter() - t, n

        def ours(workers: int) -> tuple[float, int]:
            t = time.perf_counter()
            s = tokenize_corpus(sub, tmp / f"T{workers}", tokenizer=tok_json, workers=workers, progress=False)
            return time.perf_counter() - t, sum(s.tokens.values())

        best: dict[str, tuple[float, int]] = {}
        for _ in range(args.repeat):
            for name, fn in (("bare MidiTok, 1 core", bare), ("ours, 1 core", lambda: ours(1)),
                             ("ours, 2 cores", lambda: ours(2))):
                dt, n = fn()
                if name not in best or dt < best[name][0]:
                    best[name] = (dt, n)

    print(f"\n{len(files)} pieces, best of {args.repeat}")
    print(f"{'':24s} {'seconds':>8s} {'files/s':>9s} {'tokens/s':>10s}")
    for name, (dt, n) in best.items():
        print(f"{name:24s} {dt:8.2f} {len(files) / dt:9.1f} {n / dt:10.0f}")
    b, o1, o2 = (best[k][0] for k in ("bare MidiTok, 1 core", "ours, 1 core", "ours, 2 cores"))
    print(f"ours(1 core)/bare = {b / o1:.2f}x, ours(2 cores)/ours(1 core) = {o1 / o2:.2f}x")


if __name__ == "__main__":
    main()
