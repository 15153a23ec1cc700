"""melodia.model and melodia.train on CPU: presets, model directories, training, resume, DDP, LoRA.

Training data are synthetic shards (tests/shards_fixture.py) in the documented format, plus
one run on shards built from real MIDI (conftest's ``small_shards``).
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from melodia.errors import BadInputError, BadModelError, MelodiaError, OutputExistsError  # noqa: E402
from melodia.model import PRESETS, build_model, count_parameters, load_model_dir, recover_dir, save_model_dir  # noqa: E402
from melodia.train import (  # noqa: E402
    IGNORE,
    ShardData,
    TrainConfig,
    TrainStream,
    conditioning_dropout,
    lr_at,
    read_checkpoint_state,
    resize_vocab,
    train,
)

sys.path.insert(0, str(Path(__file__).parent))
from shards_fixture import control_ids, synthetic_shards, write_shards  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]


def _losses(out: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in _metrics(out) if "loss" in r}


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return synthetic_shards(tmp_path_factory.mktemp("syn") / "T", n_train=96, n_valid=24)


def _cfg(shards: Path, out: Path, **kw) -> TrainConfig:
    base = dict(data=str(shards), out=str(out), preset="tiny", steps=40, batch_size=4, lr=3e-3, warmup=5,
                eval_every=20, eval_batches=4, ckpt_every=20, log_every=1, threads=1, device="cpu")
    return TrainConfig(**{**base, **kw})


# ---------------------------------------------------------------------------------------------- model


def test_presets_have_the_promised_sizes():
    with torch.device("meta"):
        n = {name: count_parameters(build_model(name, vocab_size=3500)) for name in PRESETS}
    assert n["tiny"] < 1_000_000
    assert 5_000_000 <= n["small"] <= 8_000_000 and n["small"] * 2 <= 16_000_000  # bf16 bytes
    assert 20_000_000 <= n["base"] <= 30_000_000
    assert 80_000_000 <= n["large"] <= 90_000_000
    m = build_model("tiny", 100)
    assert m.config.tie_word_embeddings and m.config.model_type == "llama"
    assert m.lm_head.weight.data_ptr() == m.model.embed_tokens.weight.data_ptr()


def test_model_dir_round_trip_and_auto_class(tmp_path):
    from transformers import AutoModelForCausalLM

    tok = tmp_path / "tokenizer.json"
    tok.write_text("{}")
    model = build_model("tiny", 120, seed=1)
    out = save_model_dir(model, tmp_path / "m", tok, {"moods": {"calm": 100}}, dtype="bfloat16")
    assert {"config.json", "model.safetensors", "tokenizer.json", "melodia.json"} <= {p.name for p in out.iterdir()}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left
    loaded, meta = load_model_dir(out)
    assert loaded.dtype == torch.bfloat16 and meta["preset"] == "tiny" and meta["moods"] == {"calm": 100}
    x = torch.randint(0, 120, (2, 12))
    with torch.no_grad():
        ref = model(x).logits
        assert (loaded.float()(x).logits - ref).abs().max() < 0.05
        auto = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
        assert (auto(x).logits - ref).abs().max() < 0.05
    # saving again replaces the folder in one piece
    save_model_dir(model, out, tok, {"again": True})
    assert load_model_dir(out)[1]["again"] is True and load_model_dir(out)[0].dtype == torch.float32


def test_bad_model_dir_is_named(tmp_path):
    tok = tmp_path / "tokenizer.json"
    tok.write_text("{}")
    good = save_model_dir(build_model("tiny", 64), tmp_path / "good", tok, {})

    def broken(name: str, change) -> Path:
        d = tmp_path / name
        shutil.copytree(good, d)
        change(d)
        return d

    cases = {
        "nodir": (tmp_path / "absent", "not found"),
        "nocfg": (broken("nocfg", lambda d: (d / "config.json").unlink()), "config.json"),
        "nomel": (broken("nomel", lambda d: (d / "melodia.json").unlink()), "melodia.json"),
        "badjson": (broken("badjson", lambda d: (d / "config.json").write_text("{oops")), "config.json"),
        "heads": (broken("heads", lambda d: (d / "config.json").write_text(json.dumps(
            {**json.loads((good / "config.json").read_text()), "num_key_value_heads": 3}))), "num_key_value_heads"),
        "trunc": (broken("trunc", lambda d: (d / "model.safetensors").write_bytes(
            (good / "model.safetensors").read_bytes()[:500])), "model.safetensors"),
        "shape": (broken("shape", lambda d: (d / "config.json").write_text(json.dumps(
            {**json.loads((good / "config.json").read_text()), "hidden_size": 128}))), "model.safetensors"),
    }
    for name, (path, word) in cases.items():
        with pytest.raises(BadModelError) as e:
            load_model_dir(path)
        assert str(path) in str(e.value) and word in str(e.value), (name, str(e.value))


# ---------------------------------------------------------------------------------------------- data


def test_batches_mask_padding_and_controls_and_drop_conditioning(shards):
    data = ShardData(shards)
    x, y = data.batch("train", [0, 1, 2], seq_len=32, drop=np.array([[True, True], [False, False], [True, False]]))
    assert x.shape == y.shape and x.shape[1] <= 32 and x.shape[1] % 8 == 0
    assert x[0, 1] == data.mood_any and x[0, 2] == data.key_any
    assert data.is_mood[x[1, 1]] and x[1, 1] != data.mood_any and x[1, 2] != data.key_any
    assert x[2, 1] == data.mood_any and x[2, 2] != data.key_any
    assert (y[:, :2] == -100).all()  # the MOOD and KEY targets are never learnt
    assert not data.no_target[y[y >= 0]].any()
    drop = conditioning_dropout(np.random.default_rng(0), 20000, 0.1)
    both, mood_only = (drop[:, 0] & drop[:, 1]).mean(), (drop[:, 0] & ~drop[:, 1]).mean()
    assert 0.09 < both < 0.125 and 0.065 < mood_only < 0.095  # ~0.109 and ~0.081
    s = TrainStream(10, seed=3)
    first = s.take(0, 10)
    assert sorted(first) == list(range(10)) and s.take(5, 10)[:5] == first[5:]
    assert sorted(s.take(10, 10)) == list(range(10)) and s.take(10, 10) != first
    # balanced by mood: 90 chunks of one mood, 10 of another, each mood drawn half the time
    groups = np.array([4000] * 90 + [4002] * 10)
    b = TrainStream(100, seed=3, groups=groups)
    draws = np.array(b.take(0, 20000))
    assert 0.47 < (groups[draws] == 4002).mean() < 0.53
    assert len(set(draws[groups[draws] == 4002].tolist())) == 10  # every rare chunk is read
    assert b.take(5, 10)[:5] == b.take(0, 10)[5:] and TrainStream(100, 3, groups).take(0, 300) == draws[:300].tolist()


def test_balance_moods_draws_by_each_chunks_mood_token(tmp_path, shards, monkeypatch):
    import melodia.train.loop as mt  # where the run reads TrainStream from

    seen = {}

    class Spy(mt.TrainStream):
        def __init__(self, n, seed, groups=None):
            seen["groups"] = groups
            super().__init__(n, seed, groups)

    monkeypatch.setattr(mt, "TrainStream", Spy)
    data = ShardData(shards)
    train(_cfg(shards, tmp_path / "run", steps=2, eval_every=2, balance_moods=True))
    groups = seen["groups"]
    assert len(groups) == len(data.splits["train"]) and data.is_mood[groups].all()
    assert groups.tolist() == [int(data.tokens("train", i, 2)[1]) for i in range(len(groups))]
    assert read_checkpoint_state(tmp_path / "run")["config"]["balance_moods"] is True


def test_lr_schedule():
    cfg = TrainConfig(data="", out="", steps=100, warmup=10, lr=1.0, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(55, cfg) == pytest.approx(0.55) and lr_at(100, cfg) == pytest.approx(0.1)


def test_bad_inputs_are_named(tmp_path, shards):
    with pytest.raises(MelodiaError, match="index.json"):
        train(_cfg(tmp_path / "none", tmp_path / "r0"))
    bad = tmp_path / "bad"
    shutil.copytree(shards, bad)
    idx = json.loads((bad / "index.json").read_text())
    np.save(bad / idx["shards"][0]["file"], np.full(50, 60000, dtype=np.uint16))
    with pytest.raises(MelodiaError, match="vocab_size"):
        ShardData(bad)
    with pytest.raises(BadInputError, match="preset"):
        train(_cfg(shards, tmp_path / "r1", init=str(tmp_path)))  # both --preset and --init
    with pytest.raises(BadInputError, match="steps"):
        train(_cfg(shards, tmp_path / "r2", steps=0))


# ---------------------------------------------------------------------------------------------- training


def test_tiny_loss_falls_by_a_third(tmp_path, shards):
    t0 = time.time()
    model_dir = train(_cfg(shards, tmp_path / "run", steps=200, batch_size=8, lr=3e-3, warmup=20,
                           eval_every=100, eval_batches=0, ckpt_every=1000, log_every=20))
    vals = [r["val_loss"] for r in _metrics(tmp_path / "run") if "val_loss" in r]
    assert vals[-1] <= 0.7 * vals[0], vals
    model, meta = load_model_dir(model_dir)
    assert meta["metrics"]["val_loss"] == pytest.approx(vals[-1]) and meta["training"]["steps_done"] == 200
    assert meta["moods"]["any"] == ShardData(shards).mood_any
    assert time.time() - t0 < 60


@pytest.mark.slow
def test_real_midi_shards_loss_falls(tmp_path, request):
    pytest.importorskip("miditok")
    try:
        real = request.getfixturevalue("small_shards")
    except (ImportError, AttributeError) as e:  # the tokenizer stage is not in this build yet
        pytest.skip(f"real-MIDI shards unavailable: {e}")
    # 42 train chunks overfit after ~100 steps, so look at the best validation within the budget
    train(_cfg(real, tmp_path / "run", steps=120, batch_size=8, lr=3e-3, warmup=20, seq_len=128,
               eval_every=40, eval_batches=0, ckpt_every=1000, log_every=40))
    vals = [r["val_loss"] for r in _metrics(tmp_path / "run") if "val_loss" in r]
    assert min(vals[1:]) <= 0.7 * vals[0], vals


def _checkpoint_is_whole(out: Path) -> dict:
    """Recover as a resuming run would; the checkpoint found must load completely."""
    from safetensors.torch import load_file

    ck = recover_dir(out / "checkpoint")
    assert ck is not None
    state = json.loads((ck / "state.json").read_text())
    assert load_file(str(ck / "model.safetensors"))
    assert torch.load(ck / "optimizer.pt", weights_only=True)["state"]
    assert {p.name for p in ck.iterdir()} == {"model.safetensors", "optimizer.pt", "state.json"}
    return state


@pytest.mark.slow
def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path, shards):
    steps = 100
    ref = tmp_path / "ref"
    train(_cfg(shards, ref, steps=steps, ckpt_every=1000, eval_every=50))
    cfg = _cfg(shards, tmp_path / "run", steps=steps, ckpt_every=1, eval_every=50)  # a kill most likely
    args = [sys.executable, "-m", "melodia.train", "--data", cfg.data, "--out", cfg.out, "--preset", "tiny",
            "--steps", str(steps), "--batch-size", "4", "--lr", "3e-3", "--warmup", "5", "--eval-every", "50",
            "--eval-batches", "4", "--ckpt-every", "1", "--log-every", "1", "--threads", "1", "--device", "cpu"]
    out = Path(cfg.out)
    rnd = random.Random(0)
    killed_at = []
    for attempt in range(2):  # two kills at random moments, the second one in a resumed run
        proc = subprocess.Popen(args + (["--resume"] if attempt else []), env=_env(), cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + 120
            start = (killed_at[-1] if killed_at else 0) + 5
            while time.time() < deadline and proc.poll() is None:
                st = read_checkpoint_state(out) if (out / "checkpoint" / "state.json").exists() else None
                if st and st["step"] >= start:
                    break
                time.sleep(0.01)
            time.sleep(rnd.uniform(0.0, 0.2))
            assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.stdout.close()
        state = _checkpoint_is_whole(out)
        assert 0 < state["step"] < steps
        assert state["consumed"] == state["step"] * 4 and state["epoch"] * 96 + state["position"] == state["consumed"]
        killed_at.append(state["step"])
    assert killed_at[1] > killed_at[0]  # the resumed run went on from the first checkpoint
    model_dir = train(replace(cfg, resume=True, ckpt_every=50))
    final = read_checkpoint_state(out)
    assert final["step"] == steps and final["consumed"] == steps * 4
    got, want = _losses(out), _losses(ref)
    assert sorted(got) == list(range(1, steps + 1))
    assert got == want  # bit for bit: same data order, same RNG, same optimizer state
    assert [r["val_loss"] for r in _metrics(out) if "val_loss" in r] == \
        [r["val_loss"] for r in _metrics(ref) if "val_loss" in r]
    a, b = load_model_dir(model_dir)[0], load_model_dir(ref / "model")[0]
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_checkpoint_state_can_be_read_while_a_run_swaps_checkpoints(tmp_path):
    """A watcher (progress monitor, the kill test above) never sees a missing or half-written state."""
    import threading

    from melodia.model import make_temp_dir, replace_dir

    def write(step):
        tmp = make_temp_dir(tmp_path / "checkpoint")
        (tmp / "state.json").write_text(json.dumps({"step": step}), encoding="utf-8")
        replace_dir(tmp, tmp_path / "checkpoint")

    write(0)
    done = threading.Event()

    def writer():
        for step in range(1, 150):
            write(step)
        done.set()

    t = threading.Thread(target=writer)
    t.start()
    seen = []
    try:
        while not done.is_set():
            st = read_checkpoint_state(tmp_path)
            assert st is not None
            seen.append(st["step"])
    finally:
        t.join()
    assert seen == sorted(seen) and read_checkpoint_state(tmp_path)["step"] == 149
    assert read_checkpoint_state(tmp_path / "nothing") is None


def test_resume_refuses_other_settings_and_fresh_run_refuses_a_used_folder(tmp_path, shards):
    cfg = _cfg(shards, tmp_path / "run", steps=4, ckpt_every=2, eval_every=4)
    train(cfg)
    with pytest.raises(OutputExistsError):
        train(cfg)
    with pytest.raises(BadInputError, match="lr"):
        train(replace(cfg, resume=True, lr=1e-2))
    train(replace(cfg, resume=True, steps=6))  # more steps is allowed
    assert read_checkpoint_state(cfg.out)["step"] == 6


@pytest.mark.slow
def test_torchrun_two_processes_gloo(tmp_path, shards):
    if not shutil.which("torchrun") and not (Path(sys.executable).parent / "torchrun").exists():
        pytest.skip("torchrun not installed")
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    out = tmp_path / "ddp"
    r = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "melodia", "train",
                        "--data", str(shards), "--out", str(out), "--preset", "tiny", "--steps", "4",
                        "--batch-size", "2", "--lr", "3e-3", "--warmup", "1", "--eval-every", "2",
                        "--eval-batches", "2", "--ckpt-every", "2", "--log-every", "1", "--device", "cpu",
                        "--threads", "1", "--no-pack"],
                       env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert [p.parent for p in out.rglob("config.json")] == [out / "model"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    load_model_dir(out / "model")
    state = read_checkpoint_state(out)
    assert state["world_size"] == 2 and state["consumed"] == 4 * 2 * 2
    assert [r["step"] for r in _metrics(out) if "loss" in r] == [1, 2, 3, 4]  # one writer
    # the same global batch in one process gives the same losses (up to summation order;
    # unpacked, since packing arranges each process's half of the batch on its own)
    single = tmp_path / "single"
    train(_cfg(shards, single, steps=4, batch_size=4, warmup=1, eval_every=2, eval_batches=4, ckpt_every=2,
               pack=False))
    for (s1, a), (s2, b) in zip(sorted(_losses(out).items()), sorted(_losses(single).items())):
        assert s1 == s2 and a == pytest.approx(b, rel=1e-4)


def test_init_lora_grows_vocab_and_saves_a_merged_plain_model(tmp_path, shards):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    base_dir = train(_cfg(shards, tmp_path / "base", steps=10, eval_every=10, ckpt_every=10))
    base, _ = load_model_dir(base_dir)
    ft = synthetic_shards(tmp_path / "FT", n_train=24, n_valid=8, extra_moods=("epic",), seed=1)
    new_vocab = ShardData(ft).vocab_size
    assert new_vocab == base.config.vocab_size + 1
    out = tmp_path / "ft"
    model_dir = train(_cfg(ft, out, preset=None, init=str(base_dir), lora=4, steps=8, lr=1e-2,
                           eval_every=4, ckpt_every=4))
    assert {p.name for p in model_dir.iterdir()} >= {"config.json", "model.safetensors", "tokenizer.json",
                                                     "melodia.json"}
    assert not list(model_dir.glob("adapter_*"))
    keys = load_file(str(model_dir / "model.safetensors")).keys()
    assert not [k for k in keys if "lora" in k or "base_layer" in k or "token_adapter" in k]
    merged = AutoModelForCausalLM.from_pretrained(model_dir)
    assert type(merged).__name__ == "LlamaForCausalLM" and merged.config.vocab_size == new_vocab
    q0 = base.model.layers[0].self_attn.q_proj.weight
    assert not torch.allclose(merged.model.layers[0].self_attn.q_proj.weight, q0)  # the adapters are in
    emb_old = base.model.embed_tokens.weight
    assert torch.equal(merged.model.embed_tokens.weight[:10], emb_old[:10])  # untouched rows stay
    new_row = merged.model.embed_tokens.weight[-1]
    assert not torch.allclose(new_row, emb_old.mean(0))  # the new mood token was trained
    meta = json.loads((model_dir / "melodia.json").read_text())
    assert meta["training"]["lora"] == 4 and meta["training"]["new_token_ids"] == [new_vocab - 1]
    assert meta["moods"]["epic"] == new_vocab - 1
    # the LoRA run resumes too
    train(replace(_cfg(ft, out, preset=None, init=str(base_dir), lora=4, steps=10, lr=1e-2, eval_every=4,
                       ckpt_every=4), resume=True))
    assert read_checkpoint_state(out)["step"] == 10


def test_resize_initialises_new_rows_to_the_mean():
    m = build_model("tiny", 100, seed=0)
    mean = m.model.embed_tokens.weight.detach().mean(0).clone()
    assert resize_vocab(m, 103) == [100, 101, 102]
    w = m.model.embed_tokens.weight
    assert w.shape[0] == 103 and torch.allclose(w[100:], mean.expand(3, -1))
    assert m.lm_head.weight.data_ptr() == w.data_ptr() and m.config.vocab_size == 103


def test_patience_stops_early_and_keeps_the_best(tmp_path, shards):
    out = tmp_path / "run"
    train(_cfg(shards, out, steps=60, lr=3.0, warmup=0, eval_every=5, ckpt_every=100, patience=2))
    meta = json.loads((out / "model" / "melodia.json").read_text())
    vals = {r["step"]: r["val_loss"] for r in _metrics(out) if "val_loss" in r}
    best_step = min(vals, key=lambda s: vals[s])
    state = read_checkpoint_state(out)
    assert state["stopped_early"] and state["step"] < 60
    assert meta["metrics"]["best_step"] == best_step and meta["metrics"]["val_loss"] == pytest.approx(vals[best_step])


def test_write_shards_fixture_matches_the_documented_format(tmp_path):
    ids = control_ids(16, tags=())
    root = write_shards(tmp_path / "T", [{"tokens": [1, ids["mood_ids"]["sad"], ids["key_ids"]["any"], 5, 6, 2],
                                          "split": "train", "mood": "sad", "key": "any"}], ids, max_len=8)
    d = ShardData(root)
    assert d.vocab_size == ids["vocab_size"] and d.tokens("train", 0, 100).tolist()[-1] == 2


def test_packing_lays_chunks_end_to_end_with_their_own_controls(shards):
    data = ShardData(shards)
    ids = list(range(min(6, len(data.splits["train"]))))
    x1, y1 = data.batch("train", ids, 512, pack=False)
    xp, yp = data.batch("train", ids, 512, pack=True)
    assert xp.shape[0] < x1.shape[0]  # fewer rows
    # every learnable target of the unpacked batch is there once when packed, in order
    assert sorted(y1[y1 != IGNORE].tolist()) == sorted(yp[yp != IGNORE].tolist())
    assert (xp == data.bos_id).sum() == len(ids)  # each chunk keeps its BOS (and controls after it)
    # no target crosses from one chunk into the next: before each inner BOS the target is the
    # previous chunk's EOS, and at a BOS it is that chunk's own (unlearnt) MOOD token
    for r, c in zip(*np.nonzero(xp[:, 1:] == data.bos_id)):
        assert yp[r, c] == data.eos_id and yp[r, c + 1] == IGNORE


def test_inference_weights_load_without_transformers_and_match(tmp_path, shards):
    import torch

    from melodia.generate import LeanLlama
    from melodia.model import load_inference_weights

    model = build_model("tiny", json.loads((shards / "index.json").read_text())["vocab_size"], seed=3)
    save_model_dir(model, tmp_path / "m", shards / "tokenizer.json", {"note": "test"})
    hf, _ = load_model_dir(tmp_path / "m")
    light, meta = load_inference_weights(tmp_path / "m")
    assert meta["note"] == "test"
    ids = torch.tensor([[1, 5, 6, 7, 8, 9]])
    a, b = LeanLlama(hf, weights="fp32"), LeanLlama(light, weights="fp32")
    a.reset(1, 16)
    b.reset(1, 16)
    assert torch.allclose(a.forward(ids), b.forward(ids), atol=1e-5)
    code = ("import sys; from melodia.model import load_inference_weights; "
            f"load_inference_weights({str(tmp_path / 'm')!r}); assert 'transformers' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, env=_env())
    (tmp_path / "m" / "model.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(BadModelError, match="model.safetensors"):
        load_inference_weights(tmp_path / "m")


@pytest.mark.parametrize("lora", [None, "4"])
def test_finetune_on_a_tagged_midi_folder_in_one_command(tmp_path, tiny_model_dir, lora):
    from conftest import make_piece

    from melodia.cli import main
    from melodia.tokenizer import MelodiaTokenizer

    src = tmp_path / "mine"
    for i in range(11):
        make_piece(src / "lofi" / f"a{i}.mid", key_pc=i % 12, seed=i, qpm=70)
        make_piece(src / "march" / f"b{i}.mid", key_pc=(i * 5) % 12, seed=100 + i, qpm=120, meter=(2, 4))
    args = ["train", "--corpus", str(src), "--from", str(tiny_model_dir), "--out", str(tmp_path / "run"),
            "--steps", "6", "--batch-size", "4", "--threads", "1", "--log-every", "100"]
    if lora:
        args += ["--lora", lora]
    assert main(args) == 0
    model_dir = tmp_path / "run" / "model"
    tok = MelodiaTokenizer.load(model_dir / "tokenizer.json")
    base = MelodiaTokenizer.load(tiny_model_dir / "tokenizer.json")
    assert {"TAG_lofi", "TAG_march"} <= set(tok.controls)
    assert tok.controls[: len(base.controls)] == base.controls  # old ids keep their meaning
    model, meta = load_model_dir(model_dir)
    assert model.config.vocab_size >= tok.vocab_size
    index = json.loads((tmp_path / "run" / "tokens" / "index.json").read_text())
    assert index["splits"]["valid"]["chunks"] > 0 and len({c["piece"] for c in index["chunks"]}) == 22
    from melodia.api import Composer

    piece = Composer.load(model_dir).generate(mood="calm", tags=["lofi"], bars=2, seed=1)[0]
    assert piece.bars == 2 and piece.notes
    from melodia.corpus import ensemble_programs, load_manifest

    mine = ensemble_programs(load_manifest(tmp_path / "run" / "corpus"))  # the folder's own ensemble plays
    assert meta.get("default_programs") == (mine or json.loads((tiny_model_dir / "melodia.json").read_text())
                                            .get("default_programs"))
    assert "tempo_unknown" not in meta  # its 120 qpm marches are real tempos


def test_tempo_unknown_token_needs_most_of_the_120_bin_tempo_less():
    from melodia.corpus import ensemble_programs, tempo_unknown_token

    bins = {"Tempo_115.93": 115.93, "Tempo_122.99": 122.99, "Tempo_130.48": 130.48}
    folk = [{"tempo": 120.0, "tempo_known": False}] * 3 + [{"tempo": 121.0, "tempo_known": True}]
    assert tempo_unknown_token(folk, bins) == {"token": "Tempo_122.99", "pieces": 4, "tempo_less": 3}
    real = [{"tempo": 120.0, "tempo_known": False}, {"tempo": 124.0, "tempo_known": True},
            {"tempo": 120.0, "tempo_known": True}, {"tempo": 90.0, "tempo_known": True}]
    assert tempo_unknown_token(real, bins) == {"token": None, "pieces": 3, "tempo_less": 1}
    assert ensemble_programs([{"programs": [0]}, {"programs": [0, 33]}, {"programs": [0, 1, 2]},
                              {"programs": [0, 33]}]) == [0, 33]
    assert ensemble_programs([{"programs": [0]}]) is None


def test_model_defaults_come_from_the_corpus_then_the_base_model(small_shards, monkeypatch, tmp_path):
    from melodia.corpus import ensemble_programs, load_manifest
    from melodia.train import ShardData, model_defaults

    data = ShardData(small_shards)
    rows = load_manifest(data.index["corpus"])
    base = {"default_programs": [0, 1, 2], "tempo_unknown": "Tempo_122.99"}
    got = model_defaults(data, base)
    # its corpus has a multi-part piece, and a real 120 qpm piece (qpm 70 + 10 * 5): both its own;
    # its POP909 song is style pop, whose ensemble is POP909's three parts
    assert got == {"default_programs": ensemble_programs(rows), "style_programs": {"pop": [0, 1, 2]}}
    assert got["default_programs"] != [0, 1, 2]
    # a fine-tune keeps the base model's other styles' ensembles
    assert model_defaults(data, {**base, "style_programs": {"folk": [0]}})["style_programs"] == {
        "folk": [0], "pop": [0, 1, 2]}
    assert any(r["tempo_known"] and 119 < r["tempo"] < 127 for r in rows)
    monkeypatch.setitem(data.index, "corpus", str(tmp_path / "gone"))  # shards moved without their corpus
    assert model_defaults(data, base) == base
    assert model_defaults(data, {"tempo_unknown": "Tempo_7"}) == {}  # a token the vocabulary lacks
    assert model_defaults(data) == {}
