"""Shared fixtures: real MIDI from tests/data (POP909 excerpt, MIT) and small made-up pieces."""
from __future__ import annotations

import contextlib
import shutil
import threading
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
POP909 = DATA / "pop909"
SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(path: Path, name: str | None = None):
    """A script (e.g. ``SCRIPTS / "train_default.py"``) imported as a fresh module, without
    running its ``main()``. Example: ``td = load_script(SCRIPTS / "train_default.py")``"""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name or path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def make_piece(path: Path, key_pc: int = 0, minor: bool = False, bars: int = 8, qpm: float = 120.0,
               meter: tuple[int, int] = (4, 4), seed: int = 0, velocity: int = 90) -> Path:
    """Write a small two-track piece (melody on program 0, chords on program 1)."""
    import random

    import symusic

    rnd = random.Random(seed)
    tpq = 480
    s = symusic.Score(tpq)
    s.tempos.append(symusic.Tempo(0, qpm=qpm))
    s.time_signatures.append(symusic.TimeSignature(0, meter[0], meter[1]))
    scale = [0, 2, 3, 5, 7, 8, 10] if minor else [0, 2, 4, 5, 7, 9, 11]
    mel = symusic.Track("melody", program=0)
    acc = symusic.Track("chords", program=1)
    beat = tpq * 4 // meter[1]
    bar_len = beat * meter[0]
    for b in range(bars):
        t0 = b * bar_len
        root = scale[(b * 3) % 7]
        for deg in (0, 2, 4):
            p = 48 + key_pc + root + (scale[(scale.index(root) + deg) % 7] - root) % 12
            acc.notes.append(symusic.Note(t0, bar_len, p, velocity - 20))
        t = t0
        while t < t0 + bar_len:
            d = rnd.choice([beat // 2, beat, beat])
            d = min(d, t0 + bar_len - t)
            acc_p = 60 + key_pc + scale[rnd.randrange(7)]
            mel.notes.append(symusic.Note(t, d, acc_p, velocity))
            t += d
    s.tracks.append(mel)
    s.tracks.append(acc)
    path.parent.mkdir(parents=True, exist_ok=True)
    s.dump_midi(str(path))
    return path


@pytest.fixture
def pop909_dir(tmp_path: Path) -> Path:
    """A copy of the 4-song POP909 excerpt in POP909's own layout."""
    dst = tmp_path / "pop909"
    shutil.copytree(POP909, dst)
    return dst


@pytest.fixture(scope="session")
def small_shards(tmp_path_factory) -> Path:
    """Corpus + shards built from real MIDI (the POP909 excerpt and made-up pieces)."""
    from melodia.corpus import build_corpus
    from melodia.shards import tokenize_corpus

    root = tmp_path_factory.mktemp("shards")
    src = root / "midi"
    for i in range(12):
        make_piece(src / f"p{i:02d}.mid", key_pc=i % 12, minor=i % 2 == 1, seed=i, qpm=70 + 10 * i)
    build_corpus([str(src), str(POP909)], root / "C", workers=1, progress=False)
    tokenize_corpus(root / "C", root / "T", vocab_size=800, max_len=512, workers=1, progress=False)
    return root / "T"


@pytest.fixture(scope="session")
def tiny_model_dir(small_shards, tmp_path_factory) -> Path:
    """A tiny model directory (config, safetensors, tokenizer.json, melodia.json) for the API,
    server and DAW tests: the "tiny" preset trained 40 short steps on ``small_shards`` (a few
    seconds on a CPU), so its output is less random than fresh weights."""
    from melodia.train import TrainConfig, train

    out = tmp_path_factory.mktemp("tiny_model") / "run"
    return train(TrainConfig(data=str(small_shards), out=str(out), preset="tiny", steps=40, batch_size=4,
                             seq_len=256, lr=3e-3, warmup=5, eval_every=40, eval_batches=2, ckpt_every=1000,
                             log_every=1000, seed=0, threads=1))


@pytest.fixture(scope="module")
def one_torch_thread():
    """Batch-1 sampling of a tiny model is latency-bound: a second intra-op thread only adds
    synchronisation, which costs 10-100x on a busy 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def composer(tiny_model_dir):
    """A Composer over the tiny test model, on the CPU."""
    from melodia import Composer

    return Composer.load(tiny_model_dir, device="cpu")


@contextlib.contextmanager
def running_server(composer, one_thread: bool = True, **limits):
    """``melodia serve`` for ``composer`` on a free loopback port, in a thread, for a test: yields
    the server (``server.url``), then shuts it down. ``one_thread``: torch runs on one CPU thread
    meanwhile (batch-1 sampling is latency-bound)."""
    import torch

    from melodia.serve import make_server

    threads = torch.get_num_threads()
    if one_thread:
        torch.set_num_threads(1)
    srv = make_server(composer, port=0, quiet=True, **limits)
    th = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    th.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        th.join(10)
        torch.set_num_threads(threads)
