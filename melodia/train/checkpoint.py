"""Checkpoints: ``out/checkpoint/`` (weights, optimizer, ``state.json`` with the RNG states),
written atomically, read back for ``resume``.

Example: ``read_checkpoint_state("runs/a")["step"]``
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MelodiaError
from ..fileio import make_temp_dir, replace_dir, write_json


def unwrap(model: Any) -> Any:
    """Example: ``unwrap(torch.compile(model)) is model``."""
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return getattr(model, "module", model)      # DistributedDataParallel


def distinct_state(model: Any) -> tuple[dict[str, Any], set[str]]:
    """State dict without aliases (the tied output layer), plus the alias names left out. Example: ``weights, aliases = distinct_state(model)``"""
    state, seen, aliases = {}, {}, set()
    for k, v in model.state_dict().items():
        key = (v.data_ptr(), v.shape, v.dtype)
        if v.numel() and key in seen:
            aliases.add(k)
            continue
        seen[key] = k
        state[k] = v
    return state, aliases


def rng_state() -> dict[str, Any]:
    """Example: ``state = rng_state(); set_rng_state(state)``."""
    import torch

    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state().tolist(),
             "numpy": [np_state[0], np_state[1].tolist(), *[float(v) if isinstance(v, float) else int(v)
                                                            for v in np_state[2:]]],
             "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Example: ``set_rng_state(read_checkpoint_state("runs/a")["rng"])``."""
    import torch

    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    n = state["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), int(n[2]), int(n[3]), float(n[4])))
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))
    if "cuda" in state and torch.cuda.is_available():
        with contextlib.suppress(Exception):  # a different GPU count: leave CUDA generators alone
            torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def save_checkpoint(out: Path, model: Any, optimizer: Any, state: dict[str, Any]) -> Path:
    """Write ``out/checkpoint/`` atomically (temp folder, then renames). Example: ``save_checkpoint(out, m, o, s)``."""
    import torch
    from safetensors.torch import save_file

    final = out / "checkpoint"
    tmp = make_temp_dir(final)
    try:
        weights, _ = distinct_state(unwrap(model))
        save_file({k: v.detach().to("cpu").contiguous() for k, v in weights.items()}, str(tmp / "model.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        write_json(tmp / "state.json", {**state, "rng": rng_state()})
        replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def read_checkpoint_state(out: str | os.PathLike) -> dict[str, Any] | None:
    """``state.json`` of the last complete checkpoint in run folder ``out``, or None.

    Example: ``read_checkpoint_state("runs/a")["step"]``.
    """
    # A live run swaps checkpoint/ for a new one with two renames (checkpoint -> .checkpoint.old, new ->
    # checkpoint), so a reader watching it may find either folder missing for a moment: try both, a few times.
    paths = [Path(out) / "checkpoint" / "state.json", Path(out) / ".checkpoint.old" / "state.json"]
    for attempt in range(5):
        for path in paths:
            try:
                text = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                continue
            except OSError as e:
                raise MelodiaError(f"{path}: unreadable checkpoint state ({e})") from None
            try:
                return json.loads(text)
            except json.JSONDecodeError as e:
                raise MelodiaError(f"{path}: unreadable checkpoint state ({e})") from None
        if not (Path(out) / "checkpoint").exists() and not (Path(out) / ".checkpoint.old").exists():
            return None
        time.sleep(0.01 * (attempt + 1))
    return None


def load_checkpoint_weights(ckpt: Path, model: Any, optimizer: Any, device: Any) -> None:
    """Example: ``load_checkpoint_weights(Path("runs/a/checkpoint"), model, optimizer, "cpu")``."""
    import torch
    from safetensors.torch import load_file

    try:
        weights = load_file(str(ckpt / "model.safetensors"), device=str(device))
        opt_state = torch.load(ckpt / "optimizer.pt", map_location=device, weights_only=True)
    except Exception as e:
        raise MelodiaError(f"{ckpt}: cannot read checkpoint ({type(e).__name__}: {e})") from None
    _, aliases = distinct_state(model)
    result = model.load_state_dict(weights, strict=False)
    missing = set(result.missing_keys) - aliases
    if missing or result.unexpected_keys:
        raise MelodiaError(f"{ckpt}/model.safetensors: does not fit the model (missing {sorted(missing)[:3]}, "
                           f"unexpected {sorted(result.unexpected_keys)[:3]})")
    optimizer.load_state_dict(opt_state)
