"""The realism check (melodia.evaluate.realism) and the copy check (melodia.evaluate.copycheck) on
real POP909 excerpts (tests/data/pop909, built into a corpus) and obviously fake pieces."""
from __future__ import annotations

import argparse
import json
import math
import shutil

import numpy as np
import pytest
import symusic
from conftest import POP909

pytest.importorskip("sklearn")

from melodia.corpus import build_corpus, load_manifest
from melodia.errors import BadInputError
from melodia.evaluate import report as rp
from melodia.evaluate import run
from melodia.evaluate.copycheck import CopyIndex, copy_check, window_keys
from melodia.evaluate.parts import melody_line, part_roles
from melodia.evaluate.real import excerpt
from melodia.evaluate.realism import (
    REALISM_FEATURES,
    corpus_control,
    feature_matrix,
    heldout_excerpts,
    heldout_rows,
    near_duplicates,
    raw_source,
    realism_features,
    realism_report,
    two_sample_auc,
    univariate_aucs,
)
from melodia.music.notes import NoteArrays

TPQ = 480
BAR = 4 * TPQ


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The four POP909 songs of tests/data as a corpus (001, 002, 004 train; 003 valid)."""
    root = tmp_path_factory.mktemp("realism")
    build_corpus([str(POP909)], root / "C", workers=1, progress=False)
    return root / "C"


@pytest.fixture(scope="module")
def real(corpus):
    """8-bar excerpts of the four songs, cut at their bar lines, up to 6 a song, and their songs."""
    scores, songs, _ = heldout_excerpts(corpus, load_manifest(corpus), 8, 6, np.random.default_rng(0))
    return scores, songs


def random_piece(seed: int, bars: int = 8, skip: range = range(0)) -> symusic.Score:
    """Random notes on a sixteenth grid in melody (program 0), counter (1) and piano (2)
    registers; no notes in the bars of ``skip``."""
    rng = np.random.default_rng(seed)
    s = symusic.Score(TPQ)
    s.tempos.append(symusic.Tempo(0, qpm=100))
    s.time_signatures.append(symusic.TimeSignature(0, 4, 4))
    for program, (lo, hi), count in ((0, (60, 84), 8), (1, (55, 72), 4), (2, (36, 60), 12)):
        t = symusic.Track(f"p{program}", program=program)
        for b in range(bars):
            if b in skip:
                continue
            for _ in range(count):
                on = b * BAR + int(rng.integers(0, 16)) * TPQ // 4
                t.notes.append(symusic.Note(on, int(rng.integers(1, 8)) * TPQ // 4, int(rng.integers(lo, hi)),
                                            int(rng.integers(30, 120))))
        t.notes.sort(key=lambda n: (n.time, n.pitch))
        s.tracks.append(t)
    return s


def one_bar_repeated(score: symusic.Score, bars: int = 8) -> symusic.Score:
    """The first bar of ``score`` played ``bars`` times."""
    first = excerpt(score, 0, 1)
    out = first.copy()
    for t in out.tracks:
        t.notes.clear()
    for b in range(bars):
        moved = first.shift_time(b * BAR)
        for t, src in zip(out.tracks, moved.tracks):
            t.notes.extend(list(src.notes))
    return out


def test_features_are_finite_deterministic_and_read_the_music(corpus):
    song = symusic.Score(str(corpus / load_manifest(corpus)[0]["file"]))
    ex = excerpt(song, 8, 16)
    a, b = realism_features(ex, 16), realism_features(ex, 16)
    assert list(a) == list(REALISM_FEATURES)
    assert all(math.isfinite(v) for v in a.values()), [k for k, v in a.items() if not math.isfinite(v)]
    assert a == b
    assert a["parts"] == 3 and 0.9 <= a["grid16"] <= 1.0 and 0 < a["bass_root"] <= 1
    rep = realism_features(one_bar_repeated(ex), 8)
    assert rep["bar_exact_repeat"] == 1.0 and rep["melody_rhythm_repeat"] == 1.0
    assert rep["section_lag4"] == 1.0 and rep["accompaniment_figure_repeat"] == 1.0
    # bars past the last note count: 16 bars asked, 8 played
    assert realism_features(one_bar_repeated(ex), 16)["melody_bar_coverage"] == 0.5


def test_part_roles_by_program_and_by_register(corpus):
    song = symusic.Score(str(corpus / load_manifest(corpus)[0]["file"]))
    notes = NoteArrays.of_score(song)
    roles = part_roles(notes)
    assert roles.by == "program" and (notes.program[roles.melody] == 0).all()
    assert (notes.program[roles.accompaniment] == 2).all()
    # one track of other programs: by register, the highest note at each onset is the melody
    s = symusic.Score(TPQ)
    t = symusic.Track("organ", program=19)
    for on, p in ((0, 48), (0, 64), (0, 72), (TPQ, 50), (TPQ, 71)):
        t.notes.append(symusic.Note(on, TPQ, p, 80))
    s.tracks.append(t)
    n = NoteArrays.of_score(s)
    r = part_roles(n)
    assert r.by == "register" and sorted(n.pitch[r.melody].tolist()) == [71, 72]
    assert n.pitch[melody_line(n, r)].tolist() == [72, 71]


def test_obvious_fakes_are_told_from_real_pieces(real):
    scores, songs = real
    assert len(set(songs)) == 4 and len(scores) >= 16
    x_real = feature_matrix(scores, 8)
    assert np.isfinite(x_real).mean() > 0.95
    x_random = feature_matrix([random_piece(i) for i in range(12)], 8)
    x_loop = feature_matrix([one_bar_repeated(s) for s in scores[::2][:12]], 8)
    for fake in (x_random, x_loop):
        res = two_sample_auc(x_real, fake, songs, [f"fake{i}" for i in range(len(fake))], repeats=1)
        assert res["folds"] == 4 and res["auc"] > 0.9, res
        assert res["logistic"]["n_folds"] == 4 and 0 <= res["logistic"]["sd"] < 0.2
    top = univariate_aucs(x_real, x_loop, 3)
    assert top[0]["auc"] > 0.95 and len(top) == 3
    assert {"bar_exact_repeat", "bar_best_match", "bar_near_repeat", "section_lag4"} & {t["feature"] for t in top}


def test_copy_check_finds_a_copied_window_and_not_a_random_or_shifted_one(corpus):
    index = CopyIndex.of_corpus(corpus)
    rows = load_manifest(corpus)
    assert index.pieces == 3 and index.sources == {"pop909": 3}
    train = next(r for r in rows if r["split"] == "train")
    song = symusic.Score(str(corpus / train["file"]))

    def with_copy(shift_ticks: int, transpose: int) -> symusic.Score:
        piece = random_piece(7, bars=12, skip=range(4, 8))
        copied = excerpt(song, 8, 4).shift_time(4 * BAR + shift_ticks).shift_pitch(transpose)
        for t in copied.tracks:
            dst = next(d for d in piece.tracks if d.program == t.program)
            dst.notes.extend(list(t.notes))
            dst.notes.sort(key=lambda n: (n.time, n.pitch))
        return piece

    found = copy_check([with_copy(0, 3)], index)  # a copy moved to another key is still a copy
    assert found["all"]["copied"] == 1 and found["all"]["pieces_with_copy"] == 1
    assert found["all"]["longest_run_bars"] == 4 and found["melody"]["copied"] >= 1
    assert found["all"]["copied_pieces"] == [0]
    assert window_keys(with_copy(0, 0))[4] == window_keys(with_copy(0, 3))[4]
    none = copy_check([random_piece(8, 12), with_copy(TPQ // 2, 0)], index)  # an eighth late: not verbatim
    assert none["all"]["copied"] == 0 and none["all"]["longest_run_bars"] == 0
    assert none["all"]["windows"] > 0 and none["melody"]["copied"] == 0
    # a training piece against itself: every counted window, one run through the whole piece
    itself = copy_check([song], index)
    n_bars = len(window_keys(song)) + 3
    assert itself["all"]["copied_share"] == 1.0 and itself["all"]["longest_run_bars"] == n_bars


def test_corpus_control_reads_the_raw_source_files(corpus):
    rows = load_manifest(corpus)
    path = raw_source(corpus, rows[0], [str(POP909)])
    assert path == POP909 / rows[0]["path"].split("/", 1)[1] and path.is_file()
    assert raw_source(corpus, rows[0], ["/nowhere/pop909"]) is None
    res = corpus_control(corpus, rows, [str(POP909)], 8, repeats=1)
    assert res["n_a"] == res["n_b"] == 4 and res["folds"] == 4 and math.isfinite(res["auc"])
    assert res["top_features"][0]["feature"] in REALISM_FEATURES
    assert corpus_control(corpus, rows, ["/nowhere"], 8)["auc"] is None


def test_realism_report_and_its_section(corpus, tmp_path):
    held = tmp_path / "C"
    shutil.copytree(corpus, held)
    rows = load_manifest(held)
    for r in rows:  # every song held out, so that both halves of the real-vs-real control have two
        r["split"] = "test"
    (held / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (held / "report.json").write_text(json.dumps({"sources": [str(POP909)]}))
    res = realism_report([random_piece(i) for i in range(8)], held, 8, per_song=4, repeats=1, copy=True)
    assert res["real"]["songs"] == 4 and res["generated"]["n"] == 8 and res["test"]["auc"] > 0.9
    assert set(res["by_group"]) == {"rhythm", "repetition", "melody", "harmony", "bass", "texture", "dynamics"}
    assert res["controls"]["corpus"]["n_a"] == 4 and res["controls"]["real_vs_real"]["folds"] == 2
    assert res["copy"]["training_pieces"] == 0 and res["copy"]["all"]["copied"] == 0
    assert res["copy"]["all"]["copied_pieces"] == [] and res["copy"]["real_reference"]["all"]["copied_pieces"] == []
    md = "\n".join(rp._realism_section({"realism": rp.jsonable(res)}))
    assert "## Realism" in md and "**generated vs real**" in md and "control: real vs real" in md
    assert res["test"]["top_features"][0]["feature"] in md and "Copy check" in md
    json.dumps(rp.jsonable(res), allow_nan=False)


def test_evaluate_flag_reaches_evaluate(monkeypatch):
    p = argparse.ArgumentParser()
    run.add_evaluate_arguments(p)
    assert p.parse_args(["--out", "R"]).realism is False
    seen = {}

    def fake(model, corpus, **kw):
        seen.update(kw)
        return {"likelihood": {"nats_per_token": None}, "seconds": 1.0,
                "validity": {"valid_share": 1.0, "exact_bars_share": 1.0}, "mood_control": {"quadrant_accuracy": 0.5},
                "realism": {"test": {"auc": 0.9}, "controls": {"real_vs_real": {"auc": 0.5}}}}
    monkeypatch.setattr(run, "evaluate", fake)
    assert run.cli_evaluate(p.parse_args(["--out", "R", "--realism", "--quiet"])) == 0
    assert seen["realism"] is True and seen["style"] is None
    assert run.cli_evaluate(p.parse_args(["--out", "R", "--realism", "--style", "folk", "--quiet"])) == 0
    assert seen["style"] == "folk"


def test_heldout_rows_pick_a_style():
    rows = [{"id": f"{style}{i}", "song": f"{style}:{i}", "style": style, "split": split}
            for style in ("pop", "folk", "chorale", "classical") for i, split in enumerate(("train", "valid", "test"))]
    pop, label = heldout_rows(rows)  # the default: pop, the style a model with styles plays by default
    assert [r["id"] for r in pop] == ["pop1", "pop2"] and label == "pop valid+test"
    folk, label = heldout_rows(rows, "Folk")
    assert [r["id"] for r in folk] == ["folk1", "folk2"] and label == "folk valid+test"
    assert [r["id"] for r in heldout_rows(rows, "chorale")[0]] == ["chorale1", "chorale2"]
    with pytest.raises(BadInputError, match="no held-out pieces of style 'jazz'.*chorale, classical, folk, pop"):
        heldout_rows(rows, "jazz")
    # a corpus without pop (or without styles): every held-out piece, as before styles
    assert len(heldout_rows([r for r in rows if r["style"] != "pop"])[0]) == 6
    bare = [{k: v for k, v in r.items() if k != "style"} for r in rows]
    assert heldout_rows(bare) == (bare[1:3] + bare[4:6] + bare[7:9] + bare[10:12], "valid+test")


def _with_pieces(src, dst, extra: list[tuple[dict, symusic.Score]], splits: dict[str, str]):
    """A copy of corpus ``src`` at ``dst`` with its rows' splits set by song and ``extra`` rows
    (each written to pieces/<id>.mid)."""
    shutil.copytree(src, dst)
    rows = load_manifest(dst)
    for r in rows:
        r["split"] = splits[r["song"]]
    for row, score in extra:
        row = {**row, "file": f"pieces/{row['id']}.mid"}
        score.dump_midi(str(dst / row["file"]))
        rows.append(row)
    (dst / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return load_manifest(dst)


def test_a_transposed_copy_of_a_train_piece_is_a_near_duplicate(corpus, tmp_path):
    first = symusic.Score(str(corpus / next(r for r in load_manifest(corpus) if r["song"] == "pop909:001")["file"]))
    dup = {"id": "dup", "song": "pop909:901", "source": "pop909", "style": "pop", "split": "test"}
    rows = _with_pieces(corpus, tmp_path / "C", [(dup, first.shift_pitch(3))],
                        {"pop909:001": "train", "pop909:002": "train", "pop909:003": "valid", "pop909:004": "test"})
    index = CopyIndex.of_corpus(tmp_path / "C", rows=rows)
    assert index.names == ["pop909:001", "pop909:002"]
    held, _ = heldout_rows(rows)
    kept, dropped = near_duplicates(tmp_path / "C", held, index)
    assert [r["song"] for r in kept] == ["pop909:003", "pop909:004"]
    assert len(dropped) == 1 and dropped[0]["song"] == "pop909:901" and dropped[0]["like"] == "pop909:001"
    assert dropped[0]["share"] == 1.0 and dropped[0]["windows"] == len([k for k in window_keys(first) if k])
    near = index.closest(symusic.Score(str(tmp_path / "C" / kept[0]["file"])))
    assert near["windows"] > 20 and near["share"] < 0.5  # a song of its own: a stock figure at most
    # half of the copy is still more than half of its windows shared
    half = excerpt(first, 0, 40).shift_pitch(-2)
    assert index.closest(half)["name"] == "pop909:001" and index.closest(half)["share"] == 1.0


def test_realism_against_folk_drops_a_near_duplicate_and_skips_the_corpus_control(corpus, tmp_path):
    by_song = {r["song"]: symusic.Score(str(corpus / r["file"])) for r in load_manifest(corpus)}

    def folk(name: str, score: symusic.Score) -> tuple[dict, symusic.Score]:
        return ({"id": name, "song": f"title:{name}", "source": "music21", "style": "folk", "split": "test",
                 "path": f"music21:essenFolksong/{name}.abc#X:1"}, score)
    extra = [folk("a", by_song["pop909:003"].shift_pitch(2)), folk("b", by_song["pop909:004"].shift_pitch(-1)),
             folk("c", random_piece(31, bars=24)), folk("d", random_piece(32, bars=24)),
             folk("copy", by_song["pop909:002"].shift_pitch(5))]  # 002 is a train song
    _with_pieces(corpus, tmp_path / "C", extra, {"pop909:001": "train", "pop909:002": "train",
                                                 "pop909:003": "test", "pop909:004": "test"})
    (tmp_path / "C" / "report.json").write_text(json.dumps({"sources": ["music21:", str(POP909)]}))
    res = realism_report([random_piece(i) for i in range(8)], tmp_path / "C", 8, per_song=2, style="folk",
                         repeats=1)
    near = res["real"]["near_duplicates"]
    assert res["real"]["label"] == "folk valid+test" and res["real"]["songs"] == 4  # a, b, c, d: no pop song
    assert near["checked"] == 5 and near["share"] == 0.5 and near["window_bars"] == 4
    assert [(d["song"], d["like"], d["share"]) for d in near["dropped"]] == [("title:copy", "pop909:002", 1.0)]
    ctl = res["controls"]["corpus"]
    assert ctl["auc"] is None and ctl["skipped"] is True and "music21" in ctl["reason"]
    assert res["copy"]["training_pieces"] == 2 and res["copy"]["real_reference"]["all"]["copied"] == 0
    md = rp.realism_markdown(rp.jsonable(res))
    assert "folk valid+test" in md and "Near-duplicates left out: 1 of the 5 held-out pieces" in md
    assert "title:copy (like pop909:002, 100.0%" in md and ctl["reason"] in md
    json.dumps(rp.jsonable(res), allow_nan=False)


def test_evaluate_style_fails_before_any_work(tiny_model_dir, corpus, tmp_path):
    """An unknown style is the tokenizer's error; a style with no held-out pieces in the corpus
    is the realism check's, both before the likelihood pass and the generations."""
    with pytest.raises(BadInputError, match="unknown style 'jazz'; this model knows: pop"):
        run.evaluate(tiny_model_dir, corpus, n=2, out_dir=tmp_path / "R", realism=True, style="jazz")
    rows = load_manifest(corpus)
    shutil.copytree(corpus, tmp_path / "C")
    (tmp_path / "C" / "manifest.jsonl").write_text("".join(json.dumps({**r, "style": "folk"}) + "\n" for r in rows))
    with pytest.raises(BadInputError, match="no held-out pieces of style 'pop'; its held-out styles: folk"):
        run.evaluate(tiny_model_dir, tmp_path / "C", n=2, out_dir=tmp_path / "R", realism=True, style="Pop")


def test_tokenizer_control_sees_only_what_the_tokens_lose(real):
    """The shipped tokenizer keeps what the features read (its round trip is not told from the
    excerpts); a 'tokenizer' that loses the melody is told apart."""
    from melodia.api import DEFAULT_MODEL_DIR
    from melodia.evaluate.realism import tokenizer_control
    from melodia.tokenizer import MelodiaTokenizer

    scores, songs = real
    x = feature_matrix(scores, 8)
    tok = MelodiaTokenizer.load(DEFAULT_MODEL_DIR / "tokenizer.json")
    kept = tokenizer_control(scores, x, songs, 8, tok, repeats=1)
    assert kept["auc"] <= 0.7

    class DropsMelody:
        def encode_score(self, score):
            return tok.encode_score(score)

        def decode(self, ids):
            out = tok.decode(ids)
            out.tracks = [t for t in out.tracks if t.program != 0]
            return out

    lost = tokenizer_control(scores, x, songs, 8, DropsMelody(), repeats=1)
    assert lost["auc"] >= 0.9
