"""A seeded mutator of MIDI bytes, for robustness tests and ``scripts/fuzz_midi.py``.

Each mutation is one of the ways real files break: truncation, flipped bytes, a huge delta
time, a bogus chunk length, a wrong header field, garbage spliced in, a duplicated slice.

Example:
    >>> import random; bad = mutate_midi(open("a.mid", "rb").read(), random.Random(0))
"""
from __future__ import annotations

import random
import struct

MUTATIONS = ("truncate", "flip", "huge_delta", "chunk_length", "header", "splice", "duplicate", "stack")


def mutate_midi(data: bytes, rng: random.Random, kind: str | None = None) -> bytes:
    """One random mutation of ``data`` (or the named ``kind``). Example: ``mutate_midi(b, rng, "flip")``."""
    kind = kind or rng.choice(MUTATIONS)
    b = bytearray(data)
    n = len(b)
    if kind == "truncate":
        return bytes(b[: rng.randrange(0, n)])
    if kind == "flip":
        for _ in range(rng.randint(1, 16)):
            b[rng.randrange(n)] = rng.randrange(256)
        return bytes(b)
    if kind == "huge_delta":
        # a variable-length delta of 0x0FFFFFFF right after a track header
        pos = _track_starts(b)
        at = rng.choice(pos) if pos else 14
        return bytes(b[:at] + b"\xff\xff\xff\x7f" + b[at:])
    if kind == "chunk_length":
        pos = [p - 8 for p in _track_starts(b)] or [0]
        at = rng.choice(pos) + 4
        b[at:at + 4] = struct.pack(">I", rng.choice([0, 1, 0x7FFFFFFF, 0xFFFFFFFF, rng.randrange(1 << 32)]))
        return bytes(b)
    if kind == "header":
        at = rng.choice([8, 10, 12])
        b[at:at + 2] = struct.pack(">H", rng.choice([0, 1, 2, 0x7FFF, 0x8000 | 25, 0xFFFF, rng.randrange(1 << 16)]))
        return bytes(b)
    if kind == "splice":
        at = rng.randrange(n)
        return bytes(b[:at] + rng.randbytes(rng.randint(1, 64)) + b[at:])
    if kind == "duplicate":
        i = rng.randrange(n)
        j = min(n, i + rng.randint(1, 256))
        return bytes(b[:j] + b[i:j] * rng.randint(1, 8) + b[j:])
    if kind == "stack":
        out = bytes(b)
        for _ in range(rng.randint(2, 4)):
            out = mutate_midi(out, rng, rng.choice(MUTATIONS[:-1])) or out
        return out
    raise ValueError(f"unknown mutation {kind!r}")


def _track_starts(b: bytearray) -> list[int]:
    """Offsets just after each 'MTrk' + length."""
    out, i = [], 0
    while True:
        i = b.find(b"MTrk", i)
        if i < 0:
            return out
        out.append(i + 8)
        i += 4
