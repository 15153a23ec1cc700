"""The one bar rule (melodia.music.meter) against MidiTok's get_bars_ticks, which the tokenizer
decodes by: real files, time-signature changes, odd resolutions, and the one place they differ."""
from __future__ import annotations

import pytest
import symusic
from conftest import POP909, make_piece
from miditok.utils import get_bars_ticks

from melodia.errors import BadInputError
from melodia.music.harmony import bar_lines
from melodia.music.meter import bar_starts, meter_at, parse_meter, ticks_per_bar


def _score(tpq: int, sigs: list[tuple[int, int, int]], end: int) -> symusic.Score:
    s = symusic.Score(tpq)
    for t, num, den in sigs:
        s.time_signatures.append(symusic.TimeSignature(t, num, den))
    tr = symusic.Track("x", program=0)
    tr.notes.append(symusic.Note(0, end, 60, 80))
    s.tracks.append(tr)
    return s


CASES = {
    "no signature": (480, [], 7000),
    "4/4": (480, [(0, 4, 4)], 7680),
    "3/4 then 6/8 on a bar line": (480, [(0, 3, 4), (2880, 6, 8)], 9000),
    "change mid-bar": (480, [(0, 4, 4), (1000, 7, 8)], 6000),
    "two on one tick (last wins)": (480, [(0, 3, 4), (0, 5, 4), (2400, 2, 2)], 8000),
    "invalid signature skipped": (480, [(0, 4, 4), (1920, 0, 4), (3840, 3, 8)], 6000),
    "odd resolution": (25, [(0, 6, 8), (150, 5, 16)], 1000),
    "resolution 96, 7/8": (96, [(0, 7, 8)], 2000),
    "signature past the end": (480, [(0, 4, 4), (20000, 3, 4)], 5000),
    "empty": (480, [(0, 4, 4)], 0),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bar_starts_match_miditok(case):
    tpq, sigs, end = CASES[case]
    s = _score(tpq, sigs, end)
    if end == 0:
        s.tracks[0].notes.clear()
    assert bar_starts(s) == get_bars_ticks(s)


def test_bar_starts_match_miditok_on_real_files(tmp_path):
    paths = sorted(POP909.glob("*/*.mid")) + [make_piece(tmp_path / "w.mid", meter=(3, 4), bars=5)]
    assert len(paths) >= 5
    for p in paths:
        s = symusic.Score(str(p))
        assert bar_starts(s) == get_bars_ticks(s), p.name


def test_closing_line_and_explicit_end():
    s = _score(480, [(0, 3, 4), (2880, 6, 8)], 9000)
    assert bar_starts(s, end=2880, close=True) == [0, 1440, 2880]
    assert bar_starts(s, close=True)[-2:] == [8640, 10080]  # the last bar is a 6/8 bar
    assert meter_at(s, 2879) == (3, 4) and meter_at(s, 2880) == (6, 8)
    assert ticks_per_bar(6, 8, 480) == 1440 and ticks_per_bar(1, 64, 1) == 1


def test_first_signature_after_tick_0_starts_a_bar():
    """The one place the rule parts from MidiTok: get_bars_ticks skips a first time signature
    that is not at tick 0 (its loop starts at the second), so the bars after it keep 4/4.
    The music changes metre there, and the tokenizer never meets it (MidiTok puts a signature
    on tick 0 when it preprocesses), so melodia honours it."""
    s = _score(480, [(1920, 3, 4)], 6000)
    assert bar_starts(s) == [0, 1920, 3360, 4800]
    assert get_bars_ticks(s) == [0, 1920, 3840, 5760]


@pytest.mark.parametrize("text,want", [("4/4", (4, 4)), (" 6/8 ", (6, 8)), ((3, 4), (3, 4)), ("13/16", (13, 16))])
def test_parse_meter(text, want):
    assert parse_meter(text) == want


@pytest.mark.parametrize("bad", ["4", "4/3", "0/4", "65/4", "4/128", "x/4", "-3/4", None, 4])
def test_parse_meter_refuses(bad):
    with pytest.raises(BadInputError, match="write it like"):
        parse_meter(bad)


def test_bar_lines_are_the_bar_rule_in_beats():
    """music.harmony.bar_lines is bar_starts(close=True) in beats, up to the last note's end. Where
    the float helper it replaced differed: a signature standing where the notes end (it closed
    the last 4/4 bar with the new meter's length: [0, 4, 7])."""
    s = _score(480, [(0, 4, 4), (3840, 3, 4)], 3840)
    assert bar_lines(s).tolist() == [0.0, 4.0, 8.0]
    s = _score(480, [(0, 3, 4), (2880, 6, 8)], 9000)
    assert bar_lines(s).tolist() == [t / 480 for t in bar_starts(s, close=True)]
    assert bar_lines(s, end_beats=6.0).tolist() == [0.0, 3.0, 6.0]
