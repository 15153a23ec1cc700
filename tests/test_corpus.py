"""Corpus build: real MIDI in, manifest/report/pieces out; broken files reported, not fatal."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import symusic
from conftest import POP909, make_piece

from melodia.cli import main
from melodia.corpus import build_corpus, corpus_stats, load_manifest, normalise, split_abc, split_of
from melodia.errors import BadMidiError
from melodia.midifile import load_score


def _bad_folder(tmp_path: Path) -> Path:
    d = tmp_path / "mixed"
    d.mkdir()
    good = (POP909 / "001" / "001.mid").read_bytes()
    (d / "good.mid").write_bytes(good)
    (d / "truncated.mid").write_bytes(good[: len(good) // 3])
    (d / "empty.mid").write_bytes(b"")
    (d / "text.mid").write_text("this is not a MIDI file, just text\n")
    tpq0 = bytearray(good)
    tpq0[12:14] = b"\x00\x00"
    (d / "tpq0.mid").write_bytes(bytes(tpq0))
    return d


def test_broken_files_are_reported_and_valid_one_kept(tmp_path):
    d = _bad_folder(tmp_path)
    s = build_corpus([str(d)], tmp_path / "C", workers=1, progress=False)
    rows = load_manifest(tmp_path / "C")
    assert [r["path"] for r in rows] == ["mixed/good.mid"]
    assert rows[0]["notes"] == load_score(POP909 / "001" / "001.mid").note_num()
    report = json.loads((tmp_path / "C" / "report.json").read_text())
    reasons = {Path(x["path"]).name: x["reason"] for x in report["skipped"]}
    assert set(reasons) == {"truncated.mid", "empty.mid", "text.mid", "tpq0.mid"}
    assert "empty" in reasons["empty.mid"]
    assert "not a MIDI" in reasons["text.mid"]
    assert "ticks per beat is 0" in reasons["tpq0.mid"]
    assert "truncated" in reasons["truncated.mid"]
    assert s.skipped == 4


def test_cli_strict_exit_codes(tmp_path, capsys):
    d = _bad_folder(tmp_path)
    assert main(["corpus", "build", str(d), "--out", str(tmp_path / "C1"), "--quiet", "--workers", "1"]) == 0
    assert main(["corpus", "build", str(d), "--out", str(tmp_path / "C2"), "--quiet", "--strict", "--workers", "1"]) == 1
    assert "4 file(s) skipped" in capsys.readouterr().err


def test_read_midi_names_file_and_problem(tmp_path):
    p = tmp_path / "x.mid"
    p.write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\x01\xe0MTrk\x00\x00\xff\xff")
    with pytest.raises(BadMidiError) as e:
        load_score(p)
    assert str(p) in str(e.value)


def test_pop909_layout_keys_meters_programs(tmp_path, pop909_dir):
    build_corpus([str(pop909_dir)], tmp_path / "C", workers=2, progress=False)
    rows = {r["song"]: r for r in load_manifest(tmp_path / "C")}
    assert set(rows) == {"pop909:001", "pop909:002", "pop909:003", "pop909:004"}
    # key from key_audio.txt ("Gb:maj" for 001 -> canonical spelling "F# major")
    first = (pop909_dir / "001" / "key_audio.txt").read_text().split("\t")[2].strip()
    assert first == "Gb:maj" and rows["pop909:001"]["key"] == "F# major"
    assert all(r["key_source"] == "pop909" for r in rows.values())
    # three piano tracks stay apart on three piano-family programs
    for r in rows.values():
        assert r["programs"] == [0, 1, 2]
        assert r["time_signature"] != "1/4"
        score = symusic.Score(str(tmp_path / "C" / r["file"]))
        assert score.ticks_per_quarter == 480
        assert all(not (ts.numerator == 1 and ts.denominator == 4) for ts in score.time_signatures)


def test_one_quarter_meter_becomes_four_four():
    s = symusic.Score(480)
    s.time_signatures.append(symusic.TimeSignature(0, 1, 4))
    t = symusic.Track("a", program=0)
    t.notes.append(symusic.Note(0, 480, 60, 80))
    s.tracks.append(t)
    out = normalise(s, pop909=True)
    assert [(x.numerator, x.denominator) for x in out.time_signatures] == [(4, 4)]


def test_dedupe_split_by_song_and_incremental_rerun(tmp_path):
    src = tmp_path / "midi"
    for i in range(6):
        make_piece(src / f"song{i}.mid", key_pc=i, seed=i)
    (src / "copy_of_song0.mid").write_bytes((src / "song0.mid").read_bytes())
    make_piece(src / "ballad_v1.mid", seed=40)
    make_piece(src / "ballad_v2.mid", seed=41)
    s1 = build_corpus([str(src)], tmp_path / "C", workers=2, progress=False)
    rows = load_manifest(tmp_path / "C")
    assert s1.duplicates == 1 and len(rows) == 8
    by_song = {}
    for r in rows:
        by_song.setdefault(r["song"], set()).add(r["split"])
        assert r["split"] == split_of(r["song"])
    assert by_song["midi:midi/ballad"] and len(by_song["midi:midi/ballad"]) == 1  # both versions, one side
    # re-run: nothing to do; then touch one file: only it is processed
    s2 = build_corpus([str(src)], tmp_path / "C", workers=2, progress=False)
    assert s2.processed_units == 0 and s2.reused_units == 9 and s2.pieces == 8
    make_piece(src / "song3.mid", key_pc=5, seed=99)
    os.utime(src / "song3.mid", None)
    s3 = build_corpus([str(src)], tmp_path / "C", workers=1, progress=False)
    assert s3.processed_units == 1 and s3.pieces == 8
    assert load_manifest(tmp_path / "C") != rows  # the changed song's notes changed


def test_labels_csv_and_folders_give_moods_and_tags(tmp_path):
    src = tmp_path / "mine"
    make_piece(src / "sad" / "a.mid", minor=True, seed=1)
    make_piece(src / "lofi" / "b.mid", seed=2)
    make_piece(src / "lofi" / "c.mid", seed=3)
    (src / "labels.csv").write_text("file,mood\nlofi/c.mid,vaporwave\n")
    build_corpus([str(src)], tmp_path / "C", workers=1, progress=False)
    rows = {Path(r["path"]).name: r for r in load_manifest(tmp_path / "C")}
    assert (rows["a.mid"]["mood"], rows["a.mid"]["mood_source"]) == ("sad", "folder")
    assert rows["b.mid"]["tags"] == ["lofi"] and rows["b.mid"]["mood_source"] == "estimated"
    assert (rows["c.mid"]["mood"], rows["c.mid"]["mood_source"]) == ("vaporwave", "labels.csv")


def test_abc_books_split_tune_by_tune():
    book = "% a book\nL:1/8\n\nX:1\nT:First\nM:4/4\nK:G\nGABc dedB|\n\nX:2\nT:Second\nM:3/4\nK:Am\nABc BAG|\n"
    tunes = split_abc(book)
    assert [ref for ref, _ in tunes] == ["1", "2"]
    assert "L:1/8" in tunes[1][1] and "T:Second" in tunes[1][1] and "T:First" not in tunes[1][1]
    s = symusic.Score.from_abc(tunes[0][1])
    assert s.note_num() == 8


def test_stats_and_cli(tmp_path, capsys):
    src = tmp_path / "m"
    for i in range(4):
        make_piece(src / f"x{i}.mid", minor=i % 2 == 0, seed=i, qpm=60 + 40 * i)
    assert main(["corpus", "build", str(src), "--out", str(tmp_path / "C"), "--quiet"]) == 0
    st = corpus_stats(tmp_path / "C")
    assert st["pieces"] == 4 and sum(v["pieces"] for v in st["moods"].values()) == 4
    assert main(["corpus", "stats", str(tmp_path / "C")]) == 0
    out = capsys.readouterr().out
    assert "4 pieces" in out and "moods:" in out
    assert main(["corpus", "stats", str(tmp_path / "nope")]) == 2
    assert "not a corpus folder" in capsys.readouterr().err
