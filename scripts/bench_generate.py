#!/usr/bin/env python
"""Benchmark melodia's sampling loop against ``transformers``' ``model.generate()``.

Same model, same machine, one process. By default the model is the shipped one
(``melodia/weights/default``; ``--model DIR`` for another); ``--presets tiny small`` uses
random-initialised weights of those presets' shapes instead (the vocabulary then is a BPE
tokenizer trained here to ~4k ids on tests/data MIDI and made-up pieces). The grammar mask is on
for both sides (``model.generate`` gets it as a ``LogitsProcessor`` running the same grammar),
top-p 0.95, temperature 1. Only public methods are used: ours is ``Generator.generate``.

* ms per token at batch 1: ours writes ``--bars`` bars (melody + accompaniment) and HF
  generates the same number of new tokens;
* row-steps per second at batch ``--batch``: ours writes ``--batch`` variations of ``--bars``
  bars (the loop steps until the longest row ends), HF runs the same number of steps.

``--rounds`` rounds alternate the two sides (ours first in even rounds, HF first in odd ones), so
a busy machine slows both alike; the median round counts. The ratio (HF ms/token ÷ ours, batch
1) is printed last. The machine this runs on is often shared: compare ratios, not times.

``--busy`` (issue 22) measures instead how a call behaves beside a competing CPU-bound process
(one core spinning pure Python): the Python API (``Composer.load(threads=T)`` once, then
``generate`` 8 bars per call) against the CLI (``melodia generate`` in a fresh subprocess per
call; its per-call seconds are its ``Composer.generate`` call, timed inside that subprocess, so
the CLI's start-up — interpreter, imports, model load — and the file it writes are left out and
shown apart), at 1 and 2 torch threads, calls alternating API / CLI.

Usage:
    python scripts/bench_generate.py                      # shipped model, 2 threads, 5 rounds
    python scripts/bench_generate.py --presets small --threads 1
    python scripts/bench_generate.py --busy --calls 6     # API vs CLI beside a busy neighbour
"""
from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # tests/pieces.py: the made-up pieces the generation tests use too

MOODS = ("happy", "tense", "sad", "calm")


def build_tokenizer(vocab: int):
    from pieces import made_up_piece

    from melodia.tokenizer import MelodiaTokenizer

    tok = MelodiaTokenizer.new()
    tmp = Path(tempfile.mkdtemp(prefix="melodia-bench-"))
    files = [Path(p) for p in sorted(glob.glob(str(ROOT / "tests" / "data" / "**" / "*.mid"), recursive=True))]
    meters = [(4, 4), (3, 4), (6, 8), (2, 4)]
    for i in range(48):
        p = tmp / f"made-{i:02d}.mid"
        made_up_piece(i, *meters[i % 4], bars=16).dump_midi(str(p))
        files.append(p)
    tok.train_bpe(files=files, vocab_size=vocab)
    return tok


class GrammarProcessor:
    """The generator's grammar as a ``transformers`` LogitsProcessor (one state per row)."""

    def __init__(self, grammar, states, prompt_len: int):
        self.g, self.states, self.seen = grammar, states, prompt_len

    def __call__(self, input_ids, scores):
        import torch

        if input_ids.shape[1] > self.seen:
            for st, i in zip(self.states, input_ids[:, -1].tolist()):
                if not st.done:
                    self.g.advance(st, self.g.vocab.seqs[i])
        self.seen = input_ids.shape[1]
        mask = torch.stack([self.g.mask(st) for st in self.states])
        if mask.shape[1] < scores.shape[1]:
            mask = torch.nn.functional.pad(mask, (0, scores.shape[1] - mask.shape[1]))
        return scores.masked_fill(~mask, float("-inf"))


def hf_generate(model, gen, cfg, new_tokens: int, grammar: bool = True) -> tuple[float, float]:
    """(wall, CPU) seconds for ``model.generate`` to sample exactly ``new_tokens`` per row."""
    import torch
    from transformers import LogitsProcessorList

    # a grammar for many bars, so that EOS never becomes the only legal token early
    g, cond, _, states = gen.prepare(dataclasses.replace(cfg, bars=64))
    ids = torch.tensor([cond] * cfg.n)
    procs = LogitsProcessorList([GrammarProcessor(g, states, ids.shape[1])]) if grammar else None
    torch.manual_seed(cfg.seed or 0)
    t, c = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, do_sample=True, top_p=cfg.top_p, top_k=0,
                             temperature=cfg.temperature, logits_processor=procs, pad_token_id=0,
                             eos_token_id=2)
    dt, dc = time.perf_counter() - t, time.process_time() - c
    assert out.shape[1] - ids.shape[1] == new_tokens, (out.shape, new_tokens)
    return dt, dc


def ours_generate(gen, cfg) -> tuple[float, float, int]:
    """(wall, CPU) seconds and the loop's steps (new ids of the longest row) for one
    ``gen.generate(cfg)``."""
    t, cpu = time.perf_counter(), time.process_time()
    rows = gen.generate(cfg)
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    prefix = len(gen.shown_prefix(cfg))
    return wall, cpu, max(len(r) for r in rows) - prefix


def load_models(args, tok_cache: dict) -> list[tuple[str, object, object, dict]]:
    """``(name, HF model fp32, tokenizer, melodia.json)`` for each model to measure."""
    from melodia.model import DEFAULT_MODEL_DIR, build_model, load_model_dir
    from melodia.tokenizer import MelodiaTokenizer

    if args.presets:
        if "tok" not in tok_cache:
            t0 = time.perf_counter()
            tok_cache["tok"] = build_tokenizer(args.vocab)
            print(f"tokenizer: {tok_cache['tok'].vocab_size} ids in {time.perf_counter() - t0:.1f} s", flush=True)
        tok = tok_cache["tok"]
        return [(p, build_model(p, max(tok.vocab_size, args.vocab), seed=0).eval(), tok, {}) for p in args.presets]
    path = Path(args.model) if args.model else DEFAULT_MODEL_DIR
    model, meta = load_model_dir(path, dtype="float32")
    return [(meta.get("preset") or path.name, model.eval(), MelodiaTokenizer.load(path / "tokenizer.json"), meta)]


def bench_speed(args) -> int:
    import torch

    torch.set_num_threads(args.threads)
    from melodia.generate import GenerationConfig, Generator

    print(f"bench_generate: torch {torch.__version__}, {args.threads} thread(s), {args.rounds} alternating rounds, "
          f"{args.bars} bars, batch 1 and {args.batch}", flush=True)
    ratio = None
    for name, model, tok, meta in load_models(args, {}):
        n_params = sum(p.numel() for p in model.parameters())
        t = time.perf_counter()
        gen = Generator(model, tok, weights=args.weights, default_programs=meta.get("default_programs"),
                        tempo_unknown=meta.get("tempo_unknown"))
        setup = time.perf_counter() - t
        cfg = GenerationConfig(bars=args.bars, mood="happy", key="C major", tempo=110, seed=1, n=1)
        cold, _, k = ours_generate(gen, cfg)  # the first call builds this meter's grammar tables
        res: dict[str, list] = {"ours": [], "hf": [], "ours_b": [], "hf_b": []}
        for r in range(args.rounds):
            cb = GenerationConfig(bars=args.bars, mood=MOODS[r % 4], tempo=110, seed=1 + r, n=args.batch)

            for side in (("ours", "hf") if r % 2 == 0 else ("hf", "ours")):
                if side == "ours":
                    wall, cpu, k2 = ours_generate(gen, cfg)
                    assert k2 == k, "same seed, same ids"
                    res["ours"].append((wall / k * 1e3, cpu / k * 1e3))
                    wall, _, steps = ours_generate(gen, cb)
                    res["ours_b"].append((args.batch * steps / wall, steps, cb))
                else:
                    wall, cpu = hf_generate(model, gen, cfg, k)
                    res["hf"].append((wall / k * 1e3, cpu / k * 1e3))
            _, steps, cb_r = res["ours_b"][-1]
            wall, _ = hf_generate(model, gen, cb_r, steps)
            res["hf_b"].append(args.batch * steps / wall)
        med = {s: statistics.median(w for w, _ in res[s]) for s in ("ours", "hf")}
        med_cpu = {s: statistics.median(c for _, c in res[s]) for s in ("ours", "hf")}
        per_round = [h[0] / o[0] for o, h in zip(res["ours"], res["hf"])]
        tps_o = statistics.median(x[0] for x in res["ours_b"])
        tps_h = statistics.median(res["hf_b"])
        ratio = med["hf"] / med["ours"]
        print(f"\n{name}: {n_params / 1e6:.2f}M parameters, vocabulary {tok.vocab_size}, weights "
              f"{gen.net.weights}{' + TorchScript step' if gen.net.jit else ''}; {k} ids for {args.bars} bars; "
              f"set-up {setup:.2f} s, first call {cold:.2f} s")
        print(f"  batch 1, ms/token (median of {args.rounds}): ours {med['ours']:.2f} (CPU {med_cpu['ours']:.2f}), "
              f"model.generate+grammar {med['hf']:.2f} (CPU {med_cpu['hf']:.2f}); {args.bars} bars ours "
              f"{med['ours'] * k / 1e3:.3f} s")
        print(f"  rounds ours: {', '.join(f'{w:.2f}' for w, _ in res['ours'])}; HF: "
              f"{', '.join(f'{w:.2f}' for w, _ in res['hf'])}; per-round ratio median "
              f"{statistics.median(per_round):.2f}x")
        print(f"  batch {args.batch}, row-steps/s (median): ours {tps_o:,.0f}, HF+grammar {tps_h:,.0f} "
              f"({tps_o / tps_h:.2f}x)")
        print(f"ratio ({name}, batch 1, ms/token, model.generate with grammar / ours, {args.threads} thread(s)): "
              f"{ratio:.2f}x")
    return 0


CLI_DRIVER = r"""
import json, sys, time
t0 = time.perf_counter()
from melodia import api, cli
timing = {}
orig = api.Composer.generate
def timed(self, *a, **k):
    t = time.perf_counter()
    out = orig(self, *a, **k)
    timing["generate_s"] = time.perf_counter() - t
    return out
api.Composer.generate = timed
rc = cli.main(sys.argv[1:])
timing["in_process_s"] = time.perf_counter() - t0
print("BENCH " + json.dumps(timing))
sys.exit(rc)
"""


def bench_busy(args) -> int:
    """Issue 22: API against CLI, 1 and 2 threads, beside one core spinning pure Python."""
    from melodia import Composer

    neighbour = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    print(f"bench_generate --busy: a neighbour (pid {neighbour.pid}) spins pure Python on one core; "
          f"{args.calls} calls per setting, {args.bars} bars, API and CLI alternating", flush=True)
    rows = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for threads in args.busy_threads:
                composer = Composer.load(args.model, threads=threads)
                composer.generate(mood="happy", bars=args.bars, seed=99)  # warm: grammar tables
                api_s, cli_s, cli_start = [], [], []
                for i in range(args.calls):
                    mood, seed = MOODS[i % 4], i

                    for side in (("api", "cli") if i % 2 == 0 else ("cli", "api")):
                        if side == "api":
                            t = time.perf_counter()
                            composer.generate(mood=mood, bars=args.bars, seed=seed)
                            api_s.append(time.perf_counter() - t)
                            continue
                        argv = ["generate", "--mood", mood, "--bars", str(args.bars), "--seed", str(seed),
                                "--threads", str(threads), "--out", tmp, "--force"]
                        if args.model:
                            argv += ["--model", args.model]
                        t = time.perf_counter()
                        p = subprocess.run([sys.executable, "-c", CLI_DRIVER, *argv], capture_output=True,
                                           text=True, cwd=ROOT)
                        wall = time.perf_counter() - t
                        line = next((x for x in p.stdout.splitlines() if x.startswith("BENCH ")), None)
                        if p.returncode or line is None:
                            sys.exit(f"bench_generate: the CLI failed ({p.returncode}): {p.stderr[-2000:]}")
                        got = json.loads(line[6:])
                        cli_s.append(got["generate_s"])
                        cli_start.append(wall - got["generate_s"])
                rows[threads] = (statistics.median(api_s), statistics.median(cli_s), statistics.median(cli_start),
                                 api_s, cli_s)
                del composer
    finally:
        neighbour.kill()
        neighbour.wait()
    print()
    for threads, (a, c, start, api_s, cli_s) in rows.items():
        print(f"threads {threads}: API {a:.3f} s/call, CLI {c:.3f} s/call (its Composer.generate; start-up and "
              f"writing {start:.2f} s more per call), API/CLI {a / c:.2f}")
        print(f"  per call API: {', '.join(f'{x:.2f}' for x in api_s)}; CLI: {', '.join(f'{x:.2f}' for x in cli_s)}")
    if 1 in rows and 2 in rows:
        print(f"2 threads / 1 thread: API {rows[2][0] / rows[1][0]:.2f}x, CLI {rows[2][1] / rows[1][1]:.2f}x "
              f"(above 1: the second thread costs more than it gives beside a busy neighbour)")
    judged = rows.get(1) or next(iter(rows.values()))  # the default: 1 thread (api.set_threads)
    worst = abs(judged[0] / judged[1] - 1)
    print(f"at {1 if 1 in rows else args.busy_threads[0]} thread(s) (the default is 1) API and CLI are within "
          f"{worst:.0%} of each other (acceptance: 20%): {'PASS' if worst <= 0.2 else 'FAIL'}")
    return 0 if worst <= 0.2 else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="model directory (default: the shipped model)")
    ap.add_argument("--presets", nargs="+", help="random-initialised presets instead of a model directory")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=4000, help="BPE vocabulary for --presets")
    ap.add_argument("--bars", type=int, default=8)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--weights", default="auto", help="ours: auto, fp32, fp16 or bf16 (LeanLlama)")
    ap.add_argument("--busy", action="store_true", help="API vs CLI beside a busy neighbour (issue 22)")
    ap.add_argument("--calls", type=int, default=4, help="--busy: calls per side and thread setting")
    ap.add_argument("--busy-threads", type=int, nargs="+", default=[1, 2], help="--busy: thread settings")
    args = ap.parse_args(argv)
    return bench_busy(args) if args.busy else bench_speed(args)


if __name__ == "__main__":
    raise SystemExit(main())
