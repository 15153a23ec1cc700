"""Made-up two-track pieces for the generation tests and ``scripts/bench_generate.py``.

Melody (program 0) over block chords (program 1) in any meter, with some dotted and short
notes: enough variety to train a small BPE vocabulary and to prompt continuations.
Needs only symusic (no pytest), so the benchmark script can import it too.

Example:
    >>> made_up_piece(3, 6, 8, bars=4).dump_midi("p.mid")
"""
from __future__ import annotations

import random
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import symusic


def made_up_piece(seed: int, num: int, den: int, bars: int = 8, tpq: int = 480) -> "symusic.Score":
    """A seeded piece in ``num/den``: major scale for odd seeds, natural minor for even ones."""
    import symusic

    rng = random.Random(seed)
    s = symusic.Score(tpq)
    s.time_signatures.append(symusic.TimeSignature(0, num, den))
    s.tempos.append(symusic.Tempo(0, qpm=rng.choice([66, 90, 120, 140])))
    beat = tpq * 4 // den
    bar_len = beat * num
    mel, acc = symusic.Track("melody", program=0), symusic.Track("chords", program=1)
    scale = [0, 2, 4, 5, 7, 9, 11] if seed % 2 else [0, 2, 3, 5, 7, 8, 10]
    root = 48 + seed % 7
    for b in range(bars):
        t0, t = b * bar_len, 0
        while t < bar_len:
            d = min(rng.choice([beat // 2, beat, beat, beat * 3 // 2, 2 * beat]), bar_len - t)
            mel.notes.append(symusic.Note(t0 + t, d, root + 12 + scale[rng.randrange(7)] + 12 * rng.randrange(2),
                                          rng.choice([70, 85, 100])))
            t += d
        ch = root + scale[rng.randrange(7)]
        step = beat * (3 if den == 8 else 2 if num % 2 == 0 else num)
        for cs in range(0, bar_len, step):
            for iv in (0, 4, 7):
                acc.notes.append(symusic.Note(t0 + cs, min(step, bar_len - cs), ch + iv, 60))
    s.tracks.append(mel)
    s.tracks.append(acc)
    return s
