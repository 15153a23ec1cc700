"""Every training setting (:class:`TrainConfig`) and its checks.

Example: ``check_config(TrainConfig(data="tokens", out="runs/a", preset="tiny"))``
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import BadInputError

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
    warmup: int = 100                # linear warm-up steps, at most a tenth of ``steps`` (warmup_cap)
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
    patience: int = 0                # stop after this many evaluations without improvement (0: never;
                                     # ignored, with a warning, when the shards have no valid split)
    save_dtype: str = "float32"      # dtype of out/model weights: float32 | bfloat16 | float16
    device: str = "auto"             # auto | cpu | cuda | cuda:N (torchrun picks cuda:LOCAL_RANK)
    compile: bool = False            # torch.compile the model (meant for CUDA; on CPU it lost, docs/benchmarks.md)
    precision: str = "auto"          # auto | fp32 | bf16: bf16 autocast, fp32 master weights (auto: CUDA,
                                     # or a CPU whose bf16 matmul the start-up probe finds faster)
    threads: int = 0                 # torch CPU threads (0: torch's default)
    resume: bool = False             # continue from out/checkpoint
    max_minutes: float = 0.0         # stop (validated, checkpointed) after this much wall time; 0: no limit


# Settings that may differ when resuming; every other one must match the checkpoint's.
RESUME_OVERRIDABLE = frozenset({"data", "out", "resume", "steps", "max_minutes", "eval_every", "eval_batches",
                                "ckpt_every",
                                "log_every", "patience", "save_dtype", "device", "compile", "threads",
                                "precision"})


def warmup_cap(steps: int) -> int:
    """The longest warm-up a run of ``steps`` steps gets: a tenth of them (at least 1). A fresh
    run with a longer ``warmup`` is given this one, and says so: 100 warm-up steps (the
    default) in a 20-step fine-tuning run would never reach the peak learning rate.

    Example: ``warmup_cap(20) == 2``; ``warmup_cap(2000) == 200``
    """
    return max(1, steps // 10)


def check_config(cfg: TrainConfig) -> None:
    """Raise :class:`BadInputError` naming the first bad setting. Example: ``check_config(cfg)``."""
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
    if cfg.precision not in ("auto", "fp32", "bf16"):
        raise BadInputError(f"precision must be auto, fp32 or bf16, got {cfg.precision!r}")
    if cfg.save_dtype not in ("float32", "bfloat16", "float16"):
        raise BadInputError(f"save_dtype must be float32, bfloat16 or float16, got {cfg.save_dtype!r}")
