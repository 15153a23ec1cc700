"""The one bar rule: where bars start, how long a bar is, and what a meter string means.

Every module that needs bar lines asks here. The rule is MidiTok's
(:func:`miditok.utils.get_bars_ticks`), because the tokenizer writes and decodes ``Bar``
tokens by it: 4/4 until the first valid time signature; each valid time signature starts a new
bar where it stands (a bar cut short by it is a bar); of several on one tick the last wins;
a bar is ``int(int(tpq * 4 / den) * num)`` ticks. Where MidiTok would divide by zero (a bar of
under one tick) a bar is one tick. It is pinned by ``tests/test_meter.py`` against MidiTok.

Example: ``bar_starts(score)  # [0, 1920, 3840, ...]``
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..errors import BadInputError

if TYPE_CHECKING:
    import symusic

DEFAULT_METER = (4, 4)
#: denominators a meter may have, and the largest numerator
DENOMINATORS = (1, 2, 4, 8, 16, 32, 64)
MAX_NUMERATOR = 64


def ticks_per_beat(denominator: int, tpq: int) -> int:
    """Ticks in one beat of a ``?/denominator`` meter (MidiTok's rule). Example: ``ticks_per_beat(8, 480) == 240``."""
    return tpq if denominator == 4 else int(tpq * (4 / denominator))


def ticks_per_bar(numerator: int, denominator: int, tpq: int) -> int:
    """Ticks in one bar (MidiTok's ``compute_ticks_per_bar``, at least 1).

    Example: ``ticks_per_bar(6, 8, 480) == 1440``
    """
    return max(1, int(ticks_per_beat(denominator, tpq) * numerator))


def beats_per_bar(numerator: int, denominator: int) -> float:
    """Quarter notes in one bar (exact for the denominators a meter may have).

    Example: ``beats_per_bar(6, 8) == 3.0``
    """
    return 4.0 * numerator / denominator


def time_signatures(score: "symusic.Score") -> list[tuple[int, int, int]]:
    """The score's valid time signatures as ``(tick, numerator, denominator)``, in the score's
    order (a tick-time score; symusic keeps them sorted by time). Example: ``[(0, 4, 4)]``."""
    return [(int(ts.time), int(ts.numerator), int(ts.denominator)) for ts in score.time_signatures
            if ts.numerator > 0 and ts.denominator > 0]


def bar_starts_of(signatures: Sequence[tuple[int, int, int]], tpq: int, end: int,
                  close: bool = False) -> list[int]:
    """Bar start ticks for ``signatures`` (``(tick, num, den)``, valid, in order) up to ``end``
    (exclusive; ``end <= 0`` gives ``[0]``), and with ``close`` the tick that closes the last bar.

    Example: ``bar_starts_of([(0, 3, 4)], 480, 2880) == [0, 1440]``
    """
    if end <= 0:
        return [0, ticks_per_bar(*_first(signatures)[1:], tpq)] if close else [0]
    cur = _first(signatures)
    starts: list[int] = []
    per_bar = ticks_per_bar(cur[1], cur[2], tpq)
    for nxt in [*signatures[1 if signatures and signatures[0][0] == 0 else 0:], (end, *DEFAULT_METER)]:
        per_bar = ticks_per_bar(cur[1], cur[2], tpq)
        count = math.ceil((nxt[0] - cur[0]) / per_bar)
        starts.extend(cur[0] + per_bar * i for i in range(max(count, 0)))
        cur = nxt
    if not starts:
        starts = [0]
    if close:
        starts.append(starts[-1] + _per_bar_at(signatures, starts[-1], tpq))
    return starts


def bar_starts(score: "symusic.Score", end: int | None = None, close: bool = False) -> list[int]:
    """Bar start ticks of a tick-time score up to ``end`` (default ``score.end()``, as MidiTok),
    with ``close`` also the tick closing the last bar.

    Example: ``bar_starts(two_bars_of_4_4)  # [0, 1920]``; ``bar_starts(s, close=True)  # [0, 1920, 3840]``
    """
    return bar_starts_of(time_signatures(score), score.ticks_per_quarter,
                         int(score.end()) if end is None else int(end), close)


def meter_at(score: "symusic.Score", tick: int) -> tuple[int, int]:
    """The meter in force at ``tick`` (4/4 before the first time signature; of several on one
    tick the last). Example: ``meter_at(score, 0) == (4, 4)``."""
    return _meter_at(time_signatures(score), tick)


def bar_ticks_at(score: "symusic.Score", tick: int) -> int:
    """Ticks in the bar in force at ``tick``. Example: ``bar_ticks_at(score, 0) == 1920``."""
    return ticks_per_bar(*meter_at(score, tick), score.ticks_per_quarter)


def first_bar_ticks(score: "symusic.Score") -> int:
    """Ticks in one bar of the score's first valid time signature, wherever it stands (4/4
    without one): the meter a tune is written in, e.g. to pad its pickup to a full bar.

    Example: ``first_bar_ticks(tune_in_6_8_at_480_tpq) == 1440``
    """
    sigs = time_signatures(score)
    num, den = (sigs[0][1], sigs[0][2]) if sigs else DEFAULT_METER
    return ticks_per_bar(num, den, score.ticks_per_quarter)


def parse_meter(meter: "str | Sequence[int]") -> tuple[int, int]:
    """``"6/8"`` or ``(6, 8)`` → ``(6, 8)``: a numerator 1-64 over 1, 2, 4 … 64; otherwise
    :class:`BadInputError`.

    Example: ``parse_meter("3/4") == (3, 4)``
    """
    try:
        if isinstance(meter, str):
            a, b = meter.strip().split("/")
            if not (a.strip().isdigit() and b.strip().isdigit()):
                raise ValueError
            num, den = int(a), int(b)
        else:
            num, den = (int(x) for x in meter)
    except (ValueError, TypeError):
        raise BadInputError(f"meter {meter!r}: write it like '4/4', '3/4' or '6/8'") from None
    if not 1 <= num <= MAX_NUMERATOR or den not in DENOMINATORS:
        raise BadInputError(f"meter {meter!r}: write it like '4/4', '3/4' or '6/8'")
    return num, den


def _first(signatures: Sequence[tuple[int, int, int]]) -> tuple[int, int, int]:
    return signatures[0] if signatures and signatures[0][0] == 0 else (0, *DEFAULT_METER)


def _meter_at(signatures: Sequence[tuple[int, int, int]], tick: int) -> tuple[int, int]:
    meter = DEFAULT_METER
    for t, num, den in signatures:
        if t > tick:
            break
        meter = (num, den)
    return meter


def _per_bar_at(signatures: Sequence[tuple[int, int, int]], tick: int, tpq: int) -> int:
    return ticks_per_bar(*_meter_at(signatures, tick), tpq)
