"""``melodia train`` and ``python -m melodia.train``: options → :class:`TrainConfig` → :func:`train`;
``--corpus`` fine-tunes on a folder of MIDI files in one command.

Example: ``main(["--data", "tokens", "--out", "runs/a", "--preset", "tiny"])``
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from ..corpus import build_corpus
from ..errors import BadInputError, MelodiaError
from ..fileio import check_out_dir, write_json
from ..model import DEFAULT_MODEL_DIR
from ..shards import tokenize_corpus
from .checkpoint import read_checkpoint_state
from .config import TrainConfig
from .loop import train


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
    a("--warmup", type=int, help=f"warm-up steps (default {d.warmup}; at most a tenth of --steps: a longer "
                                 f"one is cut, with a note)")
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
    a("--patience", type=int, help="stop after N validations without improvement; keep the best (default off; "
                                   "ignored, with a warning, when the shards have no validation split)")
    a("--save-dtype", choices=["float32", "bfloat16", "float16"], help="dtype of the saved model (default float32)")
    a("--device", help="auto, cpu, cuda or cuda:N (default auto)")
    a("--compile", action="store_true", default=None, help="torch.compile the model (CUDA; on a CPU it "
                                                            "did not pay for its compile time)")
    a("--precision", choices=["auto", "fp32", "bf16"], help="bf16 autocast with fp32 master weights, or fp32; "
                                                          "auto (default): bf16 on CUDA, and on a CPU whose bf16 "
                                                          "matmul a start-up probe finds faster (cached per machine)")
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
    Returns the shards folder and a summary (``tags``: pieces per tag, commonest first).

    Example: ``shards, info = prepare_finetune("my_midi", "melodia/weights/default", "runs/mine")``
    """
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
    piece_tags = {c["piece"]: c.get("tags") or () for c in index["chunks"]}
    tags = Counter(t for ts in piece_tags.values() for t in ts)
    return out / "tokens", {"pieces": summary.pieces, "skipped": summary.skipped,
                            "tags": dict(sorted(tags.items(), key=lambda kv: (-kv[1], kv[0]))),
                            "chunks": len(index["chunks"]), "vocab_size": tok.vocab_size}


def cli_train(args: argparse.Namespace) -> int:
    """Run ``melodia train`` from parsed options; returns the exit status. Example: ``cli_train(args)``."""
    check_out_dir(args.out)
    init_from = getattr(args, "init_from", None)
    if init_from:
        if args.init and args.init != init_from:
            raise BadInputError("give --init or --from, not both")
        args.init = init_from
    if args.init == "default":
        args.init = str(DEFAULT_MODEL_DIR)
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
                  f"{', '.join(f'{t} {n}' for t, n in info['tags'].items()) or 'none'}; "
                  f"vocabulary {info['vocab_size']}", flush=True)
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
