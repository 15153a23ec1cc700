"""scripts/token_order.py: part order (each bar's chords, then each part's notes) spells the same
music as time order, its shards keep every note within max_len, and its measures run on a model."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import SCRIPTS, load_script


@pytest.fixture(scope="module")
def to():
    return load_script(SCRIPTS / "token_order.py")


def _chunks(shards: Path):
    idx = json.loads((shards / "index.json").read_text())
    arrays = {k: np.load(shards / s["file"]) for k, s in enumerate(idx["shards"])}
    return idx, [arrays[c["shard"]][c["offset"]:c["offset"] + c["length"]].tolist() for c in idx["chunks"]]


def _notes(score):
    return sorted((t.program, n.time, n.pitch, n.duration, n.velocity) for t in score.tracks for n in t.notes)


def test_part_order_decodes_to_the_same_music(small_shards, to):
    from melodia.tokenizer import MelodiaTokenizer, encode_bars

    tok = MelodiaTokenizer.load(small_shards / "tokenizer.json")
    names = {i: t for t, i in tok.remi.vocab.items()}
    _, chunks = _chunks(small_shards)
    moved = 0
    for ids in chunks:
        prefix, bars, tail = to.part_order_chunk(tok, ids, tok.base_size, {}, names)
        new = prefix + [i for b in encode_bars(tok, [to._as_ids(b) for b in bars]) for i in b] + tail
        assert _notes(tok.decode(new)) == _notes(tok.decode(ids))
        assert tok.chords(new) == tok.chords(ids) and tok.sections(new) == tok.sections(ids)
        moved += new != ids
        # within a bar the parts come one after the other, each in time order
        for bar in bars:
            seen, pos, prog = [], 0, None
            for x in bar:
                kind, _, val = names.get(x, "ctrl_").partition("_") if x >= 0 else ("ctrl", "", "")
                if kind == "Position":
                    pos = int(val)
                elif kind == "Program":
                    if prog != int(val):
                        assert not seen or int(val) > seen[-1][0], "a part returns after another started"
                        prog = int(val)
                    elif seen:
                        assert pos >= seen[-1][1], "a part goes back in time"
                    seen.append((prog, pos))
    assert moved > len(chunks) // 2, "the multi-part pieces change order"


def test_part_order_shards_keep_every_note_within_max_len(small_shards, tmp_path, to):
    from melodia.tokenizer import MelodiaTokenizer

    out = tmp_path / "T-parts"
    summary = to.convert_shards(small_shards, out, max_len=300)
    assert summary["chunks_cut"] > 0 and summary["growth"] > 1.0
    idx, old = _chunks(small_shards)
    new_idx, new = _chunks(out)
    assert new_idx["token_order"] == "parts" and max(len(c) for c in new) <= 300
    assert sum(s["tokens"] for s in new_idx["splits"].values()) == sum(len(c) for c in new)
    tok = MelodiaTokenizer.load(out / "tokenizer.json")
    for split in ("train", "valid"):
        before = sum(tok.decode(ids).note_num() for ids, c in zip(old, idx["chunks"]) if c["split"] == split)
        after = sum(tok.decode(ids).note_num() for ids, c in zip(new, new_idx["chunks"]) if c["split"] == split)
        assert before == after > 0
    # every chunk, a cut one's second half too, opens with the controls, a bar line and the tempo
    base = tok.base_size
    for ids in new:
        music = [i for i in ids if 3 < i < base and tok.base_tokens(i)]  # (BPE's word mark alone: no token)
        assert ids[0] == 1 and tok.id_to_token(ids[1]).startswith("MOOD_")
        assert tok.base_tokens(music[0])[0] == "Bar_None"
        first_bar = []
        for i in music:
            first_bar += tok.base_tokens(i)
            if first_bar.count("Bar_None") > 1:
                break
        assert any(t.startswith("Tempo_") for t in first_bar)


def test_nll_per_note_and_grammar_free_samples(small_shards, tiny_model_dir, to, one_torch_thread):
    from melodia.evaluate.checks import bar_count
    from melodia.tokenizer import MelodiaTokenizer

    res = to.nll_per_note(str(tiny_model_dir), small_shards)
    assert res["notes"] > 0 and 0 < res["nats_per_note"] < 50 and math.isfinite(res["nats_per_token"])
    assert res["nats_per_note"] > res["nats_per_token"]  # a note takes several tokens
    rows = to.sample_pieces(str(tiny_model_dir), 1, bars=2, max_new=200)
    tok = MelodiaTokenizer.load(small_shards / "tokenizer.json")
    assert len(rows) == 4  # one per mood
    for row in rows:
        assert bar_count(tok, row) <= 2 and tok.id_to_token(row[1]).startswith("MOOD_")
