"""Training throughput: melodia's loop against the plain recipe, same model and same batches.

    python scripts/bench_train.py --preset small                  # synthetic shards, this machine
    python scripts/bench_train.py --preset tiny --precision bf16  # force the bf16 path as "best"
    python scripts/bench_train.py --preset small --compile        # try torch.compile (CPU: inductor C++)
    python scripts/bench_train.py --preset base --data tokens/ --compile

Three recipes, alternating in every round: "fp32" is ``melodia train``'s step in fp32 eager;
"best" is the path ``melodia train --precision auto`` takes here (melodia/model/precision.py: bf16
autocast with fp32 master weights where the start-up probe finds bf16 matmuls faster, else fp32;
``--precision`` forces one; ``--compile`` compiles it, its compile time reported apart); "plain"
is the plain recipe below. "ours" is exactly what ``melodia train`` does per step (melodia/train/loop.py: SDPA attention, bf16
autocast where chosen, fused AdamW, our summed loss, clipping, optional ``torch.compile``). "plain"
is the recipe ``transformers.Trainer`` gives with its historical defaults: fp32, eager
attention, AdamW without foreach/fused kernels, the model's own ``labels=`` loss, clipping at 1.0.
(Trainer in transformers 5 with torch >= 2.8 actually defaults to SDPA and fused AdamW; pass
``--plain-attn sdpa --plain-optim fused`` to compare against that.) Both start from the same
weights and see the same batches; the rounds alternate so that a busy machine slows both
alike, and the median round counts.

Output: one line per recipe (tokens/s counts target tokens, padding excluded; MFU = achieved
model FLOPs / peak FLOPs, FLOPs per token = 6·parameters + 12·layers·d_model·seq_len), and the
ratio ours/plain as the last line. The peak is the device's bf16 dense peak on known GPUs,
and a measured fp32 matmul rate on a CPU (so CPU MFU means "share of what this CPU's matmul
reaches"); ``--peak-tflops`` overrides it.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GPU_PEAK_TFLOPS = {  # dense bf16 tensor-core peak
    "H200": 989.0, "H100": 989.0, "H800": 989.0, "GH200": 989.0, "A100": 312.0, "A800": 312.0,
    "L40S": 362.0, "L40": 181.0, "L4": 121.0, "A10G": 125.0, "A10": 125.0, "RTX 4090": 165.0, "RTX 3090": 71.0,
    "V100": 125.0, "T4": 65.0,
}


def synthetic_shards(root: Path, vocab: int, max_len: int, chunks: int, seed: int = 0) -> Path:
    """Random tokens in the documented shard layout (content does not matter for speed)."""
    rng = np.random.default_rng(seed)
    base = vocab - 30
    mood_ids = {m: base + i for i, m in enumerate(["happy", "tense", "sad", "calm", "any"])}
    key_ids = {f"k{i}": base + 5 + i for i in range(24)}
    key_ids["any"] = base + 29
    arrays, index_chunks, off = [], [], 0
    for n in range(chunks):
        length = int(rng.integers(max_len // 2, max_len + 1))
        toks = rng.integers(4, base, size=length).astype(np.uint16)
        toks[0], toks[1], toks[2], toks[-1] = 1, base + n % 4, base + 5 + n % 24, 2
        arrays.append(toks)
        index_chunks.append({"shard": 0, "offset": off, "length": length, "piece": f"p{n}",
                             "split": "train", "mood": "happy", "key": "k0", "tags": []})
        off += length
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / "train-000.npy", np.concatenate(arrays))
    (root / "index.json").write_text(json.dumps({
        "format": 1, "vocab_size": vocab, "max_len": max_len, "pad_id": 0, "bos_id": 1, "eos_id": 2,
        "mood_ids": mood_ids, "key_ids": key_ids, "tag_ids": {},
        "shards": [{"file": "train-000.npy", "split": "train", "tokens": off}], "chunks": index_chunks,
        "splits": {"train": {"chunks": chunks, "tokens": off}}}))
    (root / "tokenizer.json").write_text("{}")
    return root


def cpu_peak_flops(threads: int) -> float:
    """fp32 matmul FLOP/s this CPU reaches with the threads torch uses."""
    import torch

    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(4):
            a @ b
        best = max(best, 4 * 2 * 1024 ** 3 / (time.perf_counter() - t))
    return best


def device_peak_flops(device, override: float | None) -> tuple[float, str]:
    import torch

    if override:
        return override * 1e12, "given"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, tf in GPU_PEAK_TFLOPS.items():
            if key in name:
                return tf * 1e12, f"{name} bf16 dense"
        return 0.0, f"{name}: unknown peak (pass --peak-tflops)"
    return cpu_peak_flops(torch.get_num_threads()), f"measured fp32 matmul, {torch.get_num_threads()} threads"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="small", choices=["tiny", "small", "base", "large"])
    ap.add_argument("--data", help="token shards (default: synthetic ones)")
    ap.add_argument("--vocab", type=int, default=3500, help="vocabulary of the synthetic shards")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--steps", type=int, default=8, help="timed steps per round and recipe")
    ap.add_argument("--warmup-steps", type=int, default=2, help="untimed steps before each round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--compile", action="store_true", help="torch.compile the best path (CUDA; CPU: inductor C++)")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                    help="the best path's precision (default: what melodia train's auto picks)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--plain-attn", default="eager", choices=["eager", "sdpa"])
    ap.add_argument("--plain-optim", default="unfused", choices=["unfused", "foreach", "fused"])
    ap.add_argument("--peak-tflops", type=float, help="peak of this device, for MFU")
    args = ap.parse_args(argv)

    import torch

    from melodia.model import build_model, count_parameters
    from melodia.model.precision import choose_precision
    from melodia.train import (
        IGNORE,
        ShardData,
        TrainConfig,
        TrainStream,
        autocast_for,
        conditioning_dropout,
        make_optimizer,
        summed_loss,
    )

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.data) if args.data else synthetic_shards(Path(tmp) / "T", args.vocab, args.seq_len + 1, 256)
        data = ShardData(root)
        cfg = TrainConfig(data=str(root), out=tmp, preset=args.preset, batch_size=args.batch_size,
                          seq_len=args.seq_len)
        stream = TrainStream(len(data.splits["train"]), seed=0)
        n_batches = args.warmup_steps + args.steps
        batches = []
        for s in range(n_batches):
            drop = conditioning_dropout(np.random.default_rng([0, 1, s]), args.batch_size, cfg.cond_dropout)
            x, y = data.batch("train", stream.take(s * args.batch_size, args.batch_size), args.seq_len, 8, drop)
            labels = np.concatenate([np.full((len(y), 1), IGNORE), y[:, :-1]], axis=1)  # HF shifts inside
            batches.append(tuple(torch.from_numpy(a).to(device) for a in (x, y, labels)))
        real_tokens = [int((b[1] != IGNORE).sum()) for b in batches]
        mean_len = statistics.mean(b[0].shape[1] for b in batches)

        fp32 = build_model(args.preset, data.vocab_size, attn_implementation="sdpa", seed=0).to(device)
        plain = build_model(args.preset, data.vocab_size, attn_implementation=args.plain_attn).to(device)
        plain.load_state_dict(fp32.state_dict())
        precision, why = choose_precision(args.precision, device, fp32.config.hidden_size)
        same = precision == "fp32" and not args.compile  # the best path is fp32 eager itself
        best = fp32
        if not same:
            best = build_model(args.preset, data.vocab_size, attn_implementation="sdpa").to(device)
            best.load_state_dict(fp32.state_dict())
        models = {"fp32": fp32, "plain": plain, **({} if same else {"best": best})}
        for m in models.values():
            m.train()
        opts = {"fp32": make_optimizer(fp32, cfg, device.type)}
        if not same:
            opts["best"] = make_optimizer(best, cfg, device.type)
        kw = {"unfused": {"foreach": False, "fused": False}, "foreach": {"foreach": True},
              "fused": {"fused": True}}[args.plain_optim]
        opts["plain"] = torch.optim.AdamW(plain.parameters(), lr=cfg.lr, weight_decay=0.0, **kw)
        run_best = torch.compile(best) if args.compile else best
        amps = {"fp32": autocast_for(device, "fp32"), "best": autocast_for(device, precision)}

        def ours_step(name: str, model, run):
            def step(b, n_tok):
                x, y, _ = b
                (summed_loss(run, x, y, amps[name]) / n_tok).backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opts[name].step()
                opts[name].zero_grad(set_to_none=True)
            return step

        def step_plain(b, n_tok):
            x, _, labels = b
            plain(input_ids=x, labels=labels).loss.backward()
            torch.nn.utils.clip_grad_norm_(plain.parameters(), 1.0)
            opts["plain"].step()
            opts["plain"].zero_grad(set_to_none=True)

        steps = {"fp32": ours_step("fp32", fp32, fp32), "plain": step_plain}
        if not same:
            steps["best"] = ours_step("best", best, run_best)

        def sync():
            if device.type == "cuda":
                torch.cuda.synchronize()

        def round_(fn) -> float:
            for i in range(args.warmup_steps):
                fn(batches[i], real_tokens[i])
            sync()
            t = time.perf_counter()
            for i in range(args.warmup_steps, n_batches):
                fn(batches[i], real_tokens[i])
            sync()
            return sum(real_tokens[args.warmup_steps:]) / (time.perf_counter() - t)

        n_params = count_parameters(fp32)
        cfg_m = fp32.config
        flops_per_token = 6 * n_params + 12 * cfg_m.num_hidden_layers * cfg_m.hidden_size * mean_len
        peak, peak_src = device_peak_flops(device, args.peak_tflops)
        print(f"bench_train: preset {args.preset} ({n_params / 1e6:.2f}M parameters, vocab {data.vocab_size}), "
              f"batch {args.batch_size} x seq {args.seq_len} (mean padded {mean_len:.0f}), {device.type}"
              f"{'' if device.type == 'cuda' else f', {torch.get_num_threads()} threads'}, "
              f"{args.rounds} rounds x {args.steps} steps; peak {peak / 1e12:.2f} TFLOP/s ({peak_src})")
        print(f"best path: {precision}{', compiled' if args.compile else ''} ({why})", flush=True)
        compile_s = None
        if args.compile:  # the first call compiles: timed apart, then the rounds run warm
            t = time.perf_counter()
            steps["best"](batches[0], real_tokens[0])
            sync()
            compile_s = time.perf_counter() - t
        results = {name: [] for name in steps}
        names = list(steps)
        for r in range(args.rounds):
            for name in (names if r % 2 == 0 else names[::-1]):
                results[name].append(round_(steps[name]))
        med = {k: statistics.median(v) for k, v in results.items()}
        opt_kind = "fused" if opts["fp32"].defaults.get("fused") else "foreach"
        descs = {"plain": f"HF LlamaForCausalLM, fp32, {args.plain_attn} attention, {args.plain_optim} AdamW",
                 "fp32": f"melodia train's step, SDPA, fp32 eager, {opt_kind} AdamW",
                 "best": f"melodia train's step, SDPA, {precision}"
                         + (" autocast (fp32 master weights)" if precision == "bf16" else "")
                         + f", {opt_kind} AdamW" + (", compiled" if args.compile else "")}
        for name in ("plain", "fp32", "best"):
            if name not in med:
                print(f"{name:>5}: = fp32 (the probe keeps fp32 on this CPU: {why})")
                continue
            mfu = f"{med[name] * flops_per_token / peak:.1%}" if peak else "n/a"
            print(f"{name:>5}: {med[name]:12,.0f} tokens/s  MFU {mfu:>6}  ({descs[name]}; rounds: "
                  f"{', '.join(f'{v:,.0f}' for v in results[name])})")
        b = med.get("best", med["fp32"])
        if compile_s is not None:
            tok_step = statistics.mean(real_tokens)
            gain = tok_step / med["fp32"] - tok_step / b  # seconds saved per step
            pays = f"pays for itself after {compile_s / gain:,.0f} steps" if gain > 0 else "never pays for itself"
            print(f"compile: first step {compile_s:.1f} s; {pays} (vs fp32 eager)")
        print(f"ratio best/fp32: {b / med['fp32']:.2f}x; fp32/plain: {med['fp32'] / med['plain']:.2f}x")
        print(f"ratio ours/plain: {b / med['plain']:.2f}x")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
