"""Training precision: each path forced on a tiny model, and the start-up probe's cache.

The probe (``melodia.model.precision``) times a bf16 against an fp32 product once per machine
and keeps the answer in ``precision.json``; these tests point ``MELODIA_CACHE`` at a temporary
folder so that they never touch the user's own cache.
"""
from __future__ import annotations

import json
import math

import pytest

from melodia.errors import BadInputError
from melodia.model import precision as prec
from melodia.train import TrainConfig, train
from melodia.train.cli import add_train_arguments, config_from_args


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MELODIA_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "precision.json"


def _train(shards, out, precision: str, steps: int = 6):
    cfg = TrainConfig(data=str(shards), out=str(out), preset="tiny", steps=steps, batch_size=4, seq_len=128,
                      lr=3e-3, warmup=1, eval_every=steps, eval_batches=2, ckpt_every=1000, log_every=1000,
                      seed=0, threads=1, precision=precision, device="cpu")
    return train(cfg)


def _losses(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["val_loss"] for r in rows if "val_loss" in r]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_forced_precision_trains_and_says_so(precision, small_shards, tmp_path, cache, capsys):
    """fp32 and bf16 (forced: runs even on a CPU without bf16 units, just slower) both train:
    the validation loss falls, the run names its path and its tokens/s, melodia.json records it."""
    model_dir = _train(small_shards, tmp_path / "run", precision)
    err = capsys.readouterr().err
    assert f"melodia train: {precision} (" in err and "not compiled" in err
    assert "tokens/s over" in err
    if precision == "bf16":
        assert "autocast, fp32 master weights" in err
    before, after = _losses(tmp_path / "run")[0], _losses(tmp_path / "run")[-1]
    assert math.isfinite(after) and after < before
    meta = json.loads((model_dir / "melodia.json").read_text())
    assert meta["training"]["precision"] == precision and meta["training"]["precision_used"] == precision
    # the master weights stay fp32 whatever the autocast did
    from safetensors import safe_open

    with safe_open(str(model_dir / "model.safetensors"), "pt") as f:
        assert {str(f.get_tensor(k).dtype) for k in f.keys()} == {"torch.float32"}
    assert not cache.exists()  # a forced precision runs no probe


def test_bf16_and_fp32_start_alike(small_shards, tmp_path, cache):
    """Same seed, same batches: bf16 autocast's first steps track fp32's closely (the loss is
    computed in fp32 from bf16 logits)."""
    _train(small_shards, tmp_path / "a", "fp32", steps=4)
    _train(small_shards, tmp_path / "b", "bf16", steps=4)
    a, b = _losses(tmp_path / "a"), _losses(tmp_path / "b")
    assert a[0] == pytest.approx(b[0], rel=0.01)   # step 0: the same weights read in two precisions
    assert a[-1] == pytest.approx(b[-1], rel=0.02)


def test_auto_runs_the_probe_once_and_caches_it(cache, monkeypatch):
    """auto: the probe's answer is written under the machine's key and read back after."""
    import torch

    pick, why = prec.choose_precision("auto", torch.device("cpu"), 64)
    assert pick in ("fp32", "bf16") and "probe" in why
    data = json.loads(cache.read_text())
    key = prec.machine_key()
    assert key in data and "torch " + torch.__version__ in key
    entry = data[key]["train width 64"]
    assert entry["ref_s"] > 0 and entry["bf16_s"] > 0
    assert entry["speedup"] == pytest.approx(entry["ref_s"] / entry["bf16_s"])
    assert pick == ("bf16" if entry["speedup"] >= prec.TRAIN_MIN_SPEEDUP else "fp32")

    def no_measure(*a, **k):
        raise AssertionError("the cached answer should have been used")

    monkeypatch.setattr(prec, "_measure", no_measure)
    assert prec.choose_precision("auto", torch.device("cpu"), 64)[0] == pick
    # the cache decides: an entry saying bf16 is 8x faster (an AMX machine) picks bf16
    data[key]["train width 64"]["speedup"] = 8.0
    cache.write_text(json.dumps(data))
    assert prec.choose_precision("auto", torch.device("cpu"), 64)[0] == "bf16"
    # another thread count is another machine key: measured again
    with pytest.raises(AssertionError, match="cached answer"):
        prec.bf16_speedup("train", 64, threads=torch.get_num_threads() + 1)


def test_unreadable_cache_is_measured_again(cache):
    cache.parent.mkdir(parents=True)
    cache.write_text("{not json")
    assert prec.bf16_speedup("decode", 64) > 0
    assert prec.machine_key() in json.loads(cache.read_text())


def test_precision_option_and_check():
    import argparse

    p = argparse.ArgumentParser()
    add_train_arguments(p)
    cfg = config_from_args(p.parse_args(["--data", "T", "--out", "r", "--precision", "bf16"]))
    assert cfg.precision == "bf16"
    assert config_from_args(p.parse_args(["--data", "T", "--out", "r"])).precision == "auto"
    with pytest.raises(SystemExit):
        p.parse_args(["--data", "T", "--out", "r", "--precision", "fp8"])
    with pytest.raises(BadInputError, match="precision"):
        prec.choose_precision("fp16", "cpu", 64)
