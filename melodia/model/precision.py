"""Which float format multiplies faster on this CPU: a timed probe, cached per machine.

bfloat16 halves the bytes a matrix product moves, but only CPUs with bf16 units (AMX,
AVX512-BF16) multiply it natively; elsewhere oneDNN emulates it and it is slower than fp32
(docs/benchmarks.md, "Training precision"). So nothing here trusts CPU flags: :func:`bf16_speedup`
times one bf16 and one fp32 matrix product of the model's width (a fraction of a second) and
keeps the result in ``precision.json`` under the cache folder (``$MELODIA_CACHE``, else
``$XDG_CACHE_HOME/melodia`` or ``~/.cache/melodia``, as the corpus cache), keyed by CPU model,
torch version and thread count, so later runs on the same machine read it back.

Two probes share it (:func:`_measure`): ``"train"`` (a ``[rows, d] x [d, 4d]`` product, fp32
against bf16: is CPU bf16 autocast worth it for training) and ``"decode"`` (one row against a
vocabulary-sized matrix, bf16 against the fp16-storage FBGEMM product the generator uses by
default: is bf16 worth it for the weights at sampling time). Each takes well under a second.

Example:
    >>> choose_precision("auto", "cpu", width=320)
    ('fp32', 'auto: bf16 matmul 0.31x fp32 at width 320 on this CPU (probe)')
"""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

from ..errors import BadInputError
from ..fileio import cache_dir, write_json

__all__ = ["PRECISIONS", "has_fbgemm_fp16", "TRAIN_MIN_SPEEDUP", "DECODE_MIN_SPEEDUP", "bf16_speedup", "choose_precision",
           "machine_key", "probe_cache_path"]

PRECISIONS = ("auto", "fp32", "bf16")
#: bf16 autocast casts every matrix's inputs each step: the product alone must win by this much
TRAIN_MIN_SPEEDUP = 1.25
#: sampling weights: bf16 must beat the default fp16-storage product by this much (the choice
#: changes the numbers a model samples, so a borderline timing must not flip it)
DECODE_MIN_SPEEDUP = 1.5


def probe_cache_path() -> Path:
    """``precision.json`` in melodia's cache folder. Example: ``probe_cache_path().name == "precision.json"``."""
    return cache_dir() / "precision.json"


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_key(threads: int | None = None) -> str:
    """What a probe's result depends on: CPU model, torch version and CPU threads.

    Example: ``machine_key(2)  # 'AMD EPYC | torch 2.13.0+cpu | 2 threads'``
    """
    import torch  # heavy: loaded on first use

    threads = torch.get_num_threads() if threads is None else threads
    return f"{_cpu_name()} | torch {torch.__version__} | {threads} threads"


def _alternating_best(ref: Any, new: Any, rounds: int = 3) -> tuple[float, float]:
    """Best seconds of ``ref()`` and ``new()`` over alternating calls, after one warm call each
    (oneDNN builds its kernels on the first)."""
    ref(), new()
    t_ref = t_new = float("inf")
    for _ in range(rounds):
        for fn, is_ref in ((ref, True), (new, False)):
            t = time.perf_counter()
            fn()
            dt = time.perf_counter() - t
            t_ref, t_new = (min(t_ref, dt), t_new) if is_ref else (t_ref, min(t_new, dt))
    return t_ref, t_new


def _measure(kind: str, width: int) -> dict[str, float]:
    """Seconds of the reference product (train: fp32; decode: the generator's fp16-storage one)
    and the bf16 one at ``width``, and their ratio.

    train: ``[rows, width] x [width, 4·width]`` with 16, then 128, then 1024 rows, stopping
    at the first size where bf16 is less than half as fast (emulated bf16 ran at 0.01x fp32 on an
    AVX2 CPU, where 1024 rows at width 512 took seconds). decode: one row against a
    ``[max(4·width, 4096), width]`` matrix (a vocabulary-sized output layer), 5 products a call.
    """
    import torch  # heavy: loaded on first use
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    if kind == "train":
        b = torch.randn(width, 4 * width, generator=g)
        b16 = b.bfloat16()
        for rows in (16, 128, 1024):
            a = torch.randn(rows, width, generator=g)
            a16 = a.bfloat16()
            t_ref, t_new = _alternating_best(lambda a=a: a @ b, lambda a16=a16: a16 @ b16, 2 if rows < 1024 else 3)
            if t_ref / t_new < 0.5:
                break
        return {"ref_s": t_ref, "bf16_s": t_new, "speedup": t_ref / t_new, "rows": rows}
    x = torch.randn(1, width, generator=g)
    w = torch.randn(max(4 * width, 4096), width, generator=g)
    w16 = w.bfloat16()
    if has_fbgemm_fp16():
        packed = torch.ops.quantized.linear_prepack_fp16(w, None)
        op = torch.ops.quantized.linear_dynamic_fp16

        def ref() -> None:
            for _ in range(5):
                op(x, packed)
    else:
        def ref() -> None:
            for _ in range(5):
                F.linear(x, w)

    def new() -> None:
        for _ in range(5):
            F.linear(x.bfloat16(), w16).float()

    t_ref, t_new = _alternating_best(ref, new)
    return {"ref_s": t_ref / 5, "bf16_s": t_new / 5, "speedup": t_ref / t_new}


def bf16_speedup(kind: str, width: int, threads: int | None = None, refresh: bool = False) -> float:
    """How many times faster the bf16 product is than the reference one (``kind`` ``"train"``:
    fp32; ``"decode"``: the generator's default weights) at ``width`` on this CPU, measured
    once per machine and then read from :func:`probe_cache_path` (``refresh`` measures again).
    A cache that cannot be read or written is ignored (the probe just runs again).

    Example: ``bf16_speedup("train", 320)  # 0.3 on an AVX2-only CPU, ~8 with AMX``
    """
    import torch  # heavy: loaded on first use

    if kind not in ("train", "decode"):
        raise ValueError(f"kind {kind!r}: train or decode")
    key, entry = machine_key(threads), f"{kind} width {int(width)}"
    path = probe_cache_path()
    try:
        cache = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(cache, dict):
            cache = {}
    except (OSError, ValueError):
        cache = {}
    got = cache.get(key, {}).get(entry) if isinstance(cache.get(key), dict) else None
    if got is not None and not refresh and isinstance(got.get("speedup"), (int, float)):
        return float(got["speedup"])
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        result = _measure(kind, int(width))
    finally:
        torch.set_num_threads(before)
    result["measured"] = time.strftime("%Y-%m-%d %H:%M:%S")
    if not isinstance(cache.get(key), dict):
        cache[key] = {}
    cache[key][entry] = result
    try:
        write_json(path, cache)
    except Exception:  # a read-only home: the next run measures again
        pass
    return float(result["speedup"])


def choose_precision(precision: str, device: Any, width: int) -> tuple[str, str]:
    """The precision a training run uses, ``"bf16"`` (autocast, fp32 master weights) or
    ``"fp32"``, and why. ``auto``: bf16 on a CUDA device that supports it; on the CPU, bf16
    when :func:`bf16_speedup` says its product is at least :data:`TRAIN_MIN_SPEEDUP` times
    faster at the model's width. ``bf16`` forced on a CPU without bf16 units still works, slower.

    Example: ``choose_precision("auto", torch.device("cpu"), 64)  # ('fp32', 'auto: ...')``
    """
    import torch  # heavy: loaded on first use

    if precision not in PRECISIONS:
        raise BadInputError(f"precision {precision!r}: use auto, fp32 or bf16")
    dev = torch.device(device)
    if dev.type == "cuda":
        ok = torch.cuda.is_bf16_supported()
        if precision == "bf16" and not ok:
            raise BadInputError("precision bf16: this CUDA device does not support bfloat16")
        if precision == "auto":
            return ("bf16", "auto: CUDA with bf16") if ok else ("fp32", "auto: this CUDA device has no bf16")
        return precision, "asked for"
    if dev.type != "cpu":
        return ("fp32", f"{dev.type}: fp32") if precision == "auto" else (precision, "asked for")
    if precision != "auto":
        return precision, "asked for"
    s = bf16_speedup("train", width)
    pick = "bf16" if s >= TRAIN_MIN_SPEEDUP else "fp32"
    return pick, f"auto: bf16 matmul {s:.2f}x fp32 at width {width} on this CPU (probe, cached in {probe_cache_path()})"


def has_fbgemm_fp16() -> bool:
    """Whether this torch build runs FBGEMM's fp16 linear (and gets it right)."""
    import torch  # heavy: loaded on first use

    try:
        if "fbgemm" not in torch.backends.quantized.supported_engines and \
                "x86" not in torch.backends.quantized.supported_engines:
            return False
        w = torch.ops.quantized.linear_prepack_fp16(torch.ones(8, 8), None)
        y = torch.ops.quantized.linear_dynamic_fp16(torch.ones(1, 8), w)
        return bool(abs(float(y[0, 0]) - 8.0) < 1e-3)
    except Exception:  # op missing in this build
        return False
