#!/usr/bin/env python
"""Loss match: the same training run in fp32 and in bf16 autocast reaches the same validation loss.

Trains ``--preset`` (tiny) for ``--steps`` (200) steps from the same seed, on the same batches,
twice with ``melodia train``'s own loop (melodia/train/loop.py): ``--precision fp32`` and the
other path (``--other``: bf16 by default, i.e. CPU or CUDA bf16 autocast with fp32 master
weights; on a CPU without bf16 units it runs, just slower). Then it validates both final models
on the same validation batches (``--eval-batches``) with the same code and prints both losses, their relative difference
and tokens/s; it passes when they are within ``--tolerance`` (1%).

Shards from POP909 (as in docs/benchmarks.md):

    melodia corpus build data/pop909 --out /tmp/h6/C
    melodia tokenize --corpus /tmp/h6/C --out /tmp/h6/T --tokenizer melodia/weights/default/tokenizer.json
    python scripts/check_precision.py --data /tmp/h6/T
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def run(args, precision: str, out: Path) -> tuple[float, float, float]:
    """(final validation loss, best validation loss, tokens/s of the run)."""
    from melodia.train import TrainConfig, train

    cfg = TrainConfig(data=args.data, out=str(out), preset=args.preset, steps=args.steps, batch_size=args.batch_size,
                      seq_len=args.seq_len, lr=args.lr, warmup=args.steps // 10, eval_every=args.steps,
                      eval_batches=args.eval_batches, ckpt_every=10 * args.steps, log_every=args.steps // 10, seed=args.seed,
                      threads=args.threads, precision=precision, device=args.device)
    t = time.perf_counter()
    train(cfg)
    wall = time.perf_counter() - t
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    vals = [r["val_loss"] for r in rows if "val_loss" in r]
    tokens = max(r.get("tokens", 0) for r in rows)
    return vals[-1], min(vals), tokens / wall


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="token shards with a valid split")
    ap.add_argument("--preset", default="tiny", choices=["tiny", "small"])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--eval-batches", type=int, default=20, help="validation batches (0: the whole valid split)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--other", default="bf16", choices=["bf16", "auto"], help="the path compared with fp32")
    ap.add_argument("--tolerance", type=float, default=0.01)
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        results = {p: run(args, p, Path(tmp) / p) for p in ("fp32", args.other)}
    a, b = results["fp32"], results[args.other]
    diff = abs(b[0] - a[0]) / a[0]
    print(f"\ncheck_precision: preset {args.preset}, {args.steps} steps, batch {args.batch_size} x {args.seq_len}, "
          f"seed {args.seed}, {args.device}")
    for name, (final, best, tps) in results.items():
        print(f"  {name:>5}: validation loss {final:.4f} (best {best:.4f}), {tps:,.0f} tokens/s over the run")
    ok = diff <= args.tolerance
    print(f"relative difference {diff:.2%} (tolerance {args.tolerance:.0%}): {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
