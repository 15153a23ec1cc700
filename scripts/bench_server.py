#!/usr/bin/env python
"""Server latency: ``--requests`` (20) POST /generate requests for ``--bars`` (8) bars, one at a
time, against ``melodia serve``; prints every latency and the median. First it times
``--page-requests`` (50) GET / (the composing page; target 50 ms, at most 200 kB) against GET
/health in the same process.

The acceptance target is a median of at most 1 s with the shipped default model on 2 CPU cores.
By default the script starts the server in this process on a free port (loopback), with the
default model, or ``--model DIR`` when the default is not built, warms it up as ``melodia
serve`` does, and asks it over real HTTP (urllib). ``--url`` measures a server already running
instead. Latency is wall time per request as the client sees it (connect, JSON, generation,
base64 MIDI, answer); the server's own generation time (``elapsed_s``) is shown beside it, and,
for the in-process server, the process's CPU time per request (less sensitive to other jobs on
a shared machine than wall time, though not immune: caches and memory bandwidth are shared).
Moods cycle happy/tense/sad/calm and seeds run 0, 1, 2 ... so runs are comparable.

Usage:
    python scripts/bench_server.py                          # default model, 1 torch thread
    python scripts/bench_server.py --model runs/small/model --threads 2
    python scripts/bench_server.py --url http://127.0.0.1:8765
    python scripts/bench_server.py --cores 2                # pin this process to 2 CPU cores
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MOODS = ("happy", "tense", "sad", "calm")


def post(url: str, body: dict, timeout: float = 300) -> tuple[float, dict]:
    """(client wall seconds, JSON answer) of one POST."""
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=timeout) as r:
        answer = json.loads(r.read())
    return time.perf_counter() - t0, answer


def start_server(model: str | None, threads: int, warm: bool):
    """An in-process server on a free loopback port; returns (server, its thread, description)."""
    import torch

    from melodia import Composer
    from melodia.errors import MelodiaError
    from melodia.serve import make_server, warm_up

    if threads:
        torch.set_num_threads(threads)
    try:
        composer = Composer.load(model, device="cpu")
    except MelodiaError as e:
        sys.exit(f"bench_server: {e}")
    warm_s = warm_up(composer) if warm else 0.0
    server = make_server(composer, port=0, quiet=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    info = composer.info()
    desc = (f"model {info['name']} (preset {info['preset']}, {info['parameters'] or 0:,} parameters, "
            f"vocabulary {composer.tokenizer.vocab_size}), cpu, {torch.get_num_threads()} torch thread(s), "
            f"warm-up {warm_s:.2f} s")
    return server, thread, desc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="model directory (default: the shipped default model)")
    p.add_argument("--url", help="measure this running server instead (e.g. http://127.0.0.1:8765)")
    p.add_argument("--requests", type=int, default=20)
    p.add_argument("--bars", type=int, default=8)
    p.add_argument("--n", type=int, default=1, help="variations per request")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads of the in-process server (default 1, as melodia serve)")
    p.add_argument("--cores", type=int, default=0, help="pin this process to the first N CPU cores (Linux)")
    p.add_argument("--no-warmup", action="store_true", help="do not warm the in-process server up")
    p.add_argument("--target", type=float, default=1.0, help="median latency target in seconds")
    p.add_argument("--page-requests", type=int, default=50, help="GET / requests (the composing page; 0: none)")
    p.add_argument("--page-target", type=float, default=50.0, help="GET / median target in milliseconds")
    args = p.parse_args(argv)

    if args.cores:
        if not hasattr(os, "sched_setaffinity"):
            sys.exit("bench_server: --cores needs Linux (os.sched_setaffinity)")
        os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[: args.cores]))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()

    if args.url:
        base, desc = args.url.rstrip("/"), f"server at {args.url}"
        with urllib.request.urlopen(base + "/health", timeout=10) as r:
            health = json.loads(r.read())
        desc += f", model {health['model']}"
    else:
        server, thread, desc = start_server(args.model, args.threads, not args.no_warmup)
        base = server.url
    print(f"bench_server: {args.requests} x POST /generate, {args.bars} bars, n={args.n}; {desc}; "
          f"{cores} CPU core(s) available")

    # the composing page: GET / against GET /health (the smallest JSON answer) as the baseline
    page_ms, health_ms, size = [], [], 0
    for _ in range(args.page_requests):
        for route, out in (("/", page_ms), ("/health", health_ms)):
            t0 = time.perf_counter()
            with urllib.request.urlopen(base + route, timeout=10) as r:
                body = r.read()
            out.append((time.perf_counter() - t0) * 1000)
            if route == "/":
                size = len(body)
    page_ok = True
    if page_ms:
        pm, hm = statistics.median(page_ms), statistics.median(health_ms)
        page_ok = pm <= args.page_target and size <= 200_000
        print(f"GET /: {size:,} bytes; median {pm:.2f} ms, max {max(page_ms):.2f} ms over {len(page_ms)} requests "
              f"(GET /health: median {hm:.2f} ms; ratio {pm / hm:.2f}); target {args.page_target:g} ms and "
              f"200 kB: {'PASS' if page_ok else 'FAIL'}")

    latencies, gen_times, notes, cpus = [], [], [], []
    for i in range(args.requests):
        body = {"mood": MOODS[i % len(MOODS)], "bars": args.bars, "seed": i, "n": args.n}
        cpu0 = time.process_time()  # in-process server: this process's CPU is the request's
        try:
            wall, answer = post(base + "/generate", body)
        except urllib.error.HTTPError as e:
            sys.exit(f"bench_server: request {i} failed: {e.code} {e.read().decode(errors='replace')}")
        latencies.append(wall)
        cpus.append(time.process_time() - cpu0)
        gen_times.append(answer["elapsed_s"])
        notes.append(sum(len(pc["notes"]) for pc in answer["pieces"]))
        print(f"  {i + 1:2d}  {body['mood']:5s}  seed {i:2d}  {wall * 1000:7.1f} ms  "
              f"(generation {answer['elapsed_s'] * 1000:7.1f} ms, {notes[-1]} notes"
              f"{'' if args.url else f', CPU {cpus[-1] * 1000:7.1f} ms'})")

    med = statistics.median(latencies)
    q = sorted(latencies)
    p90 = q[min(len(q) - 1, int(round(0.9 * (len(q) - 1))))]
    print(f"latency: median {med * 1000:.1f} ms, mean {statistics.mean(latencies) * 1000:.1f} ms, "
          f"p90 {p90 * 1000:.1f} ms, min {q[0] * 1000:.1f} ms, max {q[-1] * 1000:.1f} ms; "
          f"generation median {statistics.median(gen_times) * 1000:.1f} ms; "
          f"{statistics.mean(notes):.0f} notes per answer")
    if not args.url:  # on a shared machine wall time waits for other jobs; CPU time much less so
        qc = sorted(cpus)
        print(f"CPU per request (this process, server and client): median {statistics.median(cpus) * 1000:.1f} ms, "
              f"p90 {qc[min(len(qc) - 1, int(round(0.9 * (len(qc) - 1))))] * 1000:.1f} ms")
    ok = med <= args.target
    print(f"median {med:.3f} s {'<=' if ok else '>'} target {args.target:g} s: {'PASS' if ok else 'FAIL'}")
    if not args.url:
        server.shutdown()
        server.server_close()
        # let the server thread drop its references (the model's tensors) before the interpreter
        # exits: a daemon thread freeing torch tensors during shutdown aborts the process
        thread.join(10)
    return 0 if ok and page_ok else 1


if __name__ == "__main__":
    sys.exit(main())
