"""The training loop: processes and devices (:class:`Dist`), the optimizer and schedule, the
progress line, and one run (:class:`Run`) from its first step, or its checkpoint, to ``out/model``.

Example: ``train(TrainConfig(data="tokens", out="runs/tiny", preset="tiny", steps=200))``
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import sys
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadInputError, MelodiaError, OutputExistsError
from ..fileio import recover_dir, write_text
from ..model import count_parameters, save_model_dir
from ..model.precision import choose_precision
from .build import build_run_model, model_defaults, plain_model
from .checkpoint import load_checkpoint_weights, read_checkpoint_state, save_checkpoint, set_rng_state, unwrap
from .config import IGNORE, RESUME_OVERRIDABLE, TrainConfig, check_config, warmup_cap
from .data import ShardData, TrainStream, conditioning_dropout

# ----------------------------------------------------------------------------------------------
# Processes and devices


class Dist:
    """Rank, world size and device of this process; torchrun sets the environment it reads. Example: ``dist = Dist("auto"); dist.is_main``"""

    def __init__(self, device: str):
        import torch  # heavy: loaded when training starts

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
        import torch  # heavy: loaded when training starts
        import torch.distributed as dist

        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def barrier(self) -> None:
        """Example: ``dist.barrier()``."""
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
    import torch  # heavy: loaded when training starts

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


def autocast_for(device: Any, precision: str | None = None) -> Any:
    """The autocast context of a run: bf16 autocast (CUDA or CPU; the weights stay fp32) for
    ``precision="bf16"``, nothing for ``"fp32"``; None: bf16 on CUDA where supported, fp32 on CPU.
    Pick ``precision`` with :func:`melodia.model.precision.choose_precision`.

    Example: ``with autocast_for(torch.device("cpu"), "bf16"): ...``."""
    import torch  # heavy: loaded when training starts

    if precision is None:
        precision = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def summed_loss(model: Any, x: Any, y: Any, amp: Any) -> Any:
    """Cross-entropy summed over the target tokens of a batch (fp32). Example: ``summed_loss(m, x, y, amp)``."""
    import torch.nn.functional as F

    with amp:
        logits = model(input_ids=x, use_cache=False).logits
    return F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=IGNORE, reduction="sum")


# ----------------------------------------------------------------------------------------------
# Logging


def fmt_time(s: float) -> str:
    """Example: ``fmt_time(3725) == "1h02m"``."""
    s = int(max(0, s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Progress:
    """The live progress line on stderr and ``metrics.jsonl`` (main process only). Example: ``Progress(Path("runs/a"), True, None).log({"step": 1}, "step 1")``"""

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
        """Example: ``progress.log({"step": 10, "loss": 4.1}, "step 10/200  loss 4.1")``."""
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
        """Example: ``dist.close()``."""
        if self.file:
            self.file.close()
            self.file = None



# ----------------------------------------------------------------------------------------------
# The run


def train(cfg: TrainConfig) -> Path:
    """Train (or fine-tune, or resume) as ``cfg`` says; returns the model directory ``out/model``.

    ``out`` is made once the data and the model are ready; a run that fails before writing
    anything there removes the folder it made (a folder that was there before stays).

    Example:
        >>> train(TrainConfig(data="tokens", out="runs/tiny", preset="tiny", steps=200))
        PosixPath('runs/tiny/model')
    """
    import torch  # heavy: loaded when training starts

    check_config(cfg)
    out = Path(cfg.out)
    made_here = not out.exists() and int(os.environ.get("RANK", "0")) == 0
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        dist = Dist(cfg.device)
        try:
            return Run(cfg, out=out, dist=dist).loop()
        finally:
            dist.close()
    except BaseException:
        if made_here:
            drop_if_empty(out)
        raise
    finally:
        torch.set_num_threads(threads)


def drop_if_empty(folder: Path) -> bool:
    """Remove ``folder`` if it holds nothing (no file, or only empty files such as a fresh
    ``metrics.jsonl``); returns whether it did. A failed start leaves no empty run folder behind.

    Example: ``drop_if_empty(Path("runs/a"))  # True when only an empty metrics.jsonl was there``
    """
    if not folder.is_dir() or any(p.is_symlink() or (p.is_file() and p.stat().st_size) or
                                  not (p.is_file() or p.is_dir()) for p in folder.rglob("*")):
        return False
    shutil.rmtree(folder)
    return True


def start_state(cfg: TrainConfig, out: Path, dist: Dist) -> dict[str, Any] | None:
    """Where a run starts: the state of ``out/checkpoint`` (checked against ``cfg``), or None.

    Example: ``start_state(cfg, Path(cfg.out), Dist("cpu"))  # None for a fresh run``
    """
    if dist.is_main:  # the folder itself is made once training can start (Run)
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
        if cfg.warmup == state.get("warmup_asked"):
            cfg = replace(cfg, warmup=saved.warmup)  # the same warm-up, capped when the run started (Run.settle)
        differ = [f"{f.name} ({getattr(saved, f.name)!r} -> {getattr(cfg, f.name)!r})" for f in fields(cfg)
                  if f.name not in RESUME_OVERRIDABLE and getattr(saved, f.name) != getattr(cfg, f.name)]
        if differ:
            raise BadInputError(f"{out}/checkpoint: cannot resume with other settings: {', '.join(differ)}")
    elif cfg.resume and dist.is_main:
        print(f"melodia train: no checkpoint in {out}; starting from step 0", file=sys.stderr)
    return state


class Run:
    """One training run: its data, model, optimizer and position in the data; :meth:`loop`
    trains until ``cfg.steps``, early stopping or ``max_minutes``, and returns ``out/model``.

    Example: ``Run(cfg, Path(cfg.out), Dist(cfg.device)).loop()``
    """

    def __init__(self, cfg: TrainConfig, out: Path, dist: Dist):
        import torch  # heavy: loaded when training starts

        self.out, self.dist = out, dist
        self.warmup_asked = cfg.warmup  # before Run.settle caps it; a checkpoint keeps both
        self.state = state = start_state(cfg, out, dist)
        self.data = data = ShardData(cfg.data)
        self.cfg = cfg = self.settle(cfg, data, state)
        self.model, self.info = model, info = build_run_model(cfg, data, state)
        self.defaults = model_defaults(data, info.get("init_defaults"))  # melodia.json's, read once per run
        self.base = unwrap(model.get_base_model() if hasattr(model, "get_base_model") else model)
        self.seq_len = cfg.seq_len or min(data.max_len, self.base.config.max_position_embeddings)
        self.n_params = count_parameters(model)
        model.to(dist.device)
        model.train()
        self.optimizer = make_optimizer(model, cfg, dist.device.type)

        self.step, self.consumed, self.tokens_seen, self.elapsed_before = 0, 0, 0, 0.0
        self.best, self.best_step, self.bad_evals, self.last_val, self.stopped_early = math.inf, -1, 0, None, False
        self.last_train_loss: float | None = None
        self.session_tokens, self.session_train_s = 0, 0.0  # this session's optimizer steps (tokens/s)
        self.window: Window | None = None  # the loss since the last progress line, while looping
        if state is not None:
            load_checkpoint_weights(out / "checkpoint", model, self.optimizer, dist.device)
            set_rng_state(state["rng"])
            self.step, self.consumed, self.tokens_seen = state["step"], state["consumed"], state["tokens_seen"]
            self.elapsed_before = state.get("elapsed_s", 0.0)
            self.best = state["best_val"] if state["best_val"] is not None else math.inf
            self.best_step, self.bad_evals, self.last_val = state["best_step"], state["bad_evals"], state["last_val"]
            self.stopped_early = state.get("stopped_early", False)

        if dist.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.train_model = model
        if dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.train_model = DDP(model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None)
        if cfg.compile:
            self.train_model = torch.compile(self.train_model)
        self.precision, self.precision_why = choose_precision(cfg.precision, dist.device, self.base.config.hidden_size)
        self.amp = autocast_for(dist.device, self.precision)
        self.pad_multiple = self.seq_len if cfg.compile else 8  # fixed shapes for compiled graphs
        groups = None
        if cfg.balance_moods:  # each chunk's MOOD token (position 1; chunks start BOS MOOD KEY)
            groups = np.array([int(data.tokens("train", i, 2)[-1]) for i in range(len(data.splits["train"]))])
        self.stream = TrainStream(len(data.splits["train"]), cfg.seed, groups)
        self.per_rank = cfg.batch_size * cfg.grad_accum
        self.global_batch = self.per_rank * dist.world

        if dist.is_main:
            out.mkdir(parents=True, exist_ok=True)  # data and model are ready: training can start
        self.progress = Progress(out, dist.is_main, keep_until=self.step if state is not None else None)
        if dist.is_main and state is None:
            p = self.base.config
            print(f"melodia train: {info['preset']} model, {self.n_params / 1e6:.2f}M parameters "
                  f"({count_parameters(model, trainable_only=True) / 1e6:.2f}M trained), {self.stream.n} train "
                  f"chunks{' (drawn balanced by mood)' if cfg.balance_moods else ''}, "
                  f"seq_len {self.seq_len}, {self.global_batch} chunks/step, {dist.world} process(es) on "
                  f"{dist.device.type}, vocab {p.vocab_size}", file=sys.stderr)
        if dist.is_main:
            print(f"melodia train: {self.precision} ({'autocast, fp32 master weights; ' if self.precision == 'bf16' else ''}"
                  f"{self.precision_why}), {'compiled' if cfg.compile else 'not compiled'}", file=sys.stderr)
        self.t_start = time.perf_counter()

    def settle(self, cfg: TrainConfig, data: ShardData, state: dict[str, Any] | None) -> TrainConfig:
        """The settings this run trains with, each change said in one line on stderr:
        ``patience`` is dropped when the shards have no valid split to watch (every step runs,
        the last weights are kept), and a fresh run's ``warmup`` is cut to a tenth of its steps
        (:func:`warmup_cap`; a resumed run keeps its checkpoint's).

        Example: ``run.settle(TrainConfig(data="T", out="r", steps=20), data, None).warmup  # 2``
        """
        if state is not None:  # resuming: the warm-up the run started with (start_state checked it)
            cfg = replace(cfg, warmup=state["config"].get("warmup", cfg.warmup))
            self.warmup_asked = state.get("warmup_asked", self.warmup_asked)
        say = self.dist.is_main
        if cfg.patience and not data.splits.get("valid"):
            if say:
                print(f"melodia train: warning: --patience {cfg.patience} ignored: {data.root} has no validation "
                      f"split to watch, so all {cfg.steps} steps run and the last weights are kept (`melodia "
                      f"train --corpus MIDI_DIR --from MODEL` holds out a tenth of the pieces)", file=sys.stderr)
            cfg = replace(cfg, patience=0)
        cap = warmup_cap(cfg.steps)
        if state is None and cfg.warmup > cap:
            if say:
                print(f"melodia train: note: warm-up {cfg.warmup} steps is over a tenth of the {cfg.steps} steps; "
                      f"warming up for {cap} instead", file=sys.stderr)
            cfg = replace(cfg, warmup=cap)
        return cfg

    def elapsed(self) -> float:
        """Seconds of training so far, over every session of a resumed run. Example: ``run.elapsed()``"""
        return self.elapsed_before + time.perf_counter() - self.t_start

    def step_batches(self, s: int, at: int) -> list[tuple[Any, Any, int]]:
        """Micro-batches ``(x, y, target tokens)`` of step ``s`` for this process, from stream position ``at``. Example: ``x, y, n = run.step_batches(0, 0)[0]``"""
        import torch  # heavy: loaded when training starts

        cfg, dist = self.cfg, self.dist
        ids = self.stream.take(at, self.global_batch)
        drop = conditioning_dropout(np.random.default_rng([cfg.seed, 1, s]), self.global_batch, cfg.cond_dropout)
        lo = dist.rank * self.per_rank
        mine, drop = ids[lo:lo + self.per_rank], drop[lo:lo + self.per_rank]
        out_ = []
        for m in range(cfg.grad_accum):
            sl = slice(m * cfg.batch_size, (m + 1) * cfg.batch_size)
            x, y = self.data.batch("train", mine[sl], self.seq_len, self.pad_multiple, drop[sl], pack=cfg.pack,
                                   fim=cfg.fim, rng=np.random.default_rng([cfg.seed, 2, s, dist.rank, m]))
            xt, yt = torch.from_numpy(x), torch.from_numpy(y)
            if dist.device.type == "cuda":
                xt, yt = xt.pin_memory().to(dist.device, non_blocking=True), yt.pin_memory().to(dist.device,
                                                                                                 non_blocking=True)
            out_.append((xt, yt, int((y != IGNORE).sum())))
        return out_

    def validation_loss(self) -> float | None:
        """Mean loss per target token on the valid split (``eval_batches`` batches), or None. Example: ``run.validation_loss()  # 4.52``"""
        import torch  # heavy: loaded when training starts

        cfg, dist, model = self.cfg, self.dist, self.model
        valid = self.data.splits.get("valid") or []
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
                x, y = self.data.batch("valid", list(ids), self.seq_len, self.pad_multiple)
                total += summed_loss(model, torch.from_numpy(x).to(dist.device),
                                     torch.from_numpy(y).to(dist.device), self.amp).double()
                count += int((y != IGNORE).sum())
        model.train()
        s, n = dist.sum([total.item(), count])
        return s / n if n else None

    def save_model(self, metrics: dict[str, Any]) -> None:
        """Write ``out/model``: the plain model (LoRA merged), the shards' tokenizer and melodia.json. Example: ``run.save_model({"val_loss": 4.5})``"""
        cfg, data, info = self.cfg, self.data, self.info
        plain = plain_model(self.model)
        plain_cfg = plain.config
        meta = {"preset": info["preset"], "moods": data.mood_ids, "keys": data.key_ids, "tags": data.tag_ids,
                "vocab_size": plain_cfg.vocab_size, "pad_id": data.pad_id, "bos_id": data.bos_id,
                "eos_id": data.eos_id, "max_len": self.seq_len,
                "corpus": {"data": str(Path(cfg.data).resolve()), "splits": data.index.get("splits", {}),
                           "train_chunks": len(data.splits["train"])},
                "training": {**asdict(cfg), "init": info.get("init"), "new_token_ids": info["new_token_ids"],
                             "steps_done": self.step, "tokens_seen": self.tokens_seen,
                             "world_size": self.dist.world, "device": self.dist.device.type,
                             "precision_used": self.precision,
                             "parameters_trained": self.n_params, "stopped_early": self.stopped_early},
                "metrics": metrics, **self.defaults}
        tokenizer_json = data.root / "tokenizer.json"
        if not tokenizer_json.is_file():
            raise MelodiaError(f"{tokenizer_json}: not found; a model directory needs the shards' tokenizer")
        save_model_dir(plain, self.out / "model", tokenizer_json, meta,
                       dtype=None if cfg.save_dtype == "float32" else cfg.save_dtype)

    def checkpoint(self) -> None:
        """Write ``out/checkpoint`` (main process): weights, optimizer, position, RNG states. Example: ``run.checkpoint()``"""
        if not self.dist.is_main:
            return
        best = self.best
        save_checkpoint(self.out, self.model, self.optimizer, {
            "format": 1, "step": self.step, "consumed": self.consumed, "epoch": self.consumed // self.stream.n,
            "position": self.consumed % self.stream.n, "perm_seed": self.cfg.seed, "n_train": self.stream.n,
            "global_batch": self.global_batch, "world_size": self.dist.world, "tokens_seen": self.tokens_seen,
            "best_val": None if best == math.inf else best, "best_step": self.best_step,
            "bad_evals": self.bad_evals, "last_val": self.last_val, "stopped_early": self.stopped_early,
            "warmup_asked": self.warmup_asked,
            "elapsed_s": self.elapsed(),
            "config": asdict(self.cfg), "model": {"llama_config": self.base.config.to_dict(),
                                                  "vocab_size": self.base.config.vocab_size, "info": self.info}})

    def eval_and_track(self) -> None:
        """Validate; track the best loss; with ``patience``, save an improvement and stop after too few. Example: ``run.eval_and_track()``"""
        cfg = self.cfg
        self.last_val = last_val = self.validation_loss()
        if last_val is None:
            return
        improved = last_val < self.best
        if improved:
            self.best, self.best_step, self.bad_evals = last_val, self.step, 0
        else:
            self.bad_evals += 1
        self.progress.log({"step": self.step, "val_loss": last_val, "best_val_loss": self.best,
                           "time_s": round(self.elapsed(), 3)},
                          f"step {self.step}/{cfg.steps}  val {last_val:.4f}  (best {self.best:.4f} at "
                          f"{self.best_step})", final=True)
        if cfg.patience and improved and self.dist.is_main:
            self.save_model({"val_loss": last_val, "best_val_loss": self.best, "best_step": self.best_step})
        if cfg.patience and self.bad_evals >= cfg.patience:
            self.stopped_early = True

    def loop(self) -> Path:
        """Train to the end (step 0 validated first on a fresh run); returns ``out/model``. Example: ``Run(cfg, out, dist).loop()  # PosixPath("runs/a/model")``"""
        cfg, dist = self.cfg, self.dist
        if self.state is None:
            self.eval_and_track()  # step 0: the loss before any training
        self.window = Window(dist)
        prefetch = ThreadPoolExecutor(max_workers=1)
        upcoming = prefetch.submit(self.step_batches, self.step, self.consumed) \
            if self.step < cfg.steps and not self.stopped_early else None
        try:
            while self.step < cfg.steps and not self.stopped_early:
                t0 = time.perf_counter()
                batches = upcoming.result()
                self.consumed += self.global_batch
                if self.step + 1 < cfg.steps:
                    upcoming = prefetch.submit(self.step_batches, self.step + 1, self.consumed)
                lr, grad_norm = self.optimizer_step(batches)
                self.window.times.append(time.perf_counter() - t0)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    self.log_step(lr, grad_norm)
                out_of_time = bool(cfg.max_minutes) and dist.sum(
                    [float(self.elapsed() >= cfg.max_minutes * 60)])[0] > 0
                if self.step % cfg.eval_every == 0 or self.step == cfg.steps or \
                        (out_of_time and self.step % cfg.eval_every):
                    self.eval_and_track()
                if self.step % cfg.ckpt_every == 0 or self.step == cfg.steps or self.stopped_early or out_of_time:
                    self.checkpoint()
                if out_of_time:
                    if dist.is_main:
                        print(f"melodia train: {cfg.max_minutes:g} minutes of wall time used; stopped at step "
                              f"{self.step}", file=sys.stderr)
                    break
        finally:
            prefetch.shutdown(wait=True, cancel_futures=True)
        return self.finish()

    def optimizer_step(self, batches: list[tuple[Any, Any, int]]) -> tuple[float, Any]:
        """One optimizer step over a step's micro-batches; returns ``(lr, grad norm or None)``. Example: ``lr, norm = run.optimizer_step(run.step_batches(run.step, run.consumed))``"""
        import torch  # heavy: loaded when training starts

        cfg, dist = self.cfg, self.dist
        t0 = time.perf_counter()
        n_step_tokens = dist.sum([sum(n for _, _, n in batches)])[0] if dist.world > 1 else \
            sum(n for _, _, n in batches)
        lr = lr_at(self.step, cfg)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        for m, (x, y, _) in enumerate(batches):
            last = m == len(batches) - 1
            sync = contextlib.nullcontext() if last or dist.world == 1 else self.train_model.no_sync()
            with sync:
                s = summed_loss(self.train_model, x, y, self.amp)
                (s * (dist.world / max(1, n_step_tokens))).backward()
            self.window.add(s)
        grad_norm = None
        if cfg.grad_clip:
            grad_norm = torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad],
                                                       cfg.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.window.tokens += sum(n for _, _, n in batches)
        self.tokens_seen += int(n_step_tokens)
        self.session_tokens += int(n_step_tokens)
        self.session_train_s += time.perf_counter() - t0
        return lr, grad_norm

    def log_step(self, lr: float, grad_norm: Any) -> None:
        """The progress line and metrics row for the steps since the last one. Example: ``run.log_step(3e-4, None)``"""
        cfg, w = self.cfg, self.window
        s_sum, s_n = self.dist.sum([w.sum.item(), w.tokens])
        self.last_train_loss = s_sum / max(1, s_n)
        now = time.perf_counter()
        tok_s = s_n / max(1e-9, now - w.since)  # target tokens (no padding) of every process
        eta = (cfg.steps - self.step) * sum(w.times) / len(w.times)
        row = {"step": self.step, "loss": self.last_train_loss, "lr": lr, "tokens": self.tokens_seen,
               "tok_s": round(tok_s, 1), "time_s": round(self.elapsed_before + now - self.t_start, 3)}
        if grad_norm is not None:
            row["grad_norm"] = float(grad_norm)
        self.progress.log(row, f"step {self.step}/{cfg.steps}  loss {self.last_train_loss:.4f}  lr {lr:.2e}  "
                               f"{tok_s / 1000:.1f}k tok/s  ETA {fmt_time(eta)}")
        w.sum.zero_()
        w.tokens, w.since = 0, now

    def finish(self) -> Path:
        """Save the final model (unless early stopping kept the best), close the log; returns ``out/model``. Example: ``run.finish()``"""
        cfg, dist, out = self.cfg, self.dist, self.out
        if dist.is_main:
            wrote_best = cfg.patience and self.best_step >= 0 and (out / "model").is_dir()
            if self.stopped_early:
                print(f"melodia train: no improvement in {cfg.patience} evaluations; stopped at step {self.step}, "
                      f"keeping step {self.best_step}", file=sys.stderr)
            if not wrote_best:
                self.save_model({"val_loss": self.last_val,
                                 "best_val_loss": None if self.best == math.inf else self.best,
                                 "best_step": self.best_step, "train_loss": self.last_train_loss})
            if self.session_train_s > 0:
                print(f"melodia train: {self.session_tokens / self.session_train_s:,.0f} tokens/s over "
                      f"{self.session_tokens:,} target tokens ({self.precision}, "
                      f"{'compiled' if cfg.compile else 'not compiled'}; validation not counted)", file=sys.stderr)
            print(f"melodia train: model written to {out / 'model'}", file=sys.stderr)
        self.progress.close()
        dist.barrier()
        return out / "model"


class Window:
    """The training loss summed since the last progress line, and recent step times (for the ETA). Example: ``w = Window(dist); w.add(loss)``"""

    def __init__(self, dist: Dist):
        import torch  # heavy: loaded when training starts

        self.sum = torch.zeros((), dtype=torch.float64, device=dist.device)
        self.tokens, self.since = 0, time.perf_counter()
        self.times: deque[float] = deque(maxlen=50)

    def add(self, loss: Any) -> None:
        """Add one micro-batch's summed loss. Example: ``window.add(summed_loss(model, x, y, amp))``"""
        self.sum += loss.detach().double()
