"""Declared metres checked against the notes (issue 22, item 7): POP909's 1/4 and 2/4 read as
the 4/4 their music is in, by ``corpus build`` (plain MIDI files in a user folder) and by
``--continue`` / infill; made-up 3/4 and 4/4 pieces never changed."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import POP909, make_piece

SONGS = ("001", "002", "003", "004")


def _declare(src: Path, dst: Path, num: int, den: int) -> Path:
    """``src`` with its time signatures replaced by one ``num/den`` (the notes as they were)."""
    import symusic

    s = symusic.Score(str(src))
    s.time_signatures = symusic.core.TimeSignatureTickList([symusic.TimeSignature(0, num, den)])
    dst.parent.mkdir(parents=True, exist_ok=True)
    s.dump_midi(str(dst))
    return dst


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory) -> Path:
    """POP909 files copied into a plain folder (no annotations), as a user would: 001-003 as
    POP909 wrote them (2/4), 004 declared 1/4."""
    root = tmp_path_factory.mktemp("user") / "mine"
    for song in SONGS[:3]:
        (root / song).mkdir(parents=True)
        shutil.copy(POP909 / song / f"{song}.mid", root / song / f"{song}.mid")
    _declare(POP909 / "004" / "004.mid", root / "004" / "004.mid", 1, 4)
    return root


def test_pop909_files_declare_short_metres_but_are_in_four():
    from melodia.midifile import load_score
    from melodia.music.metre_detect import declared_metre, detect_metre

    for song in SONGS:
        score = load_score(POP909 / song / f"{song}.mid")
        assert declared_metre(score) == (2, 4)
        est = detect_metre(score)
        assert est is not None and est.name == "4/4" and est.clear and est.whole, (song, est)
        assert est.evidence["score_4"] > est.evidence["score_3"]


def test_corpus_build_reads_pop909_in_four_and_says_how_many(user_folder, tmp_path):
    from melodia.corpus import build_corpus, load_manifest
    from melodia.midifile import load_score
    from melodia.music.meter import bar_starts

    s = build_corpus([str(user_folder)], tmp_path / "C", workers=1, progress=False)
    rows = {r["path"].split("/")[-1]: r for r in load_manifest(tmp_path / "C")}
    assert len(rows) == 4
    for song in SONGS:
        row = rows[f"{song}.mid"]
        assert row["time_signature"] == "4/4"
        assert row["declared_metre"] == ("1/4" if song == "004" else "2/4")
        score = load_score(tmp_path / "C" / row["file"])
        starts = bar_starts(score)
        assert all(b - a == 4 * 480 for a, b in zip(starts, starts[1:]))  # every bar a whole 4/4 bar
    assert s.metre_note == "4 of 4 files declared 1/4 or 2/4 were read as 4/4 (report.json: metre_read)"
    import json

    report = json.loads((tmp_path / "C" / "report.json").read_text())
    assert {m["read_as"] for m in report["metre_read"]} == {"4/4"} and len(report["metre_read"]) == 4


def test_cli_corpus_build_prints_the_count(user_folder, tmp_path, capsys):
    from melodia.cli import main

    assert main(["corpus", "build", str(user_folder), "--out", str(tmp_path / "C"), "--quiet",
                 "--workers", "1"]) == 0
    assert "metre: 4 of 4 files declared 1/4 or 2/4 were read as 4/4" in capsys.readouterr().out


def test_made_up_three_four_and_four_four_pieces_are_not_changed(tmp_path):
    from melodia.corpus import build_corpus, load_manifest
    from melodia.midifile import load_score
    from melodia.music.metre_detect import detect_metre, metre_correction

    src = tmp_path / "src"
    for i, meter in enumerate([(3, 4), (4, 4)] * 3):
        make_piece(src / f"p{i}.mid", key_pc=i, meter=meter, seed=i, bars=16)
    s = build_corpus([str(src)], tmp_path / "C", workers=1, progress=False)
    for row in load_manifest(tmp_path / "C"):
        i = int(Path(row["path"]).stem[1:])
        assert row["time_signature"] == ("3/4" if i % 2 == 0 else "4/4")
        assert row["declared_metre"] is None and not row["pickup"]
        score = load_score(src / f"p{i}.mid")
        assert metre_correction(score) is None  # a 3/4 or 4/4 declaration stands
        est = detect_metre(score)  # and the notes agree with it
        assert est is not None and est.numerator == (3 if i % 2 == 0 else 4) and est.phase == 0
    assert s.metre_note is None


def test_a_three_four_piece_declared_two_four_is_read_in_three(tmp_path):
    from melodia.midifile import load_score
    from melodia.prepare import metre_check

    path = _declare(make_piece(tmp_path / "w.mid", meter=(3, 4), seed=2, bars=16), tmp_path / "w24.mid", 2, 4)
    score, info = metre_check(load_score(path))
    assert info == {"declared_metre": "2/4", "pickup": 0.0}
    assert [(t.numerator, t.denominator) for t in score.time_signatures] == [(3, 4)]


def test_continue_reads_a_two_four_clip_in_four(tmp_path, composer, one_torch_thread):
    from melodia.evaluate import excerpt
    from melodia.generate.prompt import read_clip
    from melodia.midifile import load_score
    from melodia.music.meter import time_signatures

    raw = load_score(POP909 / "001" / "001.mid")  # 2/4, as POP909 wrote it
    clip = excerpt(raw, 0, 40)  # 40 bars of 2/4
    clip.dump_midi(str(tmp_path / "clip.mid"))
    fixed, notes = read_clip(str(tmp_path / "clip.mid"))
    sigs = time_signatures(fixed)
    assert sigs[-1][1:] == (4, 4) and len(notes) == 1 and "declares 2/4" in notes[0]
    assert [n.time for t in fixed.tracks for n in t.notes] == [n.time for t in clip.tracks for n in t.notes]
    piece = composer.continue_from(str(tmp_path / "clip.mid"), bars=2, seed=1)[0]
    assert piece.meter == "4/4"
    assert any("read as 4/4" in w for w in piece.warnings)
    # the clip's notes come back where they were, the new ones after its last (4/4) bar
    new = [n for n in piece.notes if n.start_beat >= 2 * round(clip.end() / 480 / 2)]
    assert new


def test_a_four_four_clip_is_read_as_written(tmp_path):
    from melodia.generate.prompt import read_clip

    path = make_piece(tmp_path / "c.mid", bars=8)
    score, notes = read_clip(str(path))
    assert notes == [] and [(t.numerator, t.denominator) for t in score.time_signatures] == [(4, 4)]


def test_metre_note_counts_only_the_files_it_checked():
    """A folk tune from music21 in 2/4 is in 2/4: the build's line must not count it among the
    files 'declared 1/4 or 2/4' (it said '0 of 3563 files …' for the default corpus)."""
    from melodia.corpus import metre_note

    folk = [{"source": "music21", "time_signature": "2/4"}] * 5
    assert metre_note(folk) is None
    user = [{"source": "midi", "time_signature": "4/4", "declared_metre": "2/4"},
            {"source": "midi", "time_signature": "2/4"}]
    assert metre_note(folk + user) == "1 of 2 files declared 1/4 or 2/4 were read as 4/4 (report.json: metre_read)"
