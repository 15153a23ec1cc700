"""Tokenizer and shards: real MIDI → chunks that decode cleanly, controls never merged."""
from __future__ import annotations

import json

import numpy as np
import symusic
from conftest import POP909

from melodia.cli import main
from melodia.shards import check_roundtrip, compare_notes, note_table
from melodia.tokenizer import BOS_ID, EOS_ID, MelodiaTokenizer


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
        # the model reads the key's mode on C (pieces are written with their tonic on C)
        key = "any" if c["key_any"] else tok.key_for_model(c["key"])
        assert ids[1] == index["mood_ids"][c["mood"]] and ids[2] == index["key_ids"][key]
        # a style (POP909: pop) right after the key; the user's folder here has none
        has_style = c["style"] is not None
        assert (ids[3] == index["style_ids"][c["style"]]) if has_style else ids[3] not in index["style_ids"].values()
        # mood/key controls only at the front, chord (and POP909's section) tokens inside: BPE
        # never produced or merged them
        chords = set(index["chord_ids"].values()) | set(index["section_ids"].values())
        inner = [int(i) for i in ids[3 + has_style:] if i >= tok.base_size]
        assert inner and set(inner) <= chords
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


def test_key_normalised_shards_put_every_tonic_on_c(small_shards):
    from melodia.corpus import load_manifest
    from melodia.music.keys import estimate_key, tonic_shift

    index = json.loads((small_shards / "index.json").read_text())
    tok = MelodiaTokenizer.load(small_shards / "tokenizer.json")
    assert tok.key_normalised and index["key_normalised"]
    on_c = {tok.key_id("C major"), tok.key_id("C minor")}
    rows = {r["id"]: r for r in load_manifest(small_shards.parent / "C")}
    seen = set()
    for c, ids in _chunks(small_shards):
        assert (ids[2] == tok.key_id(None) if c["key_any"] else ids[2] in on_c) and c["shift"] == -tonic_shift(c["key"])
        if c["piece"] in seen or rows[c["piece"]]["source"] != "midi":
            continue
        seen.add(c["piece"])
        # the made-up pieces are plainly tonal: moved to C, their key is read as C major / C minor
        assert estimate_key(tok.decode(ids.tolist())).name == tok.key_for_model(c["key"])
    assert len(seen) == 12 and {rows[p]["key"] for p in seen} != {"C major", "C minor"}


def test_chunk_labels_give_each_chunk_the_mood_and_mode_of_its_own_notes(small_shards, tmp_path):
    from melodia.corpus import load_manifest
    from melodia.music.mood_estimator import MoodEstimator
    from melodia.tokenizer import transpose_score

    out = tmp_path / "L"
    assert main(["tokenize", "--corpus", str(small_shards.parent / "C"), "--out", str(out), "--chunk-labels",
                 "--tokenizer", str(small_shards / "tokenizer.json"), "--quiet", "--workers", "1"]) == 0
    index = json.loads((out / "index.json").read_text())
    tok = MelodiaTokenizer.load(out / "tokenizer.json")
    rows = {r["id"]: r for r in load_manifest(small_shards.parent / "C")}
    assert index["chunk_labels"] and tok.key_normalised
    moods_by_piece: dict[str, set] = {}
    keys = []
    for c, ids in _chunks(out):
        row = rows[c["piece"]]
        assert row["mood_source"] == "estimated"
        # the chunk's notes in the piece's own key, with the tempo it restates
        own = transpose_score(tok.decode(ids.tolist()), -c["shift"])
        est = MoodEstimator().estimate(own, tempo_known=row["tempo_known"])
        assert ids[1] == tok.mood_id(est.mood) and c["mood"] == est.mood
        moods_by_piece.setdefault(c["piece"], set()).add(est.mood)
        # the KEY token names the piece's key (its mode on C) only where the notes read in that mode
        same_mode = est.features.mode == c["key"].split()[-1]
        assert c["key_any"] == (not same_mode)
        assert ids[2] == (tok.key_id(tok.key_for_model(c["key"])) if same_mode else tok.key_id(None))
        keys.append(same_mode)
    # a POP909 song's chunks do not all read alike: its verse and chorus get their own moods
    assert any(len(m) > 1 for m in moods_by_piece.values())
    assert len(keys) / 2 < sum(keys) < len(keys)  # a few POP909 passages leave their song's mode


def test_labelled_pieces_keep_their_label_on_every_chunk(tmp_path):
    import shutil

    from melodia.corpus import build_corpus
    from melodia.shards import tokenize_corpus

    shutil.copytree(POP909, tmp_path / "midi" / "sad")  # a folder named after a mood labels its pieces
    build_corpus([str(tmp_path / "midi")], tmp_path / "C", workers=1, progress=False)
    tokenize_corpus(tmp_path / "C", tmp_path / "T", vocab_size=600, max_len=512, workers=1, progress=False,
                    chunk_labels=True)
    tok = MelodiaTokenizer.load(tmp_path / "T" / "tokenizer.json")
    chunks = list(_chunks(tmp_path / "T"))
    assert len(chunks) > 4 and all(c["mood"] == "sad" and ids[1] == tok.mood_id("sad") for c, ids in chunks)


def test_encode_piece_with_a_key_decodes_back_to_that_key(small_shards):
    tok = MelodiaTokenizer.load(small_shards / "tokenizer.json")
    score = symusic.Score(str(POP909 / "002" / "002.mid"))
    def notes(ids):
        return sorted(map(tuple, note_table(tok.decode(ids)).tolist()))

    plain = notes(tok.encode_piece(score))
    for key in ("A minor", "F# major", "Eb major"):
        ids = tok.encode_piece(score, mood="calm", key=key)
        assert ids[2] == tok.key_id(key) and tok.decode_shift(ids) != 0
        assert notes(ids[:2] + [tok.key_id("C major")] + ids[3:]) != plain  # as the model reads it: on C
        assert notes(ids) == plain  # decode moves the notes back to the key


def test_tokenize_cli_keeps_own_keys_when_asked(small_shards, tmp_path):
    out = tmp_path / "T"
    assert main(["tokenize", "--corpus", str(small_shards.parent / "C"), "--out", str(out), "--vocab", "600",
                 "--no-key-normalise", "--quiet", "--workers", "1"]) == 0
    from melodia.corpus import load_manifest

    index = json.loads((out / "index.json").read_text())
    tok = MelodiaTokenizer.load(out / "tokenizer.json")
    assert not tok.key_normalised and not index["key_normalised"] and not index["chunk_labels"]
    moods = {r["id"]: r["mood"] for r in load_manifest(small_shards.parent / "C")}
    for c, ids in _chunks(out):
        assert ids[2] == tok.key_id(c["key"]) and c["shift"] == 0 and not c["key_any"]
        assert ids[1] == tok.mood_id(moods[c["piece"]]) == tok.mood_id(c["mood"])  # by default, the piece's mood
    ids = tok.encode_piece(symusic.Score(str(POP909 / "002" / "002.mid")), key="A minor")
    assert tok.decode_shift(ids) == 0


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
