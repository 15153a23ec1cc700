#!/usr/bin/env python3
"""Kill melodia's long commands at random moments, re-run them, and check nothing was lost.

For each of ``corpus build``, ``tokenize`` and ``train`` (tiny preset): one uninterrupted
reference run, then ``--faults`` runs that are SIGKILLed at a random moment and re-run to the
end (``train`` with ``--resume``). A run counts as *lost* if the re-run fails or its result
differs from the reference: the manifest rows and pieces, the shards' bytes and index, or
the trained weights (bit for bit) and validation curve. The last line is ``N faults injected, M lost``.

Usage: python scripts/fault_inject.py [--faults 3] [--seed 0]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def melodia(*args: str) -> list[str]:
    return [sys.executable, "-m", "melodia", *args]


def run_killed(cmd: list[str], delay: float) -> bool:
    """Start ``cmd``, SIGKILL it after ``delay`` s; True if it was still running (a real fault)."""
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        p.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        return True


def run(cmd: list[str]) -> bool:
    return subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE).returncode == 0


def digest_corpus(d: Path) -> str:
    rows = [json.loads(x) for x in (d / "manifest.jsonl").read_text().splitlines() if x.strip()]
    h = hashlib.sha256(json.dumps(rows, sort_keys=True).encode())
    for r in rows:
        h.update((d / r["file"]).read_bytes())
    return h.hexdigest()


def digest_shards(d: Path) -> str:
    index = json.loads((d / "index.json").read_text())
    index.pop("corpus", None)
    h = hashlib.sha256(json.dumps(index, sort_keys=True).encode())
    for s in index["shards"]:
        h.update((d / s["file"]).read_bytes())
    h.update((d / "tokenizer.json").read_bytes())
    return h.hexdigest()


def digest_run(d: Path) -> str:
    """The final weights (bit for bit) and the validation curve. The logged train ``loss`` is a
    running mean since the previous progress line, and a resumed run starts a new mean at its
    checkpoint, so that number is left out; the weights show the training itself is identical."""
    h = hashlib.sha256((d / "model" / "model.safetensors").read_bytes())
    rows = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines() if x.strip()]
    h.update(json.dumps([(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]).encode())
    return h.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--faults", type=int, default=3, help="kills per command (default 3)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rnd = random.Random(a.seed)
    from conftest import POP909, make_piece

    injected = lost = 0
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = tmp / "midi"
        shutil.copytree(POP909, src / "pop909")
        for i in range(40):
            make_piece(src / "made" / f"p{i:02d}.mid", key_pc=i % 12, minor=i % 3 == 0, seed=i, bars=16)
        env_cache = {"MELODIA_CACHE": str(tmp / "cache")}
        os.environ.update(env_cache)
        train_args = ["--preset", "tiny", "--steps", "30", "--batch-size", "4", "--seq-len", "256",
                      "--ckpt-every", "3", "--eval-every", "10", "--eval-batches", "2", "--threads", "1",
                      "--log-every", "100"]
        jobs = {
            "corpus build": (lambda out: melodia("corpus", "build", str(src), "--out", str(out), "--quiet"),
                             None, digest_corpus),
            "tokenize": (lambda out: melodia("tokenize", "--corpus", str(tmp / "ref-corpus build"), "--out", str(out),
                                             "--vocab", "700", "--max-len", "512", "--quiet"), None, digest_shards),
            "train": (lambda out: melodia("train", "--data", str(tmp / "ref-tokenize"), "--out", str(out), *train_args),
                      lambda out: melodia("train", "--data", str(tmp / "ref-tokenize"), "--out", str(out), "--resume",
                                          *train_args), digest_run),
        }
        for name, (first, again, digest) in jobs.items():
            ref = tmp / f"ref-{name}"
            t0 = time.time()
            if not run(first(ref)):
                raise SystemExit(f"{name}: the uninterrupted reference run failed")
            took = time.time() - t0
            want = digest(ref)
            print(f"{name}: reference {took:.1f} s", flush=True)
            for k in range(a.faults):
                out = tmp / f"{name}-{k}"
                delay = rnd.uniform(0.1, 0.9) * took
                if run_killed(first(out), delay):
                    injected += 1
                ok = run((again or first)(out))
                same = ok and digest(out) == want
                lost += not same
                print(f"  kill at {delay:5.1f} s → re-run {'ok' if ok else 'FAILED'}, "
                      f"{'identical' if same else 'DIFFERENT'}", flush=True)
    print(f"{injected} faults injected, {lost} lost")


if __name__ == "__main__":
    main()
