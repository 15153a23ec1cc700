"""Train or fine-tune a melodia model on token shards; reads top to bottom, like nanoGPT's train.py.

    melodia train --data tokens/ --preset small --out runs/small            # pretrain
    melodia train --data my_tokens/ --init runs/small/model --lora 16 \\
                  --steps 500 --patience 3 --out runs/mine                   # fine-tune
    torchrun --nproc_per_node 4 -m melodia train --data tokens/ --out runs/a # data-parallel
    python -m melodia.train …                                                # same, without the CLI

What one run does:

* Data: ``index.json`` + memory-mapped ``uint16`` shards (docs/ARCHITECTURE.md). Every training
  sample is one chunk (``BOS MOOD KEY [TAG…] … EOS``) cut to ``seq_len + 1`` tokens, batches are
  right-padded with PAD (id 0). Targets on padding and on control tokens (MOOD_/KEY_/TAG_: they
  are given at generation time, never predicted) are ignored. The train split is read in a
  seeded permutation that changes every epoch; the position in that stream is part of a
  checkpoint. Conditioning dropout (p = ``cond_dropout``): with probability p a sample loses both
  its MOOD (position 1) and KEY (position 2) token to ``MOOD_any`` / ``KEY_any``; otherwise each
  is replaced independently with probability p. So the model learns the fully unconditioned
  ``BOS MOOD_any KEY_any`` (about 11% of samples at p = 0.1) that classifier-free guidance
  samples against, and mood-only and key-only conditioning (about 8% each).
  ``balance_moods``: an epoch is instead as many draws (with replacement) in which every mood
  token (position 1 of a chunk) is equally likely, and chunks within a mood are equally likely;
  a corpus that is three-quarters happy or calm then shows the model as much tense and sad
  music as happy music.
* Optimisation: AdamW (fused kernels, on CUDA and on CPU; decay on matrices only), linear
  warm-up then cosine decay to ``min_lr_ratio · lr``, gradient clipping, gradient accumulation;
  the loss is the mean over every target token of the whole optimizer step (all micro-batches,
  all processes). CUDA: bf16 autocast, SDPA attention, optional ``torch.compile``; CPU: fp32.
* Every ``eval_every`` steps: validation loss on the valid split (``eval_batches`` batches).
  ``patience`` > 0 stops after that many evaluations without improvement, and then ``out/model``
  always holds the best weights so far.
* Every ``ckpt_every`` steps and at the end: ``out/checkpoint/`` (``model.safetensors``,
  ``optimizer.pt``, ``state.json``: step, data position, RNG states, config), built in a temp
  folder and swapped in by renames, so a kill at any moment leaves the last complete one.
  ``resume`` continues from it bit for bit (same losses on CPU).
* Output folder ``out``: ``model/`` (the model directory, see melodia/model.py),
  ``checkpoint/``, ``metrics.jsonl`` (one JSON object per log line and per evaluation).
* ``torchrun``: one process per device (NCCL on GPUs, gloo on CPU); only global rank 0 writes.
  Resuming a multi-node run needs ``out`` on a file system every node can read.

This module imports only torch, transformers, numpy and (for ``lora``) peft: it runs on a
GPU machine without the MIDI libraries.

Example:
    >>> model_dir = train(TrainConfig(data="tokens", out="runs/tiny", preset="tiny", steps=200))
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import random
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import BadInputError, MelodiaError, OutputExistsError
from .fileio import write_json, write_text
from .model import (build_model, count_parameters, load_model_dir, make_temp_dir, model_config_of, preset_name,
                    recover_dir, replace_dir, save_model_dir)

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
IGNORE = -100


@dataclass
class TrainConfig:
    """Every training setting, in one place. Example: ``TrainConfig(data="tokens", out="runs/a", preset="tiny")``."""

    data: str                        # shards folder holding index.json
    out: str                         # run folder: model/, checkpoint/, metrics.jsonl
    preset: str | None = None        # tiny | small | base | large (default small; not with init)
    init: str | None = None          # start from this model directory's weights (fine-tuning)
    lora: int = 0                    # LoRA rank; 0 trains every weight
    lora_alpha: float | None = None  # LoRA scale numerator; default 2 * lora
    steps: int = 2000                # optimizer steps in all
    batch_size: int = 16             # chunks per micro-batch per process
    grad_accum: int = 1              # micro-batches per optimizer step
    seq_len: int | None = None       # tokens per sample; default min(index max_len, model max_len)
    pack: bool = True                # lay a step's chunks end to end in as few rows as hold them
    lr: float = 3e-4
    min_lr_ratio: float = 0.1        # cosine decays to lr * min_lr_ratio
    warmup: int = 100                # linear warm-up steps
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0           # 0 turns clipping off
    cond_dropout: float = 0.1        # P(drop MOOD and KEY), then P(drop each) -> MOOD_any / KEY_any
    balance_moods: bool = False      # draw train chunks so that every MOOD token is read equally often
    fim: float = 0.25                # share of train chunks rearranged for infilling (shards with FIM ids)
    seed: int = 0
    eval_every: int = 200
    eval_batches: int = 20           # batches per evaluation (0: the whole valid split)
    ckpt_every: int = 500
    log_every: int = 10
    patience: int = 0                # stop after this many evaluations without improvement (0: never)
    save_dtype: str = "float32"      # dtype of out/model weights: float32 | bfloat16 | float16
    device: str = "auto"             # auto | cpu | cuda | cuda:N (torchrun picks cuda:LOCAL_RANK)
    compile: bool = False            # torch.compile the model (meant for CUDA)
    threads: int = 0                 # torch CPU threads (0: torch's default)
    resume: bool = False             # continue from out/checkpoint
    max_minutes: float = 0.0         # stop (validated, checkpointed) after this much wall time; 0: no limit


# Settings that may differ when resuming; every other one must match the checkpoint's.
RESUME_OVERRIDABLE = frozenset({"data", "out", "resume", "steps", "max_minutes", "eval_every", "eval_batches",
                                "ckpt_every",
                                "log_every", "patience", "save_dtype", "device", "compile", "threads"})


def _check_config(cfg: TrainConfig) -> None:
    positive = ("steps", "batch_size", "grad_accum", "eval_every", "ckpt_every", "log_every")
    for name in positive:
        v = getattr(cfg, name)
        if not isinstance(v, int) or v <= 0:
            raise BadInputError(f"{name} must be a positive integer, got {v!r}")
    for name in ("lora", "warmup", "eval_batches", "patience", "threads"):
        v = getattr(cfg, name)
        if not isinstance(v, int) or v < 0:
            raise BadInputError(f"{name} must be an integer >= 0, got {v!r}")
    if cfg.seq_len is not None and (not isinstance(cfg.seq_len, int) or cfg.seq_len < 8):
        raise BadInputError(f"seq_len must be an integer >= 8, got {cfg.seq_len!r}")
    if not cfg.lr > 0 or not 0 <= cfg.min_lr_ratio <= 1 or cfg.weight_decay < 0 or cfg.grad_clip < 0:
        raise BadInputError("lr must be > 0, min_lr_ratio in [0, 1], weight_decay and grad_clip >= 0")
    if not 0 <= cfg.cond_dropout <= 1:
        raise BadInputError(f"cond_dropout must be in [0, 1], got {cfg.cond_dropout}")
    if not 0 <= cfg.fim <= 1:
        raise BadInputError(f"fim must be in [0, 1], got {cfg.fim}")
    if cfg.preset and cfg.init:
        raise BadInputError("give either --preset (train from scratch) or --init (start from a model), not both")
    if cfg.lora and not cfg.init:
        raise BadInputError("--lora needs --init: LoRA adapts an existing model")
    if cfg.save_dtype not in ("float32", "bfloat16", "float16"):
        raise BadInputError(f"save_dtype must be float32, bfloat16 or float16, got {cfg.save_dtype!r}")


# ----------------------------------------------------------------------------------------------
# Data: index.json + memory-mapped uint16 shards


class ShardData:
    """The token shards of one ``tokenize`` run, memory-mapped. Example: ``data = ShardData("tokens")``."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        index_path = self.root / "index.json"
        if not index_path.is_file():
            raise MelodiaError(f"{index_path}: not found (run `melodia tokenize` to make shards)")
        try:
            index = json.loads(index_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise MelodiaError(f"{index_path}: not readable JSON ({e})") from None

        def bad(msg: str) -> MelodiaError:
            return MelodiaError(f"{index_path}: {msg}")

        if not isinstance(index, dict) or index.get("format") != 1:
            raise bad("not a melodia shard index (format 1)")
        self.index = index
        v = index.get("vocab_size")
        if not isinstance(v, int) or not 8 <= v <= 65535:
            raise bad(f"vocab_size must be an integer in [8, 65535], got {v!r}")
        self.vocab_size = v
        self.max_len = index.get("max_len")
        if not isinstance(self.max_len, int) or self.max_len < 8:
            raise bad(f"max_len must be an integer >= 8, got {self.max_len!r}")
        self.pad_id, self.bos_id, self.eos_id = (index.get(k) for k in ("pad_id", "bos_id", "eos_id"))
        if self.pad_id != 0:
            raise bad(f"pad_id must be 0, got {self.pad_id!r}")
        ids = {}
        for kind in ("mood_ids", "key_ids", "tag_ids"):
            table = index.get(kind, {} if kind == "tag_ids" else None)
            if not isinstance(table, dict) or (kind != "tag_ids" and "any" not in table):
                raise bad(f"{kind} must be an object" + ("" if kind == "tag_ids" else " with an 'any' entry"))
            for name, i in table.items():
                if not isinstance(i, int) or not 0 < i < v:
                    raise bad(f"{kind}[{name!r}] = {i!r} is not an id below vocab_size {v}")
            ids[kind] = table
        self.mood_ids, self.key_ids, self.tag_ids = ids["mood_ids"], ids["key_ids"], ids["tag_ids"]
        self.mood_any, self.key_any = self.mood_ids["any"], self.key_ids["any"]
        self.is_mood = np.zeros(v, dtype=bool)
        self.is_mood[list(self.mood_ids.values())] = True
        self.is_key = np.zeros(v, dtype=bool)
        self.is_key[list(self.key_ids.values())] = True
        self.no_target = self.is_mood | self.is_key
        self.no_target[list(self.tag_ids.values())] = True
        self.no_target[self.pad_id] = True
        # infilling: the markers are given, never predicted; chords are predicted like notes
        fim = index.get("fim_ids") or {}
        self.fim_suffix, self.fim_middle = fim.get("suffix"), fim.get("middle")
        if self.fim_suffix is not None and self.fim_middle is not None:
            self.no_target[[self.fim_suffix, self.fim_middle]] = True
        self.is_bar = np.zeros(v, dtype=bool)
        self.is_bar[[i for i in index.get("bar_ids") or [] if isinstance(i, int) and 0 <= i < v]] = True

        shards = index.get("shards")
        if not isinstance(shards, list) or not shards:
            raise bad("no shards listed")
        self.arrays = []
        for s in shards:
            path = self.root / str(s.get("file", "")) if isinstance(s, dict) else self.root / "?"
            if not path.is_file():
                raise MelodiaError(f"{path}: shard listed in {index_path} not found")
            try:
                arr = np.load(path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as e:
                raise MelodiaError(f"{path}: not a readable .npy array ({e})") from None
            if arr.dtype != np.uint16 or arr.ndim != 1:
                raise MelodiaError(f"{path}: expected a 1-D uint16 array, got {arr.ndim}-D {arr.dtype}")
            if arr.size and int(arr.max()) >= v:
                raise MelodiaError(f"{path}: holds token id {int(arr.max())} >= vocab_size {v} of {index_path}")
            self.arrays.append(arr)
        self.splits: dict[str, list[tuple[int, int, int]]] = {"train": [], "valid": [], "test": []}
        for n, c in enumerate(index.get("chunks") or []):
            try:
                shard, off, length, split = int(c["shard"]), int(c["offset"]), int(c["length"]), c["split"]
            except (KeyError, TypeError, ValueError):
                raise bad(f"chunk {n} lacks shard/offset/length/split") from None
            if not (0 <= shard < len(self.arrays) and off >= 0 and length > 0
                    and off + length <= self.arrays[shard].size):
                raise bad(f"chunk {n} (shard {shard}, offset {off}, length {length}) lies outside its shard")
            self.splits.setdefault(split, []).append((shard, off, length))
        if not self.splits["train"]:
            raise bad("the train split has no chunks")

    def tokens(self, split: str, i: int, limit: int) -> np.ndarray:
        """The first ``limit`` tokens of chunk ``i`` of ``split`` as int64."""
        shard, off, length = self.splits[split][i]
        return np.asarray(self.arrays[shard][off:off + min(length, limit)], dtype=np.int64)

    @property
    def can_fim(self) -> bool:
        """Whether these shards name the infilling markers and the bar-opening ids."""
        return self.fim_suffix is not None and self.fim_middle is not None and bool(self.is_bar.any())

    def fim_rearrange(self, s: np.ndarray, rng: np.random.Generator, max_middle: int = 8) -> np.ndarray:
        """A chunk rearranged to teach infilling: ``controls, bars before, FIM_suffix, bars
        after, FIM_middle, the missing bars, EOS`` (1 to ``max_middle`` missing bars, at least
        one bar on each side). A chunk of fewer than 3 whole bars comes back unchanged.

        Example: ``row = data.fim_rearrange(data.tokens("train", 0, 1025), np.random.default_rng(0))``
        """
        if len(s) < 4 or int(s[-1]) != self.eos_id:
            return s
        starts = np.flatnonzero(self.is_bar[s])
        if len(starts) < 3:
            return s
        body_end = len(s) - 1
        bounds = np.append(starts, body_end)
        n = len(starts)
        a = int(rng.integers(1, n - 1))                    # bars kept before the gap
        m = int(rng.integers(1, min(max_middle, n - 1 - a) + 1))  # missing bars
        pre, mid0, mid1 = bounds[a], bounds[a], bounds[a + m]
        return np.concatenate([s[:pre], [self.fim_suffix], s[mid1:body_end], [self.fim_middle],
                               s[mid0:mid1], [self.eos_id]]).astype(s.dtype)

    def batch(self, split: str, ids: Sequence[int], seq_len: int, pad_multiple: int = 8,
              drop: np.ndarray | None = None, pack: bool = False, fim: float = 0.0,
              rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Inputs and targets ``(x, y)``, each ``(rows, T)``, T <= seq_len.

        ``y[b, t]`` is the token after ``x[b, t]``, or -100 where nothing is to be learnt (padding,
        control tokens, the step from one packed chunk into the next). ``drop`` (``(len(ids), 2)``
        bool) applies conditioning dropout to each chunk's MOOD and KEY. With ``pack``, chunks
        are laid end to end in as few rows as hold them (chunks average a third of ``max_len``
        in the built-in corpus, so one-chunk rows were two thirds padding); each chunk starts
        with its own BOS and controls, so a chunk may see the one before it, never the reverse.
        """
        pieces = []
        use_fim = fim > 0 and self.can_fim and rng is not None
        for b, i in enumerate(ids):
            s = self.tokens(split, i, seq_len + 1)
            if use_fim and rng.random() < fim:
                s = self.fim_rearrange(s, rng)[:seq_len + 1]
            xs, ys = s[:-1].copy(), s[1:].copy()
            ys[self.no_target[ys]] = IGNORE
            if drop is not None and len(xs) > 2:
                if drop[b, 0] and self.is_mood[xs[1]]:
                    xs[1] = self.mood_any
                if drop[b, 1] and self.is_key[xs[2]]:
                    xs[2] = self.key_any
            pieces.append((xs, ys))
        rows: list[list[tuple[np.ndarray, np.ndarray]]] = []
        if pack:
            fill = seq_len + 1  # first-fit: a chunk goes in the first row with room
            room: list[int] = []
            for xs, ys in pieces:
                for r, left in enumerate(room):
                    if len(xs) <= left:
                        rows[r].append((xs, ys))
                        room[r] -= len(xs)
                        break
                else:
                    rows.append([(xs, ys)])
                    room.append(fill - 1 - len(xs))
        else:
            rows = [[p] for p in pieces]
        longest = max(sum(len(xs) for xs, _ in row) for row in rows)
        width = min(seq_len, max(1, -(-longest // pad_multiple) * pad_multiple))
        x = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        y = np.full((len(rows), width), IGNORE, dtype=np.int64)
        for b, row in enumerate(rows):
            at = 0
            for xs, ys in row:
                x[b, at:at + len(xs)] = xs
                y[b, at:at + len(ys)] = ys
                at += len(xs)
        return x, y


def conditioning_dropout(rng: np.random.Generator, n: int, p: float) -> np.ndarray:
    """``(n, 2)`` bools: replace [MOOD, KEY] by ``any``? Both with prob. p, else each with prob. p.

    Example: ``drop = conditioning_dropout(np.random.default_rng(0), 16, 0.1)``.
    """
    r = rng.random((n, 3))
    return (r[:, :2] < p) | (r[:, 2:] < p)


class TrainStream:
    """Which train chunks each step reads: a seeded permutation per epoch, read in order; or,
    with ``groups`` (one label per chunk, e.g. its mood id), ``n`` seeded draws per epoch in
    which every group is equally likely and chunks within a group too.

    The position is one number, ``consumed`` (samples read by all processes together), so a
    checkpoint records it and a resumed run continues at the next sample.
    Example: ``TrainStream(n=1000, seed=0).take(0, 64)``.
    """

    def __init__(self, n: int, seed: int, groups: np.ndarray | None = None):
        self.n, self.seed = n, seed
        self._epoch, self._perm = -1, np.empty(0, dtype=np.int64)
        self.p = None
        if groups is not None:
            _, inverse, counts = np.unique(np.asarray(groups), return_inverse=True, return_counts=True)
            self.p = 1.0 / (len(counts) * counts[inverse])

    def perm(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._epoch = epoch
            self._perm = rng.permutation(self.n) if self.p is None else rng.choice(self.n, self.n, p=self.p)
        return self._perm

    def take(self, consumed: int, count: int) -> list[int]:
        out: list[int] = []
        while len(out) < count:
            epoch, pos = divmod(consumed + len(out), self.n)
            out.extend(self.perm(epoch)[pos:pos + count - len(out)].tolist())
        return out


# ----------------------------------------------------------------------------------------------
# Processes and devices


class Dist:
    """Rank, world size and device of this process; torchrun sets the environment it reads."""

    def __init__(self, device: str):
        import torch

        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        want_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        if want_cuda and not torch.cuda.is_available():
            raise BadInputError(f"device {device!r}: CUDA is not available here")
        if want_cuda:
            index = self.local_rank if self.world > 1 or ":" not in device else int(device.split(":")[1])
            self.device = torch.device("cuda", index)
            torch.cuda.set_device(self.device)
        else:
            self.device = torch.device("cpu")
        self.is_main = self.rank == 0
        if self.world > 1:
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")

    def sum(self, values: Sequence[float]) -> list[float]:
        """Add ``values`` up over every process (float64). Example: ``loss_sum, n = d.sum([s, n])``."""
        if self.world == 1:
            return [float(v) for v in values]
        import torch
        import torch.distributed as dist

        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier(device_ids=[self.device.index]) if self.device.type == "cuda" else dist.barrier()

    def close(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


# ----------------------------------------------------------------------------------------------
# Optimisation pieces (the benchmark script uses the same ones)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warm-up, then cosine. Example: ``lr_at(0, cfg)``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    span = max(1, cfg.steps - cfg.warmup)
    progress = min(1.0, (step - cfg.warmup) / span)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + (cfg.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(model: Any, cfg: TrainConfig, device_type: str) -> Any:
    """AdamW, weight decay on matrices only, fused kernels (CUDA; CPU too where torch has them).

    Example: ``make_optimizer(model, cfg, "cuda")``.
    """
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    groups = [g for g in ({"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
                          {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}) if g["params"]]
    kwargs = {"lr": cfg.lr, "betas": (cfg.beta1, cfg.beta2), "eps": 1e-8}
    if device_type in ("cuda", "cpu"):
        try:  # fused AdamW: one kernel for every tensor (CPU support since torch 2.4)
            return torch.optim.AdamW(groups, fused=True, **kwargs)
        except (RuntimeError, ValueError, TypeError):
            pass
    return torch.optim.AdamW(groups, foreach=True, **kwargs)


def autocast_for(device: Any) -> Any:
    """bf16 autocast on CUDA (where supported), nothing on CPU. Example: ``with autocast_for(dev): ...``."""
    import torch

    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def summed_loss(model: Any, x: Any, y: Any, amp: Any) -> Any:
    """Cross-entropy summed over the target tokens of a batch (fp32). Example: ``summed_loss(m, x, y, amp)``."""
    import torch.nn.functional as F

    with amp:
        logits = model(input_ids=x, use_cache=False).logits
    return F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=IGNORE, reduction="sum")


# ----------------------------------------------------------------------------------------------
# Checkpoints


def _unwrap(model: Any) -> Any:
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return getattr(model, "module", model)      # DistributedDataParallel


def _distinct_state(model: Any) -> tuple[dict[str, Any], set[str]]:
    """State dict without aliases (the tied output layer), plus the alias names left out."""
    state, seen, aliases = {}, {}, set()
    for k, v in model.state_dict().items():
        key = (v.data_ptr(), v.shape, v.dtype)
        if v.numel() and key in seen:
            aliases.add(k)
            continue
        seen[key] = k
        state[k] = v
    return state, aliases


def _rng_state() -> dict[str, Any]:
    import torch

    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state().tolist(),
             "numpy": [np_state[0], np_state[1].tolist(), *[float(v) if isinstance(v, float) else int(v)
                                                            for v in np_state[2:]]],
             "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
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
        weights, _ = _distinct_state(_unwrap(model))
        save_file({k: v.detach().to("cpu").contiguous() for k, v in weights.items()}, str(tmp / "model.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        write_json(tmp / "state.json", {**state, "rng": _rng_state()})
        replace_dir(tmp, final)
    except BaseException:
        import shutil

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


def _load_checkpoint_weights(ckpt: Path, model: Any, optimizer: Any, device: Any) -> None:
    import torch
    from safetensors.torch import load_file

    try:
        weights = load_file(str(ckpt / "model.safetensors"), device=str(device))
        opt_state = torch.load(ckpt / "optimizer.pt", map_location=device, weights_only=True)
    except Exception as e:
        raise MelodiaError(f"{ckpt}: cannot read checkpoint ({type(e).__name__}: {e})") from None
    _, aliases = _distinct_state(model)
    result = model.load_state_dict(weights, strict=False)
    missing = set(result.missing_keys) - aliases
    if missing or result.unexpected_keys:
        raise MelodiaError(f"{ckpt}/model.safetensors: does not fit the model (missing {sorted(missing)[:3]}, "
                           f"unexpected {sorted(result.unexpected_keys)[:3]})")
    optimizer.load_state_dict(opt_state)


# ----------------------------------------------------------------------------------------------
# The model to train


def _lora_wrap(model: Any, cfg: TrainConfig, new_ids: list[int]) -> Any:
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise MelodiaError("--lora needs the peft package (pip install peft)") from None
    import warnings

    lcfg = LoraConfig(r=cfg.lora, lora_alpha=cfg.lora_alpha or 2 * cfg.lora, lora_dropout=0.0, bias="none",
                      target_modules=LORA_TARGETS,
                      trainable_token_indices={"embed_tokens": new_ids} if new_ids else None)
    with warnings.catch_warnings():  # peft asks transformers a deprecated question; nothing for a user to do
        warnings.simplefilter("ignore", FutureWarning)
        return get_peft_model(model, lcfg)


def _resize_vocab(model: Any, vocab_size: int) -> list[int]:
    """Grow the (tied) embedding to ``vocab_size``; new rows = the mean embedding. Returns the new ids."""
    import torch

    old = model.get_input_embeddings().weight.shape[0]
    if vocab_size <= old:
        return []
    with torch.no_grad():
        mean = model.get_input_embeddings().weight.mean(dim=0)
        model.resize_token_embeddings(vocab_size, mean_resizing=False)
        model.get_input_embeddings().weight[old:] = mean
        out = model.get_output_embeddings()
        if out is not None and out.weight.data_ptr() != model.get_input_embeddings().weight.data_ptr():
            out.weight[old:] = out.weight[:old].mean(dim=0)
    model.config.vocab_size = vocab_size
    return list(range(old, vocab_size))


def model_defaults(data: ShardData, inherited: dict | None = None) -> dict[str, Any]:
    """melodia.json's "default_programs" and "tempo_unknown" for a model trained on ``data``.

    Both come from the shards' corpus (index.json's "corpus", when its manifest is at hand):
    the commonest ensemble of its pieces, and the 120 qpm Tempo token if most of its pieces
    there are tempo-less (see :func:`melodia.corpus.tempo_unknown_token`). What the corpus
    cannot tell comes from ``inherited``, the model fine-tuned from: a folder with no
    multi-part piece keeps the base model's instruments, and one with no piece near 120 qpm
    keeps its tempo-unknown token (a folder with real 120 qpm songs drops it: that bin is its
    music now).

    Example: ``model_defaults(ShardData("tokens"))  # {"default_programs": [0, 1, 2], ...}``
    """
    from .corpus import ensemble_programs, tempo_unknown_token
    from .fileio import read_jsonl
    from .tokenizer import tempo_tokens

    inherited = dict(inherited or {})
    corpus = data.index.get("corpus")
    manifest = Path(corpus) / "manifest.jsonl" if corpus else None
    rows = read_jsonl(manifest) if manifest is not None and manifest.is_file() else []
    tempos = tempo_tokens(data.root / "tokenizer.json")
    out: dict[str, Any] = {}
    programs = ensemble_programs(rows) or inherited.get("default_programs")
    if programs:
        out["default_programs"] = [int(p) for p in programs]
    verdict = tempo_unknown_token(rows, tempos) if rows and tempos else {"pieces": 0}
    token = verdict["token"] if verdict["pieces"] else inherited.get("tempo_unknown")
    if token is not None and token in tempos:
        out["tempo_unknown"] = token
    return out


def _build(cfg: TrainConfig, data: ShardData, resume_state: dict | None) -> tuple[Any, dict[str, Any]]:
    """The (maybe LoRA-wrapped) model on CPU and facts about it for melodia.json."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if resume_state is not None:  # the architecture recorded in the checkpoint; weights loaded later
        m = resume_state["model"]
        config = LlamaConfig.from_dict(m["llama_config"])
        config._attn_implementation = "sdpa"
        model = LlamaForCausalLM(config)
        if m["vocab_size"] < data.vocab_size:
            raise MelodiaError(f"{data.root}/index.json: vocab_size {data.vocab_size} is larger than the "
                               f"checkpoint model's {m['vocab_size']}")
        info = dict(m["info"])
        if cfg.lora:
            model = _lora_wrap(model, cfg, info.get("new_token_ids", []))
        return model, info
    if cfg.init:
        model, init_meta = load_model_dir(cfg.init, dtype="float32")
        model.train()
        new_ids = _resize_vocab(model, data.vocab_size)
        info = {"preset": init_meta.get("preset") or preset_name(model_config_of(model.config)),
                "init": str(cfg.init), "new_token_ids": new_ids,
                "init_defaults": {k: init_meta[k] for k in ("default_programs", "tempo_unknown") if k in init_meta}}
    else:
        import torch

        torch.manual_seed(cfg.seed)
        model = build_model(cfg.preset or "small", data.vocab_size, seed=cfg.seed)
        info = {"preset": cfg.preset or "small", "init": None, "new_token_ids": []}
    if model.config.vocab_size < data.vocab_size:
        raise MelodiaError(f"{data.root}/index.json: vocab_size {data.vocab_size} is larger than the model's "
                           f"{model.config.vocab_size}")
    if cfg.lora:
        import torch

        torch.manual_seed(cfg.seed)
        model = _lora_wrap(model, cfg, info["new_token_ids"])
    return model, info


def _plain_model(model: Any) -> Any:
    """A plain LlamaForCausalLM to save: LoRA adapters merged into a copy."""
    model = _unwrap(model)
    if hasattr(model, "merge_and_unload"):
        return copy.deepcopy(model).merge_and_unload()
    return model


# ----------------------------------------------------------------------------------------------
# Logging


def _fmt_time(s: float) -> str:
    s = int(max(0, s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Progress:
    """The live progress line on stderr and ``metrics.jsonl`` (main process only)."""

    def __init__(self, out: Path, enabled: bool, keep_until: int | None):
        self.enabled = enabled
        self.path = out / "metrics.jsonl"
        self.tty = enabled and sys.stderr.isatty()
        self.file = None
        if not enabled:
            return
        if keep_until is not None and self.path.exists():  # resume: drop lines after the checkpoint
            kept = []
            for line in self.path.read_text(encoding="utf-8").splitlines():
                with contextlib.suppress(json.JSONDecodeError):
                    row = json.loads(line)
                    if isinstance(row, dict) and row.get("step", 0) <= keep_until:
                        kept.append(line + "\n")
            write_text(self.path, "".join(kept))
        elif keep_until is None:
            write_text(self.path, "")
        self.file = open(self.path, "a", encoding="utf-8")

    def log(self, row: dict[str, Any], line: str, final: bool = False) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        if self.tty and not final:
            sys.stderr.write("\r" + line.ljust(100)[:120])
        else:
            sys.stderr.write(("\r" if self.tty else "") + line + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.file:
            self.file.close()
            self.file = None


# ----------------------------------------------------------------------------------------------
# The run


def train(cfg: TrainConfig) -> Path:
    """Train (or fine-tune, or resume) as ``cfg`` says; returns the model directory ``out/model``.

    Example:
        >>> train(TrainConfig(data="tokens", out="runs/tiny", preset="tiny", steps=200))
        PosixPath('runs/tiny/model')
    """
    import torch

    _check_config(cfg)
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        dist = Dist(cfg.device)
        try:
            return _run(cfg, out=Path(cfg.out), dist=dist)
        finally:
            dist.close()
    finally:
        torch.set_num_threads(threads)


def _run(cfg: TrainConfig, out: Path, dist: Dist) -> Path:
    import torch

    # -- where do we start: fresh, or from out/checkpoint
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        recover_dir(out / "checkpoint")
    dist.barrier()
    state = read_checkpoint_state(out)
    seen = state["step"] if state is not None else -1
    if dist.world > 1 and dist.sum([seen])[0] != seen * dist.world:
        raise MelodiaError(f"{out}: the processes do not all see the same checkpoint; a multi-node run needs "
                           f"--out on a file system every node shares")
    if state is not None and not cfg.resume:
        raise OutputExistsError(f"{out}: already holds a training checkpoint; pass --resume to continue it "
                                f"or choose another --out")
    if state is not None:
        saved = TrainConfig(**{f.name: state["config"].get(f.name, getattr(cfg, f.name)) for f in fields(cfg)})
        differ = [f"{f.name} ({getattr(saved, f.name)!r} -> {getattr(cfg, f.name)!r})" for f in fields(cfg)
                  if f.name not in RESUME_OVERRIDABLE and getattr(saved, f.name) != getattr(cfg, f.name)]
        if differ:
            raise BadInputError(f"{out}/checkpoint: cannot resume with other settings: {', '.join(differ)}")
    elif cfg.resume and dist.is_main:
        print(f"melodia train: no checkpoint in {out}; starting from step 0", file=sys.stderr)

    data = ShardData(cfg.data)
    if cfg.patience and not data.splits.get("valid"):
        raise BadInputError(f"{data.root}/index.json: --patience needs a valid split to watch, and there is none")
    model, info = _build(cfg, data, state)
    defaults = model_defaults(data, info.get("init_defaults"))  # melodia.json's, read once per run
    base = _unwrap(model.get_base_model() if hasattr(model, "get_base_model") else model)
    seq_len = cfg.seq_len or min(data.max_len, base.config.max_position_embeddings)
    n_params = count_parameters(model)
    model.to(dist.device)
    model.train()
    optimizer = make_optimizer(model, cfg, dist.device.type)

    step, consumed, tokens_seen, elapsed_before = 0, 0, 0, 0.0
    best, best_step, bad_evals, last_val, stopped_early = math.inf, -1, 0, None, False
    if state is not None:
        _load_checkpoint_weights(out / "checkpoint", model, optimizer, dist.device)
        _set_rng_state(state["rng"])
        step, consumed, tokens_seen = state["step"], state["consumed"], state["tokens_seen"]
        elapsed_before = state.get("elapsed_s", 0.0)
        best = state["best_val"] if state["best_val"] is not None else math.inf
        best_step, bad_evals, last_val = state["best_step"], state["bad_evals"], state["last_val"]
        stopped_early = state.get("stopped_early", False)

    if dist.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    train_model = model
    if dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        train_model = DDP(model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None)
    if cfg.compile:
        train_model = torch.compile(train_model)
    amp = autocast_for(dist.device)
    pad_multiple = seq_len if cfg.compile else 8  # fixed shapes for compiled graphs
    groups = None
    if cfg.balance_moods:  # each chunk's MOOD token (position 1; chunks start BOS MOOD KEY)
        groups = np.array([int(data.tokens("train", i, 2)[-1]) for i in range(len(data.splits["train"]))])
    stream = TrainStream(len(data.splits["train"]), cfg.seed, groups)
    per_rank = cfg.batch_size * cfg.grad_accum
    global_batch = per_rank * dist.world

    def step_batches(s: int, at: int) -> list[tuple[Any, Any]]:
        """Micro-batches of step ``s`` for this process, starting at stream position ``at``."""
        ids = stream.take(at, global_batch)
        drop = conditioning_dropout(np.random.default_rng([cfg.seed, 1, s]), global_batch, cfg.cond_dropout)
        lo = dist.rank * per_rank
        mine, drop = ids[lo:lo + per_rank], drop[lo:lo + per_rank]
        out_ = []
        for m in range(cfg.grad_accum):
            sl = slice(m * cfg.batch_size, (m + 1) * cfg.batch_size)
            x, y = data.batch("train", mine[sl], seq_len, pad_multiple, drop[sl], pack=cfg.pack, fim=cfg.fim,
                              rng=np.random.default_rng([cfg.seed, 2, s, dist.rank, m]))
            xt, yt = torch.from_numpy(x), torch.from_numpy(y)
            if dist.device.type == "cuda":
                xt, yt = xt.pin_memory().to(dist.device, non_blocking=True), yt.pin_memory().to(dist.device,
                                                                                                 non_blocking=True)
            out_.append((xt, yt, int((y != IGNORE).sum())))
        return out_

    def evaluate() -> float | None:
        valid = data.splits.get("valid") or []
        if not valid:
            return None
        n_batches = -(-len(valid) // cfg.batch_size)
        if cfg.eval_batches:
            n_batches = min(n_batches, cfg.eval_batches * dist.world)
        total, count = torch.zeros((), dtype=torch.float64, device=dist.device), 0
        model.eval()
        with torch.no_grad():
            for b in range(dist.rank, n_batches, dist.world):
                ids = range(b * cfg.batch_size, min(len(valid), (b + 1) * cfg.batch_size))
                x, y = data.batch("valid", list(ids), seq_len, pad_multiple)
                total += summed_loss(model, torch.from_numpy(x).to(dist.device),
                                     torch.from_numpy(y).to(dist.device), amp).double()
                count += int((y != IGNORE).sum())
        model.train()
        s, n = dist.sum([total.item(), count])
        return s / n if n else None

    def save_model(metrics: dict[str, Any]) -> None:
        plain = _plain_model(model)
        plain_cfg = plain.config
        meta = {"preset": info["preset"], "moods": data.mood_ids, "keys": data.key_ids, "tags": data.tag_ids,
                "vocab_size": plain_cfg.vocab_size, "pad_id": data.pad_id, "bos_id": data.bos_id,
                "eos_id": data.eos_id, "max_len": seq_len,
                "corpus": {"data": str(Path(cfg.data).resolve()), "splits": data.index.get("splits", {}),
                           "train_chunks": len(data.splits["train"])},
                "training": {**asdict(cfg), "init": info.get("init"), "new_token_ids": info["new_token_ids"],
                             "steps_done": step, "tokens_seen": tokens_seen, "world_size": dist.world,
                             "device": dist.device.type, "parameters_trained": n_params,
                             "stopped_early": stopped_early},
                "metrics": metrics, **defaults}
        tokenizer_json = data.root / "tokenizer.json"
        if not tokenizer_json.is_file():
            raise MelodiaError(f"{tokenizer_json}: not found; a model directory needs the shards' tokenizer")
        save_model_dir(plain, out / "model", tokenizer_json, meta,
                       dtype=None if cfg.save_dtype == "float32" else cfg.save_dtype)

    def checkpoint() -> None:
        if dist.is_main:
            save_checkpoint(out, model, optimizer, {
                "format": 1, "step": step, "consumed": consumed, "epoch": consumed // stream.n,
                "position": consumed % stream.n, "perm_seed": cfg.seed, "n_train": stream.n,
                "global_batch": global_batch, "world_size": dist.world, "tokens_seen": tokens_seen,
                "best_val": None if best == math.inf else best, "best_step": best_step, "bad_evals": bad_evals,
                "last_val": last_val, "stopped_early": stopped_early,
                "elapsed_s": elapsed_before + time.perf_counter() - t_start,
                "config": asdict(cfg), "model": {"llama_config": base.config.to_dict(),
                                                 "vocab_size": base.config.vocab_size, "info": info}})

    progress = Progress(out, dist.is_main, keep_until=step if state is not None else None)
    if dist.is_main and state is None:
        p = base.config
        print(f"melodia train: {info['preset']} model, {n_params / 1e6:.2f}M parameters "
              f"({count_parameters(model, trainable_only=True) / 1e6:.2f}M trained), {stream.n} train chunks"
              f"{' (drawn balanced by mood)' if cfg.balance_moods else ''}, "
              f"seq_len {seq_len}, {global_batch} chunks/step, {dist.world} process(es) on {dist.device.type}, "
              f"vocab {p.vocab_size}", file=sys.stderr)
    t_start = time.perf_counter()

    def eval_and_track() -> None:
        nonlocal best, best_step, bad_evals, last_val, stopped_early
        last_val = evaluate()
        if last_val is None:
            return
        improved = last_val < best
        if improved:
            best, best_step, bad_evals = last_val, step, 0
        else:
            bad_evals += 1
        progress.log({"step": step, "val_loss": last_val, "best_val_loss": best,
                      "time_s": round(elapsed_before + time.perf_counter() - t_start, 3)},
                     f"step {step}/{cfg.steps}  val {last_val:.4f}  (best {best:.4f} at {best_step})", final=True)
        if cfg.patience and improved and dist.is_main:
            save_model({"val_loss": last_val, "best_val_loss": best, "best_step": best_step})
        if cfg.patience and bad_evals >= cfg.patience:
            stopped_early = True

    if state is None:
        eval_and_track()  # step 0: the loss before any training

    # -- the loop
    loss_sum = torch.zeros((), dtype=torch.float64, device=dist.device)
    loss_tokens, t_log = 0, time.perf_counter()
    last_train_loss = None
    step_times: deque[float] = deque(maxlen=50)
    prefetch = ThreadPoolExecutor(max_workers=1)
    upcoming = prefetch.submit(step_batches, step, consumed) if step < cfg.steps and not stopped_early else None
    try:
        while step < cfg.steps and not stopped_early:
            t0 = time.perf_counter()
            batches = upcoming.result()
            consumed += global_batch
            if step + 1 < cfg.steps:
                upcoming = prefetch.submit(step_batches, step + 1, consumed)
            n_step_tokens = dist.sum([sum(n for _, _, n in batches)])[0] if dist.world > 1 else \
                sum(n for _, _, n in batches)
            lr = lr_at(step, cfg)
            for g in optimizer.param_groups:
                g["lr"] = lr
            for m, (x, y, _) in enumerate(batches):
                last = m == len(batches) - 1
                sync = contextlib.nullcontext() if last or dist.world == 1 else train_model.no_sync()
                with sync:
                    s = summed_loss(train_model, x, y, amp)
                    (s * (dist.world / max(1, n_step_tokens))).backward()
                loss_sum += s.detach().double()
            grad_norm = None
            if cfg.grad_clip:
                grad_norm = torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad],
                                                           cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            loss_tokens += sum(n for _, _, n in batches)
            tokens_seen += int(n_step_tokens)
            step_times.append(time.perf_counter() - t0)

            if step % cfg.log_every == 0 or step == cfg.steps:
                s_sum, s_n = dist.sum([loss_sum.item(), loss_tokens])
                last_train_loss = s_sum / max(1, s_n)
                now = time.perf_counter()
                tok_s = s_n / max(1e-9, now - t_log)  # target tokens (no padding) of every process
                eta = (cfg.steps - step) * sum(step_times) / len(step_times)
                row = {"step": step, "loss": last_train_loss, "lr": lr, "tokens": tokens_seen,
                       "tok_s": round(tok_s, 1), "time_s": round(elapsed_before + now - t_start, 3)}
                if grad_norm is not None:
                    row["grad_norm"] = float(grad_norm)
                progress.log(row, f"step {step}/{cfg.steps}  loss {last_train_loss:.4f}  lr {lr:.2e}  "
                                  f"{tok_s / 1000:.1f}k tok/s  ETA {_fmt_time(eta)}")
                loss_sum.zero_()
                loss_tokens, t_log = 0, now
            out_of_time = bool(cfg.max_minutes) and dist.sum(
                [float(elapsed_before + time.perf_counter() - t_start >= cfg.max_minutes * 60)])[0] > 0
            if step % cfg.eval_every == 0 or step == cfg.steps or (out_of_time and step % cfg.eval_every):
                eval_and_track()
            if step % cfg.ckpt_every == 0 or step == cfg.steps or stopped_early or out_of_time:
                checkpoint()
            if out_of_time:
                if dist.is_main:
                    print(f"melodia train: {cfg.max_minutes:g} minutes of wall time used; stopped at step {step}",
                          file=sys.stderr)
                break
    finally:
        prefetch.shutdown(wait=True, cancel_futures=True)

    if dist.is_main:
        wrote_best = cfg.patience and best_step >= 0 and (out / "model").is_dir()
        if stopped_early:
            print(f"melodia train: no improvement in {cfg.patience} evaluations; stopped at step {step}, "
                  f"keeping step {best_step}", file=sys.stderr)
        if not wrote_best:
            save_model({"val_loss": last_val, "best_val_loss": None if best == math.inf else best,
                        "best_step": best_step, "train_loss": last_train_loss})
        print(f"melodia train: model written to {out / 'model'}", file=sys.stderr)
    progress.close()
    dist.barrier()
    return out / "model"


# ----------------------------------------------------------------------------------------------
# Command line


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``melodia train``'s options to ``parser``. Example: ``add_train_arguments(sub.add_parser("train"))``."""
    d = TrainConfig(data="", out="")
    a = parser.add_argument
    a("--data", help="token shards folder (holds index.json); or give --corpus")
    a("--corpus", metavar="MIDI_DIR", help="fine-tune in one command: build a corpus from this folder of MIDI "
                                          "files (sub-folder names and labels.csv become tags/moods), "
                                          "tokenize it with the --init/--from model's tokenizer, train")
    a("--from", dest="init_from", metavar="MODEL", help="same as --init; 'default' = the shipped model")
    a("--out", required=True, help="run folder: model/, checkpoint/, metrics.jsonl")
    a("--preset", choices=["tiny", "small", "base", "large"], help="model size when training from scratch "
                                                                     "(default small)")
    a("--init", metavar="DIR", help="start from this model directory (fine-tuning)")
    a("--lora", type=int, metavar="R", help="train LoRA adapters of rank R (merged into the saved model)")
    a("--lora-alpha", type=float, help="LoRA alpha (default 2*R)")
    a("--steps", type=int, help=f"optimizer steps (default {d.steps})")
    a("--batch-size", type=int, help=f"chunks per micro-batch per process (default {d.batch_size})")
    a("--grad-accum", type=int, help=f"micro-batches per step (default {d.grad_accum})")
    a("--seq-len", type=int, help="tokens per sample (default: the shards' max_len, capped at the model's)")
    a("--no-pack", dest="pack", action="store_false", default=None,
      help="one chunk per row instead of packing a step's chunks end to end")
    a("--lr", type=float, help=f"peak learning rate (default {d.lr})")
    a("--min-lr-ratio", type=float, help=f"final lr / peak lr (default {d.min_lr_ratio})")
    a("--warmup", type=int, help=f"warm-up steps (default {d.warmup})")
    a("--weight-decay", type=float, help=f"AdamW weight decay (default {d.weight_decay})")
    a("--grad-clip", type=float, help=f"gradient norm clip, 0 = off (default {d.grad_clip})")
    a("--cond-dropout", type=float, help=f"P(mood/key -> any) (default {d.cond_dropout})")
    a("--balance-moods", action="store_true", default=None,
      help="draw train chunks so every mood is read equally often (default: each chunk once per epoch)")
    a("--fim", type=float, help=f"share of train chunks rearranged to teach infilling (bars before, bars "
                                f"after, then the missing bars; needs shards with chord/FIM tokens; "
                                f"default {d.fim})")
    a("--seed", type=int, help=f"random seed (default {d.seed})")
    a("--eval-every", type=int, help=f"validate every N steps (default {d.eval_every})")
    a("--eval-batches", type=int, help=f"validation batches, 0 = all (default {d.eval_batches})")
    a("--ckpt-every", type=int, help=f"checkpoint every N steps (default {d.ckpt_every})")
    a("--log-every", type=int, help=f"progress line every N steps (default {d.log_every})")
    a("--patience", type=int, help="stop after N validations without improvement; keep the best (default off)")
    a("--save-dtype", choices=["float32", "bfloat16", "float16"], help="dtype of the saved model (default float32)")
    a("--device", help="auto, cpu, cuda or cuda:N (default auto)")
    a("--compile", action="store_true", default=None, help="torch.compile the model (CUDA)")
    a("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    a("--resume", action="store_true", default=None, help="continue from OUT/checkpoint")
    a("--max-minutes", type=float, help="stop after this much wall time, validated and checkpointed "
                                        "(--resume goes on; default: no limit)")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """A :class:`TrainConfig` from parsed options; with ``--resume``, unset options come from the checkpoint.

    Example: ``config_from_args(parser.parse_args(["--data", "t", "--out", "r"]))``.
    """
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name, None) is not None}
    base: dict[str, Any] = {}
    if given.get("resume"):
        state = read_checkpoint_state(given["out"])
        if state is not None:
            base = {k: v for k, v in state["config"].items() if k in {f.name for f in fields(TrainConfig)}}
    return TrainConfig(**{**base, **given})


def prepare_finetune(corpus: str | os.PathLike, base: str | os.PathLike, out: str | os.PathLike,
                     progress: bool = True) -> tuple[Path, dict]:
    """A user's MIDI folder → ``OUT/corpus`` → ``OUT/tokens`` with the base model's tokenizer
    (new tags and moods appended as control tokens). With no song in the valid split (small
    folders), about a tenth of the pieces become validation so that early stopping can work.
    Returns the shards folder and a summary.

    Example: ``shards, info = prepare_finetune("my_midi", "melodia/weights/default", "runs/mine")``
    """
    from .corpus import build_corpus
    from .fileio import write_json
    from .tokenizer import tokenize_corpus

    out, base = Path(out), Path(base)
    cfg = json.loads((base / "config.json").read_text(encoding="utf-8")) if (base / "config.json").is_file() else {}
    if not (base / "tokenizer.json").is_file():
        raise BadInputError(f"{base}: not a model directory (no tokenizer.json)")
    summary = build_corpus([str(corpus)], out / "corpus", progress=progress)
    if summary.pieces == 0:
        raise BadInputError(f"{corpus}: no usable MIDI files (see {out / 'corpus' / 'report.json'})")
    tok = tokenize_corpus(out / "corpus", out / "tokens", tokenizer=base / "tokenizer.json",
                          max_len=int(cfg.get("max_position_embeddings", 1024)), progress=progress)
    index_path = out / "tokens" / "index.json"
    index = json.loads(index_path.read_text(encoding="utf-8"))
    if not any(c["split"] == "valid" for c in index["chunks"]):
        pieces = sorted({c["piece"] for c in index["chunks"] if c["split"] == "train"})
        held = set(pieces[:: 10]) if len(pieces) >= 4 else set()
        for c in index["chunks"]:
            if c["piece"] in held:
                c["split"] = "valid"
        for name in ("train", "valid"):
            chunks = [c for c in index["chunks"] if c["split"] == name]
            index["splits"][name] = {"chunks": len(chunks), "tokens": sum(c["length"] for c in chunks)}
        write_json(index_path, index, indent=None)
    return out / "tokens", {"pieces": summary.pieces, "skipped": summary.skipped,
                            "tags": sorted(index.get("tag_ids", {})), "chunks": len(index["chunks"]),
                            "vocab_size": tok.vocab_size}


def cli_train(args: argparse.Namespace) -> int:
    """Run ``melodia train`` from parsed options; returns the exit status. Example: ``cli_train(args)``."""
    init_from = getattr(args, "init_from", None)
    if init_from:
        if args.init and args.init != init_from:
            raise BadInputError("give --init or --from, not both")
        args.init = init_from
    if args.init == "default":
        args.init = str(Path(__file__).parent / "weights" / "default")
    corpus = getattr(args, "corpus", None)
    if corpus:
        if args.data:
            raise BadInputError("give --data (ready shards) or --corpus (a MIDI folder), not both")
        if not args.init:
            raise BadInputError("--corpus fine-tunes a model: name it with --from MODEL (or --from default)")
        if args.resume and (Path(args.out) / "tokens" / "index.json").is_file():
            args.data = str(Path(args.out) / "tokens")
        else:
            shards, info = prepare_finetune(corpus, args.init, args.out)
            args.data = str(shards)
            print(f"melodia train: {info['pieces']} pieces, {info['chunks']} chunks, tags: "
                  f"{', '.join(info['tags']) or 'none'}; vocabulary {info['vocab_size']}", flush=True)
            # defaults for a small corpus: a few epochs, early stop on validation loss
            n_train = sum(1 for c in json.loads((shards / "index.json").read_text())["chunks"] if c["split"] == "train")
            bs = args.batch_size or 8
            if args.batch_size is None:
                args.batch_size = bs
            if args.steps is None:
                args.steps = max(20, min(2000, -(-4 * n_train // bs)))
            if args.eval_every is None:
                args.eval_every = max(5, args.steps // 8)
            if args.patience is None:
                args.patience = 3
            if args.warmup is None:
                args.warmup = max(1, min(20, args.steps // 10))
            if args.ckpt_every is None:
                args.ckpt_every = args.eval_every
    elif not args.data:
        raise BadInputError("melodia train needs --data SHARDS (or --corpus MIDI_DIR --from MODEL)")
    cfg = config_from_args(args)
    try:
        train(cfg)
    except KeyboardInterrupt:
        print(f"\nmelodia train: interrupted; continue with --resume --out {cfg.out}", file=sys.stderr)
        return 130
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m melodia.train …``. Example: ``main(["--data", "tokens", "--out", "runs/a", "--preset", "tiny"])``."""
    parser = argparse.ArgumentParser(prog="melodia train", description="Train or fine-tune a melodia model.")
    add_train_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return cli_train(args)
    except MelodiaError as e:
        print(f"melodia train: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
