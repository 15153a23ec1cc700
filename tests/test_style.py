"""Style as a control: every corpus piece carries its source's style (POP909 pop; music21's folk
tunes, Bach chorales and the rest; a user folder its ``--style``), the shards put ``STYLE_<s>``
right after the key, and a model trained on them takes ``style=`` on the API, the CLI, the
server and the REAPER script. A model without style tokens (the shipped one today) reads and
writes exactly what it did, and refuses a style with a clear message.

Real data: two POP909 songs and four made-up pieces labelled folk; a tiny model trained a few
steps on them.
"""
from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request

import numpy as np
import pytest
from conftest import POP909, make_piece, running_server

pytest.importorskip("torch")
pytest.importorskip("symusic")

from melodia.errors import BadInputError
from melodia.music21_source import music21_style
from melodia.tokenizer import BOS_ID, MelodiaTokenizer


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """Batch-1 sampling is latency-bound: one torch thread (see conftest.one_torch_thread)."""


@pytest.fixture(scope="module")
def styled(tmp_path_factory):
    """``(corpus, shards)``: POP909 001 and 002 plus four made-up pieces built with ``--style Folk``
    through the CLI, tokenized with a new tokenizer."""
    from melodia.cli import main
    from melodia.shards import tokenize_corpus

    root = tmp_path_factory.mktemp("styled")
    pop = root / "pop909"
    for song in ("001", "002"):
        shutil.copytree(POP909 / song, pop / song)
    folk = root / "tunes"
    for i in range(4):
        make_piece(folk / f"tune{i}.mid", key_pc=2 * i, minor=i % 2 == 1, seed=10 + i, qpm=100 + 10 * i)
    rc = main(["corpus", "build", str(pop), str(folk), "--out", str(root / "C"), "--style", "Folk",
               "--workers", "1", "--quiet"])
    assert rc == 0
    tokenize_corpus(root / "C", root / "T", vocab_size=600, max_len=256, workers=1, progress=False)
    return root / "C", root / "T"


@pytest.fixture(scope="module")
def styled_model(styled):
    """The tiny preset trained a few steps on the styled shards."""
    from melodia.train import TrainConfig, train

    _, shards = styled
    out = shards.parent / "run"
    return train(TrainConfig(data=str(shards), out=str(out), preset="tiny", steps=8, batch_size=4, seq_len=256,
                             lr=3e-3, warmup=2, eval_every=8, eval_batches=1, ckpt_every=1000, log_every=1000,
                             seed=0, threads=1))


@pytest.fixture(scope="module")
def styled_composer(styled_model):
    from melodia import Composer

    return Composer.load(styled_model, device="cpu")


def _chunks(shards):
    index = json.loads((shards / "index.json").read_text())
    arrs = [np.load(shards / s["file"], mmap_mode="r") for s in index["shards"]]
    for c in index["chunks"]:
        yield c, arrs[c["shard"]][c["offset"]: c["offset"] + c["length"]]


# --------------------------------------------------------------------------- the corpus
def test_music21_folders_name_the_style():
    assert music21_style("ryansMammoth/ryansMammoth_12.abc") == "folk"
    assert music21_style("essenFolksong/han1.abc") == "folk"
    assert music21_style("oneills1850/0001-0050.abc") == "folk"
    assert music21_style("bach/bwv66.6.mxl") == "chorale"
    assert music21_style("josquin/laDeplorationDeLaMorteDeJohannesOckeghem.abc") == "classical"  # motets
    assert music21_style("palestrina/Agnus_01.krn") == "classical"


def test_every_music21_unit_has_its_style():
    from melodia.sources import discover

    units = discover(["music21:"])
    by = {}
    for u in units:
        by.setdefault(u.style, set()).add(u.display.split(":", 1)[1].split("/", 1)[0])
    assert set(by) == {"folk", "chorale", "classical"}
    assert by["chorale"] == {"bach"} and {"ryansMammoth", "essenFolksong", "oneills1850"} <= by["folk"]
    assert "josquin" in by["classical"] and "palestrina" in by["classical"]
    abc = [u for u in units if u.kind == "abc"]
    assert sum(u.style == "folk" for u in abc) == len(abc) - sum("josquin/" in u.display for u in abc)


def test_manifest_says_each_pieces_style(styled):
    from melodia.corpus import corpus_stats, load_manifest

    corpus, _ = styled
    rows = load_manifest(corpus)
    styles = {r["path"]: r["style"] for r in rows}
    assert {p: s for p, s in styles.items() if p.startswith("pop909/")} == {
        "pop909/001/001.mid": "pop", "pop909/002/002.mid": "pop"}
    assert sorted(s for p, s in styles.items() if p.startswith("tunes/")) == ["folk"] * 4  # "Folk", normalised
    assert corpus_stats(corpus)["styles"] == {"folk": {"pieces": 4, "share": 0.6667},
                                              "pop": {"pieces": 2, "share": 0.3333}}


def test_a_rebuild_gives_reused_rows_the_new_style(tmp_path):
    from melodia.corpus import build_corpus, load_manifest

    src = tmp_path / "mine"
    make_piece(src / "a.mid", seed=1)
    build_corpus([str(src)], tmp_path / "C", workers=1, progress=False)
    assert [r["style"] for r in load_manifest(tmp_path / "C")] == [None]  # default: no style
    s = build_corpus([str(src)], tmp_path / "C", workers=1, progress=False, style="jazz")
    assert s.reused_units == 1 and [r["style"] for r in load_manifest(tmp_path / "C")] == ["jazz"]
    with pytest.raises(BadInputError, match="style '!!'"):
        build_corpus([str(src)], tmp_path / "C", workers=1, progress=False, style="!!")


# --------------------------------------------------------------------------- tokens
def test_style_token_follows_the_key_in_every_chunk(styled):
    _, shards = styled
    index = json.loads((shards / "index.json").read_text())
    tok = MelodiaTokenizer.load(shards / "tokenizer.json")
    assert tok.styles == ["folk", "pop"] and index["style_ids"] == {s: tok.style_id(s) for s in tok.styles}
    seen = set()
    for c, ids in _chunks(shards):
        assert ids[0] == BOS_ID and tok.id_to_token(int(ids[1])).startswith("MOOD_")
        assert tok.id_to_token(int(ids[2])).startswith("KEY_")
        assert int(ids[3]) == index["style_ids"][c["style"]]  # position 3: after the key, before tags
        assert not set(index["style_ids"].values()) & {int(i) for i in ids[4:]}  # nowhere else
        seen.add(c["style"])
    assert seen == {"folk", "pop"}


def test_styles_are_given_never_predicted(styled):
    from melodia.train.data import ShardData

    _, shards = styled
    data = ShardData(shards)
    for i in json.loads((shards / "index.json").read_text())["style_ids"].values():
        assert data.no_target[i]
    x, y = data.batch("train", [0, 1], seq_len=256)
    assert (y[:, 2] == -100).all()  # the target after KEY is the style: not learnt


def test_an_older_tokenizer_gets_styles_appended_and_keeps_its_ids(styled, tmp_path):
    """The shipped model's tokenizer (before styles): tokenize_corpus appends STYLE_ tokens after
    everything it has, so every id it knows keeps its meaning."""
    from melodia.api import DEFAULT_MODEL_DIR
    from melodia.shards import tokenize_corpus

    corpus, _ = styled
    old = MelodiaTokenizer.load(DEFAULT_MODEL_DIR / "tokenizer.json")
    assert old.styles == [] and old.default_style is None
    tokenize_corpus(corpus, tmp_path / "T", max_len=256, workers=1, progress=False,
                    tokenizer=DEFAULT_MODEL_DIR / "tokenizer.json")
    new = MelodiaTokenizer.load(tmp_path / "T" / "tokenizer.json")
    assert new.controls[:len(old.controls)] == old.controls and new.base_size == old.base_size
    assert "STYLE_folk" in new.controls[len(old.controls):] and "STYLE_pop" in new.controls[len(old.controls):]
    assert new.default_style == "pop"


def test_tokenize_one_style_of_a_corpus(styled, tmp_path, capsys):
    """``melodia tokenize --style pop`` (a fine-tune's shards after pretraining on everything):
    only the POP909 pieces, each in the split the corpus gave it, every chunk saying STYLE_pop;
    a style the corpus lacks is one error line naming the ones it has."""
    from melodia.cli import main

    corpus, shards = styled
    rows = [json.loads(line) for line in (corpus / "manifest.jsonl").read_text().splitlines()]
    rc = main(["tokenize", "--corpus", str(corpus), "--out", str(tmp_path / "Tpop"),
               "--tokenizer", str(shards / "tokenizer.json"), "--style", "pop", "--workers", "1", "--quiet"])
    assert rc == 0
    index = json.loads((tmp_path / "Tpop" / "index.json").read_text())
    assert index["styles"] == ["pop"]
    pop_ids = {r["id"]: r["split"] for r in rows if r["style"] == "pop"}
    assert len(pop_ids) == 2 and len(rows) == 6
    assert {c["piece"] for c in index["chunks"]} == set(pop_ids)
    assert all(c["split"] == pop_ids[c["piece"]] for c in index["chunks"])
    tok = MelodiaTokenizer.load(tmp_path / "Tpop" / "tokenizer.json")
    assert all(int(ids[3]) == tok.style_id("pop") for _, ids in _chunks(tmp_path / "Tpop"))
    capsys.readouterr()
    rc = main(["tokenize", "--corpus", str(corpus), "--out", str(tmp_path / "Tx"), "--style", "chorale",
               "--workers", "1", "--quiet"])
    err = capsys.readouterr().err
    assert rc != 0 and "no pieces of style chorale" in err and "folk, pop" in err
    assert not (tmp_path / "Tx" / "index.json").exists()


def test_a_tokenizer_without_styles_writes_todays_prefix():
    from melodia.api import DEFAULT_MODEL_DIR

    tok = MelodiaTokenizer.load(DEFAULT_MODEL_DIR / "tokenizer.json")
    assert tok.controls_prefix("sad", "A minor", ()) == [BOS_ID, tok.mood_id("sad"), tok.key_id("A minor")]
    assert tok.resolve_style(None) is None
    with pytest.raises(BadInputError, match="this model has no style tokens"):
        tok.resolve_style("pop")


# --------------------------------------------------------------------------- generation
def test_generator_puts_the_style_in_both_prefixes(styled_composer):
    from melodia.generate import GenerationConfig, Generator
    from melodia.model import load_inference_weights

    c = styled_composer
    tok = c.tokenizer
    model, _ = load_inference_weights(c.meta["path"], device="cpu")
    gen = Generator(model, tok)
    req = gen.resolve(GenerationConfig(mood="sad", key="D minor", style="Folk"))
    assert req.style == "folk"
    cond, uncond = gen.controls(req)
    # classifier-free guidance weighs mood and key; the style stays in the unconditional prefix
    assert cond[3] == uncond[3] == tok.style_id("folk") and uncond[1:3] == [tok.mood_id("any"), tok.key_id(None)]
    assert gen.resolve(GenerationConfig(mood="sad")).style == "pop"  # the default where the model knows pop
    rows, _ = gen.generate_keyed(GenerationConfig(bars=1, mood="calm", style="folk", seed=1, guidance=1.5))
    assert rows[0][:2] == [BOS_ID, tok.mood_id("calm")] and rows[0][3] == tok.style_id("folk")
    assert tok.id_to_token(rows[0][2]).startswith("KEY_") and tok.id_to_token(rows[0][4]).startswith("Bar")
    with pytest.raises(BadInputError, match=r"unknown style 'jazz'; this model knows: folk, pop"):
        gen.resolve(GenerationConfig(style="jazz"))


def test_api_takes_a_style_and_names_the_known_ones(styled_composer, tmp_path):
    c = styled_composer
    assert c.styles == ["folk", "pop"] and c.default_style == "pop"
    assert c.info()["styles"] == ["folk", "pop"] and c.info()["default_style"] == "pop"
    (p,) = c.generate(mood="happy", bars=2, style="folk", seed=3)
    assert p.bars == 2 and len(p.notes) > 0
    clip = make_piece(tmp_path / "clip.mid", bars=4, seed=5)
    (more,) = c.continue_from(clip, bars=1, style="pop", seed=4, include_prompt=False)
    assert more.bars == 1
    (filled,) = c.infill(clip, bars=(2, 2), style="folk", seed=6)
    assert filled.bars == 4
    for call in (lambda: c.generate(bars=1, style="jazz"), lambda: c.infill(clip, bars=2, style="jazz"),
                 lambda: c.continue_from(clip, bars=1, style="jazz")):
        with pytest.raises(BadInputError, match="unknown style 'jazz'; this model knows: folk, pop"):
            call()


def test_cli_style_flag(styled_model, tmp_path, capsys):
    from melodia.cli import main

    out = tmp_path / "out"
    assert main(["generate", "--model", str(styled_model), "--style", "folk", "--bars", "2", "--seed", "1",
                 "--out", str(out), "--name", "f"]) == 0
    assert (out / "f.mid").is_file()
    clip = make_piece(tmp_path / "clip.mid", bars=4, seed=2)
    assert main(["generate", "--model", str(styled_model), "--continue", str(clip), "--style", "pop", "--bars", "1",
                 "--seed", "1", "--out", str(out), "--name", "c"]) == 0
    assert main(["infill", str(clip), "--model", str(styled_model), "--bars", "2", "--style", "folk", "--seed", "1",
                 "--out", str(out), "--name", "i"]) == 0
    capsys.readouterr()
    assert main(["generate", "--model", str(styled_model), "--style", "jazz", "--bars", "2",
                 "--out", str(out), "--name", "j"]) == 2
    err = capsys.readouterr().err
    assert "unknown style 'jazz'; this model knows: folk, pop" in err and not (out / "j.mid").exists()
    assert main(["info", "--model", str(styled_model)]) == 0  # Composer.styles, listed
    assert "  styles: folk, pop" in capsys.readouterr().out.splitlines()


def test_server_takes_a_style_and_lists_them(styled_composer):
    def call(srv, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(srv.url + path, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    with running_server(styled_composer) as srv:
        st, m = call(srv, "/moods")
        assert st == 200 and m["styles"] == ["folk", "pop"] and m["default_style"] == "pop"
        st, ans = call(srv, "/generate", {"mood": "calm", "bars": 2, "style": "folk", "seed": 1})
        assert st == 200 and ans["pieces"][0]["bars"] == 2
        st, ans = call(srv, "/generate", {"bars": 2, "style": "jazz"})
        assert st == 400 and ans["error"] == "unknown style 'jazz'; this model knows: folk, pop"
        st, ans = call(srv, "/generate", {"bars": 2, "style": 3})
        assert st == 400 and "style must be a string" in ans["error"]


def test_shipped_model_takes_no_style():
    """Today's model has no style tokens: no style is its only option, and asking for one says so
    before any sampling."""
    from melodia import Composer

    c = Composer.load(device="cpu")
    assert c.styles == [] and c.default_style is None
    with pytest.raises(BadInputError, match="this model has no style tokens"):
        c.generate(bars=1, style="pop", seed=1)


def test_reaper_sends_the_style():
    from test_reaper import load_reaper_script

    mod = load_reaper_script()
    s = mod.parse_settings("sad,4,,1,,,http://127.0.0.1:8765,folk")
    assert s["style"] == "folk"
    body = mod.build_request(s, {"tempo": 100.0, "meter": "4/4"})
    assert body["style"] == "folk"
    assert "style" not in mod.build_request(mod.parse_settings("sad,4,,,,,"), {"tempo": 100.0, "meter": "4/4"})


def test_each_style_plays_its_own_ensemble(styled_model, styled_composer):
    """melodia.json names each style's commonest program set from the corpus (POP909: melody,
    counter-melody, piano; the made-up folk tunes: melody and chords), and a request for a style
    that names no instruments writes that ensemble; named instruments still win."""
    from melodia.corpus import style_ensembles

    meta = json.loads((styled_model / "melodia.json").read_text())
    assert meta["style_programs"] == {"folk": [0, 1], "pop": [0, 1, 2]}
    assert style_ensembles([{"style": "folk", "programs": [0]}, {"style": "folk", "programs": [0]},
                            {"style": "folk", "programs": [0, 1]}, {"style": "x"}]) == {"folk": [0]}
    folk = styled_composer.generate(style="folk", bars=4, n=2, seed=3)
    assert all({t.program for t in p.to_score().tracks if t.notes} <= {0, 1} for p in folk)
    assert styled_composer._gen._programs(None, "folk") == (0, 1)
    assert styled_composer._gen._programs(None, "pop") == (0, 1, 2)
    assert styled_composer._gen._programs(None, None) == styled_composer._gen.default_programs
    plain = styled_composer.generate(bars=2, n=1, seed=3)  # no style asked: the model's default set
    assert {t.program for t in plain[0].to_score().tracks if t.notes} <= set(styled_composer._gen.default_programs)
    assert styled_composer._gen._programs([0], "folk") == (0,)
