"""Tokenizer and shards: real MIDI → chunks that decode cleanly, controls never merged."""
from __future__ import annotations

import json

import numpy as np
import pytest
import symusic

from conftest import POP909
from melodia.cli import main
from melodia.tokenizer import (BOS_ID, EOS_ID, MelodiaTokenizer, check_roundtrip, compare_notes,
                               note_table)


def _chunks(shards):
    index = json.loads((shards / "index.json").read_text())
    arrs = [np.load(shards / s["file"], mmap_mode="r") for s in index["shards"]]
    for c in index["chunks"]:
        yield c, arrs[c["shard"]][c["offset"]: c["offset"] + c["length"]]


def test_shards_layout_and_controls(small_shards):
    index = json.loads((small_shards / "index.json").read_text())
    tok = MelodiaTokenizer.load(small_shards / "tokenizer.json")
    assert index["vocab_size"] == tok.vocab_size and tok.is_trained
    assert index["mood_ids"]["any"] == tok.mood_id("any") and index["key_ids"]["any"] == tok.key_id(None)
    n = 0
    for c, ids in _chunks(small_shards):
        assert ids.dtype == np.uint16 and len(ids) <= index["max_len"]
        assert ids[0] == BOS_ID and ids[-1] == EOS_ID
        assert ids[1] == index["mood_ids"][c["mood"]] and ids[2] == index["key_ids"][c["key"]]
        # controls only at the front: BPE never produced or merged them
        assert (ids[3:] < tok.base_size).all()
        n += 1
    assert n == len(index["chunks"]) and index["splits"]["train"]["tokens"] > 0


def test_every_chunk_decodes_without_errors_and_keeps_tempo(small_shards):
    tok = MelodiaTokenizer.load(small_shards / "tokenizer.json")
    later_chunks = 0
    prev_piece = None
    for c, ids in _chunks(small_shards):
        assert tok.count_errors(ids.tolist()) == 0.0
        score = tok.decode(ids.tolist())
        assert score.note_num() > 0
        if c["piece"] == prev_piece:  # a chunk that starts mid-piece re-states the tempo at 0
            later_chunks += 1
            assert len(score.tempos) and score.tempos[0].time == 0
        prev_piece = c["piece"]
    assert later_chunks > 0  # the POP909 songs are longer than one chunk


def test_tokenizer_json_round_trip(small_shards, tmp_path):
    tok = MelodiaTokenizer.load(small_shards / "tokenizer.json")
    again = MelodiaTokenizer.load(tok.save(tmp_path / "t.json"))
    assert again.to_json() == tok.to_json() and again.vocab_size == tok.vocab_size
    score = symusic.Score(str(POP909 / "002" / "002.mid"))
    assert again.encode_score(score) == tok.encode_score(score)


def test_add_controls_for_fine_tuning(small_shards):
    tok = MelodiaTokenizer.load(small_shards / "tokenizer.json")
    before = tok.vocab_size
    assert tok.add_controls(["TAG_lofi", "MOOD_vaporwave", "TAG_lofi"]) == ["TAG_lofi", "MOOD_vaporwave"]
    assert tok.vocab_size == before + 2 and tok.tag_id("lofi") == before
    assert tok.controls_prefix("vaporwave", "A minor", ["lofi"])[1] == before + 1


def test_roundtrip_keeps_notes_of_real_midi(small_shards):
    rt = check_roundtrip(small_shards, workers=1, progress=False)
    assert rt.notes > 1000 and rt.ratio >= 0.98


def test_compare_notes_counts_by_hand():
    a = np.array([[0.0, 1.0, 60, 0], [1.0, 0.5, 62, 0], [2.0, 1.0, 64, 1]])
    b = np.array([[0.0, 1.0, 60, 0], [1.1, 0.5, 62, 0], [2.0, 3.0, 64, 1]])
    kept, lost = compare_notes(a, b, 1 / 24, lambda d: 1 / 24)
    assert kept == 1 and lost["onset moved"] == 1 and lost["duration changed"] == 1


def test_note_table_in_beats():
    s = symusic.Score(480)
    t = symusic.Track("x", program=5)
    t.notes.append(symusic.Note(960, 240, 67, 100))
    s.tracks.append(t)
    assert note_table(s).tolist() == [[2.0, 0.5, 67.0, 5.0]]


def test_tokenize_cli_and_bad_corpus(tmp_path, capsys, small_shards):
    assert main(["tokenize", "--corpus", str(tmp_path / "missing"), "--out", str(tmp_path / "T")]) == 2
    assert "not a corpus folder" in capsys.readouterr().err
    assert main(["tokenize", "--out", str(small_shards), "--check", "--quiet", "--workers", "1"]) == 0
    assert "round trip:" in capsys.readouterr().out
