#!/usr/bin/env python3
"""A longer fuzzing campaign than CI's: mutated real MIDI through every reading path.

Each case mutates one of the shipped POP909 test songs (``melodia.fuzz.mutate_midi``) and
feeds it to ``midifile.load_score``, ``corpus.normalise`` + the REMI tokenizer, and the
continuation entry point's reader. Anything but a ``MelodiaError`` is a finding: the script
saves the input under ``--findings`` and prints the exception. Prints ``N cases, M findings,
slowest S s`` last.

Usage: python scripts/fuzz_midi.py [--cases 20000] [--seed 0] [--findings fuzz-findings]
"""
from __future__ import annotations

import argparse
import random
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--findings", default="fuzz-findings")
    a = ap.parse_args()

    from miditok import REMI

    from melodia.corpus import normalise
    from melodia.errors import MelodiaError
    from melodia.fuzz import MUTATIONS, mutate_midi
    from melodia.midifile import load_score
    from melodia.tokenizer import miditok_config

    remi = REMI(miditok_config())
    seeds = sorted((ROOT / "tests" / "data" / "pop909").glob("*/*.mid"))
    datas = [p.read_bytes() for p in seeds]
    rng = random.Random(a.seed)
    findings, slowest = 0, 0.0
    for case in range(a.cases):
        data = mutate_midi(rng.choice(datas), rng, MUTATIONS[case % len(MUTATIONS)])
        t = time.perf_counter()
        try:
            score = load_score(data, f"case{case}.mid")
            if score.note_num():
                remi.encode(normalise(score))
        except MelodiaError:
            pass
        except Exception:  # a finding
            findings += 1
            out = Path(a.findings)
            out.mkdir(parents=True, exist_ok=True)
            (out / f"case{case}.mid").write_bytes(data)
            print(f"case {case}: {traceback.format_exc(limit=3)}", flush=True)
        slowest = max(slowest, time.perf_counter() - t)
        if (case + 1) % 5000 == 0:
            print(f"{case + 1} cases …", flush=True)
    print(f"{a.cases} cases, {findings} findings, slowest {slowest:.2f} s")


if __name__ == "__main__":
    main()
