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
  warm-up (at most a tenth of the steps: a longer one is cut, with a note) then cosine decay
  to ``min_lr_ratio · lr``, gradient clipping, gradient accumulation;
  the loss is the mean over every target token of the whole optimizer step (all micro-batches,
  all processes). CUDA: bf16 autocast, SDPA attention, optional ``torch.compile``; CPU: fp32, or
  bf16 autocast (fp32 master weights) where a start-up probe finds bf16 matmuls faster
  (``precision``: auto | fp32 | bf16; :mod:`melodia.model.precision`).
* Every ``eval_every`` steps: validation loss on the valid split (``eval_batches`` batches).
  ``patience`` > 0 stops after that many evaluations without improvement, and then ``out/model``
  always holds the best weights so far; shards with no valid split (a small folder whose songs
  all hashed to train) have nothing to watch, so ``patience`` is then ignored with a warning.
* Every ``ckpt_every`` steps and at the end: ``out/checkpoint/`` (``model.safetensors``,
  ``optimizer.pt``, ``state.json``: step, data position, RNG states, config), built in a temp
  folder and swapped in by renames, so a kill at any moment leaves the last complete one.
  ``resume`` continues from it bit for bit (same losses on CPU).
* Output folder ``out``: ``model/`` (the model directory, see melodia/model/),
  ``checkpoint/``, ``metrics.jsonl`` (one JSON object per log line and per evaluation). It is
  made once the data and the model are ready; a start that fails leaves no empty folder.
* ``torchrun``: one process per device (NCCL on GPUs, gloo on CPU); only global rank 0 writes.
  Resuming a multi-node run needs ``out`` on a file system every node can read.

Modules: :mod:`.config` (the settings), :mod:`.data` (shards, batches, the order chunks are
read in), :mod:`.build` (the model to train), :mod:`.checkpoint`, :mod:`.loop` (the run),
:mod:`.cli` (``melodia train``). torch, transformers and peft load when training starts.

Example:
    >>> model_dir = train(TrainConfig(data="tokens", out="runs/tiny", preset="tiny", steps=200))
"""
from __future__ import annotations

from .build import model_defaults, resize_vocab
from .checkpoint import read_checkpoint_state, save_checkpoint
from .cli import add_train_arguments, cli_train, config_from_args, main, prepare_finetune
from .config import IGNORE, LORA_TARGETS, RESUME_OVERRIDABLE, TrainConfig
from .data import ShardData, TrainStream, conditioning_dropout
from .loop import Dist, Progress, Run, autocast_for, lr_at, make_optimizer, summed_loss, train

__all__ = ["IGNORE", "LORA_TARGETS", "RESUME_OVERRIDABLE", "Dist", "Progress", "Run", "ShardData", "TrainConfig",
           "TrainStream", "add_train_arguments", "autocast_for", "cli_train", "conditioning_dropout",
           "config_from_args", "lr_at", "main", "make_optimizer", "model_defaults", "prepare_finetune",
           "read_checkpoint_state", "resize_vocab", "save_checkpoint", "summed_loss", "train"]
