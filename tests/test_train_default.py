"""scripts/train_default.py's POP909 fine-tune: its shards hold only the pop pieces, it starts
from the retrained weights, the later stages measure it, and the card says what it did."""
from __future__ import annotations

import argparse
import json
import shutil

import pytest
from conftest import SCRIPTS, load_script


@pytest.fixture(scope="module")
def td():
    return load_script(SCRIPTS / "train_default.py")


@pytest.fixture(scope="module")
def work(small_shards, tiny_model_dir, tmp_path_factory, td):
    """WORK with C, T and run/model (the tiny model), then the popshards and finetune stages."""
    w = tmp_path_factory.mktemp("work")
    shutil.copytree(small_shards.parent / "C", w / "C")
    shutil.copytree(small_shards, w / "T")
    shutil.copytree(tiny_model_dir, w / "run" / "model")
    a = argparse.Namespace(work=w, max_len=512, finetune_init="", finetune_steps=6, finetune_lr=1e-3, patience=2, batch_size=4,
                           lr=3e-3, warmup=2, eval_every=2, eval_batches=2, ckpt_every=1000, threads=1,
                           device="cpu", max_minutes=0.0, balance_moods=False)
    assert td.final_run(a) == w / "run"
    td.stage_popshards(a)
    td.stage_finetune(a)
    return a


def test_popshards_hold_only_the_pop_pieces(work):
    rows = [json.loads(line) for line in (work.work / "C" / "manifest.jsonl").read_text().splitlines()]
    pop = {r["id"] for r in rows if r["style"] == "pop"}
    assert pop and len(pop) < len(rows)
    index = json.loads((work.work / "Tpop" / "index.json").read_text())
    assert {c["piece"] for c in index["chunks"]} == pop
    assert (work.work / "Tpop" / "tokenizer.json").read_text() == (work.work / "T" / "tokenizer.json").read_text()


def test_finetune_starts_from_run_and_is_what_is_measured(work, td):
    meta = json.loads((work.work / "run_pop" / "model" / "melodia.json").read_text())
    assert meta["training"]["init"] == str(work.work / "run" / "model")
    assert meta["training"]["patience"] == 2 and meta["training"]["data"] == str(work.work / "Tpop")
    assert td.final_run(work) == work.work / "run_pop"


def test_card_says_what_the_finetune_did(work, td):
    ft = td.finetune_summary(work.work)
    rows = [json.loads(x) for x in (work.work / "run_pop" / "metrics.jsonl").read_text().splitlines()]
    vals = [r["val_loss"] for r in rows if "val_loss" in r]
    if vals:  # the POP909 song of tests/data may sit in any split
        assert ft["val_start"] == vals[0] and ft["val_best"] == min(vals)
    assert ft["steps"] == json.loads((work.work / "run_pop" / "model" / "melodia.json").read_text())[
        "training"]["steps_done"] > 0
    assert ft["train_tokens"] == json.loads((work.work / "Tpop" / "index.json").read_text())["splits"]["train"]["tokens"]
    assert 0 < ft["epochs"]


def test_realism_table_names_each_case(td):
    case = {"real": {"excerpts": 10, "songs": 5, "label": "pop valid+test"}, "test": {"auc": 0.734}, "generated": {"n": 32},
            "controls": {"real_vs_real": {"auc": 0.51}},
            "copy": {"all": {"copied": 1, "windows": 200, "copied_share": 0.005, "longest_run_bars": 4}}}
    md = td.realism_table_md({"baseline": {**case, "test": {"auc": 0.99}}, "default": case,
                              "folk": {"skipped": "the model knows no style 'folk'"}})
    lines = md.strip().splitlines()
    assert len(lines) == 5
    assert "shipped before" in lines[2] and "**0.99**" in lines[2]
    assert "**0.73**" in lines[3] and "0.51" in lines[3] and "1 of 200 (0.5%)" in lines[3] and "4 bars" in lines[3]
    assert "skipped" in lines[4] and "folk" in lines[4]
