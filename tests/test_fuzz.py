"""Hostile MIDI: 2,000 mutated real files through every reading path; only MelodiaError escapes."""
from __future__ import annotations

import random
import time

import pytest
from conftest import POP909

from melodia.corpus import normalise
from melodia.errors import MelodiaError
from melodia.fuzz import MUTATIONS, mutate_midi
from melodia.midifile import load_score

CASES = 2000


@pytest.fixture(scope="module")
def remi():
    from miditok import REMI

    from melodia.tokenizer import miditok_config

    return REMI(miditok_config())


def test_fuzz_mutated_midi_only_melodia_errors(remi):
    seeds = [(POP909 / f"{i:03d}" / f"{i:03d}.mid").read_bytes() for i in (1, 2, 3, 4)]
    # small files too, so that mutations also hit the event data densely
    import symusic

    s = symusic.Score(str(POP909 / "001" / "001.mid"))
    seeds.append(s.clip(0, 480 * 16).dumps_midi())
    rng = random.Random(1234)
    outcomes = {"ok": 0, "MelodiaError": 0}
    slowest = 0.0
    for case in range(CASES):
        data = mutate_midi(rng.choice(seeds), rng, MUTATIONS[case % len(MUTATIONS)])
        t = time.perf_counter()
        try:
            score = load_score(data, f"case{case}.mid")
            if score.note_num():
                clean = normalise(score)
                remi.encode(clean)
            outcomes["ok"] += 1
        except MelodiaError:
            outcomes["MelodiaError"] += 1
        slowest = max(slowest, time.perf_counter() - t)
    assert outcomes["ok"] + outcomes["MelodiaError"] == CASES
    assert outcomes["MelodiaError"] > CASES // 10  # the mutations really do break files
    assert outcomes["ok"] > CASES // 40           # and some survive to the tokenizer
    assert slowest < 5.0  # a hang guard (the bound), not a benchmark
    print(f"\n{CASES} cases: {outcomes}, slowest {slowest:.2f} s")
