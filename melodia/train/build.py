"""The model a run trains: built from a preset, loaded from ``init`` (vocabulary grown for new
control tokens), maybe LoRA-wrapped; and the defaults its melodia.json records.

Example: ``model, info = build_run_model(cfg, ShardData(cfg.data), None)``
"""
from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

from ..corpus import ensemble_programs, style_ensembles, tempo_unknown_token
from ..errors import MelodiaError
from ..fileio import read_jsonl
from ..model import build_model, load_model_dir, model_config_of, preset_name
from ..tokenizer import tempo_tokens
from .checkpoint import unwrap
from .config import LORA_TARGETS, TrainConfig
from .data import ShardData


def lora_wrap(model: Any, cfg: TrainConfig, new_ids: list[int]) -> Any:
    """Example: ``model = lora_wrap(model, cfg, new_ids)``."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise MelodiaError("--lora needs the peft package (pip install peft)") from None

    lcfg = LoraConfig(r=cfg.lora, lora_alpha=cfg.lora_alpha or 2 * cfg.lora, lora_dropout=0.0, bias="none",
                      target_modules=LORA_TARGETS,
                      trainable_token_indices={"embed_tokens": new_ids} if new_ids else None)
    with warnings.catch_warnings():  # peft asks transformers a deprecated question; nothing for a user to do
        warnings.simplefilter("ignore", FutureWarning)
        return get_peft_model(model, lcfg)


def resize_vocab(model: Any, vocab_size: int) -> list[int]:
    """Grow the (tied) embedding to ``vocab_size``; new rows = the mean embedding. Returns the new ids. Example: ``resize_vocab(model, 4100)  # [4000, ..., 4099]``"""
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
    """melodia.json's "default_programs", "style_programs" and "tempo_unknown" for a model trained on ``data``.

    Both come from the shards' corpus (index.json's "corpus", when its manifest is at hand):
    the commonest ensemble of its pieces (and of each style's pieces), and the 120 qpm Tempo token if most of its pieces
    there are tempo-less (see :func:`melodia.corpus.tempo_unknown_token`). What the corpus
    cannot tell comes from ``inherited``, the model fine-tuned from: a folder with no
    multi-part piece keeps the base model's instruments, and one with no piece near 120 qpm
    keeps its tempo-unknown token (a folder with real 120 qpm songs drops it: that bin is its
    music now).

    Example: ``model_defaults(ShardData("tokens"))  # {"default_programs": [0, 1, 2], ...}``
    """
    inherited = dict(inherited or {})
    corpus = data.index.get("corpus")
    manifest = Path(corpus) / "manifest.jsonl" if corpus else None
    rows = read_jsonl(manifest) if manifest is not None and manifest.is_file() else []
    tempos = tempo_tokens(data.root / "tokenizer.json")
    out: dict[str, Any] = {}
    programs = ensemble_programs(rows) or inherited.get("default_programs")
    if programs:
        out["default_programs"] = [int(p) for p in programs]
    styles = {**(inherited.get("style_programs") or {}), **style_ensembles(rows)}  # a fine-tune keeps the base's
    if styles:
        out["style_programs"] = {k: [int(p) for p in v] for k, v in styles.items()}
    verdict = tempo_unknown_token(rows, tempos) if rows and tempos else {"pieces": 0}
    token = verdict["token"] if verdict["pieces"] else inherited.get("tempo_unknown")
    if token is not None and token in tempos:
        out["tempo_unknown"] = token
    return out


def build_run_model(cfg: TrainConfig, data: ShardData, resume_state: dict | None) -> tuple[Any, dict[str, Any]]:
    """The (maybe LoRA-wrapped) model on CPU and facts about it for melodia.json. Example: ``model, info = build_run_model(cfg, ShardData(cfg.data), None)``"""
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
            model = lora_wrap(model, cfg, info.get("new_token_ids", []))
        return model, info
    if cfg.init:
        model, init_meta = load_model_dir(cfg.init, dtype="float32")
        model.train()
        new_ids = resize_vocab(model, data.vocab_size)
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
        model = lora_wrap(model, cfg, info["new_token_ids"])
    return model, info


def plain_model(model: Any) -> Any:
    """A plain LlamaForCausalLM to save: LoRA adapters merged into a copy. Example: ``save_model_dir(plain_model(model), ...)``"""
    model = unwrap(model)
    if hasattr(model, "merge_and_unload"):
        return copy.deepcopy(model).merge_and_unload()
    return model
