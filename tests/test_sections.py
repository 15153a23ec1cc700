"""Phrase sections: POP909's phrase labels aligned to the corpus's bar lines, written as markers
in the corpus pieces and as SECTION_ tokens in the shards, and decoded back (real songs of
tests/data/pop909 with their labels in tests/data/pop909-structure)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA, POP909

from melodia.errors import BadInputError
from melodia.sections import (
    add_section_markers,
    insert_sections,
    parse_phrases,
    phrase_starts,
    read_section_markers,
    section_letter,
    section_token_names,
)

STRUCTURE = DATA / "pop909-structure"


def _song(name: str):
    from melodia.pop909 import read_pop909

    path = POP909 / name / f"{name}.mid"
    return read_pop909(str(path))[0], path


def _copy(root: Path, songs: tuple[str, ...], labelled: tuple[str, ...]) -> Path:
    """POP909 songs under root/pop909, the labels of ``labelled`` under root/pop909-structure."""
    for s in songs:
        shutil.copytree(POP909 / s, root / "pop909" / s)
    for s in labelled:
        shutil.copytree(STRUCTURE / s, root / "pop909-structure" / s)
    return root / "pop909"


def test_phrase_labels_parse_and_rare_letters_map():
    assert parse_phrases("i4A4B8\n") == [("i", 4), ("A", 4), ("B", 8)]
    assert [section_letter(c) for c in "ABCDEFXbcxio"] == list("ABCDDDXbbxio")
    assert section_token_names()[:2] == ["SECTION_A", "SECTION_B"] and len(section_token_names()) == 9
    for bad in ("", "i4A", "4A", "i4-A4", "A0"):
        with pytest.raises(BadInputError):
            parse_phrases(bad, "x/human_label1.txt")
    # a phrase starting before bar 0 that runs into it starts at 0; one past the end is dropped
    assert phrase_starts([("i", 4), ("A", 8), ("o", 4)], -2, 10) == [(0, "i"), (2, "A")]


@pytest.mark.parametrize("song, offset, label", [
    ("001", 1, "i4A4B8A4A4b4B8A4A4b4b4A4A4b4A4o3"),
    ("002", 1, "i4A4A4B9b4A4B9b4B9X5o2"),
    ("004", 2, "A8A8B7x5A8B6B7o7"),
])
def test_labels_align_to_the_melody_track_on_real_songs(song, offset, label):
    from melodia.pop909 import SECTION_FIT, align_sections, read_melody_txt

    score, path = _song(song)
    a = align_sections(score, path)
    assert a.fit == 1.0 >= SECTION_FIT and a.offset == offset
    assert a.label_bars == sum(n for _, n in parse_phrases(label)) and a.offset + a.label_bars <= a.bars
    assert a.sections == phrase_starts(parse_phrases(label), offset, a.bars)
    assert a.sections[0] == (offset, label[0])
    # at that offset the MELODY track starts the second phrase with melody.txt's notes
    bar, letter = a.sections[1]
    assert letter == label[len(str(parse_phrases(label)[0][1])) + 1]
    on, pitch = read_melody_txt(STRUCTURE / song / "melody.txt")
    tpq = score.ticks_per_quarter
    mel = next(t for t in score.tracks if t.name.strip() == "MELODY").notes.numpy()
    bar16 = 16 * score.time_signatures[0].numerator // 4
    lo, hi = bar * bar16, (bar + 2) * bar16
    mine = sorted(zip(np.round(mel["time"] * 4 / tpq).astype(int).tolist(), mel["pitch"].tolist()))
    theirs = sorted(zip((on + offset * bar16).tolist(), pitch.tolist()))
    assert [x for x in mine if lo <= x[0] < hi] == [x for x in theirs if lo <= x[0] < hi] != []


def test_labels_off_the_bar_lines_or_missing_place_no_sections(tmp_path):
    """melody.txt one beat later than the MIDI's bars (as in 161 POP909 songs whose bar lines
    the annotators and the corpus put on different beats): no whole-bar offset fits."""
    from melodia.pop909 import align_sections

    root = _copy(tmp_path, ("001",), ("001",))
    mel = tmp_path / "pop909-structure" / "001" / "melody.txt"
    mel.write_text("0 4\n" + mel.read_text())
    score, _ = _song("001")
    a = align_sections(score, root / "001" / "001.mid")
    assert a.fit < 0.5 and a.sections == []
    assert a.beat_fit == 1.0 and a.beat_offset % 4 != 0  # it fits, a beat off the bar lines
    (tmp_path / "pop909-structure" / "001" / "human_label1.txt").write_text("i4A")
    with pytest.raises(BadInputError, match="human_label1.txt"):
        align_sections(score, root / "001" / "001.mid")
    shutil.rmtree(tmp_path / "pop909-structure")
    assert align_sections(score, root / "001" / "001.mid") is None


def test_markers_and_tokens_on_made_up_bars():
    import symusic

    s = symusic.Score(480)
    s.time_signatures.append(symusic.TimeSignature(0, 3, 4))
    tr = symusic.Track("m", program=0)
    for b in range(6):
        tr.notes.append(symusic.Note(b * 1440, 480, 60 + b, 80))
    s.tracks.append(tr)
    s.markers.append(symusic.TextMeta(0, "C"))
    out = add_section_markers(s, [(0, "i"), (2, "A"), (4, "E"), (9, "o")])
    assert [(m.time, m.text) for m in out.markers] == [(0, "C"), (0, "Section_i"), (2880, "Section_A"),
                                                        (5760, "Section_D")]
    assert read_section_markers(out) == [(0, "i"), (2, "A"), (4, "D")]
    assert len(s.markers) == 1  # the score given is left alone
    ids = np.array([9, 1, 2, 9, 3, 9, 4])
    assert insert_sections(ids, [(0, 100), (2, 102), (5, 105)], 9).tolist() == [9, 100, 1, 2, 9, 3, 9, 102, 4]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Songs 001 (labelled) and 002 (no labels here) built and tokenized by a new tokenizer."""
    from melodia.corpus import build_corpus
    from melodia.shards import tokenize_corpus

    root = tmp_path_factory.mktemp("sections")
    src = _copy(root, ("001", "002"), ("001",))
    build_corpus([str(src)], root / "C", workers=1, progress=False)
    tokenize_corpus(root / "C", root / "T", vocab_size=600, max_len=512, workers=1, progress=False)
    return root


def test_corpus_piece_carries_section_markers(built):
    import symusic

    from melodia.corpus import corpus_stats, load_manifest
    from melodia.music.meter import bar_starts
    from melodia.pop909 import align_sections

    rows = {r["path"]: r for r in load_manifest(built / "C")}
    one, two = rows["pop909/001/001.mid"], rows["pop909/002/002.mid"]
    assert (one["sections"], one["section_fit"]) == (16, 1.0)
    assert (two["sections"], two["section_fit"]) == (0, None)
    piece = symusic.Score(str(built / "C" / one["file"]))
    want = align_sections(_song("001")[0], built / "pop909" / "001" / "001.mid").sections
    assert read_section_markers(piece) == want
    starts = bar_starts(piece)
    marks = [(m.time, m.text) for m in piece.markers if m.text.startswith("Section_")]
    assert marks == [(starts[b], f"Section_{s}") for b, s in want]
    assert [m.text for m in symusic.Score(str(built / "C" / two["file"])).markers if "Section" in m.text] == []
    report = json.loads((built / "C" / "report.json").read_text())["sections"]
    assert report == {"labelled": 1, "fit_median": 1.0, "fit_p10": 1.0, "pieces": 1, "markers": 16, "unfit": []}
    assert corpus_stats(built / "C")["sections"]["markers"] == 16


def test_section_tokens_stand_after_the_bar_where_each_phrase_starts(built):
    import symusic

    from melodia.corpus import load_manifest
    from melodia.tokenizer import MelodiaTokenizer

    tok = MelodiaTokenizer.load(built / "T" / "tokenizer.json")
    index = json.loads((built / "T" / "index.json").read_text())
    sec = tok.section_ids()
    assert index["section_ids"] == {s: i for i, s in sec.items()} and len(sec) == 9
    assert tok.controls[-9:] == section_token_names()  # appended after every older control
    bar_ids = set(index["bar_ids"])
    for row in load_manifest(built / "C"):
        want = read_section_markers(symusic.Score(str(built / "C" / row["file"])))
        chunks = [c for c in index["chunks"] if c["piece"] == row["id"]]
        found, bar = [], -1
        for c in chunks:
            arr = np.load(built / "T" / index["shards"][c["shard"]]["file"])[c["offset"]: c["offset"] + c["length"]]
            for k, i in enumerate(arr.tolist()):
                if i in bar_ids:
                    bar += 1
                if i in sec:
                    assert tok.base_tokens(int(arr[k - 1])) == ["Bar_None"]  # right after a lone Bar
                    assert tok.base_tokens(int(arr[k + 1]))[0].startswith("TimeSig_")  # before the bar's own tokens
                    found.append((bar, sec[i]))
            assert tok.count_errors(arr.tolist()) == 0
        assert found == want  # every phrase start, at its bar, in every chunk of the piece
        assert (len(found) > 0) == (row["sections"] > 0)


def test_sections_decode_back_to_markers_and_old_tokenizers_ignore_them(built):
    import symusic

    from melodia.api import DEFAULT_MODEL_DIR
    from melodia.corpus import load_manifest
    from melodia.tokenizer import BOS_ID, MelodiaTokenizer, restate_tempo

    row = next(r for r in load_manifest(built / "C") if r["sections"])
    piece = symusic.Score(str(built / "C" / row["file"]))
    want = read_section_markers(piece)
    tok = MelodiaTokenizer.load(built / "T" / "tokenizer.json")
    ids = tok.encode_piece(piece, mood=row["mood"], key=row["key"])
    assert [tok.id_to_token(i) for i in ids if i in tok.section_ids()] == [f"SECTION_{s}" for _, s in want]
    back = tok.decode(ids)
    assert read_section_markers(back) == want
    tpq = back.ticks_per_quarter
    bar = 4 * tpq
    assert [m.time for m in back.markers if m.text.startswith("Section_")] == [b * bar for b, _ in want]
    assert tok.sections(ids)[:2] == [(4.0 * want[0][0], want[0][1]), (4.0 * want[1][0], want[1][1])]
    assert {n.pitch for t in back.tracks for n in t.notes} == {n.pitch for t in piece.tracks for n in t.notes}

    # the shipped tokenizer has no section tokens: it writes none, and its ids do not change
    old = MelodiaTokenizer.load(DEFAULT_MODEL_DIR / "tokenizer.json")
    assert not old.has_sections and old.section_ids() == {}
    bare = piece.copy()
    bare.markers = symusic.core.TextMetaTickList([m for m in piece.markers if not m.text.startswith("Section_")])
    assert old.encode_piece(piece, key=row["key"]) == old.encode_piece(bare, key=row["key"])
    assert read_section_markers(old.decode(old.encode_piece(piece, key=row["key"]))) == []
    assert ids[0] == BOS_ID

    # a chunk that opens on a section's bar restates its tempo after the section token
    remi = tok.remi
    bar_ids = [remi.vocab["Bar_None"], tok.section_ids().__iter__().__next__(), remi.vocab["TimeSig_4/4"],
               remi.vocab["Position_0"], remi.vocab["Program_0"]]
    tempo = next(i for t, i in remi.vocab.items() if t.startswith("Tempo_"))
    out = restate_tempo(np.asarray(bar_ids), tempo, remi).tolist()
    assert out == bar_ids[:4] + [tempo] + bar_ids[4:]
